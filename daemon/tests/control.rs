//! The control socket end to end: add, status, list, remove, verify, and the protocol's
//! robustness against broken clients. Real p2pd, real p2pctl, real socket.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::*;

#[test]
fn add_status_list_remove() {
    let mut node = Node::new();
    node.start();
    let src = node.root.path().join("src");
    random_file(&src.join("present.bin"), 300_000, 1);
    random_file(&src.join("absent.bin"), 200_000, 2);
    let present = create_descriptor(&src.join("present.bin"), &node.root.path().join("present.desc"), &[]);
    let absent = create_descriptor(&src.join("absent.bin"), &node.root.path().join("absent.desc"), &[]);

    // Data already in the data directory: checked, then seeding.
    std::fs::create_dir_all(node.data()).unwrap();
    std::fs::copy(src.join("present.bin"), node.data().join("present.bin")).unwrap();
    let h1 = node.add(&present);
    assert_eq!(h1.len(), 64, "add prints the info hash: {h1}");
    assert!(h1.chars().all(|c| c.is_ascii_hexdigit()));
    let t = node.wait_state(&h1, "seeding");
    assert_eq!(t["bytes_done"], 300_000);
    assert_eq!(t["pieces_done"], t["pieces_total"]);

    // No data: waits for the network.
    let h2 = node.add(&absent);
    let t = node.wait_state(&h2, "leeching");
    assert_eq!(t["bytes_done"], 0);
    assert!(node.torrents().join(format!("{h2}.yaml")).exists(), "torrent file recorded");

    // Adding again is harmless and says so.
    let again = node.ctl(&["add", absent.to_str().unwrap()]);
    assert_eq!(again.code, 0);
    assert_eq!(again.stdout.trim(), h2);
    assert!(again.stderr.contains("already added"), "{}", again.stderr);

    // Human status: a table with both.
    let human = node.ctl_ok(&["status"]);
    assert!(human.contains("present.bin") && human.contains("absent.bin") && human.contains("seeding"), "{human}");
    // One torrent by name and by prefix.
    assert!(node.ctl_ok(&["status", "present.bin"]).contains(&h1[..12]));
    let one: serde_json::Value = serde_json::from_str(&node.ctl_ok(&["status", &h2[..8], "--json"])).unwrap();
    assert_eq!(one["torrents"].as_array().unwrap().len(), 1);
    // List: full hashes.
    let list = node.ctl_ok(&["list"]);
    assert!(list.contains(&h1) && list.contains(&h2), "{list}");

    // Remove by name; it is gone from status and from torrents/.
    let out = node.ctl_ok(&["remove", "absent.bin"]);
    assert!(out.contains("removed absent.bin"), "{out}");
    assert!(node.torrent(&h2).is_none());
    assert!(!node.torrents().join(format!("{h2}.yaml")).exists());
    let missing = node.ctl(&["status", &h2]);
    assert_eq!(missing.code, 5, "unknown ID exits 5: {missing:?}");
    assert!(missing.stderr.contains("no torrent matches"), "{}", missing.stderr);
}

#[test]
fn status_json_has_the_documented_fields() {
    let mut node = Node::new();
    node.start();
    random_file(&node.root.path().join("f.bin"), 50_000, 3);
    let desc = create_descriptor(&node.root.path().join("f.bin"), &node.root.path().join("f.desc"), &[]);
    let h = node.add(&desc);
    node.wait_state(&h, "leeching");
    let s = node.status();
    assert_eq!(s["version"], 1);
    for key in ["node_id", "listen", "routing_table_size", "rpc", "torrents", "state_warnings", "pid"] {
        assert!(s["node"].get(key).is_some(), "node.{key} missing: {s}");
    }
    assert_eq!(s["node"]["listen"], node.addr());
    let t = &s["torrents"][0];
    for key in [
        "info_hash",
        "name",
        "state",
        "length",
        "bytes_done",
        "pieces_done",
        "pieces_total",
        "peers",
        "download_rate",
        "upload_rate",
        "error",
    ] {
        assert!(t.get(key).is_some(), "torrents[].{key} missing: {t}");
    }
    assert_eq!(t["length"], 50_000);
}

#[test]
fn ambiguous_and_unknown_ids() {
    let mut node = Node::new();
    node.start();
    let mut hashes = Vec::new();
    for i in 0..12 {
        let f = node.root.path().join(format!("f{i}.bin"));
        random_file(&f, 20_000, 100 + i);
        hashes.push(node.add(&create_descriptor(&f, &node.root.path().join(format!("f{i}.desc")), &[])));
    }
    // With 12 torrents, some single hex digit prefix is shared by two of them.
    let digit = (0..16)
        .map(|d| format!("{d:x}"))
        .find(|d| hashes.iter().filter(|h| h.starts_with(d.as_str())).count() >= 2)
        .expect("pigeonhole");
    let r = node.ctl(&["remove", &digit]);
    assert_eq!(r.code, 5, "{r:?}");
    assert!(r.stderr.contains("matches") && r.stderr.contains("give more digits"), "{}", r.stderr);
    assert_eq!(node.status()["torrents"].as_array().unwrap().len(), 12, "nothing removed");
}

#[test]
fn remove_delete_data_deletes_only_that_torrent() {
    let mut node = Node::new();
    node.start();
    let src = node.root.path().join("src");
    random_file(&src.join("tree/a.bin"), 70_000, 4);
    random_file(&src.join("tree/sub/b.bin"), 30_000, 5);
    random_file(&src.join("other.bin"), 40_000, 6);
    let tree_desc = create_descriptor(&src.join("tree"), &node.root.path().join("tree.desc"), &[]);
    let other_desc = create_descriptor(&src.join("other.bin"), &node.root.path().join("other.desc"), &[]);
    std::fs::create_dir_all(node.data()).unwrap();
    copy_tree(&src.join("tree"), &node.data().join("tree"));
    std::fs::copy(src.join("other.bin"), node.data().join("other.bin")).unwrap();
    std::fs::write(node.data().join("tree/operator-notes.txt"), b"not part of the torrent").unwrap();
    let tree = node.add(&tree_desc);
    let other = node.add(&other_desc);
    node.wait_state(&tree, "seeding");
    node.wait_state(&other, "seeding");

    let out = node.ctl_ok(&["remove", &tree, "--delete-data"]);
    assert!(out.contains("deleted its data"), "{out}");
    assert!(!node.data().join("tree/a.bin").exists());
    assert!(!node.data().join("tree/sub").exists());
    assert!(node.data().join("tree/operator-notes.txt").exists(), "files outside the descriptor are kept");
    assert!(node.data().join("other.bin").exists(), "other torrents keep their data");
    assert_eq!(node.torrent(&other).unwrap()["state"], "seeding");
    assert!(!node.state().join(format!("resume/{tree}.state")).exists(), "removed torrent's state is gone");
}

#[test]
fn verify_rechecks_and_notices_damage() {
    let mut node = Node::new();
    node.start();
    let f = node.root.path().join("f.bin");
    random_file(&f, 600_000, 7);
    let desc = create_descriptor(&f, &node.root.path().join("f.desc"), &["--piece-size", "64K"]);
    std::fs::create_dir_all(node.data()).unwrap();
    std::fs::copy(&f, node.data().join("f.bin")).unwrap();
    let h = node.add(&desc);
    node.wait_state(&h, "seeding");

    // Damage one byte behind the daemon's back, then ask for a full recheck.
    let mut bytes = std::fs::read(node.data().join("f.bin")).unwrap();
    bytes[200_000] ^= 0xff;
    std::fs::write(node.data().join("f.bin"), &bytes).unwrap();
    assert!(node.ctl_ok(&["verify", &h]).contains("verifying"));
    let t = eventually(PATIENCE, "verify to find the damaged piece", || {
        node.torrent(&h).filter(|t| t["state"] == "leeching")
    });
    assert_eq!(t["pieces_done"].as_u64().unwrap(), t["pieces_total"].as_u64().unwrap() - 1);
    assert!(!node.data().join("f.bin").exists(), "incomplete content leaves its final name");
    assert!(node.data().join("f.bin.part").exists());
}

#[test]
fn p2pctl_against_a_stopped_daemon_names_the_socket() {
    let node = Node::new();
    let r = node.ctl(&["status"]);
    assert_eq!(r.code, 3, "{r:?}");
    let line = r.stderr.trim();
    assert!(!line.contains('\n'), "one line: {line}");
    assert!(line.contains(node.socket().to_str().unwrap()), "names the socket: {line}");
    assert!(line.contains("p2pd is not running") && line.contains("systemctl start p2pd"), "{line}");
}

#[test]
fn sigterm_flushes_state_removes_socket_and_exits_zero() {
    let mut node = Node::new();
    node.start();
    let f = node.root.path().join("f.bin");
    random_file(&f, 100_000, 8);
    std::fs::create_dir_all(node.data()).unwrap();
    std::fs::copy(&f, node.data().join("f.bin")).unwrap();
    let h = node.add(&create_descriptor(&f, &node.root.path().join("f.desc"), &[]));
    node.wait_state(&h, "seeding");
    assert_eq!(node.stop(), 0);
    assert!(!node.socket().exists(), "socket removed");
    assert!(node.state().join(format!("resume/{h}.state")).exists());
    assert!(node.log().contains("stopped"));
}

/// Raw protocol abuse: oversized, garbage and never-finishing requests get an error or a
/// timeout, and never block an honest client.
#[test]
fn broken_clients_do_not_block_others() {
    let mut node = Node::new();
    node.start();
    let socket = node.socket();

    // A client that connects and never sends anything.
    let _silent = UnixStream::connect(&socket).unwrap();
    // A client that announces a huge request and stalls after a few bytes.
    let mut stalled = UnixStream::connect(&socket).unwrap();
    stalled.write_all(&(1u32 << 20).to_be_bytes()).unwrap();
    stalled.write_all(b"{\"version\":1").unwrap();

    // Honest clients are still served promptly.
    for _ in 0..5 {
        node.ctl_ok(&["status"]);
    }

    // Oversized length prefix: rejected without reading 4 GiB.
    let mut big = UnixStream::connect(&socket).unwrap();
    big.write_all(&u32::MAX.to_be_bytes()).unwrap();
    let reply = read_reply(&mut big);
    assert!(reply.contains("bad_request") && reply.contains("exceeds the limit"), "{reply}");

    // Garbage JSON.
    let mut garbage = UnixStream::connect(&socket).unwrap();
    garbage.write_all(&5u32.to_be_bytes()).unwrap();
    garbage.write_all(b"{{{{{").unwrap();
    assert!(read_reply(&mut garbage).contains("bad_request"));

    // Another protocol version.
    let body = br#"{"version":99,"request":{"type":"status","id":null}}"#;
    let mut other = UnixStream::connect(&socket).unwrap();
    other.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
    other.write_all(body).unwrap();
    let reply = read_reply(&mut other);
    assert!(reply.contains("\"version\"") && reply.contains("99"), "{reply}");

    // Hundreds of concurrent clients are all answered.
    let handles: Vec<_> = (0..200)
        .map(|_| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let body = br#"{"version":1,"request":{"type":"status","id":null}}"#;
                let mut s = UnixStream::connect(&socket).unwrap();
                s.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
                s.write_all(body).unwrap();
                read_reply(&mut s)
            })
        })
        .collect();
    for h in handles {
        assert!(h.join().unwrap().contains("\"type\":\"status\""));
    }
    assert!(node.ctl(&["status"]).code == 0);
}

fn read_reply(s: &mut UnixStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut header = [0u8; 4];
    s.read_exact(&mut header).expect("reply header");
    let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
    s.read_exact(&mut body).expect("reply body");
    String::from_utf8(body).unwrap()
}
