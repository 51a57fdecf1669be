//! What an answer pays for: pings to listed members and named nodes, top-ups, credit, and
//! `found`s from unvalidated sources (anti-amplification, docs/PROTOCOL.md).

use super::*;

/// Regression (issue 11): addresses named in a `peers` answer were pinged with retries (and a
/// one-address list still paid for one), up to ~8 bytes at the victim per byte of answer.
#[test]
fn a_peers_answer_pays_for_one_ping_per_192_bytes_never_retried() {
    for listed in [1usize, 3, 20] {
        let (mut n, now) = node(11);
        let hop = from(1);
        let hash = InfoHash([6; 32]);
        let txid = lookup_through(&mut n, now, hop, hash);
        let victims: Vec<PeerRecord> = (0..listed)
            .map(|i| PeerRecord {
                id: NodeId([0x90 + i as u8; 32]),
                addr: SocketAddr::from(([10, 0, 9, i as u8], 7000)),
                status: PeerStatus::Seeding,
            })
            .collect();
        let answer = wire::encode(&Packet {
            txid,
            sender: NodeId([0x7f; 32]),
            body: Body::Peers { request_id: 0, info_hash: hash, holder: None, peers: victims.clone() },
        });
        n.handle_datagram(now, hop, &answer);
        let mut sent = answers(&mut n);
        sent.extend(run_timers(&mut n, now));
        let to_victims: Vec<usize> =
            sent.iter().filter(|(to, _, _)| victims.iter().any(|v| v.addr == *to)).map(|(_, _, len)| *len).collect();
        assert_eq!(to_victims.len(), answer.len() / wire::MIN_REQUEST_LEN, "{listed} listed: {to_victims:?}");
        assert!(to_victims.iter().sum::<usize>() <= answer.len(), "{listed} listed: more bytes out than in");
        assert!(peer_events(&mut n).is_empty(), "nobody answered: the torrent hears of nobody");
        assert!(n.swarms().get(&hash).is_none_or(|s| s.peers.is_empty()), "nor is anybody recorded");
    }
}

/// A joiner whose first answer lists more members than that answer pays for asks the same
/// node again at once, and each answer pays for more first contacts — never one member
/// twice, never more bytes to the members than the answers brought, and at most
/// `MAX_TOP_UPS` times. (Paying only from the first answer left a fresh 16-host swarm with
/// most leechers knowing the seed alone for two seconds.)
#[test]
fn unpaid_members_are_paid_for_by_asking_again() {
    let (mut n, now) = node(17);
    let hop = from(1);
    let hash = InfoHash([6; 32]);
    let mut txid = lookup_through(&mut n, now, hop, hash);
    let members: Vec<PeerRecord> = (0..20u8)
        .map(|i| PeerRecord {
            id: NodeId([0x90 + i; 32]),
            addr: SocketAddr::from(([10, 0, 9, i], 7000)),
            status: PeerStatus::Leeching,
        })
        .collect();
    let (mut answered, mut contacted, mut asked_again) = (0usize, Vec::<SocketAddr>::new(), 0);
    loop {
        let answer = wire::encode(&Packet {
            txid,
            sender: NodeId([0x7f; 32]),
            body: Body::Peers { request_id: 0, info_hash: hash, holder: None, peers: members.clone() },
        });
        answered += answer.len();
        n.handle_datagram(now, hop, &answer);
        let out = answers(&mut n);
        for (to, _, len) in &out {
            if members.iter().any(|m| m.addr == *to) {
                assert!(!contacted.contains(to), "{to} paid for twice");
                contacted.push(*to);
                assert_eq!(*len, wire::MIN_REQUEST_LEN);
            }
        }
        match out.iter().find(|(to, p, _)| *to == hop && matches!(p.body, Body::GetPeers { .. })) {
            Some((_, p, _)) => {
                asked_again += 1;
                txid = p.txid;
            }
            None => break,
        }
    }
    assert_eq!(contacted.len(), members.len(), "every member contacted after {asked_again} more asks");
    assert!(asked_again <= MAX_TOP_UPS as usize);
    assert!(contacted.len() * wire::MIN_REQUEST_LEN <= answered, "more bytes to members than the answers brought");
}

/// Regression (issue 11 review): any answer leaving members unpaid made a join start a whole
/// new lookup (through the nodes closest to the hash, with forwards and re-attempts), up to 8
/// times, whether or not the answer had paid for anything. Now a top-up asks only the node that
/// answered (hop limit 0: it knows the swarm), only after an answer that bought a first contact,
/// at most `MAX_TOP_UPS` times per join.
#[test]
fn a_lister_makes_a_join_ask_again_only_itself_and_only_when_its_answer_paid() {
    for (listed, top_ups) in [(1u8, 0usize), (20, MAX_TOP_UPS as usize)] {
        let (mut n, now) = node(20);
        let hop = from(1);
        let hash = InfoHash([6; 32]);
        let mut txid = lookup_through(&mut n, now, hop, hash);
        let (mut answered, mut to_victims, mut asked_again) = (0usize, 0usize, 0usize);
        for round in 0..20u8 {
            // New victims every time, so that none is being contacted already.
            let victims: Vec<PeerRecord> = (0..listed)
                .map(|i| PeerRecord {
                    id: NodeId([0x90 + i; 32]),
                    addr: SocketAddr::from(([10, 0, 9 + round, i], 7000)),
                    status: PeerStatus::Seeding,
                })
                .collect();
            let answer =
                request_free(txid, Body::Peers { request_id: 0, info_hash: hash, holder: None, peers: victims });
            answered += answer.len();
            n.handle_datagram(now, hop, &answer);
            let out = answers(&mut n);
            to_victims += out.iter().filter(|(to, _, _)| to.ip() != hop.ip()).map(|(_, _, len)| len).sum::<usize>();
            let again: Vec<_> =
                out.iter().filter(|(to, p, _)| *to == hop && matches!(p.body, Body::GetPeers { .. })).collect();
            assert!(again.len() <= 1, "{listed} listed: {out:?}");
            let Some((_, p, _)) = again.first() else { break };
            assert!(matches!(p.body, Body::GetPeers { hop_limit: 0, .. }), "a top-up asks the lister only: {p:?}");
            asked_again += 1;
            txid = p.txid;
        }
        // Top-ups end at `MAX_TOP_UPS`, or sooner once `JOIN_FANOUT` members answered the join
        // or are being contacted (these victims never answer: all are being contacted).
        let contacting = n
            .pending
            .values()
            .filter(|p| matches!(p.purpose, Purpose::Ping { then: Some(After::Need(Need::Announce { .. })) }))
            .count();
        let busy = n.join_contacts.get(&hash).map_or(0, HashMap::len) + contacting;
        assert!(busy <= JOIN_FANOUT, "{busy}");
        if busy < JOIN_FANOUT {
            assert_eq!(asked_again, top_ups, "{listed} listed each time");
        } else {
            assert!(asked_again > 0 && asked_again <= top_ups, "{listed} listed each time: {asked_again} top-ups");
        }
        assert!(to_victims <= answered, "{listed} listed: {to_victims} bytes to victims for {answered} received");
    }
}

/// Bytes its author sent before count too: a node that pinged us pays for the one member its
/// small answer lists (and no more than the bytes it sent).
#[test]
fn small_lists_are_paid_for_by_what_their_author_sent_before() {
    let (mut n, now) = node(16);
    let hop = from(1);
    let hash = InfoHash([6; 32]);
    let txid = lookup_through(&mut n, now, hop, hash);
    let ping = request(NodeId([0x7f; 32]), Body::Ping);
    n.handle_datagram(now, hop, &ping);
    answers(&mut n);
    let victim = PeerRecord { id: NodeId([0x90; 32]), addr: from(90), status: PeerStatus::Seeding };
    let answer = request_free(txid, Body::Peers { request_id: 0, info_hash: hash, holder: None, peers: vec![victim] });
    n.handle_datagram(now, hop, &answer);
    let mut sent = answers(&mut n);
    sent.extend(run_timers(&mut n, now));
    let to_victim: Vec<usize> = sent.iter().filter(|(to, _, _)| *to == victim.addr).map(|(_, _, len)| *len).collect();
    assert_eq!(to_victim, vec![wire::MIN_REQUEST_LEN], "one ping, never retried");
    assert!(to_victim[0] <= ping.len() + answer.len());
}

/// A listed member that answers the ping is then announced to (with retries: it proved its
/// address), recorded and told to the torrent once it answers the announce.
#[test]
fn a_listed_member_is_recorded_when_it_answers_our_announce() {
    let (mut n, now) = node(12);
    let hop = from(1);
    let hash = InfoHash([6; 32]);
    let txid = lookup_through(&mut n, now, hop, hash);
    let member = PeerRecord { id: NodeId([0x91; 32]), addr: from(50), status: PeerStatus::Seeding };
    let filler: Vec<PeerRecord> = (0..9)
        .map(|i| PeerRecord { id: NodeId([0xa0 + i; 32]), addr: from(60 + i), status: PeerStatus::Idle })
        .collect();
    let peers = [vec![member], filler].concat();
    let answer = request_free(txid, Body::Peers { request_id: 0, info_hash: hash, holder: None, peers });
    n.handle_datagram(now, hop, &answer);
    let out = answers(&mut n);
    let ping = out.iter().find(|(to, p, _)| *to == member.addr && matches!(p.body, Body::Ping)).expect("pinged");
    n.handle_datagram(
        now,
        member.addr,
        &wire::encode(&Packet {
            txid: ping.1.txid,
            sender: member.id,
            body: Body::Pong { token: [3; 16], observed: from(99) },
        }),
    );
    let out = answers(&mut n);
    let ann = out.iter().find(|(to, p, _)| *to == member.addr && matches!(p.body, Body::Announce { .. })).unwrap();
    assert!(peer_events(&mut n).is_empty(), "not before it answers the announce");
    assert_eq!(n.pending[&ann.1.txid].max_attempts, n.config().rpc_attempts, "retried: it answered");
    n.handle_datagram(
        now,
        member.addr,
        &wire::encode(&Packet { txid: ann.1.txid, sender: member.id, body: Body::Announced { info_hash: hash } }),
    );
    assert_eq!(peer_events(&mut n), vec![member]);
    assert_eq!(stored(&n, &hash, member.addr), Some(PeerStatus::Seeding));
}

/// Regression (issue 11): the same for `nodes` answers in a find_node lookup.
#[test]
fn a_nodes_answer_pays_for_one_ping_per_192_bytes_never_retried() {
    for listed in [1usize, 16] {
        let (mut n, now) = node(13);
        let hop = from(1);
        known(&mut n, now, NodeId([0x7f; 32]), hop);
        n.tokens.insert(hop, ([9; 16], now));
        n.start_node_lookup(now, [6; 32], NodeLookupPurpose::Refresh);
        let txid = answers(&mut n)
            .iter()
            .find_map(|(to, p, _)| (*to == hop && matches!(p.body, Body::FindNode { .. })).then_some(p.txid))
            .expect("a find_node to the only known node");
        let victims: Vec<NodeRecord> = (0..listed)
            .map(|i| NodeRecord {
                id: NodeId([0x90 + i as u8; 32]),
                addr: SocketAddr::from(([10, 0, 9, i as u8], 7000)),
            })
            .collect();
        let answer = request_free(txid, Body::Nodes { nodes: victims.clone() });
        n.handle_datagram(now, hop, &answer);
        let mut sent = answers(&mut n);
        sent.extend(run_timers(&mut n, now));
        let to_victims: Vec<usize> =
            sent.iter().filter(|(to, _, _)| victims.iter().any(|v| v.addr == *to)).map(|(_, _, len)| *len).collect();
        assert_eq!(to_victims.len(), answer.len() / wire::MIN_REQUEST_LEN, "{listed} listed: {to_victims:?}");
        assert!(to_victims.iter().sum::<usize>() <= answer.len(), "{listed} listed");
    }
}

/// While a swarm's members are awaited from the same node, its `nodes` answer leaves one
/// request's worth of credit for them: in a small network both answers are small.
#[test]
fn credit_is_kept_for_the_members_a_node_is_about_to_list() {
    let (mut n, now) = node(17);
    let hop = from(1);
    let hash = InfoHash([6; 32]);
    known(&mut n, now, NodeId([0x7f; 32]), hop);
    n.tokens.insert(hop, ([9; 16], now));
    n.join(now, hash, PeerStatus::Idle, &[]);
    let out = answers(&mut n);
    let txid_of =
        |want: fn(&Body) -> bool| out.iter().find_map(|(to, p, _)| (*to == hop && want(&p.body)).then_some(p.txid));
    let find = txid_of(|b| matches!(b, Body::FindNode { .. })).expect("a find_node");
    let get = txid_of(|b| matches!(b, Body::GetPeers { .. })).expect("a get_peers");
    let node_victims: Vec<NodeRecord> = (0..9u8)
        .map(|i| NodeRecord { id: NodeId([0x90 + i; 32]), addr: SocketAddr::from(([10, 0, 9, i], 7000)) })
        .collect();
    let nodes = request_free(find, Body::Nodes { nodes: node_victims });
    assert!((2 * wire::MIN_REQUEST_LEN..3 * wire::MIN_REQUEST_LEN).contains(&nodes.len()));
    n.handle_datagram(now, hop, &nodes);
    let member = PeerRecord { id: NodeId([0x91; 32]), addr: from(50), status: PeerStatus::Seeding };
    n.handle_datagram(
        now,
        hop,
        &request_free(get, Body::Peers { request_id: 0, info_hash: hash, holder: None, peers: vec![member] }),
    );
    let out = answers(&mut n);
    let pinged = |a: SocketAddr| out.iter().any(|(to, p, _)| *to == a && matches!(p.body, Body::Ping));
    assert!(pinged(member.addr), "the member is contacted");
    assert_eq!(
        out.iter().filter(|(to, _, _)| to.ip().to_string().starts_with("10.0.9.")).count(),
        1,
        "one of the nodes"
    );
}

/// `found` proves nothing about its source: a node on the path sending many, from spoofed
/// addresses, gets one direct request sent, once (here the first hop has sent enough to pay
/// for it: see `a_path_spoofing_founds_never_amplifies`).
#[test]
fn founds_from_unvalidated_sources_are_followed_once_per_path() {
    let (mut n, now) = node(14);
    let hop = from(1);
    let hash = InfoHash([6; 32]);
    let txid = lookup_through(&mut n, now, hop, hash);
    n.handle_datagram(now, hop, &request(NodeId([0x7f; 32]), Body::Ping));
    n.handle_datagram(now, hop, &request_free(txid, Body::Forwarded { request_id: 0 }));
    let rid = n.lookups.values().next().unwrap().request_id;
    for i in 0..10u8 {
        let found = wire::encode(&Packet {
            txid: 0,
            sender: NodeId([0xb0 + i; 32]),
            body: Body::Found { request_id: rid, info_hash: hash, hops: 2, token: [4; 16] },
        });
        n.handle_datagram(now, from(200 + i), &found);
    }
    let mut sent = answers(&mut n);
    sent.extend(run_timers(&mut n, now + Duration::from_millis(10)));
    let direct: Vec<_> = sent
        .iter()
        .filter(|(to, p, _)| {
            to.ip() != hop.ip() && matches!(p.body, Body::GetPeers { request_id, .. } if request_id == rid)
        })
        .collect();
    assert_eq!(direct.len(), 1, "{direct:?}");
    assert_eq!(n.counters.amplification_suppressed, 9);
}

/// Regression (issue 11 review): a `found` (97 bytes) spoofed from a victim's address by a node
/// on the path bought a 192-byte `get_peers` to the victim, and each unanswered one an
/// immediate new attempt through the path, so another `found`: up to 2 bytes at the victims
/// per byte sent. The first hop here is the path as the origin sees it; it answers every
/// attempt with one `found` (the cheapest way to make the origin write to victims), either
/// acknowledging the attempt and naming a new victim each time, or silent and naming one.
#[test]
fn a_path_spoofing_founds_never_amplifies() {
    for (what, acknowledge, victims) in
        [("acknowledging, a new victim each time", true, 1000u32), ("silent, one victim", false, 1)]
    {
        let (mut n, now) = node(19);
        let hop = from(1);
        let hash = InfoHash([6; 32]);
        known(&mut n, now, NodeId([0x7f; 32]), hop);
        n.tokens.insert(hop, ([9; 16], now));
        n.lookup(now, hash, &[]);
        let victim = |i: u32| {
            let i = i % victims;
            SocketAddr::from(([10, 0, 9, i as u8], 7000 + (i >> 8) as u16))
        };
        let is_victim = |a: &SocketAddr| a.ip().to_string().starts_with("10.0.9.");
        let (mut sent, mut victim_bytes, mut victim_datagrams, mut founds) = (0usize, 0usize, 0usize, 0u32);
        let (mut answered_rid, mut txid) = (None, 0);
        let mut t = now;
        while t < now + Duration::from_secs(60) {
            for (to, p, len) in answers(&mut n) {
                if is_victim(&to) {
                    victim_bytes += len;
                    victim_datagrams += 1;
                } else if to == hop && matches!(p.body, Body::GetPeers { .. }) {
                    txid = p.txid;
                }
            }
            // Each new attempt asks the first hop, and a victim "finds" the swarm.
            let rid = n.lookups.values().find(|l| !l.done).map(|l| l.request_id);
            if let Some(rid) = rid.filter(|r| answered_rid != Some(*r)) {
                answered_rid = Some(rid);
                if acknowledge {
                    let ack = request_free(txid, Body::Forwarded { request_id: rid });
                    n.handle_datagram(t, hop, &ack);
                    sent += ack.len();
                }
                let found = request_free(0, Body::Found { request_id: rid, info_hash: hash, hops: 2, token: [4; 16] });
                n.handle_datagram(t, victim(founds), &found);
                sent += found.len();
                founds += 1;
                continue;
            }
            t = n.next_deadline().max(t + Duration::from_millis(1));
            n.poll(t);
        }
        eprintln!(
            "{what}: {founds} founds, {sent} bytes sent; {victim_bytes} at the victims in {victim_datagrams} datagrams"
        );
        assert!(founds >= 4, "{what}: the origin made several attempts through the path");
        assert!(victim_datagrams >= 1, "{what}: some victims were asked (the test measures something)");
        assert!(victim_bytes <= sent, "{what}: {victim_bytes} bytes to victims for {sent} bytes sent");
    }
}

/// Regression (issue 11): forwards for others could take every request slot.
#[test]
fn forwards_cannot_take_the_slots_kept_for_our_own_lookups() {
    let now = Instant::now();
    let config = DiscoveryConfig { max_pending: 8, max_pending_forwards: 5, ..DiscoveryConfig::default() };
    let mut n = Node::new(id(0x80, 0), config, 15, now);
    // A next hop closer to the hash than us.
    known(&mut n, now, id(0x01, 1), from(101));
    let client = NodeId([0x42; 32]);
    let token = token_for(&mut n, now, from(1), client);
    let hash = InfoHash([0; 32]);
    for rid in 0..8u64 {
        let get = request(client, Body::GetPeers { info_hash: hash, request_id: rid, hop_limit: 4, token });
        n.handle_datagram(now, from(1), &get);
    }
    let out = answers(&mut n);
    let acked = out.iter().filter(|(to, p, _)| *to == from(1) && matches!(p.body, Body::Forwarded { .. })).count();
    assert_eq!((acked, n.pending_requests()), (5, 5), "five forwards taken, then no answer: {out:?}");
    assert_eq!(n.counters.forwards_refused, 3);
    // Our own lookups still get slots.
    n.lookup(now, InfoHash([9; 32]), &[]);
    n.bootstrap(now, &[from(7)]);
    assert_eq!(n.pending_requests(), 7);
    assert!(answers(&mut n).iter().any(|(to, p, _)| *to == from(7) && matches!(p.body, Body::Ping)));
}
