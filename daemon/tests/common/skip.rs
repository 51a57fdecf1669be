//! What a test needs that a machine may not have (root, a tool), checked in one place.
//!
//! A test that cannot run here says so — on the terminal, not through `eprintln!`, whose output
//! libtest hides for a test that passes — and returns; with `P2PD_REQUIRE_ALL=1` (which
//! `.ci/run` sets) it fails instead, naming what is missing. Also included by the testbed's
//! tests (`#[path]`), so it depends on nothing but std and nix.

#![allow(dead_code)]

use std::io::Write;
use std::path::Path;

/// One thing a test needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Effective uid 0 (mounts, network namespaces, raw sockets, running as another user).
    Root,
    /// IPv6 on loopback (`[::1]`): a kernel booted with `ipv6.disable=1`, or a container
    /// without it, has none.
    Ipv6Loopback,
    /// An executable of this name on `PATH`, or in `/sbin` or `/usr/sbin` (which a non-root
    /// `PATH` often leaves out), with the package that provides it.
    Tool { name: &'static str, package: &'static str },
}

impl Need {
    /// Shorthand for [`Need::Tool`].
    pub const fn tool(name: &'static str, package: &'static str) -> Need {
        Need::Tool { name, package }
    }

    /// Why it is missing here, or `None` if it is not.
    fn missing(self) -> Option<String> {
        match self {
            Need::Root => {
                let euid = nix::unistd::geteuid();
                (!euid.is_root()).then(|| format!("root (running as uid {euid})"))
            }
            Need::Ipv6Loopback => std::net::UdpSocket::bind("[::1]:0")
                .err()
                .map(|e| format!("IPv6 on loopback (binding [::1] fails: {e})")),
            Need::Tool { name, package } => {
                (!on_path(name)).then(|| format!("{name} (not installed: apt-get install {package})"))
            }
        }
    }
}

/// Whether an executable `name` is on `PATH`, in `/sbin` or in `/usr/sbin`.
pub fn on_path(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([Path::new("/usr/sbin").to_path_buf(), Path::new("/sbin").to_path_buf()])
        .map(|dir| dir.join(name))
        .any(|p| std::fs::metadata(&p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// Whether the running test has everything it `needs`. If not, it says what is missing and the
/// caller returns (skips) — or, with `P2PD_REQUIRE_ALL=1`, this panics: the test fails.
/// `part` names what is skipped when it is only part of a test (`None`: the whole test).
#[must_use]
pub fn require(needs: &[Need], part: Option<&str>) -> bool {
    let missing: Vec<String> = needs.iter().filter_map(|n| n.missing()).collect();
    if missing.is_empty() {
        return true;
    }
    skip(&format!("needs {}", missing.join(", ")), part);
    false
}

/// Skips the running test (or `part` of it) for `why`, loudly — or, with `P2PD_REQUIRE_ALL=1`,
/// fails it. For needs [`Need`] does not name; prefer [`require`].
pub fn skip(why: &str, part: Option<&str>) {
    let test = std::thread::current().name().unwrap_or("this test").to_string();
    let what = match part {
        Some(part) => format!("{test}: {part}"),
        None => test,
    };
    assert!(
        std::env::var("P2PD_REQUIRE_ALL").as_deref() != Ok("1"),
        "{what} cannot run: {why} (P2PD_REQUIRE_ALL=1 makes a skip a failure)"
    );
    // Straight to the terminal: libtest captures `eprintln!` and shows it only for failures.
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {what}: {why}");
}
