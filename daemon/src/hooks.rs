//! Running the operator's programs on a torrent's events (`hooks:` in `p2pd.yaml` and torrent
//! files): `complete`, `error`, `removed`.
//!
//! A hook is run without a shell (program and arguments as configured), stdin closed, in a
//! process group of its own, with p2pd's environment (systemd's notify and watchdog variables
//! removed) plus `P2PD_EVENT`, `P2PD_INFO_HASH`, `P2PD_NAME`, `P2PD_DATA_PATH` and, for an
//! error, `P2PD_ERROR`. Its output is logged line by line and its exit status once.
//!
//! Invariants: firing a hook never waits (it is queued as a task of its own); at most
//! `max_concurrent` run at once and at most [`MAX_WAITING`] wait, more are dropped with a
//! warning; one still running at `timeout_secs` is killed with its whole process group; at most
//! [`MAX_LOGGED_LINES`] lines of its output are logged (the rest counted), each cut at
//! [`MAX_LINE_BYTES`]. So a failing, hanging or chatty hook costs p2pd bounded memory and never
//! blocks it.

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_lite::future;
use smol::lock::Semaphore;

use crate::config::hooks::{Argv, HooksConfig};
use crate::descriptor::InfoHash;
use crate::tasks::TaskGroup;

/// Hooks waiting for a turn, at most.
pub const MAX_WAITING: usize = 1024;
/// Lines of one hook's output logged, at most.
pub const MAX_LOGGED_LINES: usize = 100;
/// Bytes of one logged line, at most.
pub const MAX_LINE_BYTES: usize = 1024;
/// Output is still read this long after the hook exited.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// A torrent's event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookEvent {
    Complete,
    Error,
    Removed,
}

impl HookEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            HookEvent::Complete => "complete",
            HookEvent::Error => "error",
            HookEvent::Removed => "removed",
        }
    }
}

/// What a hook is told about the torrent.
#[derive(Debug, Clone)]
pub struct HookTorrent {
    pub info_hash: InfoHash,
    pub name: String,
    pub data_path: std::path::PathBuf,
    /// For `error`: the problem.
    pub error: Option<String>,
}

/// The daemon's hook runner (cheap to clone; shared by the supervisor and every torrent).
#[derive(Clone)]
pub struct Hooks {
    inner: Arc<Inner>,
}

struct Inner {
    executor: Arc<smol::Executor<'static>>,
    slots: Mutex<Arc<Semaphore>>,
    timeout_secs: AtomicU64,
    waiting: AtomicUsize,
    tasks: Mutex<TaskGroup>,
}

impl Hooks {
    pub fn new(executor: Arc<smol::Executor<'static>>, config: &HooksConfig) -> Hooks {
        Hooks {
            inner: Arc::new(Inner {
                executor,
                slots: Mutex::new(Arc::new(Semaphore::new(config.max_concurrent as usize))),
                timeout_secs: AtomicU64::new(config.timeout_secs),
                waiting: AtomicUsize::new(0),
                tasks: Mutex::new(TaskGroup::new("hook")),
            }),
        }
    }

    /// New limits (reload). Hooks running or waiting keep the turn they have.
    pub fn configure(&self, config: &HooksConfig) {
        self.inner.timeout_secs.store(config.timeout_secs, Ordering::Relaxed);
        *self.inner.slots.lock().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(Semaphore::new(config.max_concurrent as usize));
    }

    /// Runs `argv` for `event` of `torrent`, in the background (nothing when `argv` is empty).
    pub fn fire(&self, event: HookEvent, argv: &Argv, torrent: HookTorrent) {
        if argv.is_empty() {
            return;
        }
        let inner = &self.inner;
        if inner.waiting.fetch_add(1, Ordering::SeqCst) >= MAX_WAITING {
            inner.waiting.fetch_sub(1, Ordering::SeqCst);
            log::warn!("{}: on_{} hook not run: {MAX_WAITING} hooks are already waiting", torrent.name, event.as_str());
            return;
        }
        let slots = inner.slots.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let timeout = Duration::from_secs(inner.timeout_secs.load(Ordering::Relaxed));
        let (argv, me) = (argv.clone(), self.inner.clone());
        let job = async move {
            let _turn = slots.acquire().await;
            me.waiting.fetch_sub(1, Ordering::SeqCst);
            run(event, &argv, &torrent, timeout).await;
        };
        let mut tasks = inner.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.spawn(&inner.executor, job);
    }
}

/// Runs one hook to its end (or its timeout) and logs what happened.
async fn run(event: HookEvent, argv: &Argv, t: &HookTorrent, timeout: Duration) {
    let label = format!("{}: on_{} hook `{}`", t.name, event.as_str(), argv[0]);
    let mut command = std::process::Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env("P2PD_EVENT", event.as_str())
        .env("P2PD_INFO_HASH", t.info_hash.to_hex())
        .env("P2PD_NAME", &t.name)
        .env("P2PD_DATA_PATH", &t.data_path);
    if let Some(e) = &t.error {
        command.env("P2PD_ERROR", e);
    }
    // A group of its own, so that the timeout kills whatever it started too.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let started = Instant::now();
    let mut command = smol::process::Command::from(command);
    // Set here, not on the std command: the conversion does not keep them.
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            log::warn!("{label}: cannot run it: {e}");
            return;
        }
    };
    let pid = child.id();
    let lines = Arc::new(AtomicUsize::new(0));
    let output = future::zip(
        log_lines(child.stdout.take(), label.clone(), lines.clone()),
        log_lines(child.stderr.take(), label.clone(), lines.clone()),
    );
    // Its exit ends it: output is read until then and for OUTPUT_GRACE after (a process it
    // left in the background may hold the pipes open; it is left alone).
    let (exited, exit) = async_channel::bounded::<()>(1);
    let status = child.status();
    let finished = future::or(
        async {
            let reading = future::or(
                async {
                    output.await;
                },
                async {
                    let _ = exit.recv().await;
                    smol::Timer::after(OUTPUT_GRACE).await;
                },
            );
            let waiting = async {
                let status = status.await;
                let _ = exited.try_send(());
                status
            };
            Some(future::zip(waiting, reading).await.0)
        },
        async {
            smol::Timer::after(timeout).await;
            None
        },
    )
    .await;
    let skipped = lines.load(Ordering::Relaxed).saturating_sub(MAX_LOGGED_LINES);
    let more = if skipped > 0 { format!(" ({skipped} more lines of output not logged)") } else { String::new() };
    let took = started.elapsed().as_secs_f64();
    match finished {
        Some(Ok(status)) if status.success() => log::info!("{label}: exited 0 after {took:.1} s{more}"),
        Some(Ok(status)) => log::warn!("{label}: {status} after {took:.1} s{more}"),
        Some(Err(e)) => log::warn!("{label}: cannot wait for it: {e}"),
        None => {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            let _ = child.status().await;
            log::warn!("{label}: killed (with its process group) after its {} s timeout{more}", timeout.as_secs());
        }
    }
}

/// Logs the lines of one of a hook's outputs (bounded, see the module doc) until it closes.
/// A line is held up to [`MAX_LINE_BYTES`], the rest of it dropped as it arrives.
async fn log_lines(stream: Option<impl futures_lite::AsyncRead + Unpin>, label: String, count: Arc<AtomicUsize>) {
    let Some(mut stream) = stream else { return };
    let emit = |line: &[u8]| {
        if count.fetch_add(1, Ordering::Relaxed) < MAX_LOGGED_LINES {
            log::info!("{label}: {}", String::from_utf8_lossy(line).trim_end());
        }
    };
    let (mut buf, mut line) = (vec![0u8; 4096], Vec::with_capacity(256));
    loop {
        let n = match futures_lite::AsyncReadExt::read(&mut stream, &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                emit(&line);
                line.clear();
            } else if line.len() < MAX_LINE_BYTES {
                line.push(b);
            }
        }
    }
    if !line.is_empty() {
        emit(&line);
    }
}
