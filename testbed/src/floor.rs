//! The floor: the least CPU any leecher must spend on the content, measured on this machine.
//!
//! A compiled pipeline without p2pd receives the content's bytes over loopback TCP
//! connections (one per copy), SHA-256s each piece as its bytes arrive, checks it against the descriptor, and
//! writes it to a file on the filesystem under test (`fdatasync` at the end, as p2pd does
//! before it reports a torrent complete). The sending side is a thread of this process that
//! copies the source files into the socket with `std::io::copy`, which the standard library
//! turns into sendfile(2), as a p2pd seed uploads.
//!
//! Each side's CPU is its own thread's (`getrusage(RUSAGE_THREAD)`, user + system), so the
//! receiver's figure is the cost of taking the bytes in and the sender's the cost of putting
//! them out; on loopback the kernel's receive path often runs in the sender's context, so
//! only their sum is the full cost of moving the bytes once. Work the kernel does in its own
//! threads (writeback of a disk filesystem's dirty pages) is in neither: it is in
//! [`FloorResult::machine_cpu_secs`], the whole machine's busy time over the same interval
//! (which also holds whatever else ran then).
//!
//! **As many bytes as the swarm writes.** A scenario runs the loopback floor with one
//! connection per leecher, all at once, each carrying the whole content into a copy of its
//! own ([`Route::Loopback`] `copies`), and keeps what it wrote until the run ends. Writing
//! into memory the machine has not used lately can cost several times what rewriting
//! recently freed memory does — on a virtual machine whose guest hands freed pages back to its
//! host (free page reporting), the next write to each page faults it in again: 3.1–3.3
//! core-s per GiB against 0.38 measured here (testbed/README.md, "CPU per GiB and the floor").
//! A floor that wrote one copy into a few hundred MiB of recently freed memory was charged the
//! cheap rate while the swarm, writing N copies, paid the dear one for most of them; and
//! freeing the floor's output before the run handed the swarm warm memory. Both now write the
//! same volume, and neither into the other's freed pages.
//!
//! Time runs from just before the sender connects until the written files are synced and
//! closed. `p2pd-testbed floor DESC SOURCE OUT` runs it alone (for `bench/transfer_loopback.py`);
//! every scenario runs it on its own content before the leechers are released.
//!
//! **The link floor** ([`Route::Ring`]) runs the same pipeline across a whole fleet at once:
//! every host sends to the next one (a ring: each sends and receives one stream, as a swarm's
//! member does), the sender thread in its own network namespace and the receiver in its
//! neighbour's, so the bytes cross the fleet's veth pairs, bridge and tbf qdiscs at the hosts'
//! upload rates — the path every byte of a swarm takes. On a shaped link data arrives as the
//! qdisc releases it, a few packets at a time, and the kernel's per-packet work (forwarding,
//! acknowledgements, wake-ups) lands in whichever context runs it, mostly neither thread: the
//! whole machine's busy time per GiB moved is its figure, less the background — the machine's
//! busy rate over [`BACKGROUND_SAMPLE`] just before (the idle fleet's daemons, the kernel's own
//! threads) times the floor's duration ([`FloorResult::background_cpu_secs`]). Each stream
//! moves the first whole pieces of the content (about two seconds of its link), since at link
//! rate the whole content would take as long as the swarm.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use p2pd::descriptor::{Content, ContentKind, Descriptor, DescriptorError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cpu::{CpuTimes, per_gib, thread_cpu_secs};
use crate::volume::filesystem_name;

/// How long the machine's background busy rate is sampled before a link floor.
pub const BACKGROUND_SAMPLE: std::time::Duration = std::time::Duration::from_secs(1);

/// Bytes asked of the socket per read: what arrives in one read is hashed before the next.
const READ_CHUNK: usize = 256 << 10;

/// What one pass of the floor measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FloorResult {
    /// Seconds from connecting to the synced files.
    pub secs: f64,
    /// Content bytes received, verified and written (by every receiver together).
    pub bytes: u64,
    pub pieces: u64,
    pub piece_length: u64,
    /// Connections the bytes crossed at once, each writing a copy of its own: a loopback floor's
    /// copies, a ring's hosts (1 in results of older testbeds).
    #[serde(default = "one")]
    pub connections: u64,
    /// CPU of the receiving threads together (recv, SHA-256, write, fdatasync), core-seconds.
    pub receiver_cpu_secs: f64,
    /// CPU of the sending threads together (connect, sendfile), core-seconds.
    pub sender_cpu_secs: f64,
    pub receiver_cpu_secs_per_gib: f64,
    pub sender_cpu_secs_per_gib: f64,
    /// The whole machine's busy core-seconds over the same interval (writeback in kernel
    /// threads included, and anything else that ran).
    pub machine_cpu_secs: f64,
    /// The link floor's background: the machine's busy rate measured just before it, times its
    /// duration (0 for the loopback floor, which does not measure one).
    #[serde(default)]
    pub background_cpu_secs: f64,
    /// The filesystem the output was written to (`tmpfs`, `ext4`, …).
    pub filesystem: String,
}

fn one() -> u64 {
    1
}

impl FloorResult {
    /// Receiver plus sender, per GiB: moving each byte once, end to end.
    pub fn both_cpu_secs_per_gib(&self) -> f64 {
        self.receiver_cpu_secs_per_gib + self.sender_cpu_secs_per_gib
    }

    /// The whole machine's busy core-seconds per GiB moved, less the background (the link
    /// floor's figure).
    pub fn machine_cpu_secs_per_gib(&self) -> Option<f64> {
        per_gib((self.machine_cpu_secs - self.background_cpu_secs).max(0.0), self.bytes)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FloorError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: {source}", path.display())]
    Descriptor { path: PathBuf, source: DescriptorError },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("loopback socket: {0}")]
    Socket(std::io::Error),
    #[error("the connection closed after {received} of {expected} bytes")]
    Short { received: u64, expected: u64 },
    #[error("piece {index}: SHA-256 differs from the descriptor's")]
    BadPiece { index: usize },
    #[error("sending {}: {source}", path.display())]
    Send { path: PathBuf, source: std::io::Error },
    #[error("the floor's sender thread panicked")]
    SenderPanicked,
    #[error("the floor's receiver thread panicked")]
    ReceiverPanicked,
    #[error("cannot enter network namespace {name}: {source}")]
    Namespace { name: String, source: std::io::Error },
}

/// Where the floor's bytes travel.
#[derive(Debug, Clone)]
pub enum Route {
    /// Loopback TCP connections in the testbed's own namespace, all at once, each carrying the
    /// whole content: `copies` of them (one per leecher in a scenario, so that the floor writes
    /// as many bytes as the swarm delivers; see the module doc).
    Loopback { copies: usize },
    /// Every host of a fleet at once, each sending to the next (a ring) over the fleet's links;
    /// the first whole pieces up to `max_bytes` (at least one) per connection.
    Ring { hosts: Vec<RingHost>, max_bytes: u64 },
}

/// A host of a [`Route::Ring`]: its network namespace and address.
#[derive(Debug, Clone)]
pub struct RingHost {
    pub netns: String,
    pub ip: IpAddr,
}

/// Moves the calling thread into the named network namespace (`ip netns`).
fn enter_netns(name: &str) -> Result<(), FloorError> {
    let err = |source| FloorError::Namespace { name: name.to_string(), source };
    let ns = File::open(Path::new("/var/run/netns").join(name)).map_err(err)?;
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| err(e.into()))
}

/// Runs the floor for the descriptor at `descriptor`, sending from `source` (the content's
/// file or directory) and writing to `out` (a file, or a directory for directory content).
pub fn run_descriptor(descriptor: &Path, source: &Path, out: &Path) -> Result<FloorResult, FloorError> {
    let text = std::fs::read_to_string(descriptor)
        .map_err(|source| FloorError::Read { path: descriptor.to_path_buf(), source })?;
    let parsed =
        Descriptor::parse(&text).map_err(|source| FloorError::Descriptor { path: descriptor.to_path_buf(), source })?;
    run(&parsed.content, source, out)
}

/// The path of each file of `content` below `root` (the root itself for a single file).
fn file_paths(content: &Content, root: &Path) -> Vec<(PathBuf, u64)> {
    match content.kind {
        ContentKind::File => vec![(root.to_path_buf(), content.total_length)],
        ContentKind::Directory => content
            .files
            .iter()
            .map(|f| (f.path.components().iter().fold(root.to_path_buf(), |p, c| p.join(c)), f.length))
            .collect(),
    }
}

/// Runs the floor for `content` over loopback, one copy (see the module doc); the output stays
/// in `out` for the caller to remove.
pub fn run(content: &Content, source: &Path, out: &Path) -> Result<FloorResult, FloorError> {
    run_over(content, source, out, &Route::Loopback { copies: 1 })
}

/// Whether a sender failed only because its receiver closed the connection.
fn hung_up(e: &FloorError) -> bool {
    matches!(e, FloorError::Send { source, .. }
        if matches!(source.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe))
}

/// One connection of a floor run: where each side runs and where the receiver writes.
struct Leg {
    sender_netns: Option<String>,
    receiver_netns: Option<String>,
    listen_ip: IpAddr,
    out: PathBuf,
}

/// Runs the floor for `content` over `route`; the output stays in `out` for the caller to
/// remove (for a ring, or more than one loopback copy, `out` is a directory holding one copy
/// per connection).
pub fn run_over(content: &Content, source: &Path, out: &Path, route: &Route) -> Result<FloorResult, FloorError> {
    let (pieces, legs) = match route {
        Route::Loopback { copies } => {
            let leg =
                |out: PathBuf| Leg { sender_netns: None, receiver_netns: None, listen_ip: [127, 0, 0, 1].into(), out };
            let legs = match copies {
                0 | 1 => vec![leg(out.into())],
                n => (0..*n).map(|i| leg(out.join(format!("copy-{i}")))).collect(),
            };
            (content.piece_count(), legs)
        }
        Route::Ring { hosts, max_bytes } => {
            let pieces = ((*max_bytes / content.piece_length.max(1)) as usize).clamp(1, content.piece_count().max(1));
            let legs = hosts
                .iter()
                .enumerate()
                .map(|(i, from)| {
                    let to = &hosts[(i + 1) % hosts.len()];
                    Leg {
                        sender_netns: Some(from.netns.clone()),
                        receiver_netns: Some(to.netns.clone()),
                        listen_ip: to.ip,
                        out: out.join(format!("host-{i}")),
                    }
                })
                .collect();
            (pieces, legs)
        }
    };
    let bytes: u64 = (0..pieces).map(|i| content.piece_len(i)).sum();
    let connections = legs.len() as u64;

    // Every receiver runs on a thread of its own, which may enter its host's namespace (setns
    // moves only the calling thread); it reports its listening address, then waits for the go.
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let go_rx = std::sync::Arc::new(std::sync::Mutex::new(go_rx));
    let mut receivers = Vec::with_capacity(legs.len());
    let mut senders_to_start = Vec::with_capacity(legs.len());
    for leg in legs {
        // Open every source first: a missing file is an error before anything is timed.
        let mut send_files = Vec::new();
        for (path, _) in file_paths(content, source) {
            let file = File::open(&path).map_err(|e| FloorError::Read { path: path.clone(), source: e })?;
            send_files.push((path, file));
        }
        let mut output = Output::create(content, &leg.out)?;
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (receive_content, go_rx, receiver_netns, listen_ip) =
            (content.clone(), go_rx.clone(), leg.receiver_netns.clone(), leg.listen_ip);
        let receiver = std::thread::Builder::new()
            .name("floor-receiver".into())
            .spawn(move || -> Result<(u64, f64), FloorError> {
                let bound = (|| {
                    if let Some(ns) = &receiver_netns {
                        enter_netns(ns)?;
                    }
                    let listener = TcpListener::bind((listen_ip, 0)).map_err(FloorError::Socket)?;
                    let addr = listener.local_addr().map_err(FloorError::Socket)?;
                    let handle = listener.try_clone().map_err(FloorError::Socket)?;
                    Ok((listener, addr, handle))
                })();
                let listener = match bound {
                    Ok((listener, addr, handle)) => {
                        let _ = addr_tx.send(Some((addr, handle)));
                        listener
                    }
                    Err(e) => {
                        let _ = addr_tx.send(None);
                        return Err(e);
                    }
                };
                // Every receiver takes one go (the sender of the go hangs up to call off).
                if go_rx.lock().map_err(|_| FloorError::ReceiverPanicked)?.recv().is_err() {
                    return Ok((0, 0.0));
                }
                let start = thread_cpu_secs();
                let received = receive(&receive_content, pieces, &listener, &mut output);
                let synced = received.and_then(|bytes| output.sync().map(|()| bytes));
                drop(output);
                // A receiver that failed leaves its sender blocked on a full socket: close it.
                drop(listener);
                Ok((synced?, thread_cpu_secs() - start))
            })
            .map_err(FloorError::Socket)?;
        match addr_rx.recv() {
            Ok(Some((addr, handle))) => {
                receivers.push((receiver, handle));
                senders_to_start.push((leg.sender_netns, send_files, addr));
            }
            _ => {
                drop(go_tx);
                for (r, _) in receivers {
                    let _ = r.join();
                }
                return Err(receiver
                    .join()
                    .map_err(|_| FloorError::ReceiverPanicked)?
                    .err()
                    .unwrap_or(FloorError::ReceiverPanicked));
            }
        }
    }

    // The background of a fleet's floor: how busy the machine is without it.
    let background_rate = match route {
        Route::Loopback { .. } => None,
        Route::Ring { .. } => {
            let before = CpuTimes::now();
            std::thread::sleep(BACKGROUND_SAMPLE);
            before.zip(CpuTimes::now()).map(|(a, b)| b.busy_core_secs_since(a) / BACKGROUND_SAMPLE.as_secs_f64())
        }
    };
    let machine_start = CpuTimes::now();
    let started = Instant::now();
    for _ in &receivers {
        let _ = go_tx.send(());
    }
    // A receiver waits in accept(2) until its sender connects; a sender that never does (it
    // could not enter its namespace, connect, or even start) would leave it waiting for good:
    // shutting the listener down wakes the accept with an error.
    let unblock = |listener: &TcpListener| {
        let _ = nix::sys::socket::shutdown(listener.as_raw_fd(), nix::sys::socket::Shutdown::Both);
    };
    let mut senders = Vec::with_capacity(senders_to_start.len());
    for (sender_netns, send_files, addr) in senders_to_start {
        let spawned = std::thread::Builder::new().name("floor-sender".into()).spawn(move || {
            if let Some(ns) = &sender_netns {
                enter_netns(ns)?;
            }
            send(send_files, bytes, addr)
        });
        senders.push(spawned.map_err(FloorError::Socket));
    }
    // Senders first, so that a failed one's receiver is released before it is waited for.
    let sent: Vec<Result<f64, FloorError>> = senders
        .into_iter()
        .zip(&receivers)
        .map(|(sender, (_, listener))| {
            let result = sender.and_then(|s| s.join().map_err(|_| FloorError::SenderPanicked)).and_then(|r| r);
            if result.is_err() {
                unblock(listener);
            }
            result
        })
        .collect();
    let received: Vec<_> =
        receivers.into_iter().map(|(r, _)| r.join().map_err(|_| FloorError::ReceiverPanicked)).collect();
    let secs = started.elapsed().as_secs_f64();
    let machine_cpu_secs = match (machine_start, CpuTimes::now()) {
        (Some(a), Some(b)) => b.busy_core_secs_since(a),
        _ => 0.0,
    };
    // Of a leg that failed, the error that says why: a sender's failure is the cause of its
    // receiver's (a short or refused stream) — unless the sender only saw the receiver hang
    // up, which a receiver does when it refuses a piece.
    let (mut bytes, mut receiver_cpu_secs, mut sender_cpu_secs) = (0, 0.0, 0.0);
    for (s, r) in sent.into_iter().zip(received) {
        match (s, r.and_then(|r| r)) {
            (Ok(scpu), Ok((b, rcpu))) => {
                sender_cpu_secs += scpu;
                bytes += b;
                receiver_cpu_secs += rcpu;
            }
            (Err(e), Err(receiver)) if hung_up(&e) => return Err(receiver),
            (Err(e), _) | (Ok(_), Err(e)) => return Err(e),
        }
    }
    Ok(FloorResult {
        secs,
        bytes,
        pieces: pieces as u64,
        piece_length: content.piece_length,
        connections,
        receiver_cpu_secs,
        sender_cpu_secs,
        receiver_cpu_secs_per_gib: per_gib(receiver_cpu_secs, bytes).unwrap_or(0.0),
        sender_cpu_secs_per_gib: per_gib(sender_cpu_secs, bytes).unwrap_or(0.0),
        machine_cpu_secs,
        background_cpu_secs: background_rate.map_or(0.0, |rate| rate * secs),
        filesystem: filesystem_name(out.parent().unwrap_or(out)),
    })
}

/// Accepts one connection and takes in the first `pieces` pieces; returns the bytes written.
fn receive(content: &Content, pieces: usize, listener: &TcpListener, output: &mut Output) -> Result<u64, FloorError> {
    let (mut conn, _) = listener.accept().map_err(FloorError::Socket)?;
    // The descriptor bounds the piece length (at most 64 MiB).
    let mut piece = vec![0u8; content.piece_length as usize];
    let mut received = 0u64;
    for (index, expected) in content.pieces.iter().enumerate().take(pieces) {
        let len = content.piece_len(index) as usize;
        let mut hasher = Sha256::new();
        let mut filled = 0;
        while filled < len {
            let end = len.min(filled + READ_CHUNK);
            let n = conn.read(&mut piece[filled..end]).map_err(FloorError::Socket)?;
            if n == 0 {
                return Err(FloorError::Short { received: received + filled as u64, expected: content.total_length });
            }
            hasher.update(&piece[filled..filled + n]);
            filled += n;
        }
        if hasher.finalize().as_slice() != expected.0 {
            return Err(FloorError::BadPiece { index });
        }
        output.write(&piece[..len])?;
        received += len as u64;
    }
    Ok(received)
}

/// Connects to `addr` and copies the first `bytes` of the files into the connection
/// (sendfile(2)); returns the sending thread's CPU seconds. If it fails, the connection closes
/// early and the receiver reports it short.
fn send(files: Vec<(PathBuf, File)>, bytes: u64, addr: SocketAddr) -> Result<f64, FloorError> {
    let start = thread_cpu_secs();
    let mut conn = TcpStream::connect(addr).map_err(FloorError::Socket)?;
    let mut left = bytes;
    for (path, file) in files {
        if left == 0 {
            break;
        }
        left -= std::io::copy(&mut file.take(left), &mut conn).map_err(|source| FloorError::Send { path, source })?;
    }
    drop(conn);
    Ok(thread_cpu_secs() - start)
}

/// The output files, written in content order: pieces run across file boundaries.
struct Output {
    /// Each file with the bytes it still expects.
    files: Vec<(PathBuf, File, u64)>,
    /// The file being written.
    current: usize,
}

impl Output {
    fn create(content: &Content, out: &Path) -> Result<Output, FloorError> {
        let mut files = Vec::new();
        for (path, length) in file_paths(content, out) {
            let err = |source| FloorError::Write { path: path.clone(), source };
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(err)?;
            }
            let file = File::create(&path).map_err(err)?;
            files.push((path, file, length));
        }
        Ok(Output { files, current: 0 })
    }

    fn write(&mut self, mut data: &[u8]) -> Result<(), FloorError> {
        while !data.is_empty() {
            let Some((path, file, left)) = self.files.get_mut(self.current) else {
                // The descriptor's pieces cover exactly its files' lengths.
                return Ok(());
            };
            let n = (*left).min(data.len() as u64) as usize;
            file.write_all(&data[..n]).map_err(|source| FloorError::Write { path: path.clone(), source })?;
            *left -= n as u64;
            data = &data[n..];
            if *left == 0 {
                self.current += 1;
            }
        }
        Ok(())
    }

    /// fdatasync every file.
    fn sync(&mut self) -> Result<(), FloorError> {
        for (path, file, _) in &self.files {
            file.sync_data().map_err(|source| FloorError::Write { path: path.clone(), source })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::{self, ContentShape};

    fn describe(source: &Path, desc: &Path, piece: u64) -> Content {
        let plan = p2pd::descriptor::create::plan(source).expect("plan");
        let pieces = p2pd::descriptor::create::hash_pieces(&plan, piece, &mut |_| {}).expect("hash");
        let built = p2pd::descriptor::create::build(&plan, piece, pieces, Vec::new()).expect("build");
        std::fs::write(desc, built.to_yaml()).expect("write descriptor");
        Descriptor::parse(&std::fs::read_to_string(desc).expect("read")).expect("parse").content
    }

    #[test]
    fn a_directory_arrives_identical_and_both_sides_are_charged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let shape = ContentShape::Directory { bytes: (3 << 20) + 12_345, files: 5 };
        let source = content::generate(dir.path(), "src", shape, 9).expect("generate");
        let desc = dir.path().join("src.desc");
        let described = describe(&source, &desc, 256 << 10);
        let out = dir.path().join("out");
        let result = run_descriptor(&desc, &source, &out).expect("floor");
        assert_eq!(result.bytes, shape.total_bytes());
        assert_eq!(result.pieces, described.piece_count() as u64);
        assert_eq!(content::first_difference(&source, &out).expect("compare"), None);
        assert!(result.receiver_cpu_secs > 0.0, "{result:?}");
        assert!(result.receiver_cpu_secs_per_gib > 0.0 && result.sender_cpu_secs_per_gib >= 0.0, "{result:?}");
        assert!(!result.filesystem.is_empty());
    }

    #[test]
    fn a_loopback_floor_of_several_copies_writes_each_whole_and_counts_them_all() {
        let dir = tempfile::tempdir().expect("tempdir");
        let shape = ContentShape::File { bytes: (2 << 20) + 777 };
        let source = content::generate(dir.path(), "a.bin", shape, 5).expect("generate");
        let desc = dir.path().join("a.desc");
        let described = describe(&source, &desc, 256 << 10);
        let out = dir.path().join("copies");
        let result = run_over(&described, &source, &out, &Route::Loopback { copies: 3 }).expect("floor");
        assert_eq!(result.connections, 3);
        assert_eq!(result.bytes, 3 * shape.total_bytes(), "every copy counts");
        assert_eq!(result.pieces, described.piece_count() as u64);
        for i in 0..3 {
            let copy = out.join(format!("copy-{i}"));
            assert_eq!(content::first_difference(&source, &copy).expect("compare"), None, "copy {i}");
        }
        assert!(result.receiver_cpu_secs > 0.0, "{result:?}");
    }

    #[test]
    fn a_piece_that_differs_is_refused() {
        // 16 MiB: the sender is still writing when the receiver refuses piece 2 and hangs up,
        // so it fails too (connection reset); the refusal is what the error must say.
        let dir = tempfile::tempdir().expect("tempdir");
        let source = content::generate(dir.path(), "a.bin", ContentShape::File { bytes: 16 << 20 }, 3).expect("gen");
        let desc = dir.path().join("a.desc");
        describe(&source, &desc, 256 << 10);
        let mut bytes = std::fs::read(&source).expect("read");
        bytes[(600 << 10) + 1] ^= 0x40;
        std::fs::write(&source, &bytes).expect("write");
        let err = run_descriptor(&desc, &source, &dir.path().join("out.bin")).expect_err("a bad piece");
        assert!(matches!(err, FloorError::BadPiece { index: 2 }), "{err}");
    }
}
