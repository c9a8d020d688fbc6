//! The embedded backend's core sync scenarios on the cluster backend (issue 19): the
//! same test bodies, run on two server nodes sharing one PostgreSQL and one Garage,
//! client A connected to node 1 and client B to node 2, so every change crosses nodes.
//! Each step's oracle also compares the clients' trees with `filesyncd export` of the
//! folder. Skipped (saying so) where PostgreSQL 15 or Garage is not installed, except
//! under `FILESYNC_REQUIRE_TOOLS`.

use filesync_tests::{Backend, Cluster};

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
