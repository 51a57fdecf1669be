//! Writes the seed corpus of every fuzz target (`fuzz/corpus/<target>/`): valid inputs of
//! every message kind, so the fuzzers start from the formats' real shapes.
//!
//! Run: `cargo run --example fuzz_corpus` (from the repository root).

use std::net::SocketAddr;
use std::path::Path;

use p2pd::descriptor::InfoHash;
use p2pd::discovery::wire::{self, Body, NodeRecord, Packet, PeerRecord, PeerStatus};
use p2pd::node_id::NodeId;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("fuzz/corpus").join(target);
    std::fs::create_dir_all(&dir).expect("corpus directory");
    std::fs::write(dir.join(name), bytes).expect("corpus file");
}

fn discovery() {
    let v4: SocketAddr = "10.0.0.1:6690".parse().unwrap();
    let v6: SocketAddr = "[fd00::1]:6690".parse().unwrap();
    let node = NodeRecord { id: NodeId([7; 32]), addr: v6 };
    let peer = PeerRecord { id: NodeId([8; 32]), addr: v4, status: PeerStatus::Seeding };
    let h = InfoHash([3; 32]);
    let bodies = vec![
        Body::Ping,
        Body::FindNode { target: [1; 32], token: [2; 16] },
        Body::GetPeers { info_hash: h, request_id: 9, hop_limit: 16, token: [2; 16] },
        Body::Forward { info_hash: h, request_id: 9, hops: 1, hops_left: 3, origin: node, token: [2; 16] },
        Body::Announce { info_hash: h, status: PeerStatus::Idle, token: [2; 16] },
        Body::Pong { token: [2; 16], observed: v4 },
        Body::Nodes { nodes: vec![node; 3] },
        Body::Peers { request_id: 9, info_hash: h, holder: Some(PeerStatus::Seeding), peers: vec![peer; 4] },
        Body::Forwarded { request_id: 9 },
        Body::Found { request_id: 9, info_hash: h, hops: 2, token: [2; 16] },
        Body::NotFound { request_id: 9, info_hash: h, hops: 2 },
        Body::Announced { info_hash: h },
        Body::Retry { token: [2; 16] },
    ];
    for body in bodies {
        let name = body.name();
        write("discovery_wire", name, &wire::encode(&Packet { txid: 1, sender: NodeId([5; 32]), body }));
    }
}

fn main() {
    discovery();
    println!("wrote fuzz/corpus/");
}
