//! `p2pd-testbed demo`: a small swarm on loopback for someone trying p2pd for the first time.
//! No root, no namespaces: five daemons on 127.0.0.1 with their own ports and directories in a
//! temporary directory, each limited to [`UPLOAD_PER_NODE`] by p2pd's own `limits.upload_rate`
//! so that the run lasts about fifteen seconds and a person can watch the pieces spread.
//!
//! Everything is recorded in a teardown plan: the daemons are stopped and the directory removed
//! on return, on error and on Ctrl-C.

use std::io::IsTerminal;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use p2pd::control::protocol::TorrentState;
use p2pd::descriptor::Descriptor;

use p2pd_testbed::binaries::Binaries;
use p2pd_testbed::content::{self, ContentShape};
use p2pd_testbed::daemon::{Daemon, DaemonConfig};
use p2pd_testbed::teardown::TeardownGuard;
use p2pd_testbed::units::{LinkRate, human_bytes};

/// Daemons in the demo (one seed).
pub const NODES: usize = 5;
/// Size of the generated file.
pub const CONTENT_BYTES: u64 = 64 << 20;
/// Every node's upload limit: the seed alone would need 12.8 s to send one copy.
pub const UPLOAD_PER_NODE: LinkRate = LinkRate(5 << 20);
/// Give up after this long.
const TIMEOUT: Duration = Duration::from_secs(180);

/// A free port on 127.0.0.1 for both UDP and TCP (bound and released; best effort).
fn free_port() -> std::io::Result<u16> {
    for _ in 0..100 {
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = tcp.local_addr()?.port();
        if UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::other("no port free for both TCP and UDP on 127.0.0.1"))
}

/// Runs the demo, printing as it goes.
pub fn run(binaries: &Binaries) -> anyhow::Result<()> {
    use anyhow::Context;
    let teardown = TeardownGuard::register();
    let dir =
        tempfile::Builder::new().prefix("p2pd-demo-").tempdir().context("cannot create a temporary directory")?.keep();
    teardown.record(|plan| plan.run_dir = Some(dir.clone()));
    println!(
        "p2pd demo: {NODES} daemons on 127.0.0.1, each uploading at most {}/s, in {}",
        human_bytes(UPLOAD_PER_NODE.0),
        dir.display()
    );

    let mut nodes = Vec::new();
    for i in 1..=NODES {
        let port = free_port().context("cannot find a free port on 127.0.0.1")?;
        let config = DaemonConfig {
            listen: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port),
            upload_rate: Some(UPLOAD_PER_NODE),
            log_level: "info",
        };
        let label = if i == 1 { "node-1 (seed)".to_string() } else { format!("node-{i}") };
        let mut daemon = Daemon::prepare(&label, &dir.join(format!("node-{i}")), &config)?;
        let pid = daemon.spawn(&binaries.p2pd, None)?;
        teardown.record(|plan| plan.pids.push(pid));
        nodes.push(daemon);
    }
    for node in &mut nodes {
        node.wait_ready()?;
    }
    println!(
        "started {NODES} daemons on ports {}",
        nodes.iter().map(|n| n.listen.port().to_string()).collect::<Vec<_>>().join(", ")
    );

    let source = content::generate(&nodes[0].data_dir(), "demo.bin", ContentShape::File { bytes: CONTENT_BYTES }, 42)?;
    let desc_path = dir.join("demo.desc");
    let output = std::process::Command::new(&binaries.p2pctl)
        .arg("create")
        .arg(&source)
        .arg("-o")
        .arg(&desc_path)
        .args(["--bootstrap", &nodes[0].listen.to_string()])
        .output()
        .with_context(|| format!("cannot run {}", binaries.p2pctl.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "p2pctl create failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let text = std::fs::read_to_string(&desc_path).with_context(|| format!("cannot read {}", desc_path.display()))?;
    let descriptor =
        Descriptor::parse(&text).map_err(|e| anyhow::anyhow!("p2pctl wrote an invalid descriptor: {e}"))?;
    let hash = descriptor.info_hash.to_hex();
    println!(
        "described a {} random file in {} pieces: p2pctl create demo.bin -o demo.desc --bootstrap {}",
        human_bytes(CONTENT_BYTES),
        descriptor.content.piece_count(),
        nodes[0].listen
    );
    let add = p2pd_testbed::control::add_request(&text, &desc_path);
    nodes[0].control().add(&add)?;
    let seed_started = Instant::now();
    loop {
        match nodes[0].control().torrent(&hash)? {
            Some(t) if t.state == TorrentState::Seeding => break,
            Some(t) if t.state == TorrentState::Error => {
                anyhow::bail!("the seed failed: {}", t.error.unwrap_or_default())
            }
            _ if seed_started.elapsed() > Duration::from_secs(60) => {
                anyhow::bail!("the seed did not finish checking in 60 s")
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    println!(
        "node-1 checked its copy and is seeding; adding the descriptor on the other {} nodes at once\n",
        NODES - 1
    );

    let barrier = Arc::new(Barrier::new(NODES));
    let adders: Vec<_> = nodes[1..]
        .iter()
        .map(|n| {
            let (client, add, barrier) = (n.control(), add.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                client.add(&add)
            })
        })
        .collect();
    barrier.wait();
    let t0 = Instant::now();

    let terminal = std::io::stderr().is_terminal();
    let multi = MultiProgress::with_draw_target(if terminal {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let style = ProgressStyle::with_template("{prefix:14} {bar:36.cyan/blue} {percent:>3}% {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("█▓░");
    let bars: Vec<ProgressBar> = nodes
        .iter()
        .map(|n| {
            let bar = multi.add(ProgressBar::new(CONTENT_BYTES));
            bar.set_style(style.clone());
            bar.set_prefix(n.label.clone());
            bar
        })
        .collect();
    let mut completed: Vec<Option<f64>> = vec![None; NODES];
    let mut uploaded = [0u64; NODES];
    let mut next_line = 0.0;
    loop {
        let t = t0.elapsed().as_secs_f64();
        for (i, node) in nodes.iter_mut().enumerate() {
            if let Some(status) = node.exited() {
                anyhow::bail!("{} exited with {status}; its log ends:\n{}", node.label, node.log_tail(15));
            }
            let Ok(Some(s)) = node.control().torrent(&hash) else { continue };
            anyhow::ensure!(s.state != TorrentState::Error, "{} failed: {}", node.label, s.error.unwrap_or_default());
            uploaded[i] = s.uploaded;
            bars[i].set_position(s.bytes_done);
            bars[i].set_message(format!(
                "↓ {:>9}/s ↑ {:>9}/s  sent {:>9}  {} peers",
                human_bytes(s.download_rate),
                human_bytes(s.upload_rate),
                human_bytes(s.uploaded),
                s.peers
            ));
            if i > 0 && completed[i].is_none() && s.state == TorrentState::Seeding {
                completed[i] = Some(t);
            }
        }
        if !terminal && t >= next_line {
            next_line += 2.0;
            let pct: Vec<String> = bars
                .iter()
                .skip(1)
                .map(|b| format!("{:.0}%", b.position() as f64 / CONTENT_BYTES as f64 * 100.0))
                .collect();
            println!("t={t:>4.1}s  leechers {}", pct.join(" "));
        }
        if completed.iter().skip(1).all(Option::is_some) {
            break;
        }
        anyhow::ensure!(t0.elapsed() < TIMEOUT, "the demo did not finish in {} s", TIMEOUT.as_secs());
        std::thread::sleep(Duration::from_millis(100));
    }
    for adder in adders {
        match adder.join() {
            Ok(result) => {
                result?;
            }
            Err(_) => anyhow::bail!("an add thread panicked"),
        }
    }
    // Final upload counters.
    for (i, node) in nodes.iter().enumerate() {
        if let Ok(Some(s)) = node.control().torrent(&hash) {
            uploaded[i] = s.uploaded;
            bars[i].set_position(s.bytes_done);
        }
        bars[i].finish();
    }
    drop(multi);

    for node in nodes.iter().skip(1) {
        if let Some(diff) = content::first_difference(&source, &node.data_dir().join("demo.bin"))? {
            anyhow::bail!("{}: {diff}", node.label);
        }
    }
    let slowest = completed.iter().flatten().copied().fold(0.0, f64::max);
    let seed_alone = CONTENT_BYTES as f64 / UPLOAD_PER_NODE.0 as f64;
    println!("\nevery node has a byte-identical copy; the last finished after {slowest:.1} s\n");
    println!("{:<14} {:>10} {:>14} {:>10}", "node", "finished", "uploaded", "copies");
    for (i, node) in nodes.iter().enumerate() {
        let finished = completed[i].map_or("(seed)".to_string(), |t| format!("{t:.1} s"));
        println!(
            "{:<14} {:>10} {:>14} {:>9.2}×",
            node.label,
            finished,
            human_bytes(uploaded[i]),
            uploaded[i] as f64 / CONTENT_BYTES as f64
        );
    }
    let leechers_sent: u64 = uploaded[1..].iter().sum();
    println!(
        "\nThe seed sent {:.2} copies; the other nodes sent {:.2} copies to each other. Had the seed sent all {} copies \
         alone at {}/s it would have taken {:.0} s.",
        uploaded[0] as f64 / CONTENT_BYTES as f64,
        leechers_sent as f64 / CONTENT_BYTES as f64,
        NODES - 1,
        human_bytes(UPLOAD_PER_NODE.0),
        seed_alone * (NODES - 1) as f64
    );
    println!("Cleaning up: stopping the daemons and removing {}", dir.display());
    drop(teardown);
    Ok(())
}
