//! The minimum distribution time (Kumar & Ross, "Peer-assisted file distribution: the minimum
//! distribution time", 2006) and the TCP goodput of a shaped link (pure).
//!
//! For content of F bytes, a seed uploading u_s, and N leechers uploading u_i and downloading
//! d_i, no schedule can finish every leecher before
//!
//! ```text
//! T_min = max( F / u_s,              the seed must send every byte at least once
//!              F / min d_i,          the slowest downloader must receive every byte
//!              N·F / (u_s + Σ u_i) ) N copies must cross the total upload capacity
//! ```
//!
//! The rates in the formula are what TCP payload can get through a link, not its nominal rate:
//! `tbf` counts whole Ethernet frames (`skb->len`: 14 bytes of header, 20 of IP, 32 of TCP with
//! timestamps, 1448 of payload in a 1500-byte MTU), so payload gets at most
//! [`TCP_GOODPUT_FACTOR`] = 1448/1514 ≈ 0.956 of the nominal rate. Using the nominal rate
//! would flatter nobody but would blame p2pd for 4.4 % that no TCP sender can have.

use serde::{Deserialize, Serialize};

use crate::units::LinkRate;

/// TCP payload bytes per byte counted by tbf for full-size segments on a 1500-byte MTU.
pub const TCP_GOODPUT_FACTOR: f64 = 1448.0 / 1514.0;

/// The payload bytes per second TCP can get through a link shaped to `rate`.
pub fn goodput(rate: LinkRate) -> f64 {
    rate.bytes_per_sec() as f64 * TCP_GOODPUT_FACTOR
}

/// The capacities of a swarm, as nominal link rates.
#[derive(Debug, Clone, PartialEq)]
pub struct SwarmCapacity {
    /// Content bytes (F).
    pub content_bytes: u64,
    /// The seed's upload limit (u_s).
    pub seed_upload: LinkRate,
    /// Each leecher's upload limit (u_i); the length is N.
    pub leecher_uploads: Vec<LinkRate>,
    /// Each leecher's download limit (d_i); `None` is unlimited. The length is N.
    pub leecher_downloads: Vec<Option<LinkRate>>,
}

/// Which term of the bound is the largest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BindingTerm {
    /// F/u_s: the seed's upload.
    SeedUpload,
    /// F/min d_i: the slowest download link.
    Download,
    /// N·F/(u_s + Σu_i): the swarm's total upload.
    SwarmUpload,
}

/// The bound and each of its terms, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MinDistributionTime {
    /// T_min: the largest term.
    pub t_min_secs: f64,
    pub seed_term_secs: f64,
    /// `None` when no leecher has a download limit.
    pub download_term_secs: Option<f64>,
    pub swarm_term_secs: f64,
    pub binding: BindingTerm,
    /// The goodput factor applied to every nominal rate.
    pub goodput_factor: f64,
}

impl SwarmCapacity {
    /// T_min with every rate taken at TCP goodput.
    pub fn min_distribution_time(&self) -> MinDistributionTime {
        let f = self.content_bytes as f64;
        let n = self.leecher_uploads.len() as f64;
        let seed_term = f / goodput(self.seed_upload);
        let download_term =
            self.leecher_downloads.iter().flatten().map(|&d| goodput(d)).reduce(f64::min).map(|d| f / d);
        let total_upload = goodput(self.seed_upload) + self.leecher_uploads.iter().map(|&u| goodput(u)).sum::<f64>();
        let swarm_term = n * f / total_upload;
        let mut t_min = seed_term;
        let mut binding = BindingTerm::SeedUpload;
        if let Some(d) = download_term
            && d > t_min
        {
            t_min = d;
            binding = BindingTerm::Download;
        }
        if swarm_term > t_min {
            t_min = swarm_term;
            binding = BindingTerm::SwarmUpload;
        }
        MinDistributionTime {
            t_min_secs: t_min,
            seed_term_secs: seed_term,
            download_term_secs: download_term,
            swarm_term_secs: swarm_term,
            binding,
            goodput_factor: TCP_GOODPUT_FACTOR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MBIT: u64 = 125_000;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn goodput_is_payload_per_frame() {
        assert!(close(goodput(LinkRate(1514)), 1448.0));
        assert!(close(TCP_GOODPUT_FACTOR, 0.956_406_869_220_607_6));
    }

    #[test]
    fn equal_uploads_are_bound_by_the_seed() {
        // Scenario 1: F = 256 MiB, N = 8, every host 200 Mbit/s. N·F/((N+1)u) < F/u.
        let f = 256u64 << 20;
        let u = LinkRate(200 * MBIT);
        let cap = SwarmCapacity {
            content_bytes: f,
            seed_upload: u,
            leecher_uploads: vec![u; 8],
            leecher_downloads: vec![None; 8],
        };
        let b = cap.min_distribution_time();
        assert_eq!(b.binding, BindingTerm::SeedUpload);
        assert!(close(b.t_min_secs, f as f64 / (25e6 * 1448.0 / 1514.0)));
        assert!(close(b.swarm_term_secs, b.seed_term_secs * 8.0 / 9.0));
        assert_eq!(b.download_term_secs, None);
        // About 11.2 s rather than the 10.7 s the nominal rate would give.
        assert!((b.t_min_secs - 11.23).abs() < 0.01, "{}", b.t_min_secs);
    }

    #[test]
    fn a_fast_seed_leaves_the_swarm_term() {
        // Scenario 3: seed 1 Gbit/s, 8 leechers at 200 Mbit/s: 8F/(1000+1600 Mbit/s).
        let f = 256u64 << 20;
        let cap = SwarmCapacity {
            content_bytes: f,
            seed_upload: LinkRate(1000 * MBIT),
            leecher_uploads: vec![LinkRate(200 * MBIT); 8],
            leecher_downloads: vec![None; 8],
        };
        let b = cap.min_distribution_time();
        assert_eq!(b.binding, BindingTerm::SwarmUpload);
        assert!(close(b.t_min_secs, 8.0 * f as f64 / (2600.0 * MBIT as f64 * TCP_GOODPUT_FACTOR)));
    }

    #[test]
    fn the_slowest_download_link_can_bind() {
        let cap = SwarmCapacity {
            content_bytes: 1_000_000,
            seed_upload: LinkRate(1000 * MBIT),
            leecher_uploads: vec![LinkRate(1000 * MBIT); 2],
            leecher_downloads: vec![Some(LinkRate(10 * MBIT)), Some(LinkRate(100 * MBIT))],
        };
        let b = cap.min_distribution_time();
        assert_eq!(b.binding, BindingTerm::Download);
        assert!(close(b.t_min_secs, 1e6 / (10.0 * MBIT as f64 * TCP_GOODPUT_FACTOR)));
    }
}
