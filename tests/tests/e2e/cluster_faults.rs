//! Faults of the cluster backend (issue 19), with the real engines: a node killed while
//! a device pushes through it, PostgreSQL crashing while devices write, one Garage node
//! of three down during a sync, and garbage collection removing exactly the blocks that
//! nothing refers to any more. In every case nothing is lost and the trees converge
//! (each settle also compares them with `filesyncd export`). Skipped, saying so, as the
//! other cluster tests ([`crate::on_cluster`]).

use std::collections::BTreeSet;
use std::path::Path;
use std::thread;
use std::time::Duration;

use filesync_tests::backend::{Collected, gc};
use filesync_tests::cluster::DOCS;
use filesync_tests::files::{self, pseudo_random};
use filesync_tests::{Backend, Cluster, Node, poll_until};

/// A settle after a fault may wait for reconnect back-offs.
const FAULT_SYNC: Duration = Duration::from_secs(180);

/// What a client's log says when it sees a new epoch: it then merges its whole index
/// with the server's, which a node or database restart must never cause.
const NEW_HISTORY: &str = "has another history than the one this device followed";

/// File `i` of a batch: its path and content (8-40 KiB, distinct per `seed`).
fn batch_file(seed: u64, i: usize) -> (String, Vec<u8>) {
    let rel = format!("batch{seed}/d{:02}/f{i:03}.bin", i % 10);
    (
        rel,
        pseudo_random(seed * 1000 + i as u64, 8192 + i * 97 % 32768),
    )
}

/// Writes files `range` of batch `seed` into client `i`'s `docs`.
fn write_batch(cl: &Cluster, i: usize, seed: u64, range: std::ops::Range<usize>) {
    for n in range {
        let (rel, content) = batch_file(seed, n);
        files::write(&cl.path_on(i, DOCS, &rel), content);
    }
}

/// Every file of batch `seed` (`count` files) is on every client and in the export.
fn assert_batch_everywhere(cl: &Cluster, seed: u64, count: usize) {
    for n in 0..count {
        let (rel, content) = batch_file(seed, n);
        cl.assert_file_everywhere(DOCS, &rel, &content);
    }
}

/// Waits until client `node` has uploaded at least `n` files of `docs`, so a fault hits
/// a push under way.
fn wait_uploaded(node: &Node, n: u64) -> u64 {
    poll_until(Duration::from_secs(60), || {
        let done = node.counters(DOCS).files_uploaded;
        match done >= n {
            true => Ok(done),
            false => Err(format!(
                "{} uploaded {done} files, not {n} yet",
                node.name()
            )),
        }
    })
    .unwrap_or_else(|why| panic!("{why}"))
}

/// Neither client merged its index with a new history.
fn assert_no_new_epoch(cl: &Cluster) {
    for i in cl.all_clients() {
        let log = cl.client(i).log_text();
        assert!(
            !log.contains(NEW_HISTORY),
            "{} saw a new epoch and re-read its whole index",
            cl.client(i).name()
        );
    }
}

/// The folders' epochs in the cluster's database.
fn epochs(cl: &Cluster) -> String {
    let engines = cl.engines().expect("the cluster backend");
    engines.psql("SELECT string_agg(epoch::text, ',' ORDER BY id) FROM folders")
}

#[test]
fn a_node_killed_while_a_device_pushes_300_files_through_it_loses_nothing() {
    let Some(cl) = Cluster::new_on(Backend::TWO_NODES, 2) else {
        return;
    };
    files::write(&cl.path_on(0, DOCS, "before.txt"), b"synced before\n");
    cl.settle(DOCS);
    let epochs_before = epochs(&cl);
    write_batch(&cl, 0, 1, 0..300);
    // A pushes through node 1 (the cluster's first node); B is on node 2.
    let uploaded = wait_uploaded(cl.a(), 30);
    cl.server().kill();
    assert!(
        uploaded < 300,
        "A had pushed all 300 files before node 1 was killed: the fault missed the push"
    );
    cl.note("node 1 killed with -9; starting it again on its port");
    cl.server().start();
    cl.settle_clients(DOCS, &cl.all_clients(), FAULT_SYNC);
    assert_batch_everywhere(&cl, 1, 300);
    cl.assert_file_everywhere(DOCS, "before.txt", b"synced before\n");
    assert_eq!(epochs(&cl), epochs_before, "a folder got a new epoch");
    assert_no_new_epoch(&cl);
}

#[test]
fn postgres_crashing_while_two_devices_write_loses_nothing_and_keeps_the_epoch() {
    let Some(cl) = Cluster::new_on(Backend::TWO_NODES, 2) else {
        return;
    };
    write_batch(&cl, 0, 1, 0..20);
    cl.settle(DOCS);
    let epochs_before = epochs(&cl);
    let engines = cl.engines().expect("the cluster backend");
    thread::scope(|s| {
        // Both devices write in bursts while the database goes down and comes back.
        let a = s.spawn(|| {
            for k in 0..5 {
                write_batch(&cl, 0, 2, k * 20..(k + 1) * 20);
                thread::sleep(Duration::from_millis(100));
            }
        });
        let b = s.spawn(|| {
            for k in 0..5 {
                write_batch(&cl, 1, 3, k * 20..(k + 1) * 20);
                thread::sleep(Duration::from_millis(100));
            }
        });
        wait_uploaded(cl.a(), 25);
        cl.note("PostgreSQL restarts as after a crash");
        engines.pg.restart_immediate();
        a.join().expect("A's writer");
        b.join().expect("B's writer");
    });
    cl.settle_clients(DOCS, &cl.all_clients(), FAULT_SYNC);
    assert_batch_everywhere(&cl, 1, 20);
    assert_batch_everywhere(&cl, 2, 100);
    assert_batch_everywhere(&cl, 3, 100);
    assert_eq!(epochs(&cl), epochs_before, "a folder got a new epoch");
    assert_no_new_epoch(&cl);
    // The outage reached every node: each lost its listening connection and followed
    // commits again after it.
    for node in cl.servers() {
        let log = node.log_text();
        assert!(
            log.contains("not following other nodes' commits")
                && log.contains("following other nodes' commits again"),
            "{}: the listener was not lost and found again",
            node.name()
        );
    }
}

#[test]
fn one_garage_node_of_three_down_during_a_sync_loses_nothing() {
    let three = Backend::Cluster {
        nodes: 2,
        garage_nodes: 3,
    };
    let Some(mut cl) = Cluster::new_on(three, 2) else {
        return;
    };
    write_batch(&cl, 0, 1, 0..100);
    wait_uploaded(cl.a(), 10);
    cl.note("Garage node 3 of 3 killed");
    // The nodes reach the bucket through Garage node 0; node 2 holds replicas only.
    let engines = cl.engines_mut().expect("the cluster backend");
    engines.garage.kill_node(2);
    write_batch(&cl, 1, 2, 0..50);
    cl.settle_clients(DOCS, &cl.all_clients(), FAULT_SYNC);
    assert_batch_everywhere(&cl, 1, 100);
    assert_batch_everywhere(&cl, 2, 50);
}

/// The blocks table: (rows, rows that no content refers to).
fn blocks(cl: &Cluster) -> (usize, usize) {
    let engines = cl.engines().expect("the cluster backend");
    let said =
        engines.psql("SELECT COUNT(*) || ' ' || COUNT(*) FILTER (WHERE refs = 0) FROM blocks");
    let (all, free) = said.split_once(' ').expect("two counts");
    (all.parse().unwrap(), free.parse().unwrap())
}

/// Runs `filesyncd gc` with a grace of 0 until nothing is younger than a second; the
/// sum of what it deleted and the last count in use.
fn collect_all(config: &Path) -> (usize, usize) {
    let mut deleted = 0;
    let in_use = poll_until(Duration::from_secs(30), || {
        let c: Collected = gc(config, Some(0));
        deleted += c.deleted;
        match c.young {
            0 => Ok(c.in_use),
            n => Err(format!("{n} blocks are still younger than a second")),
        }
    })
    .unwrap_or_else(|why| panic!("{why}"));
    (deleted, in_use)
}

/// After deletes and replacements, with `keep_versions = 0` (versions expire at once),
/// `filesyncd gc` removes exactly the blocks of the contents no file holds any more:
/// the rows and the objects in the bucket; every file still exports byte-identical.
#[test]
fn gc_removes_exactly_the_blocks_no_file_or_version_refers_to() {
    let Some(cl) = Cluster::without_folders_on(Backend::TWO_NODES, 2, Some("open")) else {
        return;
    };
    for node in cl.servers() {
        node.restart_with_server_lines("keep_versions = 0\n");
    }
    for i in cl.all_clients() {
        cl.add_folder(i, DOCS);
    }
    // Files too big to be kept in their rows (over INLINE_MAX), so their blocks are
    // objects: 12 kept, 10 deleted, one of the kept replaced. Which blocks each has is
    // what the daemon's own chunking says.
    let content = |n: u64| pseudo_random(500 + n, 200_000);
    let blocks_of = |data: &[u8]| -> BTreeSet<_> {
        (filesyncd::fs::chunk::hash_bytes(data).blocks.iter())
            .map(|b| b.hash)
            .collect()
    };
    for n in 0..22 {
        let dir = if n < 12 { "keep" } else { "gone" };
        files::write(
            &cl.path_on(0, DOCS, &format!("{dir}/f{n:02}.bin")),
            content(n),
        );
    }
    // A small file is kept in its row: no block, no object.
    files::write(
        &cl.path_on(0, DOCS, "keep/small.txt"),
        pseudo_random(7, 3000),
    );
    let replacement = pseudo_random(999, 200_000);
    let held_before: BTreeSet<_> = (0..22).flat_map(|n| blocks_of(&content(n))).collect();
    let held_after: BTreeSet<_> = (1..12)
        .flat_map(|n| blocks_of(&content(n)))
        .chain(blocks_of(&replacement))
        .collect();
    let added = held_after.difference(&held_before).count();
    let dropped = held_before.difference(&held_after).count();
    assert!(dropped >= 10, "the deleted files' blocks: {dropped}");
    cl.settle(DOCS);
    let (before, free_before) = blocks(&cl);
    assert_eq!(
        before,
        held_before.len(),
        "one row per distinct block of the big files, none for the small one"
    );
    assert_eq!(free_before, 0, "blocks of live files count no reference");
    let engines = cl.engines().expect("the cluster backend");
    let objects_before = engines
        .garage
        .object_count()
        .unwrap_or_else(|why| panic!("{why}"));

    std::fs::remove_dir_all(cl.path_on(0, DOCS, "gone")).unwrap();
    files::write(&cl.path_on(1, DOCS, "keep/f00.bin"), &replacement);
    cl.settle(DOCS);
    poll_until(Duration::from_secs(60), || {
        match engines.psql("SELECT COUNT(*) FROM versions").as_str() {
            "0" => Ok(()),
            n => Err(format!(
                "{n} versions are still kept with keep_versions = 0"
            )),
        }
    })
    .unwrap_or_else(|why| panic!("{why}"));
    let (all, free) = blocks(&cl);
    assert_eq!(
        (all, free),
        (before + added, dropped),
        "the replacement's new blocks; the deleted files' and the replaced content's \
         unreferenced"
    );
    let (deleted, in_use) = collect_all(cl.server().config_path());
    assert_eq!(
        deleted, dropped,
        "gc removes exactly the unreferenced blocks"
    );
    assert_eq!(in_use, before + added - dropped);
    assert_eq!(blocks(&cl), (before + added - dropped, 0));
    let want = objects_before + added as u64 - dropped as u64;
    poll_until(Duration::from_secs(60), || {
        match engines.garage.object_count()? {
            n if n == want => Ok(()),
            n => Err(format!("the bucket holds {n} objects, not {want}")),
        }
    })
    .unwrap_or_else(|why| panic!("{why}"));
    // Every file still exports, byte for byte (settle compares the export).
    cl.settle(DOCS);
    assert_eq!(
        collect_all(cl.server().config_path()).0,
        0,
        "a second gc found more"
    );
}

/// The database goes back in time (as a restore from a backup taken before the last
/// change would): the devices had seen further. The node gives the folder a new epoch,
/// both devices merge with it, and nothing is lost.
#[test]
fn a_database_that_went_back_in_time_gets_a_new_epoch_and_loses_nothing() {
    let Some(cl) = Cluster::new_on(Backend::TWO_NODES, 2) else {
        return;
    };
    files::write(&cl.path_on(0, DOCS, "kept.txt"), b"in the backup\n");
    cl.settle(DOCS);
    let engines = cl.engines().expect("the cluster backend");
    let backup = engines.psql("SELECT last_seq FROM folders");
    files::write(&cl.path_on(1, DOCS, "lost.txt"), b"after the backup\n");
    cl.settle(DOCS);
    let epochs_before = epochs(&cl);
    // The "restore": the rows after the backup are gone, the numbering is back there.
    for node in cl.servers() {
        node.stop();
    }
    engines.psql(&format!(
        "DELETE FROM entries WHERE seq > {backup}; \
         UPDATE folders SET last_seq = {backup}, next_seq = {backup} + 1"
    ));
    for node in cl.servers() {
        node.start();
    }
    cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "kept.txt", b"in the backup\n");
    cl.assert_file_everywhere(DOCS, "lost.txt", b"after the backup\n");
    assert_ne!(epochs(&cl), epochs_before, "the folder kept its epoch");
    assert!(
        cl.servers()
            .iter()
            .any(|n| n.log_text().contains("history went back in time")),
        "no node noticed"
    );
    let listed = engines.psql("SELECT count(*) FROM entries WHERE path = 'lost.txt'");
    assert_eq!(listed, "1", "the device pushed the lost file again");
}
