//! Writes the seed corpus of every fuzz target (`fuzz/corpus/<target>/`): valid inputs of
//! every message kind, so the fuzzers start from the formats' real shapes.
//!
//! Run: `cargo run --example fuzz_corpus` (from the repository root).

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use p2pd::config::torrent_entry::{TorrentEntry, TorrentSettings};
use p2pd::control::protocol::{self, PROTOCOL_VERSION, Request, RequestEnvelope};
use p2pd::descriptor::{Descriptor, InfoHash, NodeAddr, create};
use p2pd::discovery::wire::{self, Body, NodeRecord, Packet, PeerRecord, PeerStatus};
use p2pd::node_id::NodeId;
use p2pd::state::format;
use p2pd::storage::{FileStamp, Placement};
use p2pd::swarm::wire as peer;
use p2pd::torrent::resume::{RESUME_VERSION, ResumeState};

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
        Body::Announce { info_hash: h, status: PeerStatus::Draining, token: [2; 16] },
        Body::Pong { token: [2; 16], observed: v4 },
        Body::Nodes { nodes: vec![node; 3] },
        Body::Peers { request_id: 9, info_hash: h, holder: Some(PeerStatus::Seeding), peers: vec![peer; 4] },
        Body::Forwarded { request_id: 9 },
        Body::Found { request_id: 9, info_hash: h, hops: 2, token: [2; 16] },
        Body::NotFound { request_id: 9, info_hash: h, hops: 2 },
        Body::Announced { info_hash: h },
        Body::AnnouncedDraining { info_hash: h, holder: Some(PeerStatus::Draining) },
        Body::Retry { token: [2; 16] },
    ];
    for body in bodies {
        let name = body.name();
        write("discovery_wire", name, &wire::encode(&Packet { txid: 1, sender: NodeId([5; 32]), body }));
    }
}

fn peer_wire() {
    let hs = peer::Handshake {
        info_hash: InfoHash([3; 32]),
        node_id: NodeId([5; 32]),
        listen_port: 6690,
        version: peer::VERSION,
    };
    let r = peer::BlockRef { piece: 2, offset: 1 << 17, length: 1 << 17 };
    let messages = vec![
        ("keep_alive", peer::Message::KeepAlive),
        ("bitfield", peer::Message::Bitfield(vec![0xff, 0x80])),
        ("have", peer::Message::Have(7)),
        ("request", peer::Message::Request(r)),
        ("block", peer::Message::Block { piece: 2, offset: 0, data: vec![0xab; 300] }),
        ("cancel", peer::Message::Cancel(r)),
        ("choke", peer::Message::Choke),
        ("unchoke", peer::Message::Unchoke),
        ("interested", peer::Message::Interested),
        ("not_interested", peer::Message::NotInterested),
        ("reject", peer::Message::Reject(r)),
        (
            "peers",
            peer::Message::Peers(vec![
                "10.0.0.7:6690".parse().expect("address"),
                "[fd00::7]:6690".parse().expect("address"),
            ]),
        ),
    ];
    let mut session = peer::encode_handshake(&hs).to_vec();
    for (name, m) in messages {
        let bytes = peer::encode(&m);
        write("peer_wire", name, &bytes);
        session.extend_from_slice(&bytes);
    }
    write("peer_wire", "session", &session);
}

/// A file descriptor and a directory descriptor, made the way `p2pctl create` makes them.
fn descriptors() -> Vec<Descriptor> {
    let dir = std::env::temp_dir().join(format!("p2pd-fuzz-corpus-{}", std::process::id()));
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("sub")).expect("temp dir");
    std::fs::write(dir.join("one.bin"), vec![7u8; 100_000]).expect("temp file");
    std::fs::write(tree.join("a.txt"), b"hello").expect("temp file");
    std::fs::write(tree.join("empty"), b"").expect("temp file");
    std::fs::write(tree.join("sub").join("b.bin"), vec![1u8; 70_000]).expect("temp file");
    // Format version 2: an executable file and an empty directory.
    let tools = dir.join("tools");
    std::fs::create_dir_all(tools.join("bin")).expect("temp dir");
    std::fs::create_dir_all(tools.join("share").join("empty")).expect("temp dir");
    std::fs::write(tools.join("bin").join("run"), b"#!/bin/sh\necho run\n").expect("temp file");
    std::fs::set_permissions(tools.join("bin").join("run"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let bootstrap = vec!["10.0.0.5:6690".parse::<NodeAddr>().expect("address")];
    let made = [dir.join("one.bin"), tree, tools]
        .iter()
        .map(|path: &PathBuf| {
            let plan = create::plan(path).expect("plan");
            let pieces = create::hash_pieces(&plan, 32 << 10, &mut |_| {}).expect("hash");
            create::build(&plan, 32 << 10, pieces, bootstrap.clone()).expect("descriptor")
        })
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    made
}

fn descriptor_and_config(descriptors: &[Descriptor]) {
    for (i, d) in descriptors.iter().enumerate() {
        write("descriptor", &format!("descriptor{i}"), d.to_yaml().as_bytes());
        let entry = TorrentEntry {
            settings: TorrentSettings { paused: i == 1, ..TorrentSettings::default() },
            descriptor: d.clone(),
        };
        write("config", &format!("torrent{i}"), entry.to_yaml().as_bytes());
    }
    write("config", "p2pd_yaml", include_bytes!("../../config/p2pd.yaml"));
    write("config", "alias_bomb", b"a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\nd: [*c, *c]\n");
}

fn control(descriptors: &[Descriptor]) {
    let requests = vec![
        (
            "add",
            Request::Add {
                descriptor: descriptors[0].to_yaml(),
                source: "x.desc".into(),
                data_dir: None,
                adopt: false,
                cache: false,
            },
        ),
        ("remove", Request::Remove { id: "abc".into(), delete_data: true }),
    ];
    for (name, request) in requests {
        write(
            "control_protocol",
            name,
            &protocol::encode_frame(&RequestEnvelope { version: PROTOCOL_VERSION, request }),
        );
    }
    write("control_protocol", "status", &frame(br#"{"version":1,"request":{"type":"status","id":null}}"#));
    write("control_protocol", "wrong_version", &frame(br#"{"version":9,"request":{"type":"reload"}}"#));
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn state() {
    let resume = ResumeState {
        version: RESUME_VERSION,
        info_hash: InfoHash([3; 32]),
        clean: true,
        placement: Placement::Partial,
        have: "ff80".into(),
        stamps: vec![Some(FileStamp { length: 9, mtime_ns: 1_700_000_000_000_000_000 }), None],
        downloaded: 1 << 20,
        uploaded: 5,
        completed_at: Some(1_700_000_000),
        complete_hook_due: true,
    };
    let body = serde_json::to_vec(&resume).expect("serializes");
    write("state_file", "resume", &format::encode("resume", &body));
    let routing = br#"{"version":1,"nodes":[{"id":"0505050505050505050505050505050505050505050505050505050505050505","addr":"10.0.0.1:6690"}]}"#;
    write("state_file", "routing", &format::encode("routing", routing));
    write("state_file", "truncated", &format::encode("resume", &body)[..60]);
}

fn main() {
    discovery();
    peer_wire();
    let descriptors = descriptors();
    descriptor_and_config(&descriptors);
    control(&descriptors);
    state();
    println!("wrote fuzz/corpus/");
}
