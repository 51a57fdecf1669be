//! `p2pd-testbed`: flags → library calls → one-line error and exit code.
//!
//! Exit codes: 0 success; 1 failure (a run failed, bytes differed, something could not be
//! built); 2 usage error (clap); 130 interrupted (SIGINT/SIGTERM, after cleaning up).

mod demo;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use p2pd_testbed::binaries::{BIN_DIR_ENV, Binaries};
use p2pd_testbed::content::ContentShape;
use p2pd_testbed::memory::ColdMemory;
use p2pd_testbed::report::{self, RunResult};
use p2pd_testbed::scenario::{self, ScenarioSpec};
use p2pd_testbed::units::{LinkRate, human_bytes, parse_join_window, parse_link_rate, parse_size};
use p2pd_testbed::volume::Filesystem;
use p2pd_testbed::{fleet, floor, presets, teardown};

#[derive(Debug, Parser)]
#[command(
    name = "p2pd-testbed",
    version,
    about = "Real p2pd swarms in network namespaces, measured against the minimum distribution time"
)]
struct Cli {
    /// Directory holding p2pd and p2pctl [default: beside this executable]
    #[arg(long, global = true, env = BIN_DIR_ENV, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One seed plus N leechers with the given links (root)
    Run(RunArgs),
    /// A benchmark scenario (1–6), or all of them (root)
    Scenario {
        /// 1, 2, 3, 4, 5, 6 (both variants) or all
        #[arg(value_parser = ["1", "2", "3", "4", "5", "6", "all"])]
        which: String,
        /// What holds each host's data: tmpfs, or an ext4 image per host (results named NAME-ext4)
        #[arg(long = "fs", default_value = "tmpfs", value_parser = parse_filesystem, value_name = "FS")]
        filesystem: Filesystem,
        /// Results directory
        #[arg(long, default_value = "bench/results/testbed", value_name = "DIR")]
        out: PathBuf,
        /// Keep each run directory (daemon logs, content)
        #[arg(long)]
        keep: bool,
    },
    /// Delete network namespaces, daemons and run directories left by killed runs (root)
    Cleanup {
        /// Also those of runs that are still going
        #[arg(long)]
        all: bool,
    },
    /// Five daemons on loopback share a 64 MiB file with live progress (no root needed)
    Demo,
    /// The floor alone: receive SOURCE over loopback TCP, SHA-256 each piece of DESC, write to
    /// OUT, fdatasync; prints one JSON object with its time and CPU (no root needed)
    Floor {
        /// The descriptor (p2pctl create)
        #[arg(value_name = "DESC")]
        descriptor: PathBuf,
        /// The content it describes (a file or a directory)
        #[arg(value_name = "SOURCE")]
        source: PathBuf,
        /// Where to write the copy (must not exist; left in place)
        #[arg(value_name = "OUT")]
        out: PathBuf,
    },
}

fn parse_filesystem(input: &str) -> Result<Filesystem, String> {
    input.parse()
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Leechers (N)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=250))]
    leechers: u16,
    /// Content size F, e.g. 256MiB
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    size: u64,
    /// Every host's upload limit, e.g. 200mbit
    #[arg(long, value_parser = parse_link_rate, value_name = "RATE")]
    upload: LinkRate,
    /// The seed's upload limit [default: --upload]
    #[arg(long, value_parser = parse_link_rate, value_name = "RATE")]
    seed_upload: Option<LinkRate>,
    /// Every leecher's download limit [default: none]
    #[arg(long, value_parser = parse_link_rate, value_name = "RATE")]
    download: Option<LinkRate>,
    /// A directory of K files instead of one file
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    files: Option<u32>,
    /// Piece size for p2pctl create [default: p2pctl's]
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    piece_size: Option<u64>,
    /// Name of the result files [default: from the parameters]
    #[arg(long)]
    name: Option<String>,
    /// Results directory
    #[arg(long, default_value = "bench/results/testbed", value_name = "DIR")]
    out: PathBuf,
    /// Give up after this many seconds [default: 10 × T_min + 30]
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// Keep the run directory (daemon logs, content)
    #[arg(long)]
    keep: bool,
    /// Measure with memory as it is: skip waiting for free page reporting and taking the warm
    /// rest before the floor (quicker; CPU figures vary more from run to run)
    #[arg(long)]
    warm_memory: bool,
    /// Release the leechers one after another over this window (leecher i of N at
    /// i × WINDOW / N), e.g. 5s or 500ms [default: all at once]
    #[arg(long, value_parser = parse_join_window, value_name = "WINDOW")]
    join_over: Option<Duration>,
    /// What holds each host's data: tmpfs, or an ext4 image per host
    #[arg(long = "fs", default_value = "tmpfs", value_parser = parse_filesystem, value_name = "FS")]
    filesystem: Filesystem,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = teardown::install_signal_handler() {
        eprintln!("p2pd-testbed: cannot handle SIGINT/SIGTERM ({e}); a Ctrl-C may leave namespaces behind");
    }
    let outcome = run(cli);
    teardown::park_if_interrupted();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("p2pd-testbed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let binaries = || Binaries::locate(cli.bin_dir.as_deref());
    match cli.command {
        Command::Demo => demo::run(&binaries()?),
        Command::Floor { descriptor, source, out } => {
            anyhow::ensure!(!out.exists(), "{} exists; the floor writes a new copy there", out.display());
            let result = floor::run_descriptor(&descriptor, &source, &out)?;
            println!("{}", serde_json::to_string(&result)?);
            Ok(())
        }
        Command::Cleanup { all } => cleanup(all),
        Command::Run(args) => {
            fleet::check_prerequisites()?;
            let binaries = binaries()?;
            let out = args.out.clone();
            let spec = run_spec(args);
            let result = run_one(&spec, &binaries, &out)?;
            outcome(&result)
        }
        Command::Scenario { which, filesystem, out, keep } => {
            fleet::check_prerequisites()?;
            let binaries = binaries()?;
            let numbers: Vec<u8> = if which == "all" { presets::ALL.to_vec() } else { vec![which.parse()?] };
            let mut failed = Vec::new();
            for n in numbers {
                for spec in presets::scenarios(n).with_context(|| format!("no scenario {n}"))? {
                    let mut spec = presets::with_filesystem(spec, filesystem);
                    spec.keep_run_dir = keep;
                    match run_one(&spec, &binaries, &out).and_then(|r| outcome(&r)) {
                        Ok(()) => {}
                        Err(e) => {
                            eprintln!("p2pd-testbed: {}: {e:#}", spec.name);
                            failed.push(spec.name);
                        }
                    }
                }
            }
            anyhow::ensure!(failed.is_empty(), "failed: {}", failed.join(", "));
            Ok(())
        }
    }
}

/// The spec of `run`, with the command line that reproduces it.
fn run_spec(args: RunArgs) -> ScenarioSpec {
    let command = std::iter::once("p2pd-testbed".to_string())
        .chain(std::env::args().skip(1).filter(|a| !a.starts_with("--bin-dir")))
        .map(|a| if a.contains(' ') { format!("'{a}'") } else { a })
        .collect::<Vec<_>>()
        .join(" ");
    let seed_upload = args.seed_upload.unwrap_or(args.upload);
    let content = match args.files {
        Some(files) => ContentShape::Directory { bytes: args.size, files },
        None => ContentShape::File { bytes: args.size },
    };
    let size_text = human_bytes(args.size).replace(' ', "");
    let join_over = args.join_over.filter(|w| !w.is_zero());
    let name = args.name.unwrap_or_else(|| {
        let mbit = |r: LinkRate| r.bits_per_sec() / 1_000_000;
        let join = join_over.map(|w| format!("-join{}ms", w.as_millis())).unwrap_or_default();
        let fs = if args.filesystem == Filesystem::Tmpfs { String::new() } else { format!("-{}", args.filesystem) };
        format!("run-n{}-{size_text}-{}mbit{join}{fs}", args.leechers, mbit(args.upload))
    });
    let rates = if seed_upload == args.upload {
        format!("{} upload everywhere", args.upload)
    } else {
        format!("seed {seed_upload}, leechers {} upload", args.upload)
    };
    let download = args.download.map(|d| format!(", leechers {d} download")).unwrap_or_default();
    let files = args.files.map(|k| format!(" in {k} files")).unwrap_or_default();
    let joining = join_over.map(|w| format!(", joining over {:.1} s", w.as_secs_f64())).unwrap_or_default();
    let fs =
        if args.filesystem == Filesystem::Tmpfs { String::new() } else { format!(", data on {}", args.filesystem) };
    ScenarioSpec {
        name,
        title: format!(
            "{}{files}, 1 seed + {} leechers, {rates}{download}{joining}{fs}",
            human_bytes(args.size),
            args.leechers
        ),
        command,
        content,
        leechers: usize::from(args.leechers),
        seed_upload,
        leecher_upload: args.upload,
        leecher_download: args.download,
        piece_bytes: args.piece_size,
        timeout: args.timeout.map(Duration::from_secs),
        keep_run_dir: args.keep,
        join_over,
        filesystem: args.filesystem,
        cold_memory: (!args.warm_memory).then_some(ColdMemory::BENCHMARK),
    }
}

/// Runs a scenario and writes its files (also when it failed).
fn run_one(spec: &ScenarioSpec, binaries: &Binaries, out: &Path) -> anyhow::Result<RunResult> {
    let result = scenario::run(spec, binaries, &mut |line| eprintln!("{line}"));
    teardown::park_if_interrupted();
    let result = result?;
    eprint!("{}: payload MiB sent, by sender (rows) and receiver:\n{}", result.name, result.transfer_matrix());
    let (json, svg) = result.write(out)?;
    let summary = report::write_summary(out)?;
    println!("{}", report::TABLE_HEADER);
    println!("{}", result.markdown_row());
    println!("{}", report::COST_TABLE_HEADER);
    println!("{}", result.cost_row());
    println!("wrote {}, {} and {}", json.display(), svg.display(), summary.display());
    Ok(result)
}

/// One line of figures, or the run's failure as an error.
fn outcome(result: &RunResult) -> anyhow::Result<()> {
    if let Some(error) = &result.outcome.error {
        anyhow::bail!("{}", error);
    }
    let s = &result.summary;
    let ratio = |r: Option<f64>| r.map_or("—".to_string(), |r| format!("{r:.3}"));
    println!(
        "{}: slowest leecher {} × T_min ({:.2} s), median {} ×, seed uploaded {:.3} × F, first piece median {} ms, CPU {:.0} % busy, p2pd {:.0} % ({})",
        result.name,
        ratio(s.slowest_ratio),
        result.bound.t_min_secs,
        ratio(s.median_ratio),
        s.seed_upload_multiple,
        s.first_piece_median_secs.map_or("—".into(), |t| format!("{:.0}", t * 1000.0)),
        s.cpu_busy_fraction * 100.0,
        s.p2pd_cpu_fraction * 100.0,
        s.verdict.map_or("failed", |v| v.as_str()),
    );
    let figure = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.2}"));
    println!(
        "{}: CPU per GiB delivered {} core-s (machine), leechers median {} / max {}, seed {} per GiB sent; floor receiver {} + sender {}; p2pd ÷ floor {} (leecher median ÷ receiver), {} (machine ÷ receiver + sender), machine − floor {} core-s/GiB; max RSS {} MiB",
        result.name,
        figure(s.machine_cpu_secs_per_gib),
        figure(s.leecher_cpu_secs_per_gib_median),
        figure(s.leecher_cpu_secs_per_gib_max),
        figure(s.seed_cpu_secs_per_gib),
        figure(result.floor.as_ref().map(|f| f.receiver_cpu_secs_per_gib)),
        figure(result.floor.as_ref().map(|f| f.sender_cpu_secs_per_gib)),
        figure(s.leecher_to_floor),
        figure(s.machine_to_floor),
        figure(s.machine_over_floor),
        s.max_rss_bytes.map_or("—".to_string(), |b| format!("{:.1}", b as f64 / f64::from(1 << 20))),
    );
    Ok(())
}

fn cleanup(all: bool) -> anyhow::Result<()> {
    let report = fleet::cleanup_leftovers(all)?;
    for ns in &report.namespaces_deleted {
        println!("deleted network namespace {ns}");
    }
    for mount in &report.unmounted {
        println!("unmounted {}", mount.display());
    }
    for dir in &report.directories_removed {
        println!("removed {}", dir.display());
    }
    for live in &report.skipped_live {
        println!("left {live}: its run is still going (use --all to remove it anyway)");
    }
    for kept in &report.kept_directories {
        println!("left {} (kept with --keep; remove it by hand)", kept.display());
    }
    println!(
        "cleanup: {} namespaces deleted, {} daemons stopped, {} filesystems unmounted, {} run directories removed",
        report.namespaces_deleted.len(),
        report.daemons_stopped,
        report.unmounted.len(),
        report.directories_removed.len()
    );
    Ok(())
}
