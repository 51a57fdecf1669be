//! Test harness: real `p2pd` processes in temporary directories, driven by the real `p2pctl`
//! over the real control socket.
//!
//! Each [`Node`] owns a directory holding `cfg/` (with `p2pd.yaml` and `torrents/`), `state/`,
//! `data/` and `run/control.sock`. Its port is the daemon's to choose: the first start listens
//! on `127.0.0.1:0` and the harness reads the port the daemon got from `status --json`, then
//! writes it into p2pd.yaml so that restarts keep the address (a port picked by the test and
//! bound later by the daemon could be taken meanwhile by a test running in parallel). Dropping a
//! node SIGKILLs its daemon. Nothing here sleeps for a fixed time to "let things happen": every wait polls a
//! condition with a generous deadline and fails with the daemon's log.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod mount;
mod skip;
#[allow(unused_imports)]
pub use skip::{Need, on_path, require, skip};

/// Deadline for conditions that should hold within seconds on a healthy machine.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub fn p2pd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_p2pd"))
}

/// The p2pctl binary beside p2pd (built by `cargo test --workspace`; built here if missing).
pub fn p2pctl_bin() -> PathBuf {
    static BUILD: Once = Once::new();
    let path = p2pd_bin().with_file_name("p2pctl");
    BUILD.call_once(|| {
        if !path.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo).args(["build", "-q", "-p", "p2pctl"]).status().expect("run cargo");
            assert!(status.success(), "building p2pctl failed");
        }
    });
    path
}

/// A free port on 127.0.0.1 for both UDP and TCP (best effort: bound and released).
pub fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Polls `cond` until it returns `Some` or `limit` passes.
pub fn eventually<T>(limit: Duration, what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The result of one p2pctl run.
#[derive(Debug)]
pub struct Ctl {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Ctl {
    fn from(o: Output) -> Ctl {
        Ctl {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// One daemon with its own directories and port.
pub struct Node {
    pub root: tempfile::TempDir,
    /// The daemon's port: 0 until its first start.
    pub port: u16,
    /// The host part of `listen`: `127.0.0.1` unless made with [`Node::listening_on`].
    listen_host: String,
    pub child: Option<Child>,
    /// Extra lines for p2pd.yaml.
    extra_config: String,
    /// Run the daemon inside this network namespace.
    pub netns: Option<String>,
    /// Extra environment for the daemon.
    pub env: Vec<(String, String)>,
}

impl Node {
    pub fn new() -> Node {
        Node::with_config("")
    }

    /// A node whose p2pd.yaml also holds `extra` (YAML lines).
    pub fn with_config(extra: &str) -> Node {
        let root = tempfile::Builder::new().prefix("p2pd-test-").tempdir().expect("tempdir");
        let node = Node {
            root,
            port: 0,
            listen_host: "127.0.0.1".into(),
            child: None,
            extra_config: extra.to_string(),
            netns: None,
            env: Vec::new(),
        };
        std::fs::create_dir_all(node.cfg()).unwrap();
        node.write_config(extra);
        node
    }

    pub fn cfg(&self) -> PathBuf {
        self.root.path().join("cfg")
    }
    pub fn state(&self) -> PathBuf {
        self.root.path().join("state")
    }
    pub fn data(&self) -> PathBuf {
        self.root.path().join("data")
    }
    pub fn socket(&self) -> PathBuf {
        self.root.path().join("run/control.sock")
    }
    pub fn torrents(&self) -> PathBuf {
        self.cfg().join("torrents")
    }
    pub fn log_path(&self) -> PathBuf {
        self.root.path().join("p2pd.log")
    }
    /// A node listening on `host` (`[::1]`, or `[::]` for both IPv6 and IPv4), p2pd.yaml also
    /// holding `extra`.
    pub fn listening_on(host: &str, extra: &str) -> Node {
        let mut node = Node::with_config(extra);
        node.listen_host = host.to_string();
        node.write_config(extra);
        node
    }

    /// The daemon's address (after its first start: the daemon chooses the port); for a node
    /// listening on every address, its loopback one.
    pub fn addr(&self) -> String {
        assert_ne!(self.port, 0, "addr() of a node that has not started yet: the daemon chooses its port");
        let host = match self.listen_host.as_str() {
            "[::]" => "[::1]",
            "0.0.0.0" => "127.0.0.1",
            other => other,
        };
        format!("{host}:{}", self.port)
    }

    /// (Re)writes p2pd.yaml with this node's paths plus `extra`.
    pub fn write_config(&self, extra: &str) {
        let text = format!(
            "{}\nstate_dir: {}\ndata_dir: {}\ncontrol_socket: {}\nlog_level: debug\n{extra}",
            self.listen_line(self.port),
            self.state().display(),
            self.data().display(),
            self.socket().display()
        );
        std::fs::write(self.cfg().join("p2pd.yaml"), text).unwrap();
    }

    /// Starts p2pd and waits until it answers on its socket.
    pub fn start(&mut self) {
        self.spawn();
        let socket = self.socket();
        eventually(PATIENCE, "p2pd to answer on its control socket", || {
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("p2pd exited during start-up with {status}:\n{}", self.log());
            }
            (socket.exists() && self.ctl(&["status"]).code == 0).then_some(())
        });
        if self.port == 0 {
            self.pin_port();
        }
    }

    /// The `listen:` line of p2pd.yaml for `port` (IPv6 addresses quoted: `[` starts a YAML list).
    fn listen_line(&self, port: u16) -> String {
        match self.listen_host.starts_with('[') {
            true => format!("listen: \"{}:{port}\"", self.listen_host),
            false => format!("listen: {}:{port}", self.listen_host),
        }
    }

    /// Learns the port the daemon chose and writes it into p2pd.yaml in place of port 0.
    fn pin_port(&mut self) {
        let listen = self.status()["node"]["listen"].as_str().map(str::to_string).unwrap_or_default();
        let addr: std::net::SocketAddr =
            listen.parse().unwrap_or_else(|e| panic!("status node.listen {listen:?}: {e}"));
        self.port = addr.port();
        let path = self.cfg().join("p2pd.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let pinned =
            text.replacen(&format!("{}\n", self.listen_line(0)), &format!("{}\n", self.listen_line(self.port)), 1);
        std::fs::write(&path, pinned).unwrap();
    }

    /// Starts p2pd without waiting.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "daemon already running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(p2pd_bin());
                c
            }
            None => Command::new(p2pd_bin()),
        };
        let child = command
            .arg("--config-dir")
            .arg(self.cfg())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn p2pd");
        self.child = Some(child);
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("daemon running").id() as i32
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).expect("kill");
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM; returns the exit code.
    pub fn stop(&mut self) -> i32 {
        let mut child = self.child.take().expect("daemon running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)
            .expect("kill");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(start.elapsed() < PATIENCE, "p2pd did not stop on SIGTERM:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the daemon to exit on its own; returns its exit code.
    pub fn wait_exit(&mut self) -> i32 {
        let mut child = self.child.take().expect("daemon running");
        child.wait().unwrap().code().unwrap_or(-1)
    }

    /// Waits (`p2pctl wait`, up to two minutes) until the torrent is complete and verified.
    pub fn wait_complete(&self, hash: &str) {
        let r = self.ctl(&["wait", hash, "--timeout", "120"]);
        assert_eq!(r.code, 0, "wait failed: {r:?}\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Runs p2pctl against this node.
    pub fn ctl(&self, args: &[&str]) -> Ctl {
        Command::new(p2pctl_bin())
            .arg("--config-dir")
            .arg(self.cfg())
            .args(args)
            .env_remove("P2PD_SOCKET")
            .stdin(Stdio::null())
            .output()
            .expect("run p2pctl")
            .into()
    }

    /// Runs p2pctl and asserts success; returns stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let r = self.ctl(args);
        assert_eq!(r.code, 0, "p2pctl {args:?} failed: {}{}\n--- daemon log ---\n{}", r.stdout, r.stderr, self.log());
        r.stdout
    }

    pub fn status(&self) -> Value {
        serde_json::from_str(&self.ctl_ok(&["status", "--json"])).expect("status JSON")
    }

    /// The status entry of one torrent (by info hash).
    pub fn torrent(&self, hash: &str) -> Option<Value> {
        self.status()["torrents"].as_array()?.iter().find(|t| t["info_hash"] == hash).cloned()
    }

    /// Waits until the torrent reaches `state`.
    pub fn wait_state(&self, hash: &str, state: &str) -> Value {
        eventually(PATIENCE, &format!("torrent {} to be {state}", &hash[..12]), || {
            self.torrent(hash).filter(|t| t["state"] == state)
        })
    }

    /// Adds a descriptor; returns the info hash.
    pub fn add(&self, desc: &Path) -> String {
        self.ctl_ok(&["add", desc.to_str().unwrap()]).trim().to_string()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- p2pd log of node on port {} ---\n{}", self.port, self.log());
        }
    }
}

/// Writes `len` pseudo-random bytes (seeded) to `path`.
pub fn random_file(path: &Path, len: usize, seed: u64) -> Vec<u8> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut bytes = vec![0u8; len];
    rng.fill_bytes(&mut bytes);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, &bytes).unwrap();
    bytes
}

/// Runs `p2pctl create` (no daemon needed); returns the descriptor path.
pub fn create_descriptor(source: &Path, out: &Path, extra: &[&str]) -> PathBuf {
    let o = Command::new(p2pctl_bin())
        .arg("create")
        .arg(source)
        .arg("-o")
        .arg(out)
        .args(extra)
        .output()
        .expect("p2pctl create");
    assert!(o.status.success(), "create failed: {}", String::from_utf8_lossy(&o.stderr));
    out.to_path_buf()
}

/// Files and directories below `dir`, relative, sorted (for "nothing left behind" checks).
pub fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A hand-driven discovery endpoint speaking the real wire format, for tests that play an
/// honest client, an attacker or a victim.
pub struct RawNode {
    pub socket: std::net::UdpSocket,
    pub id: p2pd::node_id::NodeId,
}

impl RawNode {
    /// Binds `ip` (e.g. "127.0.0.2") on a free port.
    pub fn bind(ip: &str) -> RawNode {
        let socket = std::net::UdpSocket::bind((ip, 0)).expect("bind raw node");
        socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        RawNode { socket, id: p2pd::node_id::NodeId(rand::random()) }
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.socket.local_addr().unwrap()
    }

    pub fn send(&self, to: &str, txid: u32, body: p2pd::discovery::wire::Body) -> usize {
        let bytes = p2pd::discovery::wire::encode(&p2pd::discovery::wire::Packet { txid, sender: self.id, body });
        self.socket.send_to(&bytes, to).unwrap()
    }

    /// The next datagram within the read timeout.
    pub fn recv(&self) -> Option<(p2pd::discovery::wire::Packet, usize)> {
        let mut buf = [0u8; 2048];
        let (n, _) = self.socket.recv_from(&mut buf).ok()?;
        Some((p2pd::discovery::wire::decode(&buf[..n]).expect("daemon sent a valid datagram"), n))
    }

    /// Pings `to` and returns the token from its pong.
    pub fn token(&self, to: &str) -> p2pd::discovery::wire::Token {
        use p2pd::discovery::wire::Body;
        for attempt in 0..20u32 {
            self.send(to, 1000 + attempt, Body::Ping);
            while let Some((p, _)) = self.recv() {
                if let Body::Pong { token, .. } = p.body {
                    return token;
                }
            }
        }
        panic!("no pong from {to}");
    }
}

/// One framed request on `node`'s control socket (docs/CONTROL.md), bypassing p2pctl and its
/// checks; the reply.
pub fn raw_request(node: &Node, body: &[u8]) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(node.socket()).unwrap();
    s.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut reply = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut reply).unwrap();
    serde_json::from_slice(&reply).unwrap()
}

/// Discovery counters of a node.
pub fn rpc(node: &Node) -> serde_json::Value {
    node.status()["node"]["rpc"].clone()
}

/// The peers of a swarm as `p2pctl peers --json` lists them.
pub fn peers(node: &Node, hash: &str) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(&node.ctl_ok(&["peers", hash, "--json"])).unwrap();
    v["peers"].as_array().cloned().unwrap_or_default()
}

/// A network namespace this test made (with loopback up), deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Netns {
        let name = format!("p2pdt{}", rand::random::<u32>() % 1_000_000);
        let ok = Command::new("ip").args(["netns", "add", &name]).status().map(|s| s.success()).unwrap_or(false);
        assert!(ok, "ip netns add {name}");
        let ns = Netns { name };
        ns.run(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Runs a command inside the namespace; panics if it fails.
    pub fn run(&self, args: &[&str]) {
        let out = self.output_status(args);
        assert!(out.0, "{args:?} in {}: {}", self.name, out.1);
    }

    /// Runs a command inside the namespace and returns its stdout.
    pub fn output(&self, args: &[&str]) -> String {
        self.output_status(args).1
    }

    fn output_status(&self, args: &[&str]) -> (bool, String) {
        let o = Command::new("ip").args(["netns", "exec", &self.name]).args(args).output().expect("ip netns exec");
        (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

impl RawNode {
    /// Wraps an already bound UDP socket.
    pub fn from_socket(socket: std::net::UdpSocket) -> RawNode {
        socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        RawNode { socket, id: p2pd::node_id::NodeId(rand::random()) }
    }

    /// Announces this endpoint as a member of a swarm to the node at `to`.
    pub fn announce(&self, to: &str, info_hash: p2pd::descriptor::InfoHash, status: p2pd::discovery::wire::PeerStatus) {
        use p2pd::discovery::wire::Body;
        let token = self.token(to);
        for attempt in 0..20u32 {
            self.send(to, 5000 + attempt, Body::Announce { info_hash, status, token });
            while let Some((p, _)) = self.recv() {
                if matches!(p.body, Body::Announced { .. }) {
                    return;
                }
            }
        }
        panic!("announce to {to} unanswered");
    }
}

/// How a [`FakePeer`] misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Claims every piece and answers every request with garbage.
    Corrupt,
    /// Claims every piece, accepts requests, never answers them.
    Stall,
    /// Claims every piece; answers its first request with a block header and a few bytes of
    /// the block, then sends nothing more (its reader on the other side is stuck in a frame).
    Stuck,
    /// Accepts connections and reads the handshake, but never answers it.
    Mute,
}

/// A peer speaking the real peer wire (and discovery, to announce itself), misbehaving on
/// purpose. Its TCP and UDP ports are the same number, like a daemon's. It listens on an
/// address of its own in 127.0.2.0/24 (another "host" on lo): bans are per address, and a
/// liar sharing 127.0.0.1 with the honest daemons would get them banned along with it.
pub struct FakePeer {
    pub raw: RawNode,
    pub ip: std::net::Ipv4Addr,
    pub port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Requests it has received.
    pub requests: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl FakePeer {
    pub fn start(info_hash: p2pd::descriptor::InfoHash, pieces: usize, how: Misbehaviour) -> FakePeer {
        use p2pd::swarm::wire::{self, Handshake, Message};
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let ip = std::net::Ipv4Addr::new(127, 0, 2, 1 + rand::random::<u8>() % 250);
        let (tcp, udp) = loop {
            let tcp = std::net::TcpListener::bind((ip, 0)).unwrap();
            let port = tcp.local_addr().unwrap().port();
            if let Ok(udp) = std::net::UdpSocket::bind((ip, port)) {
                break (tcp, udp);
            }
        };
        let port = tcp.local_addr().unwrap().port();
        let raw = RawNode::from_socket(udp);
        let node_id = raw.id;
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let requests = std::sync::Arc::new(AtomicU64::new(0));
        tcp.set_nonblocking(true).unwrap();
        let (stop2, requests2) = (stop.clone(), requests.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let Ok((mut s, _)) = tcp.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let (stop3, requests3) = (stop2.clone(), requests2.clone());
                std::thread::spawn(move || {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
                    let mut hs = [0u8; wire::HANDSHAKE_LEN];
                    if s.read_exact(&mut hs).is_err() {
                        return;
                    }
                    if how == Misbehaviour::Mute {
                        while !stop3.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        return;
                    }
                    // Version 1, as a node built before peer exchange answers.
                    let ours = Handshake { info_hash, node_id, listen_port: port, version: 1 };
                    let _ = s.write_all(&wire::encode_handshake(&ours));
                    let _ = s.write_all(&wire::encode(&Message::Bitfield(
                        p2pd::bitfield::Bitfield::full(pieces).as_bytes().to_vec(),
                    )));
                    let mut buf: Vec<u8> = Vec::new();
                    let mut chunk = [0u8; 65536];
                    while !stop3.load(Ordering::SeqCst) {
                        match s.read(&mut chunk) {
                            Ok(0) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            Err(e)
                                if e.kind() == std::io::ErrorKind::WouldBlock
                                    || e.kind() == std::io::ErrorKind::TimedOut =>
                            {
                                continue;
                            }
                            Err(_) => return,
                        }
                        while let Ok(Some((msg, used))) = wire::decode(&buf) {
                            buf.drain(..used);
                            let reply = match msg {
                                Message::Interested => Some(Message::Unchoke),
                                Message::Request(r) => {
                                    requests3.fetch_add(1, Ordering::SeqCst);
                                    match how {
                                        Misbehaviour::Corrupt => Some(Message::Block {
                                            piece: r.piece,
                                            offset: r.offset,
                                            data: vec![0x5a; r.length as usize],
                                        }),
                                        Misbehaviour::Stall | Misbehaviour::Mute => None,
                                        Misbehaviour::Stuck => {
                                            if requests3.load(Ordering::SeqCst) == 1 {
                                                let mut frame = wire::encode(&Message::Block {
                                                    piece: r.piece,
                                                    offset: r.offset,
                                                    data: vec![0x5a; r.length as usize],
                                                });
                                                frame.truncate(wire::FRAME_HEADER + 8 + 100);
                                                let _ = s.write_all(&frame);
                                            }
                                            None
                                        }
                                    }
                                }
                                _ => None,
                            };
                            if let Some(m) = reply
                                && s.write_all(&wire::encode(&m)).is_err()
                            {
                                return;
                            }
                        }
                    }
                });
            }
        });
        FakePeer { raw, ip, port, stop, requests }
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A process's resident set size, in KiB (0 if it is gone).
pub fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The value of `read` once it has settled: read again every 1.2 s (counters and lists are
/// published about once a second) until two reads agree.
pub fn settled<T: PartialEq>(mut read: impl FnMut() -> T) -> T {
    let mut seen = read();
    loop {
        std::thread::sleep(Duration::from_millis(1200));
        let now = read();
        if now == seen {
            return now;
        }
        seen = now;
    }
}

/// Copies a file, or a directory tree (permission bits too, as `std::fs::copy` does).
pub fn copy_tree(from: &Path, to: &Path) {
    if from.is_file() {
        std::fs::copy(from, to).unwrap();
        return;
    }
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        copy_tree(&e.path(), &to.join(e.file_name()));
    }
}

/// Makes `seed` (started) seed a new file `name` of `len` pseudo-random bytes (from `rng_seed`):
/// writes it into its data directory, describes it in `NAME.desc` (bootstrap: the seed) and
/// waits until it seeds. Returns the descriptor and the info hash.
pub fn seed_new_file(seed: &Node, name: &str, len: usize, rng_seed: u64) -> (PathBuf, String) {
    let src = seed.root.path().join("src").join(name);
    random_file(&src, len, rng_seed);
    let desc = create_descriptor(&src, &seed.root.path().join(format!("{name}.desc")), &["--bootstrap", &seed.addr()]);
    std::fs::create_dir_all(seed.data()).unwrap();
    std::fs::copy(&src, seed.data().join(name)).unwrap();
    let hash = seed.add(&desc);
    seed.wait_state(&hash, "seeding");
    (desc, hash)
}
