//! The control socket server.
//!
//! - [`bind`] (at start-up, before any thread exists): refuses to start if another daemon
//!   answers on the socket path, removes a stale socket only after a connection attempt is
//!   refused, creates the socket with mode 0660 (group `control_group`) inside a directory only
//!   the daemon's user can write.
//! - [`serve`]: one task per client. The peer credentials are checked before a byte is read;
//!   a request must arrive within [`REQUEST_TIMEOUT`] and fit [`MAX_REQUEST_BYTES`]; at most
//!   [`MAX_CLIENTS`] are served at once (more wait in the accept queue). `status` and `peers`
//!   are answered here from [`DaemonShared`]; everything that changes state goes straight to
//!   the supervisor as a [`ControlCall`], over a bounded channel: a busy supervisor makes
//!   clients wait (at most [`MAX_CLIENTS`] at once), never queues without limit.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use log::{debug, info, warn};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::unistd::Gid;
use smol::Async;
use smol::lock::Semaphore;

use super::access::Credentials;
use super::protocol::{self, ErrorKind, ErrorReply, FrameError, HEADER_BYTES, MAX_REQUEST_BYTES, Request, Response};
use crate::deadline::within;
use crate::shared::DaemonShared;
use crate::tasks::TaskGroup;

/// Longest time a client may take to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest time a client may take to read the response.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Clients served at once.
pub const MAX_CLIENTS: usize = 256;

/// A request that changes the daemon's state: the supervisor's to answer. (`status` and
/// `peers` only read, and are answered here from [`DaemonShared`].)
#[derive(Debug)]
pub enum Change {
    Add { descriptor: String, source: String, data_dir: Option<PathBuf>, adopt: bool, cache: bool },
    Remove { id: String, delete_data: bool },
    Reload,
    Verify { id: String },
    Set { id: String, settings: crate::control::protocol::SettingsChange },
    Drain { min_copies: u32, timeout_secs: Option<u64>, wait: bool },
}

/// A change for the supervisor, with who sent it and where to send the answer.
pub struct ControlCall {
    pub change: Change,
    /// The client's credentials (some requests depend on who asks: `add --data`).
    pub client: Credentials,
    pub reply: async_channel::Sender<Response>,
}

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("another p2pd is already answering on {0}; stop it first (or use another control_socket)")]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error(
        "{} is writable by other users; put the control socket in a directory only the daemon's user can write (e.g. /run/p2pd)",
        .0.display()
    )]
    UnsafeDirectory(PathBuf),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// Creates the listening socket. Returns it and, if a stale socket was removed, a note to log.
pub fn bind(path: &Path, group: Option<Gid>) -> Result<(UnixListener, Option<String>), BindError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BindError::Io { path, source }
    };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir).map_err(io_err(dir))?;
    }
    let dir_meta = std::fs::metadata(dir).map_err(io_err(dir))?;
    if dir_meta.permissions().mode() & 0o022 != 0 {
        return Err(BindError::UnsafeDirectory(dir.to_path_buf()));
    }

    let mut note = None;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => return Err(BindError::InUse(path.to_path_buf())),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path).map_err(io_err(path))?;
                note = Some(format!("removed stale control socket {} (nothing answered on it)", path.display()));
            }
            Err(e) => return Err(io_err(path)(e)),
        },
        Ok(_) => return Err(BindError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(path)(e)),
    }

    // Create the socket already restricted; the umask is process-wide, so this runs before
    // any other thread exists.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o117));
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound.map_err(io_err(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io_err(path))?;
    if let Some(gid) = group {
        set_group(path, gid).map_err(io_err(path))?;
    }
    Ok((listener, note))
}

/// Gives the socket file to `gid` (used at start and when `control_group` changes).
pub fn set_group(path: &Path, gid: Gid) -> io::Result<()> {
    if std::fs::metadata(path)?.gid() == gid.as_raw() {
        return Ok(());
    }
    nix::unistd::chown(path, None, Some(gid)).map_err(|e| io::Error::from_raw_os_error(e as i32))
}

/// Removes the socket file at shutdown, if it is still ours (a socket).
pub fn remove_socket(path: &Path) {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
}

/// Accepts clients until the listener fails or the task is dropped.
pub async fn serve(
    listener: Async<UnixListener>,
    shared: Arc<DaemonShared>,
    supervisor: async_channel::Sender<ControlCall>,
    executor: Arc<smol::Executor<'static>>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    let mut clients = TaskGroup::new("control client");
    loop {
        // An accept with connections waiting never waits: without a turn, a flood of clients
        // would hold the one network thread (see `runtime::run`).
        futures_lite::future::yield_now().await;
        let permit = slots.acquire_arc().await;
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!("control socket: accept failed: {e}");
                smol::Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        let supervisor = supervisor.clone();
        clients.spawn(&executor, async move {
            handle_client(stream, &shared, &supervisor).await;
            drop(permit);
        });
    }
}

async fn handle_client(
    mut stream: Async<UnixStream>,
    shared: &DaemonShared,
    supervisor: &async_channel::Sender<ControlCall>,
) {
    let creds = match getsockopt(stream.get_ref(), PeerCredentials) {
        Ok(c) => c,
        Err(e) => {
            warn!("control socket: cannot read peer credentials: {e}");
            return;
        }
    };
    if let Err(reason) = shared.check_access(creds.uid(), creds.gid()) {
        info!("control socket: refused pid {}: {reason}", creds.pid());
        let reply = Response::Error(ErrorReply { kind: ErrorKind::Refused, message: reason.to_string() });
        let _ = within(RESPONSE_TIMEOUT, write_response(&mut stream, &reply)).await;
        return;
    }
    let request = match within(REQUEST_TIMEOUT, read_request(&mut stream)).await {
        Some(Ok(request)) => request,
        Some(Err(ReadError::Closed)) => return,
        Some(Err(ReadError::Frame(e))) => {
            debug!("control socket: bad request from pid {}: {e}", creds.pid());
            let kind = if matches!(e, FrameError::Version(_)) { ErrorKind::Version } else { ErrorKind::BadRequest };
            let reply = Response::Error(ErrorReply { kind, message: e.to_string() });
            let _ = within(RESPONSE_TIMEOUT, write_response(&mut stream, &reply)).await;
            return;
        }
        Some(Err(ReadError::Io(e))) => {
            debug!("control socket: reading request: {e}");
            return;
        }
        None => {
            debug!("control socket: pid {} sent no complete request in {REQUEST_TIMEOUT:?}", creds.pid());
            return;
        }
    };
    debug!("control socket: pid {} uid {}: {}", creds.pid(), creds.uid(), request_name(&request));
    let client = Credentials { uid: creds.uid(), gid: creds.gid(), pid: creds.pid() };
    let (response, answer_channel) = dispatch(request, client, shared, supervisor).await;
    if !matches!(within(RESPONSE_TIMEOUT, write_response(&mut stream, &response)).await, Some(Ok(()))) {
        debug!("control socket: client did not read its response");
    }
    // Closed only now: the supervisor may wait for an answer to be written (a drain's last
    // answer, before p2pd stops).
    drop(answer_channel);
}

fn request_name(r: &Request) -> &'static str {
    match r {
        Request::Add { .. } => "add",
        Request::Remove { .. } => "remove",
        Request::Status { .. } => "status",
        Request::Peers { .. } => "peers",
        Request::Reload => "reload",
        Request::Verify { .. } => "verify",
        Request::Set { .. } => "set",
        Request::Drain { .. } => "drain",
    }
}

/// Answers `request`, from the shared state or through the supervisor; with the supervisor's
/// answer channel, which the caller keeps open until the answer is written.
async fn dispatch(
    request: Request,
    client: Credentials,
    shared: &DaemonShared,
    supervisor: &async_channel::Sender<ControlCall>,
) -> (Response, Option<async_channel::Receiver<Response>>) {
    let change = match request {
        Request::Status { id } => {
            let status = shared.status(id.as_deref()).map(|r| Response::Status(Box::new(r)));
            return (status.unwrap_or_else(Response::Error), None);
        }
        Request::Peers { id } => return (shared.peers(&id).map(Response::Peers).unwrap_or_else(Response::Error), None),
        Request::Add { descriptor, source, data_dir, adopt, cache } => {
            Change::Add { descriptor, source, data_dir, adopt, cache }
        }
        Request::Remove { id, delete_data } => Change::Remove { id, delete_data },
        Request::Reload => Change::Reload,
        Request::Verify { id } => Change::Verify { id },
        Request::Set { id, settings } => Change::Set { id, settings },
        Request::Drain { min_copies, timeout_secs, wait } => Change::Drain { min_copies, timeout_secs, wait },
    };
    let (tx, rx) = async_channel::bounded(1);
    let failed = |message: &str| Response::Error(ErrorReply { kind: ErrorKind::Failed, message: message.to_string() });
    if supervisor.send(ControlCall { change, client, reply: tx }).await.is_err() {
        return (failed("p2pd is shutting down"), None);
    }
    let response = rx.recv().await.unwrap_or_else(|_| failed("p2pd is shutting down"));
    (response, Some(rx))
}

enum ReadError {
    Closed,
    Frame(FrameError),
    Io(io::Error),
}

async fn read_request(stream: &mut Async<UnixStream>) -> Result<Request, ReadError> {
    let mut header = [0u8; HEADER_BYTES];
    match stream.read_exact(&mut header).await {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(ReadError::Closed),
        Err(e) => return Err(ReadError::Io(e)),
    }
    let len = protocol::decode_header(header, MAX_REQUEST_BYTES).map_err(ReadError::Frame)?;
    // Grow with what actually arrives; never allocate what the header merely claims.
    let mut body = Vec::new();
    let got = (&mut *stream).take(len as u64).read_to_end(&mut body).await.map_err(ReadError::Io)?;
    if got != len {
        return Err(ReadError::Io(io::Error::new(io::ErrorKind::UnexpectedEof, "request cut short")));
    }
    protocol::decode_request(&body).map_err(ReadError::Frame)
}

async fn write_response(stream: &mut Async<UnixStream>, response: &Response) -> io::Result<()> {
    stream.write_all(&protocol::encode_frame(response)).await?;
    stream.flush().await
}
