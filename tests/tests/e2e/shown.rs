//! What `filesyncctl` shows of what peers chose: no terminal escape from a peer ever
//! reaches the terminal, and the server refuses device names that would carry one.

use filesync_proto::wire::Hello;
use filesync_proto::{DeviceId, FolderName};
use filesync_tests::Cluster;
use filesync_tests::cluster::DOCS;
use filesync_tests::files;
use filesync_tests::hostile::{self, wait_for_log_line};

use super::hostile::LOG_WAIT;

/// A host name that would erase the admin's line and set the terminal's title.
const HOSTILE_HOST: &[u8] = b"evil\x1b[2K\x1b]0;owned\x07\xe2\x80\xaepc";

/// M3: a device whose host name carries terminal escapes still enrols, under its name
/// with them replaced, and the server's `status` and `server devices` show no escape
/// byte. A device that asks to enrol under such a name itself is refused, and so is one
/// that enrolled under a clean name and says Hello under such a name.
#[test]
fn escapes_in_a_device_name_never_reach_the_terminal() {
    let cl = Cluster::without_folders(1, Some("open"));
    let client = cl.client(0);
    client.stop();
    client.set_hostname(HOSTILE_HOST);
    client.start();
    cl.add_folder(0, DOCS);
    files::write(&cl.path_on(0, DOCS, "a.txt"), b"from the device\n");
    cl.settle(DOCS);
    for args in [&["status"][..], &["server", "devices"][..]] {
        let out = cl.server().ctl_ok(args);
        assert!(
            out.contains("evil"),
            "`{}` does not list the device:\n{out}",
            args.join(" ")
        );
        assert!(
            !out.contains('\x1b') && !out.contains('\x07') && !out.contains('\u{202E}'),
            "`{}` passes a peer's escapes to the terminal:\n{out:?}",
            args.join(" ")
        );
    }

    let hello = Hello {
        device: DeviceId::new("hostile").unwrap(),
        device_name: "x\x1b[2Jy".into(),
        folder: FolderName::new(DOCS).unwrap(),
        since_seq: 0,
        epoch: 0,
    };
    let addr = cl.server().server_addr();
    let refused = hostile::connect_with(&addr, hello.clone());
    assert!(refused.is_err(), "a device name with escapes was enrolled");
    wait_for_log_line(
        || cl.server().log_text(),
        &["refused to enrol device name", "x\\u{1b}[2Jy"],
        LOG_WAIT,
    )
    .unwrap();
    let refused = hostile::connect_enrolled_as(&addr, "clean", hello);
    assert!(refused.is_err(), "a Hello with escapes was welcomed");
    wait_for_log_line(
        || cl.server().log_text(),
        &["refused the hello of device", "x\\u{1b}[2Jy"],
        LOG_WAIT,
    )
    .unwrap();
    cl.server().check_running().unwrap();
}
