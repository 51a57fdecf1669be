//! Draining (`p2pctl drain`): who hears of it, and what a member that heard it is recorded as.

use super::*;

/// Answers every ping and announce in `out` except those to `silent`, as the members would.
fn answer_members(
    n: &mut Node,
    t: Instant,
    out: &[(SocketAddr, Packet, usize)],
    ids: &HashMap<SocketAddr, NodeId>,
    silent: SocketAddr,
) {
    for (to, p, _) in out {
        let reply = match &p.body {
            _ if *to == silent => continue,
            Body::Ping => Body::Pong { token: [3; 16], observed: from(250) },
            Body::Announce { info_hash, .. } => Body::Announced { info_hash: *info_hash },
            _ => continue,
        };
        let Some(sender) = ids.get(to).copied() else { continue };
        n.handle_datagram(t, *to, &wire::encode(&Packet { txid: p.txid, sender, body: reply }));
    }
}

/// Every member of a large swarm (not the sample a status change reaches) hears the drain; each
/// that acknowledged it is recorded, one that never answers leaves the table, and a member
/// that joins later is told within a second.
#[test]
fn a_drain_is_told_to_every_member_and_each_acknowledgement_is_recorded() {
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
    let silent = addrs[7];

    n.drain(now);
    let mut told = HashSet::new();
    let mut t = now;
    while t < now + Duration::from_secs(30) {
        let out = answers(&mut n);
        for (to, p, _) in &out {
            if let Body::Announce { status, .. } = p.body {
                assert_eq!(status, PeerStatus::Draining, "to {to}");
                told.insert(*to);
            }
        }
        answer_members(&mut n, t, &out, &ids, silent);
        if out.is_empty() {
            t = n.next_deadline().max(t + Duration::from_millis(1));
            n.poll(t);
        }
    }
    assert_eq!(told.len(), 59, "every member that answers is told, not a sample of 16");
    let swarm = n.swarms().get(&hash).unwrap();
    assert!(!swarm.peers.contains_key(&silent), "a member that never answers is gone");
    assert!(swarm.peers.values().all(|p| p.heard_our_drain), "every acknowledgement recorded");

    // A torrent's own status changes stay `draining`; a newcomer hears it at the next tell.
    n.set_status(t, hash, PeerStatus::Seeding);
    assert_eq!(n.swarms().get(&hash).unwrap().membership, Some(PeerStatus::Draining));
    let late = SocketAddr::from(([10, 0, 3, 1], 6690));
    ids.insert(late, NodeId([0x99; 32]));
    assert!(announce(&mut n, t, late, ids[&late], hash, PeerStatus::Leeching));
    assert!(!n.swarms().get(&hash).unwrap().peers[&late].heard_our_drain);
    let later = t + Duration::from_secs(2);
    n.poll(later);
    for _ in 0..4 {
        let out = answers(&mut n);
        answer_members(&mut n, later, &out, &ids, silent);
    }
    assert!(n.swarms().get(&hash).unwrap().peers[&late].heard_our_drain, "the newcomer was told");
}

/// A member that drains is stored as draining, yet lists (and a draining holder's own status)
/// carry it as seeding: it serves like a seed, and older builds reject the code.
#[test]
fn lists_carry_a_draining_member_as_seeding() {
    let (mut n, now) = node(41);
    let hash = InfoHash([7; 32]);
    n.join(now, hash, PeerStatus::Seeding, &[]);
    n.take_transmits();
    let member = NodeId([0x61; 32]);
    assert!(announce(&mut n, now, from(61), member, hash, PeerStatus::Draining));
    assert_eq!(stored(&n, &hash, from(61)), Some(PeerStatus::Draining));
    n.drain(now);
    n.take_transmits();
    let asker = NodeId([0x62; 32]);
    let token = token_for(&mut n, now, from(62), asker);
    n.handle_datagram(
        now,
        from(62),
        &request(asker, Body::GetPeers { info_hash: hash, request_id: 1, hop_limit: 0, token }),
    );
    let out = answers(&mut n);
    match &out[0].1.body {
        Body::Peers { holder, peers, .. } => {
            assert_eq!(*holder, Some(PeerStatus::Seeding), "our own status, as listed");
            assert_eq!(
                peers.iter().map(|p| (p.addr, p.status)).collect::<Vec<_>>(),
                vec![(from(61), PeerStatus::Seeding)]
            );
        }
        other => panic!("expected peers, got {other:?}"),
    }
}
