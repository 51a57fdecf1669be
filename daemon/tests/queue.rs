//! `limits.max_active_downloads`: downloads beyond it wait, `queued`, in the order added;
//! `p2pctl set --priority` puts one first; seeding is not limited.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn downloads_wait_their_turn_in_order_and_priority_jumps_the_queue() {
    // The seed is limited too: seeding takes no turn.
    let mut seed = Node::with_config("limits:\n  max_active_downloads: 1\n");
    seed.start();
    let src = seed.root.path().join("src");
    std::fs::create_dir_all(seed.data()).unwrap();
    let mut descs = Vec::new();
    for (i, name) in ["a.bin", "b.bin", "c.bin"].iter().enumerate() {
        random_file(&src.join(name), 4 << 20, i as u64 + 1);
        let desc = create_descriptor(
            &src.join(name),
            &seed.root.path().join(format!("{name}.desc")),
            &["--bootstrap", &seed.addr()],
        );
        std::fs::copy(src.join(name), seed.data().join(name)).unwrap();
        let hash = seed.add(&desc);
        descs.push((desc, hash));
    }
    for (_, hash) in &descs {
        seed.wait_state(hash, "seeding");
    }

    // One download at a time, each about a second at 4 MiB/s.
    let mut leecher = Node::with_config("limits:\n  max_active_downloads: 1\n  download_rate: 4MiB\n");
    leecher.start();
    let hashes: Vec<String> = descs.iter().map(|(d, _)| leecher.add(d)).collect();
    let (a, b, c) = (&hashes[0], &hashes[1], &hashes[2]);
    leecher.wait_state(b, "queued");
    leecher.wait_state(c, "queued");
    let out = leecher.ctl_ok(&["set", &c[..12], "--priority"]);
    assert!(out.contains("c.bin: moved in the download queue"), "{out}");
    assert!(std::fs::read_to_string(leecher.torrents().join(format!("{c}.yaml"))).unwrap().contains("queue:"));

    let mut order: Vec<String> = Vec::new();
    eventually(Duration::from_secs(120), "every download to finish", || {
        let status = leecher.status();
        let torrents = status["torrents"].as_array().unwrap();
        let downloading = torrents.iter().filter(|t| t["state"] == "leeching").count();
        assert!(downloading <= 1, "{downloading} downloads at once: {torrents:?}");
        for t in torrents {
            let h = t["info_hash"].as_str().unwrap().to_string();
            if t["state"] == "seeding" && !order.contains(&h) {
                order.push(h);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
        (order.len() == 3).then_some(())
    });
    assert_eq!(order, vec![a.clone(), c.clone(), b.clone()], "a (first added), then c (moved first), then b");
    let log = leecher.log();
    assert!(log.contains("b.bin: queued (limits.max_active_downloads reached)"), "{log}");
}

#[test]
fn a_queued_torrent_can_be_paused_and_stopped_and_a_raised_limit_starts_it() {
    let mut seed = Node::new();
    seed.start();
    let src = seed.root.path().join("src");
    std::fs::create_dir_all(seed.data()).unwrap();
    let mut descs = Vec::new();
    for (i, name) in ["x.bin", "y.bin"].iter().enumerate() {
        random_file(&src.join(name), 4 << 20, i as u64 + 7);
        let desc = create_descriptor(
            &src.join(name),
            &seed.root.path().join(format!("{name}.desc")),
            &["--bootstrap", &seed.addr()],
        );
        std::fs::copy(src.join(name), seed.data().join(name)).unwrap();
        seed.wait_state(&seed.add(&desc), "seeding");
        descs.push(desc);
    }
    let mut leecher = Node::with_config("limits:\n  max_active_downloads: 1\n  download_rate: 1MiB\n");
    leecher.start();
    let x = leecher.add(&descs[0]);
    let y = leecher.add(&descs[1]);
    leecher.wait_state(&y, "queued");
    leecher.ctl_ok(&["pause", &y[..12]]);
    leecher.wait_state(&y, "paused");
    leecher.ctl_ok(&["resume", &y[..12]]);
    leecher.wait_state(&y, "queued");

    // A daemon stopping with a torrent queued stops cleanly; it is queued again after.
    assert_eq!(leecher.stop(), 0, "{}", leecher.log());
    leecher.start();
    leecher.wait_state(&y, "queued");

    let cfg = leecher.cfg().join("p2pd.yaml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("max_active_downloads: 1", "max_active_downloads: 2")).unwrap();
    let out = leecher.ctl_ok(&["reload"]);
    assert!(out.contains("max_active_downloads 1 → 2"), "{out}");
    leecher.wait_state(&y, "leeching");
    assert_eq!(leecher.torrent(&x).unwrap()["state"], "leeching");
}
