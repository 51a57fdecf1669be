//! The reading side of a peer's TCP socket, built to cost few system calls and wake-ups.
//!
//! A peer's stream is mostly two kinds of frame: small control frames (a `have` is 9 bytes, a
//! `request` 17) arriving in runs, and 128 KiB blocks arriving over links that may deliver a
//! few packets at a time. Read naively — a header, then its body, then a wait — a run of
//! `have`s costs three system calls and a trip through the reactor each, and a block one
//! wake-up per few packets. So:
//! - small reads go through a [`READ_BUFFER`]-byte buffer: one `recv` takes a whole run of
//!   control frames, which are then parsed from memory;
//! - reads of at least that size go straight into the caller's buffer (a block's data lands in
//!   its piece buffer without a copy);
//! - before each wait the kernel is told how many bytes the frame being read still lacks
//!   (`SO_RCVLOWAT`), so a block arriving over a slow link wakes the reader once, when it is
//!   whole.
//!
//! Invariant: the low-water mark never exceeds what the frame being read still lacks — it is
//! set to exactly that (at most [`MAX_LOW_WATER`]) before every wait, and every wait happens
//! with the buffer empty — so the reader is never left waiting for bytes the peer does not owe
//! it: a small frame followed by silence is read as soon as it is whole. A mark the kernel
//! refuses leaves the reader's record of it unknown, so the next wait sets it again. (Linux caps
//! the mark at half the largest receive buffer, `tcp_rmem[2]`, grows the socket's buffer to
//! hold it, and wakes a reader early when its receive window runs short, so a mark the frame is
//! owed can delay a read but not stall it.)

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::sync::Arc;

use smol::Async;

/// Bytes of read-ahead per connection (part of `MAX_CONNECTION_MEMORY`).
pub const READ_BUFFER: usize = 16 << 10;

/// Most bytes the reader asks the kernel to gather before waking it.
const MAX_LOW_WATER: usize = 256 << 10;

/// `low_water` when the socket's mark is not known (a change was refused): never equal to a
/// mark asked for, so the next wait sets one.
const UNKNOWN: usize = usize::MAX;

/// A peer socket's reading side (see the module doc).
pub struct SocketReader {
    /// Shared with the connection's writer, which only writes.
    stream: Arc<Async<TcpStream>>,
    /// Read-ahead: `buf[start..end]` is read from the socket and not yet taken.
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// The `SO_RCVLOWAT` last set on the socket (the kernel's default is 1); [`UNKNOWN`] after a
    /// refused change.
    low_water: usize,
}

impl SocketReader {
    pub fn new(stream: Arc<Async<TcpStream>>) -> SocketReader {
        SocketReader { stream, buf: vec![0; READ_BUFFER].into_boxed_slice(), start: 0, end: 0, low_water: 1 }
    }

    /// Whether bytes are waiting, read ahead or in the socket (reads what is there, without
    /// waiting). `Ok(false)`: nothing yet; an error or the peer's close is `Err`.
    pub fn ready(&mut self) -> std::io::Result<bool> {
        if self.start < self.end {
            return Ok(true);
        }
        loop {
            return match self.fill() {
                Ok(0) => Err(ErrorKind::UnexpectedEof.into()),
                Ok(_) => Ok(true),
                Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        }
    }

    /// Waits until the socket may have data (a frame header's worth), for use in a `select`
    /// with other wake-ups; readiness can be stale, so callers check [`ready`](Self::ready)
    /// again. Only to be called when `ready` said `false` (the read-ahead is empty).
    pub async fn readable(&mut self, frame_header: usize) -> std::io::Result<()> {
        debug_assert_eq!(self.start, self.end, "waiting with bytes read ahead");
        self.expect(frame_header);
        self.stream.readable().await
    }

    /// Reads exactly `out.len()` bytes.
    pub async fn read_exact(&mut self, out: &mut [u8]) -> std::io::Result<()> {
        let mut filled = self.take_buffered(out);
        while filled < out.len() {
            let rest = &mut out[filled..];
            let direct = rest.len() >= READ_BUFFER;
            let result = if direct { self.stream.get_ref().read(rest) } else { self.fill() };
            match result {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(n) if direct => filled += n,
                Ok(_) => filled += self.take_buffered(rest),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.expect(out.len() - filled);
                    self.stream.readable().await?;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Copies read-ahead bytes into `out`; returns how many.
    fn take_buffered(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.end - self.start);
        out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        n
    }

    /// Reads what the socket holds into the (empty) read-ahead buffer.
    fn fill(&mut self) -> std::io::Result<usize> {
        debug_assert_eq!(self.start, self.end, "filling over bytes read ahead");
        let n = self.stream.get_ref().read(&mut self.buf)?;
        self.start = 0;
        self.end = n;
        Ok(n)
    }

    /// Before waiting: wake the reader only once `bytes` (at most [`MAX_LOW_WATER`]) are
    /// waiting. A refused change is logged and tried again before the next wait.
    fn expect(&mut self, bytes: usize) {
        use std::os::fd::AsRawFd;
        let mark = bytes.clamp(1, MAX_LOW_WATER);
        if mark == self.low_water {
            return;
        }
        let value = mark as libc::c_int;
        // SAFETY: setsockopt on a socket this reader's connection owns, with a pointer to a
        // c_int and its size, as SO_RCVLOWAT expects.
        let r = unsafe {
            libc::setsockopt(
                self.stream.get_ref().as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            self.low_water = mark;
        } else {
            self.low_water = UNKNOWN;
            log::debug!("SO_RCVLOWAT {mark}: {}", std::io::Error::last_os_error());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;
    use std::time::Duration;

    fn pair() -> (SocketReader, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (ours, _) = listener.accept().unwrap();
        (SocketReader::new(Arc::new(Async::new(ours).unwrap())), peer)
    }

    /// Waits at most a few seconds for `fut`.
    fn within<T>(fut: impl Future<Output = T>) -> Option<T> {
        smol::block_on(futures_lite::future::or(async { Some(fut.await) }, async {
            smol::Timer::after(Duration::from_secs(5)).await;
            None
        }))
    }

    #[test]
    fn a_run_of_small_frames_is_taken_in_one_read_and_parsed_from_memory() {
        let (mut reader, mut peer) = pair();
        let frames: Vec<u8> = (0..100u8).flat_map(|i| [i; 9]).collect();
        peer.write_all(&frames).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(reader.ready().unwrap());
        assert_eq!(reader.end, frames.len(), "one read took every frame");
        for i in 0..100u8 {
            let mut frame = [0u8; 9];
            within(reader.read_exact(&mut frame)).unwrap().unwrap();
            assert_eq!(frame, [i; 9]);
        }
        assert!(!reader.ready().unwrap(), "nothing more");
    }

    #[test]
    fn a_large_read_lands_in_the_callers_buffer_across_waits() {
        let (mut reader, mut peer) = pair();
        let block: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let sent = block.clone();
        let writer = std::thread::spawn(move || {
            for chunk in sent.chunks(7_000) {
                peer.write_all(chunk).unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
            peer
        });
        let mut out = vec![0u8; block.len()];
        within(reader.read_exact(&mut out)).unwrap().unwrap();
        assert_eq!(out, block);
        assert!(reader.low_water > 1, "it waited with a low-water mark");
        drop(writer.join().unwrap());
    }

    /// The invariant: after a large read raised the mark, a small frame followed by silence is
    /// still read (the mark is lowered to what the frame lacks before waiting for it).
    #[test]
    fn a_small_frame_after_a_large_one_is_read_without_more_bytes_coming() {
        let (mut reader, mut peer) = pair();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let writer = std::thread::spawn(move || {
            peer.write_all(&[7u8; 100_000]).unwrap();
            rx.recv().unwrap();
            peer.write_all(&[1, 2, 3]).unwrap();
            std::thread::sleep(Duration::from_millis(30));
            peer.write_all(&[4, 5]).unwrap();
            rx.recv().ok();
            peer
        });
        let mut big = vec![0u8; 100_000];
        within(reader.read_exact(&mut big)).unwrap().unwrap();
        tx.send(()).unwrap();
        let mut small = [0u8; 5];
        let got = within(reader.read_exact(&mut small));
        assert_eq!(got.map(|r| r.map(|()| small).ok()), Some(Some([1, 2, 3, 4, 5])), "the small frame was read");
        assert!(reader.low_water <= 5, "the mark was lowered to what the frame lacked: {}", reader.low_water);
        drop(tx);
        drop(writer.join().unwrap());
    }

    /// The idle path of a peer's reader: after a large read raised the mark, waiting for the
    /// next frame header wakes as soon as a header's worth has come.
    #[test]
    fn waiting_for_a_header_after_a_large_read_wakes_for_the_header_alone() {
        let (mut reader, mut peer) = pair();
        peer.write_all(&[9u8; 60_000]).unwrap();
        let mut big = vec![0u8; 100_000];
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            peer.write_all(&[9u8; 40_000]).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            peer.write_all(&[1, 2, 3, 4, 5]).unwrap();
            std::thread::sleep(Duration::from_secs(6));
            peer
        });
        within(reader.read_exact(&mut big)).unwrap().unwrap();
        assert!(!reader.ready().unwrap(), "nothing read ahead yet");
        assert!(within(reader.readable(5)).is_some_and(|r| r.is_ok()), "woken by the 5-byte header");
        assert!(reader.ready().unwrap());
        let mut header = [0u8; 5];
        within(reader.read_exact(&mut header)).unwrap().unwrap();
        assert_eq!(header, [1, 2, 3, 4, 5]);
        drop(writer);
    }

    #[test]
    fn the_peers_close_is_an_error() {
        let (mut reader, peer) = pair();
        drop(peer);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(reader.ready().unwrap_err().kind(), ErrorKind::UnexpectedEof);
        let mut frame = [0u8; 5];
        assert_eq!(within(reader.read_exact(&mut frame)).unwrap().unwrap_err().kind(), ErrorKind::UnexpectedEof);
    }
}
