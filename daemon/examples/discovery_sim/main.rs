//! Discovery at scale: the real routing and forwarding code (`p2pd::discovery::Node`) over a
//! deterministic simulated network of 1,000 and 10,000 nodes, with message loss and nodes gone
//! without notice; per lookup: messages sent (by every node), hops, simulated time, success.
//! The same for the prototype's flood-every-neighbour strategy, for comparison.
//!
//! Run: `cargo run --release --example discovery_sim -- --out bench/results/discovery.md`
//! (options: --nodes 1000,10000 --lookups 300 --flood-lookups 10 --swarms 64,256,1024 --seed 1).
//! Then, per network size, what a whole swarm joining at once costs: every member joins, declares
//! itself leeching, then seeding; datagrams per member and how many members each one meets.
//! The result opens
//! with the command line, date, commit, machine and build, like `bench/benchlib.py`'s header.

use std::time::Duration;

use p2pd::descriptor::InfoHash;
mod sim;

use p2pd::discovery::wire::PeerStatus;
use p2pd::discovery::{DiscoveryConfig, Event, Forwarding};
use rand::RngExt;
use sim::SimNet;

struct Args {
    nodes: Vec<usize>,
    lookups: usize,
    flood_lookups: usize,
    members: usize,
    swarms: Vec<usize>,
    seed: u64,
    out: Option<String>,
}

fn parse_args() -> Args {
    let mut a = Args {
        nodes: vec![1000, 10_000],
        lookups: 300,
        flood_lookups: 10,
        members: 8,
        swarms: vec![64, 256, 1024],
        seed: 1,
        out: None,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let v = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--nodes" => a.nodes = v.split(',').filter_map(|x| x.parse().ok()).collect(),
            "--lookups" => a.lookups = v.parse().unwrap_or(a.lookups),
            "--flood-lookups" => a.flood_lookups = v.parse().unwrap_or(a.flood_lookups),
            "--members" => a.members = v.parse().unwrap_or(a.members),
            "--swarms" => a.swarms = v.split(',').filter_map(|x| x.parse().ok()).collect(),
            "--seed" => a.seed = v.parse().unwrap_or(a.seed),
            "--out" => a.out = Some(v),
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    a
}

#[derive(Default)]
struct Stats {
    lookups: usize,
    successes: usize,
    messages: Vec<u64>,
    hops: Vec<u64>,
    millis: Vec<f64>,
}

fn pct<T: Copy + PartialOrd>(v: &[T], p: f64) -> Option<T> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let idx = ((s.len() as f64 - 1.0) * p).round() as usize;
    Some(s[idx])
}

fn run_lookups(net: &mut SimNet, hash: InfoHash, members: &[usize], count: usize) -> Stats {
    let mut stats = Stats::default();
    for _ in 0..count {
        let origin = net.random_alive(members);
        let before = net.sent;
        net.events.clear();
        let now = net.now;
        net.nodes[origin].lookup(now, hash, &[]);
        net.flush(origin);
        net.run_until_idle(Duration::from_secs(120));
        let report = net.events.iter().find_map(|(i, e)| match e {
            Event::LookupDone(r) if *i == origin => Some(r.clone()),
            _ => None,
        });
        stats.lookups += 1;
        stats.messages.push(net.sent - before);
        let Some(r) = report else { continue };
        let live_member =
            r.peers.iter().any(|p| net.index_of(&p.addr).is_some_and(|i| net.alive[i] && members.contains(&i)));
        if std::env::var("SIM_DEBUG").is_ok() && !(r.found && live_member) {
            eprintln!(
                "FAIL origin {origin}: found={} hops={:?} attempts={} peers={:?} table={}",
                r.found,
                r.hops,
                r.attempts,
                r.peers.iter().map(|p| (net.index_of(&p.addr), p.status)).collect::<Vec<_>>(),
                net.nodes[origin].routing().len()
            );
        }
        if r.found && live_member {
            stats.successes += 1;
            stats.hops.push(r.hops.unwrap_or(0) as u64);
            stats.millis.push(r.elapsed.as_secs_f64() * 1000.0);
        }
    }
    stats
}

/// The lines every benchmark result opens with (as `bench/benchlib.py` writes them): the exact
/// command line, the UTC date, the commit, the machine and the build.
fn header() -> String {
    let argv: Vec<String> = std::env::args().skip(1).map(|a| shell_word(&a)).collect();
    let command = format!("cargo run --release --example discovery_sim -- {}", argv.join(" "));
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .map_or(String::new(), |m| format!(" ({m})"));
    let kernel =
        std::fs::read_to_string("/proc/sys/kernel/osrelease").map_or("unknown".into(), |k| k.trim().to_string());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    let build =
        if cfg!(debug_assertions) { "debug (not a release build: figures are not comparable)" } else { "release" };
    format!(
        "Command: `{}`  \nDate: {}  \nCommit: {}  \nMachine: {cpus} CPUs{model}, Linux {kernel}, load average {load} at the start  \nBuild: {build}\n\n",
        command.trim_end(),
        utc_now(),
        commit(),
    )
}

/// `git rev-parse --short HEAD`, with "+ uncommitted changes" when `git status --porcelain`
/// lists anything.
fn commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match (git(&["rev-parse", "--short", "HEAD"]), git(&["status", "--porcelain"])) {
        (Some(head), Some(changes)) if !changes.is_empty() => format!("{head} + uncommitted changes"),
        (Some(head), Some(_)) => head,
        (Some(head), None) => format!("{head} (git status failed)"),
        (None, _) => "unknown (not a git checkout)".into(),
    }
}

/// A command-line word as a shell would need it quoted.
fn shell_word(a: &str) -> String {
    if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_.,/=:+".contains(c)) {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    }
}

/// The current time as `YYYY-MM-DD HH:MM UTC` (civil-from-days, proleptic Gregorian).
fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}

/// What a swarm of `size` members joining at once costs on `base` (forked): datagrams each
/// member sends and receives, the most any node handles, and how many other members each one
/// meets (its torrent hears of them, or they of it: either side then connects).
fn swarm_join(base: &mut SimNet, size: usize) -> String {
    let mut net = base.fork();
    let hash = InfoHash(net.rng().random());
    let mut members = Vec::new();
    while members.len() < size {
        let m = net.random_alive(&members);
        members.push(m);
    }
    let before: Vec<u64> = net.nodes.iter().map(|n| n.counters.sent + n.counters.received).collect();
    let sent_before = net.sent;
    // Joins spread over 100 ms (a deploy tool's fan-out), then the status changes a download
    // makes: leeching at once, seeding half a minute later.
    for &m in &members {
        net.run_until_idle(Duration::from_micros(100_000 / size as u64));
        let now = net.now;
        net.nodes[m].join(now, hash, PeerStatus::Idle, &[]);
        net.flush(m);
    }
    net.run_until_idle(Duration::from_millis(500));
    for status in [PeerStatus::Leeching, PeerStatus::Seeding] {
        for &m in &members {
            let now = net.now;
            net.nodes[m].set_status(now, hash, status);
            net.flush(m);
        }
        net.run_until_idle(Duration::from_secs(30));
    }
    net.run_until_idle(Duration::from_secs(120));
    let handled: Vec<u64> =
        net.nodes.iter().zip(&before).map(|(n, b)| n.counters.sent + n.counters.received - b).collect();
    let per_member: Vec<u64> = members.iter().map(|&m| handled[m]).collect();
    let max_other = (0..net.nodes.len()).filter(|i| !members.contains(i)).map(|i| handled[i]).max().unwrap_or(0);
    // Who met whom: a Peers event at member i naming member j links them.
    let index: std::collections::HashMap<_, _> = members.iter().map(|&m| (net.addr(m), m)).collect();
    let mut met: std::collections::HashMap<usize, std::collections::HashSet<usize>> =
        members.iter().map(|&m| (m, Default::default())).collect();
    for (i, e) in &net.events {
        if let Event::Peers { info_hash, peers } = e
            && *info_hash == hash
            && members.contains(i)
        {
            for p in peers {
                if let Some(&j) = index.get(&p.addr)
                    && j != *i
                {
                    met.entry(*i).or_default().insert(j);
                    met.entry(j).or_default().insert(*i);
                }
            }
        }
    }
    let degrees: Vec<usize> = members.iter().map(|m| met.get(m).map_or(0, |s| s.len())).collect();
    format!(
        "| {} | {size} | {:.0} | {} ({}) | {} | {} | {} ({}) |\n",
        net.nodes.len(),
        (net.sent - sent_before) as f64 / size as f64,
        pct(&per_member, 0.5).unwrap_or(0),
        per_member.iter().max().copied().unwrap_or(0),
        max_other,
        degrees.iter().min().copied().unwrap_or(0),
        pct(&degrees, 0.5).unwrap_or(0),
        (size - 1).min(50),
    )
}

fn main() {
    let args = parse_args();
    let mut out = String::new();
    out.push_str("# Discovery at scale (simulated network, real `discovery::Node` code)\n\n");
    out.push_str(&header());
    out.push_str(&format!(
        "Each network is formed by nodes joining one after another through a random earlier node; then {} members \
         join one swarm (they stay alive). Scenarios fork that network, drop a share of all datagrams, and kill a share \
         of the other nodes without notice. A lookup starts at a random live non-member and succeeds when it returns a \
         live member. Messages count every datagram any node sent from the lookup's start until the network is quiet \
         (retries and acknowledgements included). One-way latency is uniform in 0.5–5 ms. Default timers: first \
         timeout 250 ms, doubling, 4 sends per request; 2 s per attempt; 30 s per lookup.\n\n",
        args.members
    ));
    let mut stores = String::new();
    let mut joins = String::from(
        "## A swarm joining at once\n\nEvery member joins within 100 ms, declares itself leeching, then seeding \
         30 s later; counted until the network is quiet. Datagrams per member: every datagram any node sent, \
         divided by the members. A member's own: what it sent and received. Members met: other members its \
         torrent heard of or that heard of it (either side connects), against the 50 a torrent connects to.\n\n\
         | nodes | members | datagrams per member | a member's own: median (max) | most at a non-member | \
         members met: fewest | median (of at most) |\n|---|---|---|---|---|---|---|\n",
    );
    out.push_str("| nodes | strategy | loss | dead | lookups | success | messages median (p90) | 2·log2(N) | hops median (p90) | time median (p99) |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    for &n in &args.nodes {
        let started = std::time::Instant::now();
        let config =
            DiscoveryConfig { maintenance_interval: Duration::from_secs(86_400), ..DiscoveryConfig::default() };
        let mut base = SimNet::new(n, &config, args.seed);
        base.form();
        let hash = InfoHash(base.rng().random());
        let mut members = Vec::new();
        while members.len() < args.members.min(n / 2) {
            let m = base.random_alive(&members);
            members.push(m);
        }
        for &m in &members {
            let now = base.now;
            base.nodes[m].join(now, hash, PeerStatus::Seeding, &[]);
            base.flush(m);
            base.run_until_idle(Duration::from_secs(120));
        }
        let table: f64 = base.nodes.iter().map(|x| x.routing().len() as f64).sum::<f64>() / n as f64;
        eprintln!("{n} nodes formed in {:.1}s (mean routing table {table:.0} nodes)", started.elapsed().as_secs_f64());
        // Who stores the swarm for others: a node stores announces only for swarms it is among
        // the k closest to (by its own table), so the storers should be the k closest by id.
        let key = |i: usize| p2pd::discovery::key::distance(&base.nodes[i].id().0, &hash.0);
        let mut by_distance: Vec<usize> = (0..n).filter(|i| !members.contains(i)).collect();
        by_distance.sort_by_key(|&i| key(i));
        let storers: Vec<usize> =
            by_distance.iter().copied().filter(|&i| base.nodes[i].swarms().knows(&hash)).collect();
        let k = config.k;
        let closest_storing = by_distance.iter().take(k).filter(|i| storers.contains(i)).count();
        let line = format!(
            "{n} nodes: {} non-members store the swarm; {closest_storing} of the {k} non-members closest to it do; \
             the farthest storer is number {} by distance.\n\n",
            storers.len(),
            storers.last().and_then(|s| by_distance.iter().position(|i| i == s)).map_or(0, |p| p + 1),
        );
        eprint!("{line}");
        stores.push_str(&line);
        let bound = 2.0 * (n as f64).log2();
        let scenarios = [(0.0, 0.0), (0.1, 0.0), (0.3, 0.0), (0.0, 0.2), (0.1, 0.2), (0.3, 0.2)];
        for strategy in [Forwarding::Greedy, Forwarding::Flood] {
            for &(loss, dead) in &scenarios {
                let count = if strategy == Forwarding::Greedy { args.lookups } else { args.flood_lookups };
                if strategy == Forwarding::Flood && !(loss == 0.0 && dead == 0.0 || loss == 0.1 && dead == 0.2) {
                    continue;
                }
                let t = std::time::Instant::now();
                let mut net = base.fork();
                for node in &mut net.nodes {
                    node.config_mut().forwarding = strategy;
                }
                net.kill(dead, &members);
                net.loss = loss;
                let s = run_lookups(&mut net, hash, &members, count);
                let line = format!(
                    "| {n} | {} | {:.0}% | {:.0}% | {} | {:.2}% | {} ({}) | {:.1} | {} ({}) | {:.1} ms ({:.1} ms) |\n",
                    if strategy == Forwarding::Greedy { "p2pd (towards the hash)" } else { "prototype (flood)" },
                    loss * 100.0,
                    dead * 100.0,
                    s.lookups,
                    s.successes as f64 * 100.0 / s.lookups.max(1) as f64,
                    pct(&s.messages, 0.5).unwrap_or(0),
                    pct(&s.messages, 0.9).unwrap_or(0),
                    bound,
                    pct(&s.hops, 0.5).unwrap_or(0),
                    pct(&s.hops, 0.9).unwrap_or(0),
                    pct(&s.millis, 0.5).unwrap_or(0.0),
                    pct(&s.millis, 0.99).unwrap_or(0.0),
                );
                eprint!("{line}");
                eprintln!("  ({:.1}s)", t.elapsed().as_secs_f64());
                out.push_str(&line);
            }
        }
        for &size in args.swarms.iter().filter(|&&m| m <= n / 2) {
            let t = std::time::Instant::now();
            let line = swarm_join(&mut base, size);
            eprint!("{line}");
            eprintln!("  ({:.1}s)", t.elapsed().as_secs_f64());
            joins.push_str(&line);
        }
    }
    out.push('\n');
    out.push_str(&stores);
    out.push_str(&joins);
    println!("{out}");
    if let Some(path) = args.out
        && let Err(e) = std::fs::write(&path, &out)
    {
        eprintln!("cannot write {path}: {e}");
        std::process::exit(1);
    }
}
