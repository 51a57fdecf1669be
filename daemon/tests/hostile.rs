//! Hostile input on the peer port and the control socket: limits hold, memory and file
//! descriptors stay bounded, and honest work goes on.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

use common::*;
use p2pd::descriptor::InfoHash;
use p2pd::node_id::NodeId;
use p2pd::swarm::listener::MAX_PENDING_HANDSHAKES;
use p2pd::swarm::wire::{self, Handshake, Message};

/// A TCP connection to `to` from the loopback address `from` (another "host" on lo).
fn connect_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let SocketAddr::V4(dst) = to else { panic!("IPv4 only") };
    let src: std::net::Ipv4Addr = from.parse().unwrap();
    let sockaddr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor this function owns, with valid, correctly
    // sized address structures; the descriptor is closed on every error path (by TcpStream).
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let a = sockaddr(src, 0);
        if libc::bind(fd, (&a as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let b = sockaddr(*dst.ip(), dst.port());
        if libc::connect(fd, (&b as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// Whether the peer closes the connection within `limit` (reading and discarding).
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

/// Connections from `from` to `to`, each made non-blocking so that [`closed_now`] can look at
/// it without waiting.
fn idle_connections(from: &str, to: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let s = connect_from(from, to).expect("connect");
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect()
}

/// Whether the daemon has closed `s` (a FIN or a reset arrived), looked at without waiting.
/// `s` is non-blocking and the daemon never sends on it.
fn closed_now(s: &TcpStream) -> bool {
    match s.peek(&mut [0u8; 1]) {
        Ok(n) => n == 0,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// The (local) addresses of the connections in `conns` the daemon has closed.
fn closed(conns: &[TcpStream]) -> BTreeSet<SocketAddr> {
    conns.iter().filter(|s| closed_now(s)).map(|s| s.local_addr().unwrap()).collect()
}

/// The addresses of the connections that the log says the peer port closed with `reason`
/// (`peer port: ADDRESS: REASON`).
fn logged(log: &str, reason: &str) -> BTreeSet<SocketAddr> {
    log.lines()
        .filter_map(|l| l.split_once("peer port: ")?.1.split_once(": ").filter(|(_, why)| why.contains(reason)))
        .filter_map(|(addr, _)| addr.parse().ok())
        .collect()
}

fn fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// Idle connections from one address beyond the per-IP cap are closed at once; each protocol
/// violation after a valid handshake closes its connection with its own reason in the log; an
/// honest leecher downloads meanwhile.
///
/// To see it fail: in `Registry::take_slot` (daemon/src/swarm/listener.rs) compare with
/// `usize::MAX` instead of `max`, and all 100 idle connections stay open until the handshake
/// timeout closes them together; make a violation (e.g. the out-of-range `have` in
/// `PeerState::have`, daemon/src/swarm/connection/peer_state.rs) pass instead of returning a
/// `Violation`, and its reason is missing from the log.
#[test]
fn hostile_peers_do_not_stop_an_honest_transfer() {
    let mut seed = Node::with_config("limits:\n  upload_rate: 8MiB\n");
    seed.start();
    let src = seed.root.path().join("src/h.bin");
    let bytes = random_file(&src, 12 << 20, 21);
    let desc = create_descriptor(&src, &seed.root.path().join("h.desc"), &["--bootstrap", &seed.addr()]);
    std::fs::create_dir_all(seed.data()).unwrap();
    std::fs::copy(&src, seed.data().join("h.bin")).unwrap();
    let hash = seed.add(&desc);
    seed.wait_state(&hash, "seeding");
    let info_hash = InfoHash(hex::decode(&hash).unwrap().try_into().unwrap());
    let target: SocketAddr = seed.addr().parse().unwrap();
    let baseline = fds(seed.pid());

    // 1. Connections that never send a handshake, from one address: the per-IP cap (32) are
    //    held; the other 68 are closed at once, each logged with that reason. All are looked
    //    at together, without waiting, long before the handshake timeout (10 s) would close
    //    the 32 too: without the cap none is closed until then, and then all 100 are.
    let idle = idle_connections("127.0.0.2", target, 100);
    let refused = eventually(PATIENCE, "connections beyond the per-IP cap to be closed", || {
        Some(closed(&idle)).filter(|c| c.len() >= 100 - 32)
    });
    assert_eq!(refused.len(), 100 - 32, "of 100 idle connections from one address, the cap (32) stay open");
    let why = logged(&seed.log(), "too many connections from this address");
    assert_eq!(why, refused, "the connections closed are those logged as beyond the per-IP cap");

    // 2. Valid handshakes followed by protocol violations: each connection is closed.
    let hs = |port| Handshake { info_hash, node_id: NodeId(rand::random()), listen_port: port, version: wire::VERSION };
    let mut oversized = wire::encode(&Message::KeepAlive);
    oversized[..4].copy_from_slice(&u32::MAX.to_be_bytes());
    // Each with the reason the seed must give for it (12 MiB in 256 KiB pieces: 48 pieces).
    let violations: Vec<(&str, Vec<u8>, &str)> = vec![
        ("oversized length", oversized, "KeepAlive message with a body of 4294967294 bytes"),
        ("unknown type", vec![0, 0, 0, 1, 0x7f], "unknown message type 0x7f"),
        ("have out of range", wire::encode(&Message::Have(1_000_000)), "have for piece 1000000 of 48"),
        (
            "request out of range",
            wire::encode(&Message::Request(wire::BlockRef { piece: 1 << 30, offset: 0, length: 16384 })),
            "request for piece 1073741824 of 48",
        ),
        (
            "request too long",
            wire::encode(&Message::Request(wire::BlockRef { piece: 0, offset: 0, length: 1 << 24 })),
            "request for 16777216 bytes at 0 of piece 0 (262144 bytes long)",
        ),
        (
            "bitfield of the wrong length",
            wire::encode(&Message::Bitfield(vec![0xff; 3000])),
            "bitfield: bitfield has 3000 bytes, 6 expected",
        ),
    ];
    for (i, (what, frame, reason)) in violations.iter().enumerate() {
        let mut s = connect_from("127.0.0.3", target).unwrap();
        let port = 20000 + i as u16;
        s.write_all(&wire::encode_handshake(&hs(port))).unwrap();
        s.write_all(frame).unwrap();
        assert!(closed_within(&mut s, Duration::from_secs(5)), "{what}: the connection stayed open");
        // This connection (known by the port its handshake gave), this reason.
        let expected = format!("127.0.0.3:{port} broke the protocol: {reason}");
        eventually(PATIENCE, &format!("{what}: the log line \"{expected}\""), || {
            seed.log().lines().any(|l| l.contains(&expected)).then_some(())
        });
    }

    // 3. An honest leecher, while the idle connections are still held.
    let mut leecher = Node::new();
    leecher.start();
    leecher.add(&desc);
    let mut peak_fds = 0;
    let mut peak_rss = 0;
    eventually(PATIENCE, "the honest download", || {
        peak_fds = peak_fds.max(fds(seed.pid()));
        peak_rss = peak_rss.max(rss_kib(seed.pid()));
        leecher.torrent(&hash).filter(|t| t["state"] == "seeding")
    });
    assert_eq!(std::fs::read(leecher.data().join("h.bin")).unwrap(), bytes);
    eprintln!("seed: {baseline} fds before, {peak_fds} at most during the attack; peak RSS {peak_rss} KiB");
    assert!(peak_fds <= baseline + 32 + 8, "fds grew from {baseline} to {peak_fds}");
    assert!(peak_rss < 150 << 10, "RSS reached {peak_rss} KiB");
    drop(idle);
    eventually(PATIENCE, "descriptors to be released", || (fds(seed.pid()) <= baseline + 4).then_some(()));
}

/// Hundreds of concurrent control clients are all answered; clients that send an oversized
/// length or never finish a request block nobody.
#[test]
fn hundreds_of_concurrent_control_clients() {
    use std::os::unix::net::UnixStream;
    let mut node = Node::new();
    node.start();
    let socket = node.socket();
    // Stuck clients first: one announcing a huge request, several sending half a header.
    let mut huge = UnixStream::connect(&socket).unwrap();
    huge.write_all(&u32::MAX.to_be_bytes()).unwrap();
    let stuck: Vec<UnixStream> = (0..20)
        .map(|_| {
            let mut s = UnixStream::connect(&socket).unwrap();
            s.write_all(&[0, 0]).unwrap();
            s
        })
        .collect();
    let threads: Vec<_> = (0..300)
        .map(|_| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(&socket)?;
                s.set_read_timeout(Some(Duration::from_secs(30)))?;
                let body = br#"{"version":1,"request":{"type":"status","id":null}}"#;
                s.write_all(&(body.len() as u32).to_be_bytes())?;
                s.write_all(body)?;
                let mut len = [0u8; 4];
                s.read_exact(&mut len)?;
                let mut reply = vec![0u8; u32::from_be_bytes(len) as usize];
                s.read_exact(&mut reply)?;
                Ok::<bool, std::io::Error>(String::from_utf8_lossy(&reply).contains("\"status\""))
            })
        })
        .collect();
    let answered = threads.into_iter().map(|t| t.join()).filter(|r| matches!(r, Ok(Ok(true)))).count();
    assert_eq!(answered, 300, "every concurrent client gets its status");
    // The huge one was refused with a reason, not read.
    huge.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reply = Vec::new();
    let _ = huge.read_to_end(&mut reply);
    assert!(String::from_utf8_lossy(&reply).contains("exceeds the limit"), "{}", String::from_utf8_lossy(&reply));
    drop(stuck);
    assert_eq!(node.ctl(&["status"]).code, 0);
}

/// Connections that never finish a handshake, from many addresses: at most 256 wait at once
/// (the rest are closed at once), and each is closed when its 10 s are up.
///
/// To see it fail: in `serve` (daemon/src/swarm/listener.rs) compare the pending count with
/// `usize::MAX` instead of `MAX_PENDING_HANDSHAKES`; then no connection is closed before the
/// timeout, which closes all 288.
#[test]
fn pending_handshakes_are_capped_across_addresses_and_time_out() {
    let mut node = Node::new();
    node.start();
    let target: SocketAddr = node.addr().parse().unwrap();
    let baseline = fds(node.pid());
    // 32 from each address: the per-IP cap (32) closes none of them.
    let conns: Vec<TcpStream> =
        (1..=9).flat_map(|host| idle_connections(&format!("127.0.1.{host}"), target, 32)).collect();
    // All are looked at together, without waiting, long before the handshake timeout (10 s):
    // without the cap none is closed until then, and then all 288 are.
    let refused = eventually(PATIENCE, "connections beyond the pending-handshake cap to be closed", || {
        Some(closed(&conns)).filter(|c| c.len() >= 9 * 32 - MAX_PENDING_HANDSHAKES)
    });
    assert_eq!(refused.len(), 9 * 32 - MAX_PENDING_HANDSHAKES, "{MAX_PENDING_HANDSHAKES} stay open, waiting");
    let log = node.log();
    let why = logged(&log, "too many handshakes pending");
    assert_eq!(why, refused, "the connections closed are those logged as beyond the pending-handshake cap");
    assert!(logged(&log, "too many connections from this address").is_empty(), "the per-IP cap closed some");
    // The handshake timeout closes the rest, each logged as such.
    eventually(PATIENCE, "idle connections to time out", || (closed(&conns).len() == conns.len()).then_some(()));
    let timed_out = logged(&node.log(), "no handshake within 10s");
    let held: BTreeSet<SocketAddr> =
        conns.iter().map(|s| s.local_addr().unwrap()).filter(|a| !refused.contains(a)).collect();
    assert_eq!(timed_out, held, "each connection held is closed by the handshake timeout");
    eventually(PATIENCE, "the descriptors to be released", || (fds(node.pid()) <= baseline + 1).then_some(()));
    assert_eq!(node.ctl(&["status"]).code, 0);
}

/// What a flooding connection saw.
#[derive(Debug)]
struct Flood {
    /// Bytes it managed to send before it was cut off (or gave up).
    sent: u64,
    /// Whether the daemon closed the connection.
    cut_off: bool,
}

/// A connection from `from` that has handshaken for `info_hash` and never reads: its receive
/// buffer is made small, so the daemon's writes to it block at once.
fn non_reader(from: &str, target: SocketAddr, info_hash: InfoHash) -> TcpStream {
    let mut s = connect_from(from, target).expect("connect");
    let small: libc::c_int = 4096;
    // SAFETY: setsockopt on a socket this function owns, with a pointer to a c_int and its size.
    unsafe {
        use std::os::fd::AsRawFd;
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&small as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    let hs = Handshake { info_hash, node_id: NodeId(rand::random()), listen_port: 20999, version: wire::VERSION };
    s.write_all(&wire::encode_handshake(&hs)).unwrap();
    s.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
    s
}

/// Reads a peer's handshake and frames until it unchokes us.
fn read_until_unchoked(s: &mut TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut hs = [0u8; wire::HANDSHAKE_LEN];
    s.read_exact(&mut hs).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).expect("read while waiting for an unchoke");
        assert!(n > 0, "closed before unchoking us");
        buf.extend_from_slice(&chunk[..n]);
        while let Ok(Some((msg, used))) = wire::decode(&buf) {
            buf.drain(..used);
            if msg == Message::Unchoke {
                return;
            }
        }
    }
}

/// Requests for every block of pieces `0..pieces`, each followed by an `interested`.
fn requests(pieces: u32, piece_len: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in 0..pieces {
        for offset in (0..piece_len).step_by(wire::BLOCK as usize) {
            let length = wire::BLOCK.min(piece_len - offset);
            out.extend(wire::encode(&Message::Request(wire::BlockRef { piece, offset, length })));
            out.extend(wire::encode(&Message::Interested));
        }
    }
    out
}

/// A peer that sends `interested` and requests for every block of every piece over and over
/// (and with `bitfields`, a bitfield before each round), for up to `limit`, and never reads.
fn flood(
    target: SocketAddr,
    info_hash: InfoHash,
    pieces: u32,
    piece_len: u32,
    bitfields: bool,
    limit: Duration,
) -> Flood {
    let mut s = non_reader("127.0.0.9", target, info_hash);
    let bitfield = wire::encode(&Message::Bitfield(vec![0; (pieces as usize).div_ceil(8)]));
    s.write_all(&bitfield).unwrap();
    let mut round = if bitfields { bitfield } else { Vec::new() };
    round.extend(wire::encode(&Message::Interested));
    round.extend(requests(pieces, piece_len));
    let start = Instant::now();
    let mut sent = 0u64;
    let mut at = 0;
    while start.elapsed() < limit {
        match s.write(&round[at..]) {
            Ok(0) => return Flood { sent, cut_off: true },
            Ok(n) => {
                sent += n as u64;
                at = (at + n) % round.len();
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return Flood { sent, cut_off: true },
        }
    }
    Flood { sent, cut_off: false }
}

/// Peers that will not read: four connections flood a seed with requests, `interested` and
/// bitfields, and one asks politely for 8 MiB and then never reads. Every one is cut off (the
/// flooders by their queue limits, the quiet one after `SEND_STALL`), the seed's memory stays
/// within the documented bound (docs/PROTOCOL.md, "Limits"), an honest leecher gets the
/// content meanwhile, and the seed still stops cleanly on SIGTERM.
#[test]
fn peers_that_flood_or_never_read_are_cut_off_and_memory_stays_bounded() {
    let mut seed = Node::new();
    seed.start();
    let src = seed.root.path().join("src/f.bin");
    let bytes = random_file(&src, 32 << 20, 31);
    let desc =
        create_descriptor(&src, &seed.root.path().join("f.desc"), &["--bootstrap", &seed.addr(), "--piece-size", "1M"]);
    std::fs::create_dir_all(seed.data()).unwrap();
    std::fs::copy(&src, seed.data().join("f.bin")).unwrap();
    let hash = seed.add(&desc);
    seed.wait_state(&hash, "seeding");
    let info_hash = InfoHash(hex::decode(&hash).unwrap().try_into().unwrap());
    let target: SocketAddr = seed.addr().parse().unwrap();
    let baseline = rss_kib(seed.pid());

    // The quiet one: a bitfield and interested; once unchoked, 64 blocks' worth of requests;
    // then it reads nothing more.
    let mut quiet = non_reader("127.0.0.10", target, info_hash);
    quiet.write_all(&wire::encode(&Message::Bitfield(vec![0; 4]))).unwrap();
    quiet.write_all(&wire::encode(&Message::Interested)).unwrap();
    read_until_unchoked(&mut quiet);
    quiet.write_all(&requests(8, 1 << 20)).unwrap();
    // Two flooders repeat their bitfield, two only requests and `interested`.
    const FLOODERS: usize = 4;
    let flooders: Vec<_> = (0..FLOODERS)
        .map(|i| std::thread::spawn(move || flood(target, info_hash, 32, 1 << 20, i % 2 == 0, Duration::from_secs(20))))
        .collect();
    let mut leecher = Node::new();
    leecher.start();
    leecher.add(&desc);
    let mut peak = baseline;
    while !flooders.iter().all(|f| f.is_finished()) {
        peak = peak.max(rss_kib(seed.pid()));
        std::thread::sleep(Duration::from_millis(10));
    }
    let floods: Vec<Flood> = flooders.into_iter().map(|f| f.join().unwrap()).collect();
    eventually(PATIENCE, "the honest download", || {
        peak = peak.max(rss_kib(seed.pid()));
        leecher.torrent(&hash).filter(|t| t["state"] == "seeding")
    });
    assert_eq!(std::fs::read(leecher.data().join("f.bin")).unwrap(), bytes);
    assert!(floods.iter().all(|f| f.cut_off), "every flooding connection is cut off: {floods:?}");
    let log = seed.log();
    let reasons: Vec<&str> =
        log.lines().filter(|l| l.contains("127.0.0.9") && l.contains("broke the protocol")).collect();
    assert!(reasons.len() >= FLOODERS, "each flooder is disconnected with a reason:\n{}", reasons.join("\n"));
    // The quiet one is cut off once it has not read for SEND_STALL.
    eventually(PATIENCE, "the peer that does not read to be disconnected", || {
        peak = peak.max(rss_kib(seed.pid()));
        seed.log().lines().any(|l| l.contains("127.0.0.10") && l.contains("has not read what we sent")).then_some(())
    });
    assert!(
        !peers(&seed, &hash).iter().any(|p| p["address"].as_str().is_some_and(|a| a.starts_with("127.0.0.10:"))),
        "the quiet non-reader is no longer connected"
    );
    drop(quiet);
    let grew = peak.saturating_sub(baseline);
    let flooded: u64 = floods.iter().map(|f| f.sent).sum();
    eprintln!(
        "flooded seed: RSS {baseline} KiB before, {peak} KiB at most (+{grew} KiB) while {FLOODERS} connections \
         sent {} KiB; reasons: {reasons:#?}",
        flooded >> 10
    );
    // The documented bound: MAX_CONNECTION_MEMORY per connection (no piece buffers: the seed
    // fetches nothing), plus 8 MiB for the honest transfer and the allocator's slack.
    let bound = ((FLOODERS + 1) * p2pd::swarm::connection::MAX_CONNECTION_MEMORY) as u64 / 1024 + (8 << 10);
    assert!(grew <= bound, "RSS grew by {grew} KiB, more than the bound of {bound} KiB");
    assert_eq!(seed.stop(), 0, "the flooded seed stops cleanly on SIGTERM");
}

/// A peer that connects to `target` from `from`, claims to be `claimed`, says it has every
/// piece, unchokes, and answers every request with garbage until it is disconnected.
/// Returns how many blocks it sent, or `None` when its handshake was not answered.
fn lie(from: &str, target: SocketAddr, info_hash: InfoHash, claimed: NodeId, pieces: usize) -> Option<u64> {
    let mut s = connect_from(from, target).expect("connect");
    s.write_all(&wire::encode_handshake(&Handshake {
        info_hash,
        node_id: claimed,
        listen_port: 20777,
        version: wire::VERSION,
    }))
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut hs = [0u8; wire::HANDSHAKE_LEN];
    s.read_exact(&mut hs).ok()?;
    let full = p2pd::bitfield::Bitfield::full(pieces).as_bytes().to_vec();
    s.write_all(&wire::encode(&Message::Bitfield(full))).ok()?;
    s.write_all(&wire::encode(&Message::Unchoke)).ok()?;
    let (mut buf, mut chunk, mut blocks) = (Vec::new(), [0u8; 65536], 0);
    let start = Instant::now();
    // Long enough for three bad pieces many times over; a test never waits on a liar forever.
    while start.elapsed() < PATIENCE / 2 {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return Some(blocks),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        while let Ok(Some((msg, used))) = wire::decode(&buf) {
            buf.drain(..used);
            if let Message::Request(r) = msg {
                let garbage = Message::Block { piece: r.piece, offset: r.offset, data: vec![0x5a; r.length as usize] };
                if s.write_all(&wire::encode(&garbage)).is_err() {
                    return Some(blocks);
                }
                blocks += 1;
            }
        }
    }
    Some(blocks)
}

/// Identity is the address, not the node id a peer claims. A liar claiming the seed's id
/// sends bad pieces: its address is banned, not the seed, which then delivers the content; the
/// liar is still refused under a new id; and a third address claiming the seed's id while the
/// seed is connected neither displaces it nor is refused for the claim (the first to claim an
/// id must not lock its owner out): it is a peer of its own, and gets itself banned.
#[test]
fn bans_and_duplicates_go_by_address_not_by_claimed_id() {
    // Slow enough that the seed is still sending when the third address arrives.
    let mut seed = Node::with_config("limits:\n  upload_rate: 256KiB\n");
    seed.start();
    let seed_id = NodeId(hex::decode(seed.status()["node"]["node_id"].as_str().unwrap()).unwrap().try_into().unwrap());
    let src = seed.root.path().join("src/b.bin");
    let bytes = random_file(&src, 4 << 20, 41);
    let desc = create_descriptor(
        &src,
        &seed.root.path().join("b.desc"),
        &["--bootstrap", &seed.addr(), "--piece-size", "64K"],
    );
    let pieces = 64;
    // The leecher joins first; the seed does not have the content yet.
    let mut leecher = Node::new();
    leecher.start();
    let hash = leecher.add(&desc);
    let info_hash = InfoHash(hex::decode(&hash).unwrap().try_into().unwrap());
    let target: SocketAddr = leecher.addr().parse().unwrap();
    leecher.wait_state(&hash, "leeching");

    // The liar, from its own address, claiming the seed's id: three bad pieces ban it.
    let sent = lie("127.0.0.20", target, info_hash, seed_id, pieces).expect("the liar is answered at first");
    assert!(sent >= 3, "the liar was asked for pieces ({sent} blocks sent)");
    let banned = eventually(PATIENCE, "the liar's address to be banned", || {
        peers(&leecher, &hash).into_iter().find(|p| p["banned"] == true)
    });
    assert!(banned["address"].as_str().unwrap().starts_with("127.0.0.20:"), "{banned}");
    assert!(banned["strikes"].as_u64().unwrap() >= 3, "{banned}");
    // Under a new id, from the same address: not even answered.
    assert_eq!(lie("127.0.0.20", target, info_hash, NodeId(rand::random()), pieces), None, "a banned address returns");

    // The real seed, whose id the liar used, is not banned: it delivers everything.
    std::fs::create_dir_all(seed.data()).unwrap();
    std::fs::copy(&src, seed.data().join("b.bin")).unwrap();
    seed.add(&desc);
    let seed_peer = eventually(PATIENCE, "the seed to connect to the leecher", || {
        peers(&leecher, &hash).into_iter().find(|p| p["node_id"] == seed_id.to_hex() && p["connected"] == true)
    });
    assert_eq!(seed_peer["banned"], false, "{seed_peer}");
    // Another address claims the seed's id while it is connected: taken as a peer of its own,
    // banned for its pieces; the seed's connection stays.
    let log_before = leecher.log().len();
    let sent = lie("127.0.0.21", target, info_hash, seed_id, pieces).expect("a claimed id is no reason to refuse");
    assert!(sent >= 3, "the second liar was asked for pieces ({sent} blocks sent)");
    assert!(leecher.log().contains("claims the node id of"), "the claim is logged");
    eventually(PATIENCE, "the second liar's address to be banned", || {
        peers(&leecher, &hash)
            .into_iter()
            .find(|p| p["banned"] == true && p["address"].as_str().is_some_and(|a| a.starts_with("127.0.0.21:")))
    });
    let still = peers(&leecher, &hash).into_iter().find(|p| p["address"] == seed_peer["address"]).unwrap();
    assert_eq!(still["connected"], true, "the seed was displaced: {still}");
    let since = leecher.log()[log_before..].to_string();
    assert!(!since.contains("replaced by a connection"), "a connection was replaced:\n{since}");
    leecher.wait_state(&hash, "seeding");
    assert_eq!(std::fs::read(leecher.data().join("b.bin")).unwrap(), bytes);
    let address = seed_peer["address"].as_str().unwrap().to_string();
    assert!(
        !peers(&leecher, &hash).iter().any(|p| p["address"] == address.as_str() && p["banned"] == true),
        "the seed was never banned"
    );
}

/// A peer that keeps a seed's socket full of keep-alives: each is read from memory without a
/// wait, so a reader that never gave up its turn held the one network thread for as long as
/// the flood lasted — the control socket, discovery and every other torrent with it. Status
/// must still be answered while the flood goes on.
#[test]
fn a_peer_that_floods_keepalives_does_not_hold_up_the_daemon() {
    let mut seed = Node::new();
    seed.start();
    let src = seed.root.path().join("src/k.bin");
    random_file(&src, 1 << 20, 41);
    let desc = create_descriptor(&src, &seed.root.path().join("k.desc"), &["--bootstrap", &seed.addr()]);
    std::fs::create_dir_all(seed.data()).unwrap();
    std::fs::copy(&src, seed.data().join("k.bin")).unwrap();
    let hash = seed.add(&desc);
    seed.wait_state(&hash, "seeding");
    let info_hash = InfoHash(hex::decode(&hash).unwrap().try_into().unwrap());
    let target: SocketAddr = seed.addr().parse().unwrap();

    let stop = std::sync::atomic::AtomicBool::new(false);
    let seed = &seed;
    std::thread::scope(|scope| {
        let flooder = scope.spawn(|| {
            let mut s = connect_from("127.0.0.11", target).expect("connect");
            let hs =
                Handshake { info_hash, node_id: NodeId(rand::random()), listen_port: 20998, version: wire::VERSION };
            s.write_all(&wire::encode_handshake(&hs)).unwrap();
            // A write that cannot go on for a second ends the flood (the seed closed or stopped).
            s.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
            let keepalives = wire::encode(&Message::KeepAlive).repeat(16 << 10);
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && s.write_all(&keepalives).is_ok() {
                sent += keepalives.len() as u64;
            }
            sent
        });
        std::thread::sleep(Duration::from_secs(1));
        let (tx, rx) = std::sync::mpsc::channel();
        scope.spawn(move || {
            for _ in 0..3 {
                let _ = tx.send(seed.ctl(&["status", "--json"]).code);
            }
        });
        // Generous: an answer within seconds, not a timing; a starved daemon answers none
        // until the flood ends.
        let answers: Vec<_> = (0..3).map(|_| rx.recv_timeout(Duration::from_secs(20))).collect();
        let flooding = !flooder.is_finished();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let sent = flooder.join().unwrap();
        eprintln!("keep-alive flood: {} MiB sent; status answers {answers:?}", sent >> 20);
        assert!(flooding, "the flood was still on when the answers came (it sent {sent} bytes)");
        assert!(answers.iter().all(|a| matches!(a, Ok(0))), "status during the flood: {answers:?}");
    });
}
