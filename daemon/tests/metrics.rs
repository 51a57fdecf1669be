//! Metrics and health over HTTP (`metrics_listen`): real daemons, scraped with a real HTTP
//! client (ureq) and, for the abuse cases, raw sockets.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// `GET http://addr/path`: status and body.
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut r = agent().get(&format!("http://{addr}{path}")).call().unwrap_or_else(|e| panic!("GET {path}: {e}"));
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
}

fn try_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut r = agent().get(&format!("http://{addr}{path}")).call().ok()?;
    Some((r.status().as_u16(), r.body_mut().read_to_string().ok()?))
}

/// The value of one series (name with its labels, exactly as exposed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn metrics(addr: &str) -> String {
    let (status, body) = get(addr, "/metrics");
    assert_eq!(status, 200, "{body}");
    body
}

/// A node serving metrics on a free loopback port; returns it and that address.
fn metrics_node(extra: &str) -> (Node, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    (Node::with_config(&format!("metrics_listen: {addr}\n{extra}")), addr)
}

#[test]
fn metrics_move_with_the_bytes_of_a_transfer() {
    let (mut seed, seed_http) = metrics_node("");
    seed.start();
    let size = 6u64 << 20;
    let src = seed.root.path().join("src");
    random_file(&src.join("data.bin"), size as usize, 7);
    let desc = create_descriptor(
        &src.join("data.bin"),
        &seed.root.path().join("d.desc"),
        &["--piece-size", "256K", "--bootstrap", &seed.addr()],
    );
    std::fs::create_dir_all(seed.data()).unwrap();
    std::fs::copy(src.join("data.bin"), seed.data().join("data.bin")).unwrap();
    let hash = seed.add(&desc);
    seed.wait_state(&hash, "seeding");

    // Slow enough (2 MiB/s) that scrapes see the transfer in the middle.
    let (mut leecher, http) = metrics_node("limits:\n  download_rate: 2MiB\n");
    leecher.start();
    let before = metrics(&http);
    assert_eq!(sample(&before, "p2pd_torrents{state=\"leeching\"}"), Some(0.0), "{before}");
    assert_eq!(sample(&before, "p2pd_downloaded_bytes_total"), Some(0.0));
    assert!(sample(&before, "p2pd_data_dir_free_bytes").is_some_and(|b| b > 0.0), "{before}");
    for family in ["process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds"] {
        assert!(sample(&before, family).is_some(), "{family} missing:\n{before}");
    }
    let build = format!("p2pd_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"));
    assert_eq!(sample(&before, &build), Some(1.0), "{before}");

    leecher.add(&desc);
    let name = format!("{{info_hash=\"{hash}\",name=\"data.bin\"}}");
    let torrent_down = format!("p2pd_torrent_downloaded_bytes_total{name}");
    let done = format!("p2pd_torrent_pieces_done{name}");
    let mut seen = Vec::new();
    let mut last = 0.0;
    let mut most_peers = 0.0f64;
    let complete = eventually(PATIENCE, "the leecher to complete", || {
        let m = metrics(&http);
        let down = sample(&m, "p2pd_downloaded_bytes_total").unwrap();
        assert!(down >= last, "p2pd_downloaded_bytes_total went down: {last} → {down}");
        last = down;
        seen.push(down);
        most_peers = most_peers.max(sample(&m, "p2pd_peers_connected").unwrap());
        let finished = sample(&m, "p2pd_torrents{state=\"seeding\"}") == Some(1.0);
        std::thread::sleep(Duration::from_millis(200));
        finished.then_some(m)
    });
    assert!(seen.iter().any(|&d| d > 0.0 && d < size as f64), "no scrape saw the transfer in the middle: {seen:?}");
    assert!(sample(&complete, "p2pd_downloaded_bytes_total").unwrap() >= size as f64, "{complete}");
    assert!(sample(&complete, &torrent_down).unwrap() >= size as f64, "{complete}");
    assert_eq!(sample(&complete, &done), Some(24.0), "{complete}");
    assert_eq!(sample(&complete, &format!("p2pd_torrent_pieces_total{name}")), Some(24.0));
    assert_eq!(sample(&complete, "p2pd_piece_hash_failures_total"), Some(0.0));
    assert!(sample(&complete, "p2pd_discovery_rpc_sent_total").unwrap() > 0.0, "{complete}");
    assert!(sample(&complete, "p2pd_discovery_rpc_received_total").unwrap() > 0.0, "{complete}");
    assert!(sample(&complete, "p2pd_routing_table_nodes").unwrap() >= 1.0, "{complete}");

    // The seed's side: what it sent, whom it is connected to.
    let s = eventually(PATIENCE, "the seed to count what it sent", || {
        let m = metrics(&seed_http);
        (sample(&m, "p2pd_uploaded_bytes_total").unwrap() >= size as f64).then_some(m)
    });
    assert!(sample(&s, &format!("p2pd_torrent_uploaded_bytes_total{name}")).unwrap() >= size as f64, "{s}");
    assert!(most_peers >= 1.0, "p2pd_peers_connected never counted the seed");

    // Removing the torrent takes its series away; the daemon-wide counter stays.
    leecher.ctl_ok(&["remove", &hash[..12]]);
    let after = metrics(&http);
    assert!(!after.contains(&torrent_down), "{after}");
    assert!(sample(&after, "p2pd_downloaded_bytes_total").unwrap() >= size as f64, "{after}");
}

#[test]
#[cfg_attr(not(feature = "fault-injection"), ignore = "needs `--features p2pd/fault-injection`")]
fn ready_is_503_while_starting_and_stopping_and_health_answers_throughout() {
    let (mut node, http) = metrics_node("");
    node.env.push(("P2PD_FAULT_START_DELAY_MS".into(), "3000".into()));
    node.env.push(("P2PD_FAULT_STOP_DELAY_MS".into(), "3000".into()));
    node.spawn();
    let (status, body) = eventually(PATIENCE, "the endpoint to answer", || try_get(&http, "/ready"));
    assert_eq!((status, body.as_str()), (503, "starting\n"), "state is not loaded yet");
    assert_eq!(get(&http, "/health"), (200, "ok\n".into()));
    eventually(PATIENCE, "p2pd to be ready", || (get(&http, "/ready").0 == 200).then_some(()));
    assert_eq!(get(&http, "/ready").1, "ready\n");
    assert_eq!(node.ctl(&["status"]).code, 0, "ready means the control socket answers");

    node.signal(Signal::SIGTERM);
    eventually(PATIENCE, "/ready to say stopping", || {
        try_get(&http, "/ready").filter(|r| r == &(503, "stopping\n".to_string()))
    });
    assert_eq!(get(&http, "/health").0, 200, "alive while stopping");
    assert_eq!(node.wait_exit(), 0);
    assert!(try_get(&http, "/health").is_none(), "the endpoint closes with the daemon");
}

/// Sends `request` on a new connection and reads what comes back until the server closes it
/// (or `wait` passes).
fn raw(addr: &str, request: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn the_endpoint_is_bounded_and_answers_only_what_it_serves() {
    let (mut node, http) = metrics_node("");
    node.start();
    assert_eq!(get(&http, "/nothing").0, 404);
    let post =
        raw(&http, b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", PATIENCE);
    assert!(post.starts_with("HTTP/1.1 405") && post.to_lowercase().contains("allow: get, head"), "{post}");
    let head = raw(&http, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", PATIENCE);
    assert!(head.starts_with("HTTP/1.1 200") && !head.contains("p2pd_build_info"), "{head}");

    // A head larger than the bound: refused, and the connection closed.
    let mut huge = b"GET /metrics HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..400 {
        huge.extend_from_slice(format!("X-Padding-{i}: {}\r\n", "a".repeat(100)).as_bytes());
    }
    huge.extend_from_slice(b"\r\n");
    let refused = raw(&http, &huge, PATIENCE);
    assert!(!refused.contains("p2pd_build_info"), "an oversized request was served");

    // Connections that send nothing: at most 16 are held; one more is closed at once, and the
    // idle ones are closed within the head timeout. The daemon serves on throughout.
    let started = Instant::now();
    let idle: Vec<TcpStream> = (0..16).map(|_| TcpStream::connect(&http).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let extra = raw(&http, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", Duration::from_secs(2));
    assert_eq!(extra, "", "a 17th connection was served");
    assert_eq!(node.ctl(&["status"]).code, 0);
    for mut c in idle {
        c.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut buf = [0u8; 64];
        assert!(matches!(c.read(&mut buf), Ok(0) | Err(_)), "an idle connection was kept");
    }
    assert!(started.elapsed() < PATIENCE);
    eventually(PATIENCE, "the slots to free", || (try_get(&http, "/health").map(|r| r.0) == Some(200)).then_some(()));
}

#[test]
fn a_reload_moves_the_endpoint_or_keeps_it_when_the_new_address_is_taken() {
    let (mut node, http) = metrics_node("");
    node.start();
    assert_eq!(get(&http, "/health").0, 200);
    let config = std::fs::read_to_string(node.cfg().join("p2pd.yaml")).unwrap();

    let moved = format!("127.0.0.1:{}", free_port());
    std::fs::write(node.cfg().join("p2pd.yaml"), config.replace(&http, &moved)).unwrap();
    let out = node.ctl_ok(&["reload"]);
    assert!(out.contains(&format!("metrics_listen: {http} → {moved}")), "{out}");
    eventually(PATIENCE, "the new address to serve", || {
        (try_get(&moved, "/health").map(|r| r.0) == Some(200)).then_some(())
    });
    eventually(PATIENCE, "the old address to close", || TcpStream::connect(&http).is_err().then_some(()));

    // Taken by someone else: rejected, the endpoint stays where it was.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    std::fs::write(node.cfg().join("p2pd.yaml"), config.replace(&http, &taken_addr)).unwrap();
    let r = node.ctl(&["reload"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains(&format!("metrics_listen: cannot listen on {taken_addr}")), "{}", r.stdout);
    assert!(r.stdout.contains(&format!("keeping {moved}")), "{}", r.stdout);
    assert_eq!(get(&moved, "/health").0, 200);

    // Removed: no longer served.
    std::fs::write(node.cfg().join("p2pd.yaml"), config.replace(&format!("metrics_listen: {http}\n"), "")).unwrap();
    let out = node.ctl_ok(&["reload"]);
    assert!(out.contains(&format!("metrics_listen: {moved} → (off)")), "{out}");
    eventually(PATIENCE, "the endpoint to close", || TcpStream::connect(&moved).is_err().then_some(()));
}

/// `metrics_listen` moved to another address on the same port (127.0.0.1:P → 0.0.0.0:P, in a
/// network namespace the test made, so that the wildcard reaches no real interface): the old
/// socket holds the port, so it is closed first and the new address then serves.
#[test]
fn a_reload_moves_the_endpoint_to_another_address_on_the_same_port() {
    let tools =
        [Need::Root, Need::tool("ip", "iproute2"), Need::tool("ss", "iproute2"), Need::tool("python3", "python3")];
    if !require(&tools, None) {
        return;
    }
    let ns = Netns::new();
    let port = free_port();
    let mut node = Node::with_config(&format!("metrics_listen: 127.0.0.1:{port}\n"));
    node.netns = Some(ns.name.clone());
    node.start();
    let health = || {
        let get = format!(
            "import urllib.request as u\ntry: print(u.urlopen('http://127.0.0.1:{port}/health', timeout=5).status)\nexcept Exception as e: print(e)"
        );
        ns.output(&["python3", "-c", &get]).trim().to_string()
    };
    assert_eq!(health(), "200");
    let path = node.cfg().join("p2pd.yaml");
    let config = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, config.replace(&format!("127.0.0.1:{port}"), &format!("0.0.0.0:{port}"))).unwrap();
    let out = node.ctl_ok(&["reload"]);
    assert!(out.contains(&format!("metrics_listen: 127.0.0.1:{port} → 0.0.0.0:{port}")), "{out}");
    assert_eq!(health(), "200", "served on the wildcard address, loopback included");
    let listening = ns.output(&["ss", "-Htln", &format!("sport = :{port}")]);
    assert_eq!(listening.lines().count(), 1, "one socket on the port: {listening}");
    assert!(listening.contains(&format!("0.0.0.0:{port}")), "{listening}");
}

#[test]
fn start_up_fails_naming_metrics_listen_when_its_port_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let mut node = Node::with_config(&format!("metrics_listen: {addr}\n"));
    node.spawn();
    assert_eq!(node.wait_exit(), 1);
    let log = node.log();
    assert!(log.contains(&format!("cannot listen on {addr} (HTTP, metrics_listen)")), "{log}");
}

/// Every metric the shipped alert rules and dashboard query is one p2pd exports.
#[test]
fn contrib_rules_and_dashboard_query_only_exported_metrics() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let rules = std::fs::read_to_string(root.join("contrib/prometheus/p2pd-alerts.yml")).unwrap();
    let dashboard = std::fs::read_to_string(root.join("contrib/grafana/p2pd-dashboard.json")).unwrap();
    let _: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");

    // A node with a torrent, so that the per-torrent families exist.
    let (mut node, http) = metrics_node("");
    node.start();
    let src = node.root.path().join("a.bin");
    random_file(&src, 10_000, 1);
    node.add(&create_descriptor(&src, &node.root.path().join("a.desc"), &[]));
    let exported: std::collections::BTreeSet<String> = metrics(&http)
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next().map(str::to_string))
        .collect();

    let mut queried = std::collections::BTreeSet::new();
    for text in [&rules, &dashboard] {
        let mut rest = text.as_str();
        while let Some(at) = rest.find('p').map(|i| &rest[i..]) {
            let word: String = at.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            let metric = word.len() > "process_".len() && !word.ends_with('_');
            if metric && (word.starts_with("p2pd_") || word.starts_with("process_")) {
                queried.insert(word.clone());
            }
            rest = &at[word.len().max(1)..];
        }
    }
    assert!(queried.len() >= 8, "found only {queried:?}");
    // Histogram and summary suffixes do not occur: every family is a counter or a gauge.
    let missing: Vec<_> = queried.iter().filter(|q| !exported.contains(*q)).collect();
    assert!(missing.is_empty(), "queried but not exported: {missing:?}\nexported: {exported:?}");
}
