//! Return-routability tokens expire end to end: a token the daemon issued is accepted, then
//! refused once its secret has rotated out (one to two periods later), and a fresh one is
//! accepted again. The period is shortened through the fault-injection build
//! (`P2PD_FAULT_TOKEN_PERIOD_MS`); real daemon, real UDP.

mod common;

use std::time::{Duration, Instant};

use common::*;
use p2pd::descriptor::InfoHash;
use p2pd::discovery::wire::{Body, PeerStatus, Token};

const PERIOD: Duration = Duration::from_millis(400);

/// Announces with `token` until an answer comes; true if `announced`, false if `retry`.
fn accepted(client: &RawNode, to: &str, token: Token, txid: u32) -> bool {
    let info_hash = InfoHash([7; 32]);
    for _ in 0..20 {
        client.send(to, txid, Body::Announce { info_hash, status: PeerStatus::Seeding, token });
        while let Some((p, _)) = client.recv() {
            match p.body {
                Body::Announced { .. } if p.txid == txid => return true,
                Body::Retry { .. } if p.txid == txid => return false,
                _ => {}
            }
        }
    }
    panic!("no answer from {to}");
}

#[test]
#[cfg_attr(not(feature = "fault-injection"), ignore = "needs `--features p2pd/fault-injection`")]
fn a_token_expires_after_its_secret_rotates_out_and_a_fresh_one_works() {
    let mut node = Node::new();
    node.env.push(("P2PD_FAULT_TOKEN_PERIOD_MS".into(), PERIOD.as_millis().to_string()));
    node.start();
    let to = node.addr();
    let client = RawNode::bind("127.0.0.8");
    let issued = Instant::now();
    let token = client.token(&to);
    assert!(accepted(&client, &to, token, 1), "a fresh token is accepted");
    let refused_after =
        eventually(PATIENCE, "the token to expire", || (!accepted(&client, &to, token, 2)).then(|| issued.elapsed()));
    // Tokens from the current and the previous secret are accepted: never refused within one
    // period of being issued (a lower bound, which a slow machine only makes later).
    assert!(refused_after >= PERIOD, "refused {refused_after:?} after issue, period {PERIOD:?}");
    // Counters are published about once a second.
    eventually(PATIENCE, "the refusal to be counted in bad_tokens", || {
        (rpc(&node)["bad_tokens"].as_u64().unwrap() >= 1).then_some(())
    });
    let fresh = client.token(&to);
    assert_ne!(fresh, token);
    assert!(accepted(&client, &to, fresh, 3), "a fresh token is accepted again");
}
