//! The cluster backend's storage (issue 19), with the real engines: a throwaway
//! PostgreSQL 15 and a Garage node. An embedded server that devices used is moved into
//! the cluster with `filesyncd migrate-to-cluster`, and `filesyncd export` writes each
//! folder back out of the database and the bucket: the same tree, file times and modes,
//! the same sequence numbers, epoch and versions. Bad or unreachable engines are start-up
//! errors naming the config key.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use filesync_tests::backend::{ADMIN_TIMEOUT, Collected, cluster_table, gc};
use filesync_tests::cluster::DOCS;
use filesync_tests::exec::{bin, free_port, run_with_timeout};
use filesync_tests::files::{self, pseudo_random};
use filesync_tests::garage::Garage;
use filesync_tests::node::describe;
use filesync_tests::pg::Postgres;
use filesync_tests::tree::{diff, manifest};
use filesync_tests::{Cluster, Node, poll_until};

/// The engines, or `None` when the test is skipped (see [`Postgres::start_or_skip`]).
fn engines(cl: &Cluster) -> Option<(Postgres, Garage)> {
    let pg = Postgres::start_or_skip()?;
    cl.expect_entry("garage");
    let garage = Garage::start_or_skip(cl.root(), 1)?;
    Some((pg, garage))
}

/// A copy of the server's config with `backend = "cluster"` and `table`, beside it.
fn cluster_config(server: &Node, table: &str) -> PathBuf {
    let text = fs::read_to_string(server.config_path()).expect("the server's config");
    let file = server.config_path().with_file_name("cluster.toml");
    fs::write(&file, format!("{text}\nbackend = \"cluster\"\n{table}")).unwrap();
    file
}

fn filesyncd(config: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin("filesyncd"));
    cmd.arg("--config").arg(config).args(args);
    run_with_timeout(&mut cmd, ADMIN_TIMEOUT)
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `filesyncd` must fail with exit 1 and say every one of `words`.
fn refused(out: Output, words: &[&str]) {
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    for w in words {
        assert!(said.contains(w), "want {w:?} in:\n{said}");
    }
}

#[test]
fn an_embedded_server_moves_into_the_cluster_and_exports_the_same_trees() {
    let cl = Cluster::new(2);
    let Some((pg, garage)) = engines(&cl) else {
        return;
    };
    let a = cl.folder_dir(0, DOCS);
    files::write(&a.join("notes/today.txt"), b"first\n");
    files::write(&a.join("big.bin"), pseudo_random(19, 3 << 20));
    files::write(&a.join("same-as-big.bin"), pseudo_random(19, 3 << 20));
    files::write(&a.join("empty"), b"");
    files::write(&a.join("tool.sh"), b"#!/bin/sh\necho hi\n");
    fs::set_permissions(a.join("tool.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("notes/today.txt", a.join("link")).unwrap();
    fs::create_dir_all(a.join("empty-dir/inner")).unwrap();
    cl.settle(DOCS);
    // A version: today.txt replaced, gone.txt deleted.
    files::write(&a.join("notes/today.txt"), b"second\n");
    files::write(&a.join("gone.txt"), b"soon gone\n");
    cl.settle(DOCS);
    fs::remove_file(a.join("gone.txt")).unwrap();
    let settled = cl.settle(DOCS);
    let server_tree = cl.server_dir(DOCS).expect("the server's copy");
    let index = cl.server_index(DOCS);
    let db = rusqlite::Connection::open(&index).unwrap();
    let (rows, max_seq): (i64, i64) = db
        .query_row("SELECT COUNT(*), MAX(seq) FROM local", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let epoch: i64 = db
        .query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |r| {
            r.get(0)
        })
        .unwrap();
    let today_seq: i64 = db
        .query_row(
            "SELECT seq FROM local WHERE path = 'notes/today.txt'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    drop(db);
    let cert = fs::read(cl.server().data_dir().join(".filesync/tls/cert.der")).unwrap();

    // What the account store holds besides devices: a quota, a pending token of a new
    // account, a share with it.
    let server = cl.server();
    server.ctl_ok(["server", "quota", "open", "1GiB"]);
    server.server_invite("carol", None);
    server.ctl_ok([
        "server",
        "share",
        &format!("open/{DOCS}"),
        "--with",
        "carol",
        "--read-only",
    ]);

    server.stop();
    let url = pg.create_db("moved");
    let config = cluster_config(cl.server(), &cluster_table(&url, &garage, &[]));
    let said = ok(filesyncd(&config, &["migrate-to-cluster"]));
    assert!(said.contains("2 devices, 1 folders"), "{said}");
    let sql = |q: &str| pg.psql("moved", q);
    assert_eq!(sql("SELECT COUNT(*) FROM devices"), "2");
    assert_eq!(
        sql("SELECT string_agg(name, ',' ORDER BY name) FROM accounts"),
        "carol,open"
    );
    assert_eq!(
        sql("SELECT a.name || ' ' || q.bytes FROM quotas q JOIN accounts a ON a.id = q.account_id"),
        format!("open {}", 1u64 << 30)
    );
    assert_eq!(
        sql(
            "SELECT a.name || ' ' || (i.used_by IS NULL) FROM invites i \
             JOIN accounts a ON a.id = i.account_id"
        ),
        "carol true"
    );
    assert_eq!(
        sql(
            "SELECT o.name || '/' || s.folder || ' ' || m.name || ' ' || s.read_only \
             FROM shares s JOIN accounts o ON o.id = s.owner_id \
             JOIN accounts m ON m.id = s.member_id"
        ),
        format!("open/{DOCS} carol true")
    );
    assert_eq!(sql("SELECT COUNT(*) FROM entries"), rows.to_string());
    assert_eq!(
        sql("SELECT last_seq || ' ' || epoch FROM folders"),
        format!("{max_seq} {epoch}")
    );
    // Every entry at its own sequence number, as on the embedded server.
    assert_eq!(
        sql("SELECT seq FROM entries WHERE path = 'notes/today.txt'"),
        today_seq.to_string()
    );
    // The same TLS identity, so that devices keep the fingerprint they pinned.
    assert_eq!(
        sql("SELECT encode(cert_der, 'hex') FROM cluster"),
        hex::encode(&cert)
    );
    // Two versions (today.txt's first content, gone.txt), each content stored once
    // however many files hold it.
    assert_eq!(sql("SELECT COUNT(*) FROM versions"), "2");
    assert_eq!(
        sql(
            "SELECT refs FROM contents c JOIN entries e ON e.hash = c.hash \
             WHERE e.path = 'big.bin'"
        ),
        "2"
    );

    let out = cl.root().join("exported");
    cl.expect_entry("exported");
    let said = ok(filesyncd(
        &config,
        &["export", &format!("open/{DOCS}"), out.to_str().unwrap()],
    ));
    assert!(said.contains(&format!("wrote open/{DOCS} into")), "{said}");
    let exported = manifest(&out).expect("the exported tree");
    let on_server = manifest(&server_tree).expect("the server's tree");
    assert!(exported == on_server, "{}", diff(&on_server, &exported));
    assert!(exported == settled, "{}", diff(&settled, &exported));
    for name in ["big.bin", "tool.sh", "notes/today.txt"] {
        let (x, s) = (
            fs::metadata(out.join(name)).unwrap(),
            fs::metadata(server_tree.join(name)).unwrap(),
        );
        assert_eq!(
            (x.mtime(), x.mtime_nsec()),
            (s.mtime(), s.mtime_nsec()),
            "{name}"
        );
        assert_eq!(x.mode() & 0o777, s.mode() & 0o777, "{name}");
    }

    // A second import would duplicate everything: refused, nothing changed.
    refused(
        filesyncd(&config, &["migrate-to-cluster"]),
        &["already holds a cluster", "empty database"],
    );
    assert_eq!(sql("SELECT COUNT(*) FROM entries"), rows.to_string());
    // Exporting over the export: refused.
    refused(
        filesyncd(
            &config,
            &["export", &format!("open/{DOCS}"), out.to_str().unwrap()],
        ),
        &["is not empty"],
    );
    refused(
        filesyncd(
            &config,
            &[
                "export",
                "open/nothing",
                cl.root().join("x").to_str().unwrap(),
            ],
        ),
        &["has no folder open/nothing"],
    );
}

#[test]
fn bad_or_unreachable_engines_are_errors_naming_the_key() {
    let cl = Cluster::without_folders(0, Some("open"));
    let Some((pg, garage)) = engines(&cl) else {
        return;
    };
    let url = pg.create_db("keys");
    // A port nothing listens on (the fixture's ports are checked free and not handed
    // out twice).
    let nobody = format!("postgresql://filesync@127.0.0.1:{}/keys", free_port());
    /// A key set to a bad value, and what the refusal must say.
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: [Case; 5] = [
        (
            &[("postgres", "not a url ::")],
            &["server.cluster.postgres", "connection string"],
        ),
        (
            &[("postgres", &nobody)],
            &["cannot connect to PostgreSQL", "server.cluster.postgres"],
        ),
        (
            &[("s3_bucket", "no-such-bucket")],
            &["server.cluster.s3_bucket"],
        ),
        (
            &[("s3_secret_access_key", "wrong")],
            &["server.cluster.s3_access_key_id"],
        ),
        (
            &[("s3_endpoint", "http://127.0.0.1:9")],
            &["server.cluster.s3_endpoint"],
        ),
    ];
    for (extra, words) in cases {
        let config = cluster_config(cl.server(), &cluster_table(&url, &garage, extra));
        refused(filesyncd(&config, &["migrate-to-cluster"]), words);
    }
    // A node does not start on a bad key either, and says which.
    cl.server().stop();
    let bad_bucket = [("s3_bucket", "no-such-bucket")];
    let config = cluster_config(cl.server(), &cluster_table(&url, &garage, &bad_bucket));
    let mut cmd = Command::new(bin("filesyncd"));
    cmd.arg("--config")
        .arg(&config)
        .arg("--socket")
        .arg(cl.root().join("c.sock"));
    refused(
        run_with_timeout(&mut cmd, ADMIN_TIMEOUT),
        &["server.cluster.s3_bucket"],
    );
}

/// Writes a small folder on client 0, lets it settle and stops the server: the
/// embedded server a move starts from. Returns the server's tree.
fn stopped_server_with_files(cl: &Cluster) -> PathBuf {
    let a = cl.folder_dir(0, DOCS);
    for i in 0..20 {
        files::write(
            &a.join(format!("d{}/f{i}.bin", i % 3)),
            pseudo_random(i as u64, 70_000 + i),
        );
    }
    files::write(&a.join("large.bin"), pseudo_random(7, 2 << 20));
    cl.settle(DOCS);
    cl.server().stop();
    cl.server_dir(DOCS).expect("the server's copy")
}

/// `filesyncd export` of the folder must give `tree` back.
fn export_equals(cl: &Cluster, config: &Path, name: &str, tree: &Path) {
    let out = cl.root().join(name);
    cl.expect_entry(name);
    ok(filesyncd(
        config,
        &["export", &format!("open/{DOCS}"), out.to_str().unwrap()],
    ));
    let (exported, expected) = (manifest(&out).unwrap(), manifest(tree).unwrap());
    assert!(exported == expected, "{}", diff(&expected, &exported));
}

#[test]
fn a_move_stopped_at_any_point_records_nothing_and_runs_again() {
    let cl = Cluster::new(1);
    let Some((pg, garage)) = engines(&cl) else {
        return;
    };
    let tree = stopped_server_with_files(&cl);
    let url = pg.create_db("stopped");
    let config = cluster_config(cl.server(), &cluster_table(&url, &garage, &[]));
    for point in ["import-after-upload", "import-before-commit"] {
        let mut cmd = Command::new(bin("filesyncd"));
        cmd.arg("--config").arg(&config).arg("migrate-to-cluster");
        cmd.env("FILESYNC_CRASH_AT", point);
        let out = run_with_timeout(&mut cmd, ADMIN_TIMEOUT);
        assert!(!out.status.success(), "{point}: {}", describe(&out));
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            said.contains(&format!("crash point reached: {point}")),
            "{said}"
        );
        for table in [
            "cluster", "accounts", "devices", "folders", "entries", "contents",
        ] {
            let rows = pg.psql("stopped", &format!("SELECT COUNT(*) FROM {table}"));
            assert_eq!(rows, "0", "{point}: {table} holds rows");
        }
    }
    // The stopped moves left blocks that no row refers to: garbage, once older than
    // the grace, and only then.
    let Collected {
        deleted,
        in_use,
        young,
    } = gc(&config, None);
    assert_eq!((deleted, in_use), (0, 0));
    assert!(young > 0, "no block was left by the stopped moves");
    let mut collected = 0;
    poll_until(Duration::from_secs(30), || {
        let Collected {
            deleted,
            in_use,
            young: left,
        } = gc(&config, Some(0));
        collected += deleted;
        assert_eq!(in_use, 0);
        match left {
            0 => Ok(()),
            n => Err(format!("{n} blocks are still younger than a second")),
        }
    })
    .unwrap_or_else(|why| panic!("{why}"));
    assert_eq!(collected, young);

    ok(filesyncd(&config, &["migrate-to-cluster"]));
    let blocks: usize = pg
        .psql("stopped", "SELECT COUNT(*) FROM blocks")
        .parse()
        .unwrap();
    assert_eq!(blocks, young, "the move stores the same blocks again");
    // Nothing in use is ever collected, whatever the grace, once old enough to be
    // looked at.
    poll_until(Duration::from_secs(30), || {
        let Collected {
            deleted,
            in_use,
            young,
        } = gc(&config, Some(0));
        assert_eq!(deleted, 0, "a block in use was collected");
        match (in_use, young) {
            (n, 0) if n == blocks => Ok(()),
            _ => Err(format!("{young} blocks are still younger than a second")),
        }
    })
    .unwrap_or_else(|why| panic!("{why}"));
    export_equals(&cl, &config, "exported", &tree);
}

#[test]
fn the_move_and_the_export_go_on_with_one_garage_node_of_three_down_and_pg_outages_are_named() {
    let cl = Cluster::new(1);
    let Some(pg) = Postgres::start_or_skip() else {
        return;
    };
    cl.expect_entry("garage");
    let Some(mut garage) = Garage::start_or_skip(cl.root(), 3) else {
        return;
    };
    let tree = stopped_server_with_files(&cl);
    let url = pg.create_db("three");
    let config = cluster_config(cl.server(), &cluster_table(&url, &garage, &[]));
    garage.kill_node(2);
    ok(filesyncd(&config, &["migrate-to-cluster"]));
    export_equals(&cl, &config, "one-down", &tree);

    // The database down: a clear error naming its key; back up: as before.
    pg.stop();
    let out = cl.root().join("db-down");
    cl.expect_entry("db-down");
    refused(
        filesyncd(
            &config,
            &["export", &format!("open/{DOCS}"), out.to_str().unwrap()],
        ),
        &["cannot connect to PostgreSQL", "server.cluster.postgres"],
    );
    pg.start_again();
    garage.restart_node(2);
    garage.kill_node(0);
    let config = cluster_config(
        cl.server(),
        &cluster_table(&url, &garage, &[("s3_endpoint", &garage.endpoint(1))]),
    );
    export_equals(&cl, &config, "other-node-down", &tree);
}

/// After the move, the server restarts as a cluster node: its devices go on where they
/// were (same epoch, nothing pulled again), and edits, deletes, a directory rename, a
/// conflict and a restore behave as on the embedded server.
#[test]
fn devices_go_on_through_a_cluster_node_after_the_move() {
    let cl = Cluster::new(2);
    let Some((pg, garage)) = engines(&cl) else {
        return;
    };
    let (a, b) = (cl.folder_dir(0, DOCS), cl.folder_dir(1, DOCS));
    files::write(&a.join("notes/today.txt"), b"first\n");
    files::write(&a.join("big.bin"), pseudo_random(21, 3 << 20));
    cl.settle(DOCS);
    let (a_before, b_before) = (cl.a().counters(DOCS), cl.b().counters(DOCS));
    let server = cl.server();
    let out = cl.root().join("exported");
    cl.expect_entry("exported");
    let export = [
        "server",
        "export",
        &format!("open/{DOCS}"),
        out.to_str().unwrap(),
    ];
    let embedded = server.ctl(export);
    assert_eq!(embedded.status.code(), Some(1), "{}", describe(&embedded));
    assert!(String::from_utf8_lossy(&embedded.stderr).contains("browsable tree"));
    server.stop();
    let url = pg.create_db("served");
    let table = cluster_table(&url, &garage, &[]);
    let config = cluster_config(server, &table);
    ok(filesyncd(&config, &["migrate-to-cluster"]));
    // The embedded tree is not used any more: away with it, so that only the devices'
    // copies are compared from now on.
    let old = cl.server_dir(DOCS).expect("the embedded copy");
    fs::remove_dir_all(&old).unwrap();
    fs::copy(&config, server.config_path()).unwrap();
    server.start();

    files::write(&a.join("notes/tomorrow.txt"), b"new on a\n");
    files::write(&b.join("from-b.bin"), pseudo_random(22, 1 << 20));
    cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "notes/tomorrow.txt", b"new on a\n");
    cl.assert_file_everywhere(DOCS, "from-b.bin", &pseudo_random(22, 1 << 20));
    // Each device went on where it was: it sent only its new file and took only the
    // other's (a new epoch would have had both exchange everything again).
    let (a_after, b_after) = (cl.a().counters(DOCS), cl.b().counters(DOCS));
    assert_eq!(
        (a_after.files_uploaded, a_after.files_downloaded),
        (a_before.files_uploaded + 1, a_before.files_downloaded + 1),
        "{a_before:?} {a_after:?}"
    );
    assert_eq!(
        (b_after.files_uploaded, b_after.files_downloaded),
        (b_before.files_uploaded + 1, b_before.files_downloaded + 1),
        "{b_before:?} {b_after:?}"
    );
    assert!(!cl.server().log_text().contains("history went back in time"));

    files::write(&a.join("notes/today.txt"), b"second\n");
    fs::remove_file(b.join("big.bin")).unwrap();
    cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "notes/today.txt", b"second\n");
    cl.assert_absent_everywhere(DOCS, "big.bin");
    let versions = cl.a().versions(DOCS, "notes/today.txt");
    assert_eq!(versions.len(), 1, "{versions:?}");
    // Brought back on a device, through the node: a new change everyone takes.
    cl.a().ctl_ok(["restore", DOCS, "notes/today.txt"]);
    cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "notes/today.txt", b"first\n");
    // A deleted executable comes back executable, as from the embedded server.
    files::write(&a.join("tool.sh"), b"#!/bin/sh\n");
    fs::set_permissions(a.join("tool.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    cl.settle(DOCS);
    fs::remove_file(a.join("tool.sh")).unwrap();
    cl.settle(DOCS);
    cl.a().ctl_ok(["restore", DOCS, "tool.sh"]);
    cl.settle(DOCS);
    let mode = fs::metadata(b.join("tool.sh")).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o755, "the restored version's mode");
    fs::rename(a.join("notes"), a.join("papers")).unwrap();
    cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "papers/today.txt", b"first\n");
    cl.assert_file_everywhere(DOCS, "papers/tomorrow.txt", b"new on a\n");
    // The node writes the folder's tree, as the devices hold it.
    let said = server.ctl_ok(export);
    assert!(said.contains("wrote open/docs into"), "{said}");
    let exported = manifest(&out).expect("the exported tree");
    let on_a = manifest(&a).expect("a's tree");
    assert!(exported == on_a, "{}", diff(&on_a, &exported));
    let sql = |q: &str| pg.psql("served", q);
    assert_eq!(sql("SELECT COUNT(*) FROM renames"), "1");
    assert!(
        sql("SELECT COUNT(*) FROM versions").parse::<u32>().unwrap() >= 2,
        "the replaced today.txt and the deleted big.bin are kept"
    );
}

/// With `sslmode=require` a node talks TLS to PostgreSQL, trusting the CA named in
/// `postgres_ca_file`; without it, or with another CA's, it refuses to start and names
/// the key.
#[test]
fn a_node_reaches_postgres_over_tls_checking_its_certificate() {
    let cl = Cluster::without_folders(0, Some("open"));
    let Some((pg, garage)) = engines(&cl) else {
        return;
    };
    let ca = pg.enable_tls();
    let url = format!("{}?sslmode=require", pg.create_db("tls"));
    let other_ca = cl.root().join("other-ca.pem");
    cl.expect_entry("other-ca.pem");
    let other_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    fs::write(&other_ca, params.self_signed(&other_key).unwrap().pem()).unwrap();
    let with_ca = |file: &Path| {
        let extra = [("postgres_ca_file", file.to_str().unwrap())];
        cluster_config(cl.server(), &cluster_table(&url, &garage, &extra))
    };
    for refused_config in [
        cluster_config(cl.server(), &cluster_table(&url, &garage, &[])),
        with_ca(&other_ca),
    ] {
        refused(
            filesyncd(&refused_config, &["gc"]),
            &["server.cluster.postgres", "postgres_ca_file"],
        );
    }
    ok(filesyncd(&with_ca(&ca), &["gc"]));

    // A node on it: every connection it holds is TLS.
    let server = cl.server();
    server.stop();
    fs::copy(with_ca(&ca), server.config_path()).unwrap();
    server.start();
    let count = |ssl: bool| {
        pg.psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.datname = 'tls' AND s.ssl = {ssl}"
            ),
        )
    };
    poll_until(Duration::from_secs(30), || match count(true).as_str() {
        "0" => Err("no TLS connection from the node yet".to_owned()),
        _ => Ok(()),
    })
    .unwrap();
    assert_eq!(count(false), "0", "a connection without TLS");
}
