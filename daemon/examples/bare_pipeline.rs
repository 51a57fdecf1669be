//! The least a leecher must do, without p2pd: receive a single-file content over one loopback
//! TCP connection, SHA-256 each piece as its bytes arrive, check it against the descriptor, and
//! write it to a new file (then fdatasync it, as p2pd does before it reports a torrent
//! complete). `bench/transfer_loopback.py` times p2pd against this on the same data.
//!
//! The sending side is a thread of this process that copies the source file into the socket
//! with `std::io::copy`, which the standard library turns into sendfile(2) — as a p2pd seed
//! uploads. Time runs from just before the sender connects until the written file is synced and
//! closed; the process's start-up and the descriptor's parsing are outside it.
//!
//! Run: `cargo run --release --example bare_pipeline -- DESCRIPTOR SOURCE OUT`
//! Prints one JSON object: `{"secs": …, "bytes": …, "pieces": …, "piece_length": …}`.
//! Exit 1 with one line on stderr if anything fails (a piece whose hash differs included).

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use p2pd::descriptor::{ContentKind, Descriptor, DescriptorError};
use sha2::{Digest, Sha256};

/// Bytes asked of the socket per read: what arrives in one read is hashed before the next.
const READ_CHUNK: usize = 256 << 10;

#[derive(Debug, thiserror::Error)]
enum BareError {
    #[error("usage: bare_pipeline DESCRIPTOR SOURCE OUT")]
    Usage,
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Descriptor { path: PathBuf, source: DescriptorError },
    #[error("{path} describes a directory; this baseline handles single files")]
    NotAFile { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("loopback socket: {0}")]
    Socket(std::io::Error),
    #[error("the connection closed after {received} of {expected} bytes")]
    Short { received: u64, expected: u64 },
    #[error("piece {index}: SHA-256 differs from the descriptor's")]
    BadPiece { index: usize },
    #[error("sending {path}: {source}")]
    Send { path: PathBuf, source: std::io::Error },
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bare_pipeline: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), BareError> {
    let argv: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [descriptor, source, out] = argv.as_slice() else { return Err(BareError::Usage) };
    let text =
        std::fs::read_to_string(descriptor).map_err(|e| BareError::Read { path: descriptor.clone(), source: e })?;
    let desc = Descriptor::parse(&text).map_err(|e| BareError::Descriptor { path: descriptor.clone(), source: e })?;
    let content = desc.content;
    if content.kind != ContentKind::File {
        return Err(BareError::NotAFile { path: descriptor.clone() });
    }
    let send_file = File::open(source).map_err(|e| BareError::Read { path: source.clone(), source: e })?;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(BareError::Socket)?;
    let addr = listener.local_addr().map_err(BareError::Socket)?;

    let started = Instant::now();
    let sender = {
        let source = source.clone();
        std::thread::spawn(move || send(send_file, &source, addr))
    };
    let (mut conn, _) = listener.accept().map_err(BareError::Socket)?;
    let write_err = |e| BareError::Write { path: out.clone(), source: e };
    let mut file = File::create(out).map_err(write_err)?;
    let mut piece = vec![0u8; content.piece_length as usize];
    let mut received = 0u64;
    for (index, expected) in content.pieces.iter().enumerate() {
        let len = content.piece_len(index) as usize;
        let mut hasher = Sha256::new();
        let mut filled = 0;
        while filled < len {
            let end = len.min(filled + READ_CHUNK);
            let n = conn.read(&mut piece[filled..end]).map_err(BareError::Socket)?;
            if n == 0 {
                return Err(BareError::Short { received: received + filled as u64, expected: content.total_length });
            }
            hasher.update(&piece[filled..filled + n]);
            filled += n;
        }
        if hasher.finalize().as_slice() != expected.0 {
            return Err(BareError::BadPiece { index });
        }
        file.write_all(&piece[..len]).map_err(write_err)?;
        received += len as u64;
    }
    file.sync_data().map_err(write_err)?;
    drop(file);
    let secs = started.elapsed().as_secs_f64();
    sender.join().unwrap_or_else(|_| Err(BareError::Socket(std::io::Error::other("the sender thread panicked"))))?;
    println!(
        "{{\"secs\": {secs:.6}, \"bytes\": {received}, \"pieces\": {}, \"piece_length\": {}}}",
        content.pieces.len(),
        content.piece_length
    );
    Ok(())
}

/// Connects to `addr` and copies the whole of `file` (opened from `path`) into the connection
/// (sendfile(2)). If it fails, the connection closes early and the receiver reports it short.
fn send(mut file: File, path: &Path, addr: std::net::SocketAddr) -> Result<(), BareError> {
    let mut conn = TcpStream::connect(addr).map_err(BareError::Socket)?;
    std::io::copy(&mut file, &mut conn).map_err(|e| BareError::Send { path: path.to_path_buf(), source: e })?;
    Ok(())
}
