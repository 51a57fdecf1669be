//! systemd integration: the shipped unit passes `systemd-analyze verify` silently and scores
//! at most 2.0 on `systemd-analyze security`; the daemon speaks the `Type=notify` protocol
//! (READY, RELOADING/READY around a reload, STATUS, STOPPING) on a real notify socket.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn unit_with_built_binary(dir: &std::path::Path) -> Option<PathBuf> {
    if !require(&[Need::tool("systemd-analyze", "systemd")], None) {
        return None;
    }
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../systemd/p2pd.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/p2pd "), "install path changed; update this test");
    // verify checks that ExecStart exists; point it at the binary under test.
    let path = dir.join("p2pd.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/p2pd", p2pd_bin().to_str().unwrap())).unwrap();
    Some(path)
}

#[test]
fn unit_verifies_silently() {
    let dir = tempfile::tempdir().unwrap();
    let Some(unit) = unit_with_built_binary(dir.path()) else { return };
    let out = Command::new("systemd-analyze").arg("verify").arg(&unit).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "verify failed: {text}");
    assert!(text.trim().is_empty(), "verify must print nothing (a typo only warns): {text}");
}

#[test]
fn unit_exposure_is_at_most_2() {
    let dir = tempfile::tempdir().unwrap();
    let Some(unit) = unit_with_built_binary(dir.path()) else { return };
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(&unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("exposure level for p2pd.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no score in: {text}"));
    eprintln!("systemd-analyze security: {score}");
    assert!(score <= 2.0, "exposure {score} > 2.0");
    assert!(out.status.success());
}

/// Collects notify messages until `pred` matches one.
fn expect(sock: &UnixDatagram, seen: &mut Vec<String>, what: &str, pred: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    let mut buf = vec![0u8; 4096];
    loop {
        if seen.iter().any(|m| pred(m)) {
            return;
        }
        assert!(Instant::now() < deadline, "no {what} notification; got {seen:?}");
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
}

#[test]
fn speaks_the_notify_protocol() {
    let mut node = Node::new();
    let sock_path = node.root.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let log = std::fs::File::create(node.log_path()).unwrap();
    let mut child = Command::new(p2pd_bin())
        .arg("--config-dir")
        .arg(node.cfg())
        .env("NOTIFY_SOCKET", &sock_path)
        .stderr(log)
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    expect(&sock, &mut seen, "READY=1", |m| m.lines().any(|l| l == "READY=1") && m.contains("STATUS=0 torrents"));
    assert!(node.ctl(&["status"]).code == 0, "ready means the socket answers");

    seen.clear();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGHUP).unwrap();
    expect(&sock, &mut seen, "RELOADING=1", |m| m.contains("RELOADING=1") && m.contains("MONOTONIC_USEC="));
    expect(&sock, &mut seen, "READY=1 after reload", |m| m.lines().any(|l| l == "READY=1"));
    let reloading = seen.iter().position(|m| m.contains("RELOADING=1")).unwrap();
    let ready = seen.iter().rposition(|m| m.lines().any(|l| l == "READY=1")).unwrap();
    assert!(reloading < ready, "RELOADING before READY: {seen:?}");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    expect(&sock, &mut seen, "STOPPING=1", |m| m.contains("STOPPING=1"));
    assert_eq!(child.wait().unwrap().code(), Some(0));
    node.kill();
}

/// `WatchdogSec=`: the supervisor feeds systemd's watchdog between requests at half the
/// timeout, and stops when it is wedged (here: a reload that never ends), so systemd would
/// restart the daemon.
#[test]
#[cfg_attr(not(feature = "fault-injection"), ignore = "needs `--features p2pd/fault-injection`")]
fn feeds_the_watchdog_until_the_supervisor_is_wedged() {
    let mut node = Node::new();
    let sock_path = node.root.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let log = std::fs::File::create(node.log_path()).unwrap();
    let child = Command::new(p2pd_bin())
        .arg("--config-dir")
        .arg(node.cfg())
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "600000")
        .env("P2PD_FAULT_RELOAD_HANGS", "1")
        .stderr(log)
        .spawn()
        .unwrap();
    let child = KilledOnDrop(child);
    let mut seen = Vec::new();
    expect(&sock, &mut seen, "READY=1", |m| m.lines().any(|l| l == "READY=1"));
    // Fed every 0.3 s: at least four times in two seconds, while idle and while answering.
    let count = |window: Duration| {
        let (end, mut n, mut buf) = (Instant::now() + window, 0, vec![0u8; 4096]);
        while Instant::now() < end {
            if let Ok(k) = sock.recv(&mut buf) {
                n += String::from_utf8_lossy(&buf[..k]).lines().filter(|l| *l == "WATCHDOG=1").count();
            }
        }
        n
    };
    let fed = count(Duration::from_secs(2));
    assert!((4..=10).contains(&fed), "fed {fed} times in 2 s at a 0.6 s timeout");
    assert_eq!(node.ctl(&["status"]).code, 0);

    // Wedge the supervisor: fed on through a long request for ten timeouts (6 s here), then no
    // longer.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.0.id() as i32), nix::sys::signal::Signal::SIGHUP).unwrap();
    let mut seen = Vec::new();
    expect(&sock, &mut seen, "RELOADING=1", |m| m.contains("RELOADING=1"));
    assert!(count(Duration::from_secs(2)) >= 3, "a long request starved the watchdog at once");
    // Past the grace (7 s after RELOADING), reading on: a full notify socket would hold up the
    // daemon's sends and shift them late.
    count(Duration::from_secs(5));
    assert_eq!(count(Duration::from_secs(2)), 0, "the watchdog was fed by a wedged supervisor");
    node.kill();
}

/// Kills (SIGKILL) and reaps the daemon however the test ends: a wedged p2pd does not stop on
/// SIGTERM, and one left running holds the test harness's output open.
struct KilledOnDrop(std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// systemd's notify socket full (here: nobody reads it, so its queue of
/// `net.unix.max_dgram_qlen` datagrams fills with watchdog pings): the daemon's sends wait in a
/// thread of their own, and the supervisor goes on answering requests.
#[test]
fn a_full_notify_socket_never_holds_up_the_supervisor() {
    let mut node = Node::new();
    let sock_path = node.root.path().join("notify.sock");
    let _unread = UnixDatagram::bind(&sock_path).unwrap();
    let log = std::fs::File::create(node.log_path()).unwrap();
    let child = Command::new(p2pd_bin())
        .arg("--config-dir")
        .arg(node.cfg())
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "100000")
        .stderr(log)
        .spawn()
        .unwrap();
    let _child = KilledOnDrop(child);
    eventually(PATIENCE, "p2pd to answer", || (node.ctl(&["status"]).code == 0).then_some(()));
    // A ping every 50 ms: the queue is full long before this ends.
    std::thread::sleep(Duration::from_secs(2));
    for _ in 0..3 {
        let mut reload = std::process::Command::new(p2pctl_bin())
            .arg("--config-dir")
            .arg(node.cfg())
            .arg("reload")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = reload.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = reload.kill();
                panic!("a reload is not answered: the supervisor waits on the notify socket\n{}", node.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "{}", node.log());
    }
    node.kill();
}
