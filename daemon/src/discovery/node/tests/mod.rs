//! Unit tests of the state machine: one node, crafted datagrams, every output inspected.
//!
//! This file: tokens, storing and announces, and the helpers every part uses; `payment.rs`:
//! what an answer pays for (anti-amplification); `amplification.rs`: the property test of
//! bytes sent to addresses that never proved themselves; `join.rs`: how far a status change
//! and a join reach in a large swarm; `drain.rs`: who hears of a drain.

mod amplification;
mod drain;
mod join;
mod payment;

use super::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

fn node(seed: u64) -> (Node, Instant) {
    let now = Instant::now();
    (Node::new(NodeId([seed as u8; 32]), DiscoveryConfig::default(), seed, now), now)
}

fn from(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i], 6690))
}

fn request(sender: NodeId, body: Body) -> Vec<u8> {
    wire::encode(&Packet { txid: 77, sender, body })
}

fn answers(n: &mut Node) -> Vec<(SocketAddr, Packet, usize)> {
    n.take_transmits().into_iter().map(|t| (t.to, wire::decode(&t.bytes).unwrap(), t.bytes.len())).collect()
}

/// Pings `n` from `addr` as `id` and returns the token of the pong.
fn token_for(n: &mut Node, now: Instant, addr: SocketAddr, id: NodeId) -> Token {
    n.handle_datagram(now, addr, &request(id, Body::Ping));
    match answers(n).pop() {
        Some((to, Packet { body: Body::Pong { token, observed }, .. }, _)) => {
            assert_eq!((to, observed), (addr, addr));
            token
        }
        other => panic!("expected a pong, got {other:?}"),
    }
}

#[test]
fn ping_is_answered_with_a_token_the_node_then_accepts() {
    let (mut n, now) = node(1);
    let client = NodeId([9; 32]);
    let token = token_for(&mut n, now, from(1), client);
    n.handle_datagram(now, from(1), &request(client, Body::FindNode { target: [0; 32], token }));
    let out = answers(&mut n);
    assert!(matches!(out[0].1.body, Body::Nodes { .. }), "{out:?}");
    assert_eq!(n.routing().len(), 1, "a validated requester is learned");
}

#[test]
fn requests_without_a_valid_token_only_get_a_smaller_retry() {
    let (mut n, now) = node(2);
    let client = NodeId([9; 32]);
    let other_addr_token = token_for(&mut n, now, from(2), client);
    for token in [[0u8; 16], other_addr_token] {
        let bytes =
            request(client, Body::GetPeers { info_hash: InfoHash([1; 32]), request_id: 5, hop_limit: 4, token });
        n.handle_datagram(now, from(1), &bytes);
        let out = answers(&mut n);
        assert_eq!(out.len(), 1);
        assert!(matches!(out[0].1.body, Body::Retry { .. }));
        assert!(out[0].2 < bytes.len());
    }
    assert_eq!(n.counters.bad_tokens, 2);
    assert!(n.routing().is_empty(), "an unvalidated sender is not learned");
}

#[test]
fn a_known_swarm_answers_found_once_per_request_with_a_token_for_the_origin() {
    let (mut n, now) = node(3);
    let hash = InfoHash([4; 32]);
    n.join(now, hash, PeerStatus::Seeding, &[]);
    n.take_transmits();
    let relay = NodeId([8; 32]);
    let token = token_for(&mut n, now, from(8), relay);
    let origin = NodeRecord { id: NodeId([7; 32]), addr: from(7) };
    let forward =
        request(relay, Body::Forward { info_hash: hash, request_id: 42, hops: 2, hops_left: 5, origin, token });
    for _ in 0..3 {
        n.handle_datagram(now, from(8), &forward);
    }
    let out = answers(&mut n);
    let found: Vec<_> =
        out.iter().filter(|(to, p, _)| *to == origin.addr && matches!(p.body, Body::Found { .. })).collect();
    assert_eq!(found.len(), 1, "one found per request, however often it arrives: {out:?}");
    assert!(found[0].2 < forward.len(), "found is smaller than the forward that caused it");
    assert_eq!(out.iter().filter(|(to, p, _)| *to == from(8) && matches!(p.body, Body::Forwarded { .. })).count(), 3);
    assert_eq!(n.counters.duplicates, 2);
    // The origin's token from `found` lets it ask directly and get the peers.
    let Body::Found { token, hops, .. } = found[0].1.body else { unreachable!() };
    assert_eq!(hops, 3);
    n.handle_datagram(
        now,
        origin.addr,
        &request(origin.id, Body::GetPeers { info_hash: hash, request_id: 42, hop_limit: 0, token }),
    );
    let out = answers(&mut n);
    assert!(matches!(out[0].1.body, Body::Peers { holder: Some(PeerStatus::Seeding), .. }), "{out:?}");
}

#[test]
fn announces_are_stored_with_their_status_and_leavers_removed() {
    let (mut n, now) = node(4);
    let hash = InfoHash([5; 32]);
    let peer = NodeId([6; 32]);
    let token = token_for(&mut n, now, from(6), peer);
    for (status, expect) in [
        (PeerStatus::Idle, Some(PeerStatus::Idle)),
        (PeerStatus::Leeching, Some(PeerStatus::Leeching)),
        (PeerStatus::Leaving, None),
    ] {
        n.handle_datagram(now, from(6), &request(peer, Body::Announce { info_hash: hash, status, token }));
        assert!(matches!(answers(&mut n)[0].1.body, Body::Announced { .. }));
        let stored = n.swarms().get(&hash).and_then(|s| s.peers.get(&from(6))).map(|p| p.status);
        assert_eq!(stored, expect);
    }
}

#[test]
fn requests_are_retried_with_backoff_then_the_node_counts_a_miss() {
    let (mut n, now) = node(5);
    n.bootstrap(now, &[from(9)]);
    assert_eq!(n.take_transmits().len(), 1);
    let mut t = now;
    let mut sends = 1;
    let mut gaps = Vec::new();
    for _ in 0..20 {
        let next = n.next_deadline();
        gaps.push(next.duration_since(t));
        t = next;
        n.poll(t);
        sends += n.take_transmits().len();
        if n.counters.timeouts > 0 {
            break;
        }
    }
    assert_eq!(sends as u32, n.config().rpc_attempts);
    assert_eq!(n.counters.retries as u32, n.config().rpc_attempts - 1);
    assert_eq!(&gaps[..3], &[Duration::from_millis(250), Duration::from_millis(500), Duration::from_secs(1)]);
}

/// A node `n` knows: verified in its routing table, at `addr`.
fn known(n: &mut Node, now: Instant, id: NodeId, addr: SocketAddr) {
    assert_eq!(n.routing_mut().insert_verified(id, addr, now), Insert::Added);
}

/// An id whose first byte is `first` and last byte `last` (the rest zero).
fn id(first: u8, last: u8) -> NodeId {
    let mut b = [0u8; 32];
    b[0] = first;
    b[31] = last;
    NodeId(b)
}

/// Announces `hash` to `n` from `addr` (fetching a token first); true if answered `announced`.
fn announce(n: &mut Node, now: Instant, addr: SocketAddr, sender: NodeId, hash: InfoHash, status: PeerStatus) -> bool {
    let token = token_for(n, now, addr, sender);
    n.handle_datagram(now, addr, &request(sender, Body::Announce { info_hash: hash, status, token }));
    answers(n).iter().any(|(to, p, _)| *to == addr && matches!(p.body, Body::Announced { .. }))
}

fn stored(n: &Node, hash: &InfoHash, addr: SocketAddr) -> Option<PeerStatus> {
    n.swarms().get(hash).and_then(|s| s.peers.get(&addr)).map(|p| p.status)
}

/// Regression (issue 11): any token holder could make any node store any swarm.
#[test]
fn announces_are_stored_only_by_the_closest_nodes_or_members() {
    let now = Instant::now();
    let mut n = Node::new(id(0x80, 0), DiscoveryConfig::default(), 7, now);
    // k nodes, all closer than us to the all-zero hash.
    for i in 1..=8u8 {
        known(&mut n, now, id(i, i), from(100 + i));
    }
    let far = InfoHash([0; 32]);
    let near = InfoHash(id(0x80, 9).0);
    let peer = NodeId([0x33; 32]);
    assert!(announce(&mut n, now, from(1), peer, far, PeerStatus::Seeding), "answered all the same");
    assert!(n.swarms().get(&far).is_none(), "not among the 8 closest: nothing stored");
    assert_eq!(n.counters.announces_not_stored, 1);
    assert!(announce(&mut n, now, from(1), peer, near, PeerStatus::Seeding));
    assert_eq!(stored(&n, &near, from(1)), Some(PeerStatus::Seeding), "no known node is closer: stored");
    // A member stores announces for its swarm wherever it lies.
    n.join(now, far, PeerStatus::Seeding, &[]);
    n.take_transmits();
    assert!(announce(&mut n, now, from(1), peer, far, PeerStatus::Leeching));
    assert_eq!(stored(&n, &far, from(1)), Some(PeerStatus::Leeching));
    // With one closer node gone quiet, we are among the 8 closest again (the announcer, farther
    // than us, takes its place in the bucket).
    let peer = NodeId([0xff; 32]);
    let mut m = Node::new(id(0x80, 0), DiscoveryConfig::default(), 8, now);
    for i in 1..=8u8 {
        known(&mut m, now, id(i, i), from(100 + i));
    }
    for _ in 0..crate::discovery::routing::UNREACHABLE_AFTER {
        m.routing_mut().failed(from(101));
    }
    assert!(announce(&mut m, now, from(1), peer, far, PeerStatus::Seeding));
    assert_eq!(stored(&m, &far, from(1)), Some(PeerStatus::Seeding));
}

/// Regression (issue 11 review): eight identities beside a hash from one IP (the routing table
/// allows 16 per IP) made every honest node believe itself too far from it to store its swarm.
/// Closer nodes are counted one per host: an IPv4 address, or an IPv6 /64.
#[test]
fn one_host_beside_a_hash_cannot_stop_others_storing_it() {
    let far = InfoHash([0; 32]);
    let v4_ports: fn(u8) -> SocketAddr = |i| SocketAddr::from(([10, 0, 0, 100], 7000 + i as u16));
    let v6_64: fn(u8) -> SocketAddr = |i| SocketAddr::from(([0x2001, 0xdb8, 0, 7, 0, 0, 0, i as u16], 6690));
    let v4_hosts: fn(u8) -> SocketAddr = |i| from(100 + i);
    for (what, closer, stores) in
        [("one IPv4 address, 8 ports", v4_ports, true), ("one IPv6 /64", v6_64, true), ("8 hosts", v4_hosts, false)]
    {
        let now = Instant::now();
        let mut n = Node::new(id(0x80, 0), DiscoveryConfig::default(), 18, now);
        // 8 (k) identities, all closer than us to the all-zero hash (and in one bucket, which
        // takes two of one host).
        let added =
            (1..=8u8).filter(|&i| n.routing_mut().insert_verified(id(i, i), closer(i), now) == Insert::Added).count();
        assert_eq!(added, if stores { 2 } else { 8 }, "{what}");
        assert!(announce(&mut n, now, from(1), NodeId([0x33; 32]), far, PeerStatus::Seeding), "{what}");
        let expect = stores.then_some(PeerStatus::Seeding);
        assert_eq!(stored(&n, &far, from(1)), expect, "closer nodes from {what}");
    }
}

#[test]
fn new_swarms_per_source_host_are_rate_capped() {
    let now = Instant::now();
    let config = DiscoveryConfig { new_swarm_burst: 3.0, new_swarm_rate: 0.1, ..DiscoveryConfig::default() };
    let mut n = Node::new(NodeId([1; 32]), config, 9, now);
    let hash = |i: u8| InfoHash([i; 32]);
    let port = |p: u16| SocketAddr::from(([10, 0, 0, 1], p));
    // An empty routing table: this node is among the closest to everything.
    for i in 0..10u8 {
        announce(&mut n, now, port(1000 + i as u16), NodeId([0x40 + i; 32]), hash(10 + i), PeerStatus::Seeding);
    }
    assert_eq!(n.swarms().swarms().count(), 3, "a burst of 3 new swarms, whatever the port");
    assert_eq!(n.counters.new_swarms_limited, 7);
    // Existing swarms take more members from that host.
    assert!(announce(&mut n, now, port(2000), NodeId([0x60; 32]), hash(10), PeerStatus::Idle));
    assert_eq!(stored(&n, &hash(10), port(2000)), Some(PeerStatus::Idle));
    // Another host has its own budget; the first gets one more after 10 s.
    announce(&mut n, now, from(2), NodeId([0x61; 32]), hash(30), PeerStatus::Idle);
    assert!(n.swarms().get(&hash(30)).is_some());
    let later = now + Duration::from_secs(11);
    announce(&mut n, later, port(1000), NodeId([0x40; 32]), hash(31), PeerStatus::Idle);
    announce(&mut n, later, port(1000), NodeId([0x40; 32]), hash(32), PeerStatus::Idle);
    assert!(n.swarms().get(&hash(31)).is_some() && n.swarms().get(&hash(32)).is_none());
    // Our own swarms are never limited.
    n.join(later, hash(40), PeerStatus::Seeding, &[]);
    assert!(n.swarms().is_member(&hash(40)));
}

fn peer_events(n: &mut Node) -> Vec<PeerRecord> {
    n.take_events()
        .into_iter()
        .flat_map(|e| match e {
            Event::Peers { peers, .. } => peers,
            Event::LookupDone(_) => Vec::new(),
        })
        .collect()
}

/// Regression (issue 11): every announce to a member produced a peer event, stored or not, so
/// a torrent heard of members beyond the per-IP cap.
#[test]
fn only_accepted_announces_tell_the_torrent() {
    let now = Instant::now();
    let config = DiscoveryConfig { max_peers_per_ip: 2, ..DiscoveryConfig::default() };
    let mut n = Node::new(NodeId([1; 32]), config, 10, now);
    let hash = InfoHash([5; 32]);
    n.join(now, hash, PeerStatus::Seeding, &[]);
    n.take_transmits();
    n.take_events();
    let port = |p: u16| SocketAddr::from(([10, 0, 0, 9], p));
    for p in 0..4u16 {
        announce(&mut n, now, port(3000 + p), NodeId([0x50 + p as u8; 32]), hash, PeerStatus::Leeching);
    }
    let told = peer_events(&mut n);
    assert_eq!(told.iter().map(|p| p.addr).collect::<Vec<_>>(), vec![port(3000), port(3001)], "the two stored");
    // A late idle join is told as the status kept; a leaver is told (its record goes).
    announce(&mut n, now, port(3000), NodeId([0x50; 32]), hash, PeerStatus::Idle);
    announce(&mut n, now, port(3001), NodeId([0x51; 32]), hash, PeerStatus::Leaving);
    let told = peer_events(&mut n);
    assert_eq!(
        told.iter().map(|p| (p.addr, p.status)).collect::<Vec<_>>(),
        vec![(port(3000), PeerStatus::Leeching), (port(3001), PeerStatus::Leaving)]
    );
}

/// Starts `n` on a lookup of `hash` (joining it) whose only first hop is `hop`, a validated
/// node whose token `n` holds; returns the txid of the get_peers sent to it.
fn lookup_through(n: &mut Node, now: Instant, hop: SocketAddr, hash: InfoHash) -> u32 {
    known(n, now, NodeId([0x7f; 32]), hop);
    n.tokens.insert(hop, ([9; 16], now));
    n.join(now, hash, PeerStatus::Idle, &[]);
    let out = answers(n);
    out.iter()
        .find_map(|(to, p, _)| (*to == hop && matches!(p.body, Body::GetPeers { .. })).then_some(p.txid))
        .expect("a get_peers to the first hop")
}

/// Runs `n`'s timers for a minute and returns everything it sent.
fn run_timers(n: &mut Node, start: Instant) -> Vec<(SocketAddr, Packet, usize)> {
    let mut out = Vec::new();
    let mut t = start;
    while t < start + Duration::from_secs(60) {
        t = n.next_deadline().max(t + Duration::from_millis(1));
        n.poll(t);
        out.extend(answers(n));
    }
    out
}

/// An answer (no padding) from a validated first hop.
fn request_free(txid: u32, body: Body) -> Vec<u8> {
    wire::encode(&Packet { txid, sender: NodeId([0x7f; 32]), body })
}
