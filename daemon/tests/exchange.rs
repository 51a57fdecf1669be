//! Peer exchange (the `peers` message, peer wire version 2) between real daemons on loopback,
//! with a hand-driven client where the test must see the exact bytes: a node without room
//! names its peers before it closes; connected peers are told about each other; a member
//! named only by exchange is dialled and serves pieces; a peer that sends `peers` too often is
//! cut off; a version-1 peer never receives `peers`.
//!
//! Each daemon listens on its own loopback address (127.0.0.x), as on separate hosts.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use p2pd::descriptor::InfoHash;
use p2pd::node_id::NodeId;
use p2pd::swarm::wire::{self, Handshake, Message};

/// Seeds `bytes` of random content on `seed` (started); returns the descriptor and the hash.
fn seed_content(seed: &Node, bytes: usize) -> (PathBuf, String, Vec<u8>) {
    let src = seed.data().join("x.bin");
    std::fs::create_dir_all(seed.data()).unwrap();
    let content = random_file(&src, bytes, 21);
    let desc = create_descriptor(
        &src,
        &seed.root.path().join("x.desc"),
        &["--bootstrap", &seed.addr(), "--piece-size", "256K"],
    );
    let hash = seed.add(&desc);
    seed.wait_state(&hash, "seeding");
    (desc, hash, content)
}

/// A hand-driven peer-wire client from `from_ip`.
struct RawPeer {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawPeer {
    /// Connects to `to` and sends a handshake of `version`; returns the client and the answer.
    fn connect(from_ip: &str, to: &str, info_hash: InfoHash, version: u8) -> (RawPeer, Handshake) {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket};
        use std::os::fd::AsRawFd;
        let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::empty(), None).unwrap();
        let local: std::net::SocketAddrV4 = format!("{from_ip}:0").parse().unwrap();
        bind(fd.as_raw_fd(), &SockaddrIn::from(local)).unwrap();
        let remote: std::net::SocketAddrV4 = to.parse().unwrap();
        connect(fd.as_raw_fd(), &SockaddrIn::from(remote)).unwrap();
        let mut stream = TcpStream::from(fd);
        stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let ours = Handshake { info_hash, node_id: NodeId(rand::random()), listen_port: 1, version };
        stream.write_all(&wire::encode_handshake(&ours)).unwrap();
        let mut answer = [0u8; wire::HANDSHAKE_LEN];
        stream.read_exact(&mut answer).unwrap();
        let theirs = wire::decode_handshake(&answer).unwrap();
        (RawPeer { stream, buf: Vec::new() }, theirs)
    }

    /// The next message, or `None` once the other side has closed.
    fn next(&mut self) -> Option<Message> {
        loop {
            if let Some((m, used)) = wire::decode(&self.buf).unwrap() {
                self.buf.drain(..used);
                return Some(m);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("reading from the daemon: {e}"),
            }
        }
    }

    /// Every message until the other side closes.
    fn rest(&mut self) -> Vec<Message> {
        std::iter::from_fn(|| self.next()).collect()
    }

    fn send(&mut self, m: &Message) -> std::io::Result<()> {
        self.stream.write_all(&wire::encode(m))
    }
}

fn sock(node: &Node) -> SocketAddr {
    node.addr().parse().unwrap()
}

fn connected_to(node: &Node, hash: &str, other: &Node) -> bool {
    peers(node, hash).iter().any(|p| p["address"] == other.addr().as_str() && p["connected"] == true)
}

/// A slow seed (its upload limited) with one leecher connected to it, downloading.
fn slow_seed_and_leecher(seed_config: &str) -> (Node, Node, PathBuf, String, Vec<u8>) {
    let mut seed = Node::listening_on("127.0.0.2", &format!("limits:\n  upload_rate: 512KiB\n{seed_config}"));
    seed.start();
    let (desc, hash, content) = seed_content(&seed, 8 << 20);
    let mut leecher = Node::listening_on("127.0.0.3", "");
    leecher.start();
    leecher.add(&desc);
    eventually(PATIENCE, "the leecher to connect to the seed", || connected_to(&seed, &hash, &leecher).then_some(()));
    (seed, leecher, desc, hash, content)
}

/// The fix for late joiners of a big swarm: a node without room for another peer still
/// answers the handshake, names the peers it is connected to, and then closes. A version-1
/// client gets the handshake and the close only. (To watch it fail: in `Engine::on_incoming`,
/// drop the `peers` frame from the answer.)
#[test]
fn a_node_without_room_names_its_peers_before_it_closes() {
    let (seed, leecher, desc, hash, _) = slow_seed_and_leecher("  max_peers_per_torrent: 1\n");
    let info_hash: InfoHash = hash.parse().unwrap();

    let refused = |n: &Node| n.status()["node"]["peer_connections"]["refused"].as_u64().unwrap();
    let before = refused(&seed);
    let (mut late, answer) = RawPeer::connect("127.0.0.4", &seed.addr(), info_hash, wire::VERSION);
    assert_eq!(answer.version, 2);
    assert_eq!(late.rest(), vec![Message::Peers(vec![sock(&leecher)])], "one peers message, then the close");

    let (mut old, answer) = RawPeer::connect("127.0.0.5", &seed.addr(), info_hash, 1);
    assert_eq!(answer.version, 1, "the lower version is agreed");
    assert_eq!(old.rest(), vec![], "nothing a version-1 peer does not know");
    assert_eq!(refused(&seed) - before, 2, "both were turned away");

    // A daemon that joins now is answered the same way by the full seed, and treats that as a
    // failed connect: it backs off (10 s, then 20 s) instead of dialling again every 5 s. Load
    // can only make it dial less often.
    let mut late_daemon = Node::listening_on("127.0.0.7", "");
    late_daemon.start();
    let from_seed = refused(&seed);
    late_daemon.add(&desc);
    std::thread::sleep(Duration::from_secs(14));
    let dials = refused(&seed) - from_seed;
    assert!((1..=2).contains(&dials), "the full seed was dialled {dials} times in 14 s");
}

/// Connected peers are told about each other: a client that connects to the leecher hears of
/// the seed; a client that sends `peers` twice in a row is cut off; a version-1 client hears
/// no `peers` at all.
#[test]
fn connected_peers_are_told_about_each_other_and_floods_are_cut_off() {
    let (seed, leecher, _desc, hash, _) = slow_seed_and_leecher("");
    let info_hash: InfoHash = hash.parse().unwrap();

    let (mut client, _) = RawPeer::connect("127.0.0.4", &leecher.addr(), info_hash, wire::VERSION);
    let told = loop {
        match client.next().expect("the leecher closed before naming its peers") {
            Message::Peers(addrs) => break addrs,
            _ => continue,
        }
    };
    assert_eq!(told, vec![sock(&seed)], "the leecher's one other peer");
    // Three back to back are allowed (frames queued behind a slow block arrive together); a
    // fourth within 2 s is a flood.
    let named = Message::Peers(vec!["127.0.0.9:9".parse().unwrap()]);
    for _ in 0..3 {
        client.send(&named).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(!leecher.log().contains("sent peers more often"), "a burst of three is allowed");
    let _ = client.send(&named);
    while client.next().is_some() {}
    eventually(PATIENCE, "the flood to be logged", || {
        leecher.log().contains("sent peers more often than every 2 s").then_some(())
    });

    let (mut old, answer) = RawPeer::connect("127.0.0.5", &leecher.addr(), info_hash, 1);
    assert_eq!(answer.version, 1);
    old.stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let started = std::time::Instant::now();
    // Long enough for two exchange turns (docs/PROTOCOL.md: one message per 5 s at most).
    while started.elapsed() < Duration::from_secs(11) {
        let mut chunk = [0u8; 4096];
        match old.stream.read(&mut chunk) {
            Ok(0) => panic!("the leecher closed the version-1 connection"),
            Ok(n) => old.buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => panic!("the version-1 connection failed: {e}"),
        }
        while let Some((m, used)) = wire::decode(&old.buf).unwrap() {
            old.buf.drain(..used);
            assert!(!matches!(m, Message::Peers(_)), "a version-1 peer was sent {m:?}");
        }
    }
    // And a version-1 peer that sends one anyway broke the protocol.
    old.send(&named).unwrap();
    eventually(PATIENCE, "the violation to be logged", || {
        leecher.log().contains("sent peers on a version-1 connection").then_some(())
    });
}

/// A member that discovery cannot name (a second seed whose descriptor names no reachable
/// bootstrap node) is named to the leecher by a connected peer; the leecher dials it and
/// downloads from it. (To watch it fail: make `Engine::on_exchanged` ignore what it gets.)
#[test]
fn a_member_named_only_by_peer_exchange_is_dialled_and_serves_pieces() {
    let (_seed, leecher, desc, hash, content) = slow_seed_and_leecher("");
    let info_hash: InfoHash = hash.parse().unwrap();

    let mut hidden = Node::listening_on("127.0.0.6", "");
    hidden.start();
    std::fs::create_dir_all(hidden.data()).unwrap();
    std::fs::write(hidden.data().join("x.bin"), &content).unwrap();
    let text = std::fs::read_to_string(&desc).unwrap();
    let unreachable = rewrite_bootstrap(&text, "127.0.0.1:9");
    let hidden_desc = hidden.root.path().join("x.desc");
    std::fs::write(&hidden_desc, unreachable).unwrap();
    hidden.ctl_ok(&["add", hidden_desc.to_str().unwrap(), "--adopt"]);
    hidden.wait_state(&hash, "seeding");

    let (mut client, _) = RawPeer::connect("127.0.0.4", &leecher.addr(), info_hash, wire::VERSION);
    client.send(&Message::Peers(vec![sock(&hidden)])).unwrap();
    // What the hidden member uploaded is its torrent's own counter (the leecher may complete
    // and close the connection before a poll sees it open).
    let from_hidden = eventually(PATIENCE, "the leecher to download from the member it was told of", || {
        hidden.torrent(&hash).and_then(|t| t["uploaded"].as_u64()).filter(|&u| u > 0)
    });
    eprintln!("the member named by exchange uploaded {from_hidden} bytes");
    let r = leecher.ctl(&["wait", &hash, "--timeout", "120"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(std::fs::read(leecher.data().join("x.bin")).unwrap(), content);
}

/// The descriptor text with its bootstrap list replaced by `addr`.
fn rewrite_bootstrap(text: &str, addr: &str) -> String {
    let mut out = String::new();
    let mut in_list = false;
    for line in text.lines() {
        if line.starts_with("bootstrap:") {
            out.push_str(&format!("bootstrap:\n  - \"{addr}\"\n"));
            in_list = true;
            continue;
        }
        if in_list && line.starts_with([' ', '-']) {
            continue;
        }
        in_list = false;
        out.push_str(line);
        out.push('\n');
    }
    assert!(out.contains(addr), "no bootstrap list in the descriptor:\n{text}");
    out
}
