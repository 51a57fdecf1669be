use super::*;
use proptest::prelude::*;

fn id(b: u8) -> NodeId {
    NodeId([b; 32])
}

fn v6(port: u16) -> SocketAddr {
    SocketAddr::new("fd00::1".parse().unwrap(), port)
}

fn v4(port: u16) -> SocketAddr {
    SocketAddr::new("10.0.0.1".parse().unwrap(), port)
}

#[test]
fn ping_bytes() {
    let bytes = encode(&Packet { txid: 0x01020304, sender: id(0xaa), body: Body::Ping });
    let mut expected = vec![b'P', b'2', 1, 0x01, 1, 2, 3, 4];
    expected.extend([0xaa; 32]);
    let pad = MIN_REQUEST_LEN - HEADER_LEN - 2;
    expected.extend((pad as u16).to_be_bytes());
    expected.extend(vec![0; pad]);
    assert_eq!(bytes, expected);
    assert_eq!(decode(&bytes).unwrap().body, Body::Ping);
}

#[test]
fn pong_bytes() {
    let bytes = encode(&Packet { txid: 7, sender: id(1), body: Body::Pong { token: [9; 16], observed: v4(6690) } });
    let mut expected = vec![b'P', b'2', 1, 0x81, 0, 0, 0, 7];
    expected.extend([1; 32]);
    expected.extend([9; 16]);
    expected.extend([4, 10, 0, 0, 1, 0x1a, 0x22]);
    assert_eq!(bytes, expected);
}

fn all_bodies() -> Vec<Body> {
    let origin = NodeRecord { id: id(5), addr: v6(9) };
    vec![
        Body::Ping,
        Body::FindNode { target: [3; 32], token: [4; 16] },
        Body::GetPeers { info_hash: InfoHash([1; 32]), request_id: 77, hop_limit: 16, token: [2; 16] },
        Body::Forward { info_hash: InfoHash([1; 32]), request_id: 77, hops: 2, hops_left: 3, origin, token: [2; 16] },
        Body::Announce { info_hash: InfoHash([1; 32]), status: PeerStatus::Seeding, token: [2; 16] },
        Body::Pong { token: [1; 16], observed: v6(1) },
        Body::Nodes {
            nodes: (0..MAX_NODES as u8).map(|i| NodeRecord { id: id(i), addr: v6(1000 + i as u16) }).collect(),
        },
        Body::Peers {
            request_id: 1,
            info_hash: InfoHash([8; 32]),
            holder: Some(PeerStatus::Seeding),
            peers: (0..MAX_PEERS as u8)
                .map(|i| PeerRecord { id: id(i), addr: v6(2000 + i as u16), status: PeerStatus::Leeching })
                .collect(),
        },
        Body::Forwarded { request_id: 9 },
        Body::Found { request_id: 9, info_hash: InfoHash([1; 32]), hops: 4, token: [6; 16] },
        Body::NotFound { request_id: 9, info_hash: InfoHash([1; 32]), hops: 4 },
        Body::Announced { info_hash: InfoHash([1; 32]) },
        Body::AnnouncedDraining { info_hash: InfoHash([1; 32]), holder: Some(PeerStatus::Draining) },
        Body::AnnouncedDraining { info_hash: InfoHash([1; 32]), holder: None },
        Body::Retry { token: [7; 16] },
    ]
}

#[test]
fn every_message_round_trips_and_fits() {
    for body in all_bodies() {
        let p = Packet { txid: 42, sender: id(9), body: body.clone() };
        let bytes = encode(&p);
        assert!(bytes.len() <= MAX_DATAGRAM, "{} is {} bytes", body.name(), bytes.len());
        if body.is_request() {
            assert!(bytes.len() >= MIN_REQUEST_LEN, "{} not padded", body.name());
        }
        assert_eq!(decode(&bytes).unwrap(), p, "{}", body.name());
    }
}

/// The anti-amplification rule rests on this: every answer that may go to an address that has
/// not proven it receives (pong, retry, forwarded, found, not_found, announced) is no larger
/// than the smallest request.
#[test]
fn answers_to_unvalidated_addresses_are_smaller_than_any_request() {
    for body in all_bodies() {
        let len = encode(&Packet { txid: 1, sender: id(1), body: body.clone() }).len();
        match body {
            Body::Pong { .. }
            | Body::Retry { .. }
            | Body::Forwarded { .. }
            | Body::Found { .. }
            | Body::NotFound { .. }
            | Body::Announced { .. }
            | Body::AnnouncedDraining { .. } => {
                assert!(len < MIN_REQUEST_LEN, "{} is {len} bytes", body.name())
            }
            _ => {}
        }
    }
}

#[test]
fn every_truncation_is_rejected() {
    for body in all_bodies() {
        let bytes = encode(&Packet { txid: 1, sender: id(1), body });
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "prefix of {cut} accepted");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err(), "trailing byte accepted");
    }
}

#[test]
fn header_checks() {
    let good = encode(&Packet { txid: 1, sender: id(1), body: Body::Ping });
    let mut bad = good.clone();
    bad[0] = b'X';
    assert_eq!(decode(&bad), Err(WireError::BadMagic));
    let mut bad = good.clone();
    bad[2] = 2;
    assert_eq!(decode(&bad), Err(WireError::Version(2)));
    let mut bad = good.clone();
    bad[3] = 0x7f;
    assert_eq!(decode(&bad), Err(WireError::UnknownType(0x7f)));
    let mut bad = good.clone();
    *bad.last_mut().unwrap() = 1;
    assert_eq!(decode(&bad), Err(WireError::BadPadding));
    assert_eq!(decode(&vec![0u8; MAX_DATAGRAM + 1]), Err(WireError::TooLong(MAX_DATAGRAM + 1)));
}

#[test]
fn counts_above_the_maximum_are_rejected_before_reading() {
    let mut bytes = encode(&Packet { txid: 1, sender: id(1), body: Body::Nodes { nodes: vec![] } });
    *bytes.last_mut().unwrap() = 255;
    assert_eq!(decode(&bytes), Err(WireError::TooMany(255)));
}

#[test]
fn v4_mapped_addresses_are_canonical() {
    let mapped: SocketAddr = "[::ffff:10.0.0.1]:6690".parse().unwrap();
    let p = Packet { txid: 1, sender: id(1), body: Body::Pong { token: [0; 16], observed: mapped } };
    match decode(&encode(&p)).unwrap().body {
        Body::Pong { observed, .. } => assert_eq!(observed, v4(6690)),
        other => panic!("{other:?}"),
    }
}

fn arb_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), 1u16..).prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
        (any::<[u8; 16]>(), 1u16..).prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
    ]
    .prop_filter("routable", |a| !a.ip().is_unspecified() && !a.ip().is_multicast())
    .prop_map(canonical)
}

fn arb_status() -> impl Strategy<Value = PeerStatus> {
    prop_oneof![
        Just(PeerStatus::Idle),
        Just(PeerStatus::Leeching),
        Just(PeerStatus::Seeding),
        Just(PeerStatus::Leaving),
        Just(PeerStatus::Draining)
    ]
}

fn arb_node() -> impl Strategy<Value = NodeRecord> {
    (any::<[u8; 32]>(), arb_addr()).prop_map(|(i, addr)| NodeRecord { id: NodeId(i), addr })
}

fn arb_body() -> impl Strategy<Value = Body> {
    let hash = any::<[u8; 32]>().prop_map(InfoHash);
    prop_oneof![
        Just(Body::Ping),
        (any::<[u8; 32]>(), any::<Token>()).prop_map(|(target, token)| Body::FindNode { target, token }),
        (hash.clone(), any::<u64>(), any::<u8>(), any::<Token>()).prop_map(
            |(info_hash, request_id, hop_limit, token)| { Body::GetPeers { info_hash, request_id, hop_limit, token } }
        ),
        (hash.clone(), any::<u64>(), any::<u8>(), any::<u8>(), arb_node(), any::<Token>()).prop_map(
            |(info_hash, request_id, hops, hops_left, origin, token)| Body::Forward {
                info_hash,
                request_id,
                hops,
                hops_left,
                origin,
                token
            }
        ),
        (hash.clone(), arb_status(), any::<Token>()).prop_map(|(info_hash, status, token)| Body::Announce {
            info_hash,
            status,
            token
        }),
        (any::<Token>(), arb_addr()).prop_map(|(token, observed)| Body::Pong { token, observed }),
        proptest::collection::vec(arb_node(), 0..=MAX_NODES).prop_map(|nodes| Body::Nodes { nodes }),
        (
            any::<u64>(),
            hash.clone(),
            proptest::option::of(arb_status()),
            proptest::collection::vec(
                (any::<[u8; 32]>(), arb_addr(), arb_status()).prop_map(|(i, addr, status)| PeerRecord {
                    id: NodeId(i),
                    addr,
                    status
                }),
                0..=MAX_PEERS
            )
        )
            .prop_map(|(request_id, info_hash, holder, peers)| Body::Peers {
                request_id,
                info_hash,
                holder,
                peers
            }),
        any::<u64>().prop_map(|request_id| Body::Forwarded { request_id }),
        (any::<u64>(), hash.clone(), any::<u8>(), any::<Token>())
            .prop_map(|(request_id, info_hash, hops, token)| { Body::Found { request_id, info_hash, hops, token } }),
        (any::<u64>(), hash.clone(), any::<u8>()).prop_map(|(request_id, info_hash, hops)| Body::NotFound {
            request_id,
            info_hash,
            hops
        }),
        hash.clone().prop_map(|info_hash| Body::Announced { info_hash }),
        (hash.clone(), proptest::option::of(arb_status()))
            .prop_map(|(info_hash, holder)| Body::AnnouncedDraining { info_hash, holder }),
        any::<Token>().prop_map(|token| Body::Retry { token }),
    ]
}

proptest! {
    #[test]
    fn round_trip(txid in any::<u32>(), sender in any::<[u8; 32]>(), body in arb_body()) {
        let p = Packet { txid, sender: NodeId(sender), body };
        prop_assert_eq!(decode(&encode(&p)).unwrap(), p);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1400)) {
        let _ = decode(&bytes);
    }

    /// Flipping any byte of a valid datagram gives an error or another valid packet — never a
    /// panic, and never a packet that encodes differently from the bytes it came from.
    #[test]
    fn mutations_decode_consistently(body in arb_body(), at in any::<usize>(), val in any::<u8>()) {
        let mut bytes = encode(&Packet { txid: 1, sender: NodeId([1; 32]), body });
        let i = at % bytes.len();
        bytes[i] = val;
        if let Ok(p) = decode(&bytes) {
            prop_assert_eq!(encode(&p), bytes);
        }
    }
}

/// Found by `cargo fuzz run discovery_wire`: a request with less padding than `encode` writes
/// was accepted, and a short request could draw a larger answer.
#[test]
fn under_padded_requests_are_rejected() {
    let crash: &[u8] = &[
        0x50, 0x32, 0x01, 0x02, 0x00, 0x00, 0x01, 0x01, 0x01, 0x01, 0x01, 0x32, 0x01, 0x83, 0xff, 0xf7, 0x00, 0x01,
        0x05, 0x05, 0x05, 0x05, 0x50, 0x32, 0x01, 0x02, 0x02, 0x02, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    assert_eq!(decode(crash), Err(WireError::BadPadding));
    // A ping's padding length sits right after the header.
    let ping = encode(&Packet { txid: 1, sender: id(1), body: Body::Ping });
    assert_eq!(ping.len(), MIN_REQUEST_LEN);
    let pad = MIN_REQUEST_LEN - HEADER_LEN - 2;
    assert_eq!(u16::from_be_bytes([ping[HEADER_LEN], ping[HEADER_LEN + 1]]) as usize, pad);
    for shorter in [0, 1, pad - 1] {
        let mut short = ping[..HEADER_LEN].to_vec();
        short.extend_from_slice(&(shorter as u16).to_be_bytes());
        short.resize(short.len() + shorter, 0);
        assert_eq!(decode(&short), Err(WireError::BadPadding), "padding of {shorter}");
    }
}
