//! A server restored from a backup, a server folder re-created or with its index lost,
//! and a client whose index is lost or damaged (test matrix F12, F13): the replicas merge
//! without deleting anything, differences become conflict copies, and they converge.
//!
//! What the tests pin down, as ARCHITECTURE.md ("Histories") states it: after a restore
//! every device merges conservatively: what the server lacks is uploaded again, content
//! that differs keeps the server's version at its name and the device's as a conflict
//! copy, and a file deleted since the backup comes back from the server (nothing is
//! lost). A client that lost its index cannot know its own deletes either: what it still
//! has comes back to the others.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use filesync_tests::cluster::DOCS;
use filesync_tests::exec::run_with_timeout;
use filesync_tests::tree::conflict_copies;
use filesync_tests::{Cluster, Manifest, SYNC_TIMEOUT, files};

/// The contents of `name` and of its conflict copies, as read on client A after settling.
fn versions_of(cl: &Cluster, common: &Manifest, name: &str) -> BTreeSet<Vec<u8>> {
    let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
    let copy = format!("{stem}.sync-conflict-");
    common
        .keys()
        .filter(|p| *p == name || (p.starts_with(&copy) && p.ends_with(ext)))
        .map(|p| fs::read(cl.path_on(0, DOCS, p)).unwrap())
        .collect()
}

/// `cp -a FROM TO`: the way an administrator backs up and restores a data dir.
fn copy_tree(from: &Path, to: &Path) {
    let out = run_with_timeout(Command::new("cp").arg("-a").arg(from).arg(to), SYNC_TIMEOUT);
    assert!(out.status.success(), "cp -a failed: {out:?}");
}

fn backup_dir(cl: &Cluster) -> PathBuf {
    cl.server().data_dir().with_file_name("data-backup")
}

/// Stops the server and puts the backup in place of its data dir.
fn restore_backup(cl: &Cluster) {
    cl.server().stop();
    fs::remove_dir_all(cl.server().data_dir()).unwrap();
    fs::rename(backup_dir(cl), cl.server().data_dir()).unwrap();
    cl.note("server data dir restored from the backup");
}

fn assert_rollback_noticed(cl: &Cluster) {
    assert!(
        cl.server().log_text().contains("history went back in time"),
        "the server did not notice the rollback"
    );
}

/// F12: the server is restored from a backup taken before new files, edits and a delete
/// that every replica had synced. The clients notice, re-upload what the server lacks,
/// keep both versions of what differs, delete nothing, and converge.
#[test]
fn server_restored_from_backup_merges_without_losing_anything() {
    let cl = Cluster::new(2);
    let before = [
        ("same.txt", &b"untouched since the backup\n"[..]),
        ("edited.txt", b"edited.txt as backed up\n"),
        ("deleted.txt", b"deleted after the backup\n"),
    ];
    for (name, content) in before {
        files::write(&cl.path_on(0, DOCS, name), content);
    }
    cl.settle(DOCS);

    cl.server().stop();
    copy_tree(cl.server().data_dir(), &backup_dir(&cl));
    cl.server().start();

    let edited = b"edited.txt as edited on B after the backup\n";
    let new_a = b"made on A after the backup\n";
    files::write(&cl.path_on(0, DOCS, "new-a.txt"), new_a);
    files::write(&cl.path_on(1, DOCS, "edited.txt"), edited);
    fs::remove_file(cl.path_on(0, DOCS, "deleted.txt")).unwrap();
    let synced = cl.settle(DOCS);
    files::assert_absent(&cl.path_on(1, DOCS, "deleted.txt"));

    restore_backup(&cl);
    cl.server().start();
    let common = cl.settle(DOCS);
    assert_rollback_noticed(&cl);
    let gone: Vec<&String> = synced.keys().filter(|p| !common.contains_key(*p)).collect();
    assert!(gone.is_empty(), "paths lost in the merge: {gone:?}");
    cl.assert_file_everywhere(DOCS, "new-a.txt", new_a);
    cl.assert_file_everywhere(DOCS, "same.txt", before[0].1);
    // The restored server's version keeps the name; B's edit lives on as a conflict copy
    // (one per device that had it).
    cl.assert_file_everywhere(DOCS, "edited.txt", before[1].1);
    assert_eq!(
        versions_of(&cl, &common, "edited.txt"),
        BTreeSet::from([before[1].1.to_vec(), edited.to_vec()]),
        "both versions of edited.txt must be kept"
    );
    // A delete made after the backup is undone by the restore: the file comes back.
    cl.assert_file_everywhere(DOCS, "deleted.txt", before[2].1);
    assert!(
        conflict_copies(&common)
            .iter()
            .all(|p| p.starts_with("edited.sync-conflict-")),
        "only edited.txt differed: {:?}",
        conflict_copies(&common)
    );
}

/// F12, the race: a device that was away during the lost history connects first after
/// the restore and pushes, taking the next sequence numbers. The server numbers past
/// anything it gave before, so the device that saw the lost history is still told apart
/// when it comes back, and merges: its lost changes reach everyone again.
#[test]
fn restore_is_noticed_after_a_lagging_device_pushed_first() {
    let cl = Cluster::new(2);
    files::write(&cl.path_on(0, DOCS, "base.txt"), b"base\n");
    cl.settle(DOCS);

    cl.b().stop();
    cl.server().stop();
    copy_tree(cl.server().data_dir(), &backup_dir(&cl));
    cl.server().start();
    let lost = b"A's change that the restore loses\n";
    files::write(&cl.path_on(0, DOCS, "lost.txt"), lost);
    cl.settle_clients(DOCS, &[0], SYNC_TIMEOUT);

    cl.a().stop();
    restore_backup(&cl);
    cl.server().start();
    cl.b().start();
    let from_b = b"B's change, pushed first after the restore\n";
    files::write(&cl.path_on(1, DOCS, "from-b.txt"), from_b);
    cl.settle_clients(DOCS, &[1], SYNC_TIMEOUT);
    files::assert_absent(&cl.server_path(DOCS, "lost.txt"));

    cl.a().start();
    let common = cl.settle(DOCS);
    assert_rollback_noticed(&cl);
    cl.assert_file_everywhere(DOCS, "lost.txt", lost);
    cl.assert_file_everywhere(DOCS, "from-b.txt", from_b);
    cl.assert_file_everywhere(DOCS, "base.txt", b"base\n");
    assert!(conflict_copies(&common).is_empty(), "{common:?}");
}

/// The server's folder is deleted and made again (its tree and its index), then its
/// index alone is damaged: each time the folder gets a new epoch, and the clients fill it
/// again without deleting anything.
#[test]
fn server_folder_recreated_or_index_damaged_is_filled_again() {
    let cl = Cluster::new(2);
    files::write(&cl.path_on(0, DOCS, "one.txt"), b"one\n");
    files::write(&cl.path_on(1, DOCS, "dir/two.txt"), b"two\n");
    cl.settle(DOCS);
    let folder = cl.server_dir(DOCS).unwrap();
    let account = folder.parent().unwrap().file_name().unwrap().to_owned();
    let index = filesync_tests::server_store::index_file(
        cl.server().data_dir(),
        &account.to_string_lossy(),
        DOCS,
    );

    cl.server().stop();
    fs::remove_dir_all(&folder).unwrap();
    fs::remove_file(&index).unwrap();
    remove_sidecars(&index);
    cl.server().start();
    cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "one.txt", b"one\n");
    cl.assert_file_everywhere(DOCS, "dir/two.txt", b"two\n");

    files::write(&cl.path_on(0, DOCS, "three.txt"), b"three\n");
    cl.settle(DOCS);
    cl.server().stop();
    flip_middle(&index);
    cl.server().start();
    let common = cl.settle(DOCS);
    assert_eq!(
        crate::paths(&common),
        ["dir", "dir/two.txt", "one.txt", "three.txt"]
    );
    assert_eq!(kept_aside(index.parent().unwrap()).len(), 1);
    assert!(cl.server().log_text().contains("index is damaged"));
}

/// F13: B's index is deleted, truncated, then has bytes flipped, each time while B is
/// stopped and A edits, deletes and adds files. B rebuilds its index from its folder and
/// the server, keeps a damaged index aside, deletes nothing and converges; A's edits win
/// the name and B's stale copies are kept as conflict copies; a file A deleted that B
/// still had comes back.
#[test]
fn lost_or_damaged_client_index_is_rebuilt_without_deleting() {
    let cl = Cluster::new(2);
    type Damage = fn(&Path);
    let damages: [(&str, Damage); 3] = [
        ("deleted", |db| {
            fs::remove_file(db).unwrap();
            remove_sidecars(db);
        }),
        ("truncated", |db| {
            checkpoint(db);
            let len = fs::metadata(db).unwrap().len();
            fs::OpenOptions::new()
                .write(true)
                .open(db)
                .unwrap()
                .set_len(len / 2 + 100)
                .unwrap();
            remove_sidecars(db);
        }),
        ("flipped", flip_middle),
    ];
    for (round, (damage, apply)) in damages.into_iter().enumerate() {
        cl.note(&format!("client index {damage}"));
        let name = |what: &str| format!("{damage}-{what}.txt");
        for what in ["edit", "delete", "keep"] {
            files::write(&cl.path_on(0, DOCS, &name(what)), format!("{what} v1\n"));
        }
        cl.settle(DOCS);

        cl.b().stop();
        apply(&client_index(&cl));
        files::write(&cl.path_on(0, DOCS, &name("edit")), "edit v2 on A\n");
        fs::remove_file(cl.path_on(0, DOCS, &name("delete"))).unwrap();
        files::write(&cl.path_on(0, DOCS, &name("new")), "new on A\n");
        cl.settle_clients(DOCS, &[0], SYNC_TIMEOUT);
        cl.b().start();
        let common = cl.settle(DOCS);

        cl.assert_file_everywhere(DOCS, &name("new"), b"new on A\n");
        cl.assert_file_everywhere(DOCS, &name("keep"), b"keep v1\n");
        cl.assert_file_everywhere(DOCS, &name("edit"), b"edit v2 on A\n");
        assert_eq!(
            versions_of(&cl, &common, &name("edit")),
            BTreeSet::from([b"edit v1\n".to_vec(), b"edit v2 on A\n".to_vec()]),
            "{damage}: B's stale copy must be kept as a conflict copy"
        );
        cl.assert_file_everywhere(DOCS, &name("delete"), b"delete v1\n");
        let kept = kept_aside(&cl.b().state_dir().join("folders"));
        assert_eq!(
            kept.len(),
            round,
            "{damage}: damaged indexes kept: {kept:?}"
        );
        let warned = cl.b().log_text().matches("index is damaged").count();
        assert_eq!(warned, round, "{damage}: warnings about a damaged index");
    }
}

/// B's index of the docs folder: `STATE_DIR/folders/docs-HASH.db`.
fn client_index(cl: &Cluster) -> PathBuf {
    let dir = cl.b().state_dir().join("folders");
    let found: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("docs-") && n.ends_with(".db")
        })
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found.into_iter().next().unwrap()
}

/// The damaged indexes kept in `dir`.
fn kept_aside(dir: &Path) -> Vec<String> {
    files::list_dir(dir)
        .into_iter()
        .filter(|n| n.contains(".db.corrupt-"))
        .collect()
}

fn remove_sidecars(db: &Path) {
    for ext in ["db-wal", "db-shm"] {
        let _ = fs::remove_file(db.with_extension(ext));
    }
}

/// Moves what the write-ahead log of the index at `db` holds into the file itself, so
/// that damage to the file hits the index's content: a daemon that exits with a
/// connection still open (a task not yet dropped) leaves it all in the log, and a file
/// that holds only an empty first page cut in half still reads as an empty index.
fn checkpoint(db: &Path) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
}

/// XORs the first 64 bytes (a b-tree page's header) of each page in the middle third of
/// the index, with the daemon stopped; the write-ahead log goes too, once checkpointed.
fn flip_middle(db: &Path) {
    const PAGE: usize = 4096;
    checkpoint(db);
    remove_sidecars(db);
    let mut bytes = fs::read(db).unwrap();
    let pages = bytes.len() / PAGE;
    assert!(pages >= 3, "{} has only {pages} pages", db.display());
    for page in (pages / 3).max(1)..(2 * pages / 3).max(2) {
        let at = page * PAGE;
        bytes[at..at + 64].iter_mut().for_each(|b| *b ^= 0x5a);
    }
    fs::write(db, bytes).unwrap();
}
