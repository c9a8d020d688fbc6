//! The embedded backend's core sync scenarios on the cluster backend (issue 19): the
//! same test bodies, run on two server nodes sharing one PostgreSQL and one Garage,
//! client A connected to node 1 and client B to node 2, so every change crosses nodes.
//! Each step's oracle also compares the clients' trees with `filesyncd export` of the
//! folder. Skipped (saying so) where PostgreSQL 15 or Garage is not installed, except
//! under `FILESYNC_REQUIRE_TOOLS`.

use std::time::Duration;

use filesync_tests::cluster::DOCS;
use filesync_tests::files::{self, pseudo_random};
use filesync_tests::proxy::FaultProxy;
use filesync_tests::{Backend, Cluster, Node, poll_until};

use crate::{changes, conflicts, invites, renames, versions};

/// Two nodes and two clients, each client's `docs` added through its own node.
fn two_nodes() -> Option<Cluster> {
    Cluster::new_on(Backend::TWO_NODES, 2)
}

/// One test per scenario body: `name => body`, run on [`two_nodes`].
macro_rules! on_two_nodes {
    ($($name:ident => $body:path,)*) => {$(
        #[test]
        fn $name() {
            if let Some(cl) = two_nodes() {
                $body(&cl);
            }
        }
    )*};
}

on_two_nodes! {
    a_new_file_reaches_the_device_on_the_other_node =>
        changes::new_file_reaches_server_and_other_client_on,
    an_edit_reaches_the_device_on_the_other_node =>
        changes::modified_file_propagates_new_content_on,
    a_delete_reaches_the_device_on_the_other_node =>
        changes::deleted_file_is_removed_everywhere_on,
    a_conflict_across_nodes_keeps_both_sides =>
        conflicts::edit_edit_b_first_server_version_keeps_the_name_on,
    a_directory_move_reaches_the_device_on_the_other_node =>
        renames::move_into_new_parent_with_an_edit_inside_on,
    versions_kept_through_one_node_are_restored_through_the_other =>
        versions::versions_are_listed_kept_outside_the_tree_and_restored_on,
}

#[test]
fn devices_enrolled_by_tokens_of_other_nodes_sync() {
    if let Some(cl) = Cluster::without_folders_on(Backend::TWO_NODES, 2, None) {
        invites::devices_enrolled_by_invite_tokens_sync_on(&cl);
    }
}

/// A device that a balancer sends to another node goes on where it was: no new epoch,
/// nothing sent or fetched again; and a device revoked on one node loses its
/// connection to the other at once.
#[test]
fn a_device_moved_to_another_node_goes_on_and_a_revocation_reaches_every_node() {
    let Some(cl) = Cluster::without_folders_on(Backend::TWO_NODES, 2, Some("open")) else {
        return;
    };
    let [one, two] = cl.servers() else {
        panic!("two nodes");
    };
    let addr = |node: &Node| node.server_addr().parse().expect("a node's address");
    let balancer = FaultProxy::start(addr(two));
    cl.add_folder_via(0, DOCS, &one.server_addr());
    cl.add_folder_via(1, DOCS, &balancer.addr().to_string());
    files::write(&cl.path_on(0, DOCS, "a.txt"), b"from a\n");
    files::write(&cl.path_on(1, DOCS, "big.bin"), pseudo_random(3, 300_000));
    cl.settle(DOCS);
    let before = cl.b().counters(DOCS);

    // The balancer sends B to node 1 now: its connection is cut and comes back there.
    balancer.set_target(addr(one));
    balancer.reset_all();
    files::write(&cl.path_on(0, DOCS, "after.txt"), b"after the move\n");
    cl.settle(DOCS);
    cl.assert_file_everywhere(DOCS, "after.txt", b"after the move\n");
    let after = cl.b().counters(DOCS);
    assert_eq!(
        (after.files_uploaded, after.files_downloaded),
        (before.files_uploaded, before.files_downloaded + 1),
        "B took only the new file: {before:?} {after:?}"
    );
    for node in cl.servers() {
        assert!(!node.log_text().contains("history went back in time"));
    }

    // B is revoked on node 2 while it is connected to node 1: node 1 closes its
    // connection at once, and refuses it from then on.
    let device = invites::device_id(cl.b(), &balancer.addr().to_string());
    two.ctl_ok(["server", "revoke", &device]);
    poll_until(Duration::from_secs(20), || {
        let log = one.log_text();
        let closed = log.contains("device revoked on the cluster; its connections here close")
            && log.contains("device disconnected");
        match closed {
            true => Ok(()),
            false => Err("node 1 has not closed B's connection".to_owned()),
        }
    })
    .unwrap_or_else(|why| panic!("{why}"));
    poll_until(Duration::from_secs(20), || {
        match cl.b().folder_status(DOCS)["connected"].as_bool() {
            Some(false) => Ok(()),
            _ => Err("B still shows connected".to_owned()),
        }
    })
    .unwrap_or_else(|why| panic!("{why}"));
}
