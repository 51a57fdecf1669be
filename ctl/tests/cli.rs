//! p2pctl's own behaviour without a daemon: descriptor creation, generated docs, usage errors.
//! (Having an integration test here also makes `cargo test --workspace` build a fresh p2pctl
//! binary for the daemon's tests.)

use std::process::Command;

fn p2pctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_p2pctl"))
}

#[test]
fn create_matches_sha256sum_per_piece() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    std::fs::write(dir.path().join("f.bin"), &data).unwrap();
    let out =
        p2pctl().args(["create", "--piece-size", "64K", "-o", "-"]).arg(dir.path().join("f.bin")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let yaml = String::from_utf8(out.stdout).unwrap();
    let pieces: Vec<&str> = yaml.lines().filter_map(|l| l.trim().strip_prefix("- ")).collect();
    assert_eq!(pieces.len(), 5);
    use sha2::Digest;
    for (i, chunk) in data.chunks(64 << 10).enumerate() {
        assert_eq!(pieces[i], hex::encode(sha2::Sha256::digest(chunk)));
    }
    assert!(yaml.contains("length: 300000"));
}

#[test]
fn default_output_name_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("model/weights")).unwrap();
    std::fs::write(dir.path().join("model/weights/a"), vec![1u8; 5000]).unwrap();
    std::fs::write(dir.path().join("model/config.json"), b"{}").unwrap();
    let out = p2pctl().current_dir(dir.path()).args(["create", "model"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("model.desc: model") && text.contains("2 files"), "{text}");
    assert!(text.contains("info hash "), "{text}");
    let desc = std::fs::read_to_string(dir.path().join("model.desc")).unwrap();
    let config_at = desc.find("path: config.json").unwrap();
    let weights_at = desc.find("path: weights/a").unwrap();
    assert!(config_at < weights_at, "files are sorted by path");
}

#[test]
fn completions_and_man_page_are_generated() {
    let out = p2pctl().args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("p2pctl"));
    let out = p2pctl().arg("man").output().unwrap();
    assert!(out.status.success());
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.contains(".TH p2pctl") && page.contains("wait"), "{}", &page[..200.min(page.len())]);
}

#[test]
fn usage_errors_exit_2() {
    let out = p2pctl().arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = p2pctl().args(["create", "/etc/hostname", "--bootstrap", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bootstrap: `nope` is missing a port"));
}

/// Regression: Rust ignores SIGPIPE, so `p2pctl status | head -1` panicked ("failed printing
/// to stdout: Broken pipe", exit 101) once `head` had gone. Now p2pctl ends as other Unix tools
/// do: quietly, by SIGPIPE. Here its stdout is a pipe whose reader is already closed.
#[test]
fn a_closed_pipe_ends_p2pctl_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f.bin"), vec![7u8; 5000]).unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = p2pctl()
        .current_dir(dir.path())
        .args(["create", "f.bin"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.signal(), Some(nix::sys::signal::Signal::SIGPIPE as i32), "{:?}: {stderr}", out.status);
    assert!(dir.path().join("f.bin.desc").is_file(), "the descriptor was written before the summary");
}
