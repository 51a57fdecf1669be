//! Return-routability tokens: `HMAC-SHA256(secret, ip ‖ port ‖ node id)`, first 16 bytes.
//!
//! A token reaches its holder only in a datagram sent to the holder's address, so presenting
//! it proves the holder receives traffic there (as BEP 5's write tokens and QUIC's address
//! validation do). The secret rotates every `period`; tokens from the current and the previous
//! secret are accepted, so a token lives between one and two periods. A node id is bound in,
//! so a token cannot be reused by another identity behind the same address.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use rand::{Rng, RngExt};
use sha2::Sha256;

use super::wire::{TOKEN_LEN, Token, canonical};
use crate::node_id::NodeId;

#[derive(Debug, Clone)]
pub struct TokenIssuer {
    current: [u8; 32],
    previous: [u8; 32],
    rotated_at: Instant,
    period: Duration,
}

fn compute(secret: &[u8; 32], addr: SocketAddr, id: &NodeId) -> Token {
    let addr = canonical(addr);
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    match addr.ip() {
        std::net::IpAddr::V4(ip) => mac.update(&ip.octets()),
        std::net::IpAddr::V6(ip) => mac.update(&ip.octets()),
    }
    mac.update(&addr.port().to_be_bytes());
    mac.update(&id.0);
    let full = mac.finalize().into_bytes();
    let mut token = [0u8; TOKEN_LEN];
    token.copy_from_slice(&full[..TOKEN_LEN]);
    token
}

impl TokenIssuer {
    pub fn new(rng: &mut impl Rng, now: Instant, period: Duration) -> TokenIssuer {
        TokenIssuer { current: rng.random(), previous: rng.random(), rotated_at: now, period }
    }

    fn rotate(&mut self, rng: &mut impl Rng, now: Instant) {
        while now.duration_since(self.rotated_at) >= self.period {
            self.previous = self.current;
            self.current = rng.random();
            self.rotated_at += self.period;
            if now.duration_since(self.rotated_at) >= self.period * 2 {
                // Long idle: both old secrets are stale.
                self.previous = rng.random();
                self.rotated_at = now;
            }
        }
    }

    /// A token for `id` at `addr`.
    pub fn issue(&mut self, rng: &mut impl Rng, now: Instant, addr: SocketAddr, id: &NodeId) -> Token {
        self.rotate(rng, now);
        compute(&self.current, addr, id)
    }

    /// Whether `token` was issued to `id` at `addr` within the last two periods.
    pub fn check(&mut self, rng: &mut impl Rng, now: Instant, addr: SocketAddr, id: &NodeId, token: &Token) -> bool {
        self.rotate(rng, now);
        let a = compute(&self.current, addr, id);
        let b = compute(&self.previous, addr, id);
        // Not secret-dependent timing worth caring about: tokens are compared after issue.
        *token == a || *token == b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn tokens_bind_address_and_id_and_expire() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let t0 = Instant::now();
        let period = Duration::from_secs(300);
        let mut issuer = TokenIssuer::new(&mut rng, t0, period);
        let a: SocketAddr = "10.0.0.1:6690".parse().unwrap();
        let id = NodeId([1; 32]);
        let token = issuer.issue(&mut rng, t0, a, &id);
        assert!(issuer.check(&mut rng, t0, a, &id, &token));
        assert!(!issuer.check(&mut rng, t0, "10.0.0.1:6691".parse().unwrap(), &id, &token), "other port");
        assert!(!issuer.check(&mut rng, t0, "10.0.0.2:6690".parse().unwrap(), &id, &token), "other ip");
        assert!(!issuer.check(&mut rng, t0, a, &NodeId([2; 32]), &token), "other id");
        assert!(!issuer.check(&mut rng, t0, a, &id, &[0; 16]), "forged");
        assert!(issuer.check(&mut rng, t0 + period + Duration::from_secs(1), a, &id, &token), "previous secret");
        assert!(!issuer.check(&mut rng, t0 + period * 2 + Duration::from_secs(1), a, &id, &token), "expired");
    }
}
