//! IPv6, which the README and p2pd.yaml promise: discovery and transfer between daemons that
//! listen on `[::1]`, and a dual-stack daemon (`[::]`) that leechers reach over IPv6 and over
//! IPv4 at once. Real daemons on loopback.

mod common;

use common::*;

/// Waits until `node` lists every one of `addrs` as a member of the swarm; returns its list.
fn wait_listed(node: &Node, hash: &str, addrs: &[String]) -> Vec<String> {
    eventually(PATIENCE, &format!("{addrs:?} listed"), || {
        let listed: Vec<String> =
            peers(node, hash).iter().filter_map(|p| p["address"].as_str().map(str::to_string)).collect();
        addrs.iter().all(|a| listed.contains(a)).then_some(listed)
    })
}

/// A seed and two leechers on `[::1]`: the second leecher knows only the first (a lookup through
/// it), both download the whole content, and each lists the others by their IPv6 addresses.
#[test]
fn discovery_and_transfer_over_ipv6() {
    if !require(&[Need::Ipv6Loopback], None) {
        return;
    }
    let mut seed = Node::listening_on("[::1]", "");
    seed.start();
    assert!(seed.status()["node"]["listen"].as_str().unwrap().starts_with("[::1]:"));
    let src = seed.root.path().join("src");
    let bytes = random_file(&src.join("v6.bin"), 3 << 20, 61);
    let desc =
        create_descriptor(&src.join("v6.bin"), &seed.root.path().join("v6.desc"), &["--bootstrap", &seed.addr()]);
    std::fs::create_dir_all(seed.data()).unwrap();
    std::fs::copy(src.join("v6.bin"), seed.data().join("v6.bin")).unwrap();
    let hash = seed.add(&desc);
    seed.wait_state(&hash, "seeding");

    let mut first = Node::listening_on("[::1]", "");
    first.start();
    first.add(&desc);
    first.wait_complete(&hash);
    // The second knows only the first, which is not in the descriptor.
    let mut second = Node::listening_on("[::1]", &format!("bootstrap: [\"{}\"]\n", first.addr()));
    second.start();
    let only_first =
        create_descriptor(&src.join("v6.bin"), &second.root.path().join("v6.desc"), &["--bootstrap", &first.addr()]);
    assert_eq!(second.add(&only_first), hash);
    second.wait_complete(&hash);
    for node in [&first, &second] {
        assert_eq!(std::fs::read(node.data().join("v6.bin")).unwrap(), bytes);
    }
    let listed = wait_listed(&second, &hash, &[seed.addr(), first.addr()]);
    assert!(listed.iter().all(|a| a.starts_with("[::1]:")), "{listed:?}");
}

/// A seed listening on `[::]` serves a leecher that reaches it over IPv6 (`[::1]`) and one that
/// reaches it over IPv4 (`127.0.0.1`, a v4-mapped address on its socket) at the same time; the
/// seed lists the IPv4 one by its IPv4 address.
#[test]
fn a_dual_stack_seed_is_reached_over_ipv6_and_ipv4() {
    if !require(&[Need::Ipv6Loopback], None) {
        return;
    }
    let mut seed = Node::listening_on("[::]", "");
    seed.start();
    let v6 = seed.addr();
    let v4 = format!("127.0.0.1:{}", seed.port);
    let src = seed.root.path().join("src");
    let bytes = random_file(&src.join("dual.bin"), 3 << 20, 62);
    std::fs::create_dir_all(seed.data()).unwrap();
    std::fs::copy(src.join("dual.bin"), seed.data().join("dual.bin")).unwrap();
    let seed_desc = create_descriptor(&src.join("dual.bin"), &seed.root.path().join("dual.desc"), &[]);
    let hash = seed.add(&seed_desc);
    seed.wait_state(&hash, "seeding");

    let mut over_v6 = Node::listening_on("[::1]", "");
    let mut over_v4 = Node::new();
    for (leecher, via) in [(&mut over_v6, &v6), (&mut over_v4, &v4)] {
        leecher.start();
        let desc =
            create_descriptor(&src.join("dual.bin"), &leecher.root.path().join("dual.desc"), &["--bootstrap", via]);
        assert_eq!(leecher.add(&desc), hash);
    }
    for leecher in [&over_v6, &over_v4] {
        leecher.wait_complete(&hash);
        assert_eq!(std::fs::read(leecher.data().join("dual.bin")).unwrap(), bytes);
    }
    // The IPv4 leecher by its IPv4 address (not v4-mapped).
    wait_listed(&seed, &hash, &[over_v6.addr(), over_v4.addr()]);
}
