//! Unit tests of the state machine: one node, crafted datagrams, every output inspected.

use super::*;
use proptest::prelude::*;

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

proptest! {
    /// Whatever arrives from an address that never proved it receives, nothing larger than the
    /// datagram received goes back to it; and the datagram accounting always closes.
    #[test]
    fn no_amplification_and_accounting_closes(
        datagrams in proptest::collection::vec((0u8..4, proptest::collection::vec(any::<u8>(), 0..400), any::<bool>()), 1..60)
    ) {
        let (mut n, now) = node(6);
        let hash = InfoHash([4; 32]);
        n.join(now, hash, PeerStatus::Seeding, &[]);
        n.take_transmits();
        let victim = from(200);
        for (kind, noise, valid) in datagrams {
            let id = NodeId([noise.first().copied().unwrap_or(1); 32]);
            let bytes = match (kind, valid) {
                (_, false) => noise,
                (0, true) => request(id, Body::Ping),
                (1, true) => request(id, Body::GetPeers { info_hash: hash, request_id: noise.len() as u64, hop_limit: 3, token: [1; 16] }),
                (2, true) => request(id, Body::Announce { info_hash: hash, status: PeerStatus::Seeding, token: [2; 16] }),
                _ => request(id, Body::FindNode { target: [3; 32], token: [4; 16] }),
            };
            n.handle_datagram(now, victim, &bytes);
            for t in n.take_transmits() {
                prop_assert!(t.to != victim || t.bytes.len() <= bytes.len(), "{} bytes sent for {} received", t.bytes.len(), bytes.len());
            }
        }
        let c = n.counters;
        prop_assert_eq!(c.received, c.handled + c.dropped_malformed + c.rate_limited + c.dropped_unsolicited);
    }
}
