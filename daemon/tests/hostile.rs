//! Hostile input on the peer port and the control socket: limits hold, memory and file
//! descriptors stay bounded, and honest work goes on.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

use common::*;
use p2pd::descriptor::InfoHash;
use p2pd::node_id::NodeId;
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

fn fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

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

    // 1. Connections that never send a handshake, from one address: at most the per-IP cap
    //    (32) are held; the rest are closed at once.
    let mut idle: Vec<TcpStream> = (0..100).filter_map(|_| connect_from("127.0.0.2", target).ok()).collect();
    std::thread::sleep(Duration::from_millis(500));
    let refused = idle.iter_mut().map(|s| closed_within(s, Duration::from_millis(200))).filter(|c| *c).count();
    assert!(refused >= 100 - 32, "only {refused} of 100 idle connections from one address were closed");

    // 2. Valid handshakes followed by protocol violations: each connection is closed.
    let hs = |port| Handshake { info_hash, node_id: NodeId(rand::random()), listen_port: port };
    let mut oversized = wire::encode(&Message::KeepAlive);
    oversized[..4].copy_from_slice(&u32::MAX.to_be_bytes());
    let violations: Vec<(&str, Vec<u8>)> = vec![
        ("oversized length", oversized),
        ("unknown type", vec![0, 0, 0, 1, 0x7f]),
        ("have out of range", wire::encode(&Message::Have(1_000_000))),
        (
            "request out of range",
            wire::encode(&Message::Request(wire::BlockRef { piece: 1 << 30, offset: 0, length: 16384 })),
        ),
        ("request too long", wire::encode(&Message::Request(wire::BlockRef { piece: 0, offset: 0, length: 1 << 24 }))),
        ("bitfield of the wrong length", wire::encode(&Message::Bitfield(vec![0xff; 3000]))),
    ];
    for (i, (what, frame)) in violations.iter().enumerate() {
        let mut s = connect_from("127.0.0.3", target).unwrap();
        s.write_all(&wire::encode_handshake(&hs(20000 + i as u16))).unwrap();
        s.write_all(frame).unwrap();
        assert!(closed_within(&mut s, Duration::from_secs(5)), "{what}: the connection stayed open");
    }
    let log = seed.log();
    assert!(log.contains("bitfield") || log.contains("closing"), "violations are logged with a reason");

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

/// Connections that never finish a handshake, from many addresses: at most 256 wait at once,
/// and each is closed when its 10 s are up.
#[test]
fn pending_handshakes_are_capped_across_addresses_and_time_out() {
    let mut node = Node::new();
    node.start();
    let target: SocketAddr = node.addr().parse().unwrap();
    let baseline = fds(node.pid());
    let mut conns: Vec<TcpStream> = (1..=9)
        .flat_map(|host| (0..32).filter_map(move |_| connect_from(&format!("127.0.1.{host}"), target).ok()))
        .collect();
    assert_eq!(conns.len(), 9 * 32);
    std::thread::sleep(Duration::from_millis(500));
    let held = fds(node.pid()) - baseline;
    assert!(held <= 256 + 2, "{held} connections held waiting for a handshake");
    let closed = conns.iter_mut().map(|s| closed_within(s, Duration::from_millis(50))).filter(|c| *c).count();
    assert!(closed >= 9 * 32 - 256, "only {closed} connections beyond the cap were closed");
    // The handshake timeout closes the rest.
    eventually(PATIENCE, "idle connections to time out", || (fds(node.pid()) <= baseline + 1).then_some(()));
    assert_eq!(node.ctl(&["status"]).code, 0);
}
