//! How far announces, status changes and joins reach in a large swarm (issue 13).

use super::*;

/// Regression (issue 11 review): a host placing eight identities beside a hash (one IP, eight
/// ports) was the whole window of an announcer's node lookup and received every announce, so
/// honest nodes near the hash — willing to store — never heard of the swarm. Now lookups and
/// announces take at most two nodes of one host.
#[test]
fn one_host_beside_a_hash_gets_two_of_the_announces() {
    let (mut n, now) = node(21);
    let hop = from(1);
    known(&mut n, now, NodeId([0x7f; 32]), hop);
    n.tokens.insert(hop, ([9; 16], now));
    // The hop has sent enough to pay for first contacts with everything it will list.
    for _ in 0..25 {
        n.handle_datagram(now, hop, &request(NodeId([0x7f; 32]), Body::Ping));
    }
    answers(&mut n);
    let hash = InfoHash([0; 32]);
    let sybil = |i: u8| SocketAddr::from(([10, 0, 7, 7], 7000 + i as u16));
    let mut listed: Vec<NodeRecord> = (1..=8u8).map(|i| NodeRecord { id: id(0, i), addr: sybil(i) }).collect();
    listed.extend((1..=8u8).map(|i| NodeRecord { id: id(0x01, i), addr: SocketAddr::from(([10, 0, 8, i], 6690)) }));
    let id_at: HashMap<SocketAddr, NodeId> = listed.iter().map(|r| (r.addr, r.id)).collect();
    n.join(now, hash, PeerStatus::Seeding, &[]);
    let mut announced = Vec::new();
    let mut t = now;
    while t < now + Duration::from_secs(40) {
        let out = answers(&mut n);
        for (to, p, _) in &out {
            let reply = match &p.body {
                Body::FindNode { .. } if *to == hop => Body::Nodes { nodes: listed.clone() },
                Body::FindNode { .. } => Body::Nodes { nodes: Vec::new() },
                Body::Ping => Body::Pong { token: [3; 16], observed: from(250) },
                Body::Announce { .. } => {
                    announced.push(*to);
                    Body::Announced { info_hash: hash }
                }
                _ => continue,
            };
            let sender = id_at.get(to).copied().unwrap_or(NodeId([0x7f; 32]));
            n.handle_datagram(t, *to, &wire::encode(&Packet { txid: p.txid, sender, body: reply }));
        }
        if out.is_empty() {
            t = n.next_deadline().max(t + Duration::from_millis(1));
            n.poll(t);
        }
    }
    announced.sort();
    announced.dedup();
    let at_sybil = announced.iter().filter(|a| a.ip() == sybil(0).ip()).count();
    let honest = announced.iter().filter(|a| a.ip().to_string().starts_with("10.0.8.")).count();
    assert!(at_sybil <= 2, "{at_sybil} of the announces went to one host: {announced:?}");
    assert!(honest >= 6, "only {honest} honest nodes near the hash were told: {announced:?}");
}

/// Distinct members that `out` sends anything to (a ping for their token, or an announce).
fn members_told(out: &[(SocketAddr, Packet, usize)], members: &[SocketAddr]) -> HashSet<SocketAddr> {
    out.iter().map(|(to, _, _)| *to).filter(|to| members.contains(to)).collect()
}

/// Issue 13: every change of status went to every member — O(N) datagrams per change, O(N²)
/// for a swarm (1,200–1,300 datagrams per daemon in a 64-host fleet). A small swarm still
/// hears of every change; a large one `STATUS_FANOUT` members.
#[test]
fn a_status_change_is_told_to_a_bounded_sample_of_a_large_swarm() {
    for members in [10u8, 60] {
        let (mut n, now) = node(30);
        let hash = InfoHash([5; 32]);
        n.join(now, hash, PeerStatus::Idle, &[]);
        n.take_transmits();
        let addrs: Vec<SocketAddr> = (1..=members).map(|i| SocketAddr::from(([10, 0, 1, i], 6690))).collect();
        for (i, addr) in addrs.iter().enumerate() {
            assert!(announce(&mut n, now, *addr, NodeId([0x40 + i as u8; 32]), hash, PeerStatus::Leeching));
        }
        n.set_status(now, hash, PeerStatus::Seeding);
        let told = members_told(&answers(&mut n), &addrs);
        assert_eq!(told.len(), (members as usize).min(16), "{members} members");
        n.leave(now, hash);
        let told = members_told(&answers(&mut n), &addrs);
        assert_eq!(told.len(), (members as usize).min(16), "{members} members, leaving");
    }
}

/// Runs `n` from `*t` until it asks `hop` for the swarm again (the next look of a join), or
/// until `end`; every other datagram it sends goes to `reply`, which may answer it. Returns the
/// txid of that request.
fn until_next_look(
    n: &mut Node,
    t: &mut Instant,
    hop: SocketAddr,
    end: Instant,
    mut reply: impl FnMut(&mut Node, Instant, SocketAddr, Packet),
) -> Option<u32> {
    loop {
        let mut asked = None;
        for (to, p, _) in answers(n) {
            if to == hop && matches!(p.body, Body::GetPeers { .. }) {
                asked = Some(p.txid);
                continue;
            }
            reply(n, *t, to, p);
        }
        if asked.is_some() || *t >= end {
            return asked;
        }
        *t = n.next_deadline().max(*t + Duration::from_millis(1)).min(end);
        n.poll(*t);
    }
}

/// `hop` answers the look `txid` listing `peers`, paid for in advance (so that credit is not
/// what limits the join).
fn answer_look(n: &mut Node, t: Instant, hop: SocketAddr, txid: u32, hash: InfoHash, peers: Vec<PeerRecord>) {
    n.credit.earn(&hop, 1 << 20);
    n.handle_datagram(t, hop, &request_free(txid, Body::Peers { request_id: 0, info_hash: hash, holder: None, peers }));
}

/// Issue 13: each lookup of a join announced it again to every member its answer listed, so
/// follow-up lookups re-announced to the whole swarm. A join now contacts each member once, and
/// at most `JOIN_FANOUT` members.
#[test]
fn a_join_contacts_each_listed_member_once_and_at_most_join_fanout() {
    let (mut n, now) = node(31);
    let hop = from(1);
    let hash = InfoHash([6; 32]);
    let mut txid = lookup_through(&mut n, now, hop, hash);
    let member = |round: u8, i: u8| PeerRecord {
        id: NodeId([0x90 + round * 20 + i; 32]),
        addr: SocketAddr::from(([10, 0, 9 + round, i], 7000)),
        status: PeerStatus::Leeching,
    };
    let mut listed: Vec<PeerRecord> = Vec::new();
    let mut announces: HashMap<SocketAddr, HashSet<u32>> = HashMap::new();
    let mut t = now;
    for round in 0..4u8 {
        // The hop lists the last look's new members again, and 10 new ones.
        listed.extend((0..10).map(|i| member(round, i)));
        let peers = listed[listed.len().saturating_sub(wire::MAX_PEERS)..].to_vec();
        answer_look(&mut n, t, hop, txid, hash, peers);
        // Members answer pings and announces, until the next look (a top-up, or a follow-up
        // lookup) asks the hop again.
        let end = t + Duration::from_secs(10);
        let next = until_next_look(&mut n, &mut t, hop, end, |n, t, to, p| {
            let Some(m) = listed.iter().find(|m| m.addr == to) else { return };
            let body = match p.body {
                Body::Ping => Body::Pong { token: [3; 16], observed: from(99) },
                Body::Announce { .. } => {
                    // A retry (the same txid) is not a second announce.
                    announces.entry(to).or_default().insert(p.txid);
                    Body::Announced { info_hash: hash }
                }
                other => panic!("{other:?} to a member"),
            };
            n.handle_datagram(t, to, &wire::encode(&Packet { txid: p.txid, sender: m.id, body }));
        });
        match next {
            Some(id) => txid = id,
            None if round == 0 => panic!("no second look"),
            None => break,
        }
    }
    assert!(announces.values().all(|k| k.len() == 1), "a member announced to twice: {announces:?}");
    assert_eq!(announces.len(), JOIN_FANOUT, "the join stops at its fanout");
}

/// A member whose first contact was lost (a ping is never retried) is contacted again when a
/// later look of the same join lists it: a lost datagram costs one look, not the member. (Under
/// 20 % loss, remembering every member contacted made a join miss the only seed.)
#[test]
fn a_member_that_never_answered_is_contacted_again_by_a_later_look() {
    let (mut n, now) = node(32);
    let hop = from(1);
    let hash = InfoHash([6; 32]);
    let mut txid = lookup_through(&mut n, now, hop, hash);
    let member = PeerRecord { id: NodeId([0x91; 32]), addr: from(50), status: PeerStatus::Seeding };
    let mut pings = 0;
    let mut t = now;
    for _ in 0..2 {
        answer_look(&mut n, t, hop, txid, hash, vec![member]);
        // The member stays silent; run until the next look asks the hop again.
        let next = until_next_look(&mut n, &mut t, hop, now + Duration::from_secs(10), |_, _, to, p| {
            if to == member.addr && matches!(p.body, Body::Ping) {
                pings += 1;
            }
        });
        txid = next.expect("a follow-up look");
    }
    assert_eq!(pings, 2, "contacted again after its first ping went unanswered");
}

/// A member that acknowledged our join as idle hears our new status from the next look that
/// lists it: our status changed while the announce was on its way, before the member was in
/// our table for `set_status` to reach (a 1-piece download did, and the seed never learned it
/// was seeding).
#[test]
fn a_member_that_heard_an_older_status_is_told_the_new_one_by_a_later_look() {
    let (mut n, now) = node(33);
    let hop = from(1);
    let hash = InfoHash([6; 32]);
    let mut txid = lookup_through(&mut n, now, hop, hash);
    let member = PeerRecord { id: NodeId([0x91; 32]), addr: from(50), status: PeerStatus::Seeding };
    let mut told = Vec::new();
    let mut t = now;
    for _ in 0..2 {
        answer_look(&mut n, t, hop, txid, hash, vec![member]);
        let next = until_next_look(&mut n, &mut t, hop, now + Duration::from_secs(10), |n, t, to, p| {
            let body = match p.body {
                Body::Ping if to == member.addr => Body::Pong { token: [3; 16], observed: from(99) },
                Body::Announce { status, .. } if to == member.addr => {
                    told.push(status);
                    if status == PeerStatus::Idle {
                        // Our status changes while the idle announce is on its way: the member
                        // is not in our table yet, so `set_status` cannot reach it.
                        n.set_status(t, hash, PeerStatus::Seeding);
                    }
                    Body::Announced { info_hash: hash }
                }
                _ => return,
            };
            n.handle_datagram(t, to, &wire::encode(&Packet { txid: p.txid, sender: member.id, body }));
        });
        txid = next.expect("a follow-up look");
    }
    assert_eq!(told.first(), Some(&PeerStatus::Idle));
    assert!(told.contains(&PeerStatus::Seeding), "the new status reached the member: {told:?}");
}
