//! Draining (`p2pctl drain`): who hears of it, what they answer, and what is recorded of them.

use super::*;

/// Answers every ping and announce in `out` as the members would, except those to `silent`; an
/// announce of `draining` with the member's own status from `status_of`.
fn answer_members(
    n: &mut Node,
    t: Instant,
    out: &[(SocketAddr, Packet, usize)],
    ids: &HashMap<SocketAddr, NodeId>,
    silent: SocketAddr,
    status_of: &dyn Fn(SocketAddr) -> Option<PeerStatus>,
) {
    for (to, p, _) in out {
        let reply = match &p.body {
            _ if *to == silent => continue,
            Body::Ping => Body::Pong { token: [3; 16], observed: from(250) },
            Body::Announce { info_hash, status: PeerStatus::Draining, .. } => {
                Body::AnnouncedDraining { info_hash: *info_hash, holder: status_of(*to) }
            }
            Body::Announce { info_hash, .. } => Body::Announced { info_hash: *info_hash },
            _ => continue,
        };
        let Some(sender) = ids.get(to).copied() else { continue };
        n.handle_datagram(t, *to, &wire::encode(&Packet { txid: p.txid, sender, body: reply }));
    }
}

/// Runs `n` for `secs` simulated seconds, members answering as [`answer_members`] does; the
/// members that were sent a `draining` announce.
fn run_drain(
    n: &mut Node,
    start: Instant,
    secs: u64,
    ids: &HashMap<SocketAddr, NodeId>,
    silent: SocketAddr,
    status_of: &dyn Fn(SocketAddr) -> Option<PeerStatus>,
) -> HashSet<SocketAddr> {
    let mut told = HashSet::new();
    let mut t = start;
    while t < start + Duration::from_secs(secs) {
        let out = answers(n);
        for (to, p, _) in &out {
            if let Body::Announce { status, .. } = p.body {
                assert_eq!(status, PeerStatus::Draining, "to {to}");
                told.insert(*to);
            }
        }
        answer_members(n, t, &out, ids, silent, status_of);
        if out.is_empty() {
            t = n.next_deadline().max(t + Duration::from_millis(1));
            n.poll(t);
        }
    }
    told
}

fn drain_answer(n: &Node, hash: &InfoHash, addr: SocketAddr) -> Option<PeerStatus> {
    n.swarms().get(hash).and_then(|s| s.peers.get(&addr)).and_then(|p| p.drain_answer).map(|(s, _)| s)
}

/// Every member of a large swarm (not the sample a status change reaches) hears the drain, and
/// each answer is recorded with the status it gave: seeding, draining too, or not a member
/// (which leaves the table, as does one that never answers). A member whose status changes
/// later, and one that joins later, are asked again.
#[test]
fn a_drain_is_told_to_every_member_and_each_answer_is_recorded() {
    let (mut n, now) = node(40);
    let hash = InfoHash([6; 32]);
    n.join(now, hash, PeerStatus::Seeding, &[]);
    n.take_transmits();
    let addrs: Vec<SocketAddr> = (1..=60u8).map(|i| SocketAddr::from(([10, 0, 2, i], 6690))).collect();
    let mut ids: HashMap<SocketAddr, NodeId> = HashMap::new();
    for (i, addr) in addrs.iter().enumerate() {
        ids.insert(*addr, NodeId([0x40 + i as u8; 32]));
        assert!(announce(&mut n, now, *addr, ids[addr], hash, PeerStatus::Seeding));
    }
    let (silent, gone, drains, leecher) = (addrs[7], addrs[8], addrs[9], addrs[10]);
    let status_of = |a: SocketAddr| match a {
        a if a == gone => None,
        a if a == drains => Some(PeerStatus::Draining),
        a if a == leecher => Some(PeerStatus::Leeching),
        _ => Some(PeerStatus::Seeding),
    };

    n.drain(now);
    let told = run_drain(&mut n, now, 30, &ids, silent, &status_of);
    assert_eq!(told.len(), 59, "every member that answers is told, not a sample of 16");
    let swarm = n.swarms().get(&hash).unwrap();
    assert!(!swarm.peers.contains_key(&silent), "a member that never answers is gone");
    assert!(!swarm.peers.contains_key(&gone), "a member that is no longer in the swarm is gone");
    assert_eq!(drain_answer(&n, &hash, drains), Some(PeerStatus::Draining));
    assert_eq!(stored(&n, &hash, drains), Some(PeerStatus::Draining), "stored as it answered");
    assert_eq!(drain_answer(&n, &hash, leecher), Some(PeerStatus::Leeching));
    let seeding = swarm.peers.values().filter(|p| p.drain_answer.map(|a| a.0) == Some(PeerStatus::Seeding)).count();
    assert_eq!(seeding, 56);

    // A torrent's own status changes stay `draining`.
    let t = now + Duration::from_secs(30);
    n.set_status(t, hash, PeerStatus::Seeding);
    assert_eq!(n.swarms().get(&hash).unwrap().membership, Some(PeerStatus::Draining));
    // The leecher completes (its own announce), and a newcomer joins: both are asked.
    assert!(announce(&mut n, t, leecher, ids[&leecher], hash, PeerStatus::Seeding));
    let late = SocketAddr::from(([10, 0, 3, 1], 6690));
    ids.insert(late, NodeId([0x99; 32]));
    assert!(announce(&mut n, t, late, ids[&late], hash, PeerStatus::Leeching));
    n.take_transmits();
    let now_seeding = |_: SocketAddr| Some(PeerStatus::Seeding);
    let told = run_drain(&mut n, t, 3, &ids, silent, &now_seeding);
    assert_eq!(told, HashSet::from([leecher, late]), "only the changed and the new are asked again");
    assert_eq!(drain_answer(&n, &hash, leecher), Some(PeerStatus::Seeding));
    assert_eq!(drain_answer(&n, &hash, late), Some(PeerStatus::Seeding));
}

/// A node told `draining` answers with its own status, unlisted: `draining` when it drains
/// too, none when it is not a member. Lists (and a draining holder's own status in them) carry
/// a draining member as seeding: it serves like a seed, and older builds reject the code.
#[test]
fn a_draining_announce_is_answered_with_the_answerers_own_status_and_lists_say_seeding() {
    let (mut n, now) = node(41);
    let hash = InfoHash([7; 32]);
    let member = NodeId([0x61; 32]);
    let answer = |n: &mut Node| match answers(n).pop().map(|a| a.1.body) {
        Some(Body::AnnouncedDraining { holder, .. }) => holder,
        other => panic!("expected announced_draining, got {other:?}"),
    };
    let token = token_for(&mut n, now, from(61), member);
    let draining = Body::Announce { info_hash: hash, status: PeerStatus::Draining, token };
    n.handle_datagram(now, from(61), &request(member, draining.clone()));
    assert_eq!(answer(&mut n), None, "not a member");
    n.join(now, hash, PeerStatus::Seeding, &[]);
    n.take_transmits();
    n.handle_datagram(now, from(61), &request(member, draining.clone()));
    assert_eq!(answer(&mut n), Some(PeerStatus::Seeding));
    assert_eq!(stored(&n, &hash, from(61)), Some(PeerStatus::Draining));
    n.drain(now);
    n.take_transmits();
    n.handle_datagram(now, from(61), &request(member, draining));
    assert_eq!(answer(&mut n), Some(PeerStatus::Draining), "draining too");

    let asker = NodeId([0x62; 32]);
    let token = token_for(&mut n, now, from(62), asker);
    n.handle_datagram(
        now,
        from(62),
        &request(asker, Body::GetPeers { info_hash: hash, request_id: 1, hop_limit: 0, token }),
    );
    match answers(&mut n).pop().map(|a| a.1.body) {
        Some(Body::Peers { holder, peers, .. }) => {
            assert_eq!(holder, Some(PeerStatus::Seeding), "our own status, as listed");
            assert_eq!(
                peers.iter().map(|p| (p.addr, p.status)).collect::<Vec<_>>(),
                vec![(from(61), PeerStatus::Seeding)]
            );
        }
        other => panic!("expected peers, got {other:?}"),
    }
}

/// A member that answers a `draining` announce without its status (a build from before it) is
/// not counted, and is asked again once a minute, not every second.
#[test]
fn a_member_that_answers_without_its_status_is_asked_once_a_minute() {
    let (mut n, now) = node(42);
    let hash = InfoHash([8; 32]);
    n.join(now, hash, PeerStatus::Seeding, &[]);
    n.take_transmits();
    let (member, id) = (from(70), NodeId([0x70; 32]));
    assert!(announce(&mut n, now, member, id, hash, PeerStatus::Seeding));
    n.drain(now);
    let mut asked = 0;
    let mut t = now;
    while t < now + Duration::from_secs(150) {
        let out = answers(&mut n);
        for (to, p, _) in &out {
            let reply = match &p.body {
                Body::Ping => Body::Pong { token: [3; 16], observed: from(250) },
                Body::Announce { info_hash, .. } => {
                    asked += 1;
                    Body::Announced { info_hash: *info_hash }
                }
                _ => continue,
            };
            n.handle_datagram(t, *to, &wire::encode(&Packet { txid: p.txid, sender: id, body: reply }));
        }
        if out.is_empty() {
            t = n.next_deadline().max(t + Duration::from_millis(1));
            n.poll(t);
        }
    }
    assert_eq!(asked, 3, "at 0, 60 and 120 s");
    assert_eq!(drain_answer(&n, &hash, member), None, "no status: never counted");
    assert_eq!(stored(&n, &hash, member), Some(PeerStatus::Seeding), "still a member");
}
