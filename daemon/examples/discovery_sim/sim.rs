//! A deterministic simulated network for measuring discovery at scale (`bench/discovery/`).
//!
//! Thousands of real [`Node`]s exchange real encoded datagrams through an event queue with
//! random latency, random loss, and nodes that vanish without notice. Same seed, same run.
//! The daemon never uses this (so it lives beside the benchmark, not in the library); it exists
//! so the protocol's cost and reliability at 10,000 nodes can be measured on one machine. Tests
//! use real daemons and sockets instead.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use p2pd::discovery::{DiscoveryConfig, Event, Node};
use p2pd::node_id::NodeId;

/// Past this much quiet (only housekeeping timers left), the network is idle.
const IDLE_HORIZON: Duration = Duration::from_secs(120);

#[derive(Clone)]
struct Delivery {
    to: usize,
    from: SocketAddr,
    bytes: Vec<u8>,
}

/// The simulated network.
pub struct SimNet {
    pub nodes: Vec<Node>,
    pub alive: Vec<bool>,
    addrs: Vec<SocketAddr>,
    by_addr: HashMap<SocketAddr, usize>,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    in_flight: HashMap<u64, Delivery>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    seq: u64,
    pub now: Instant,
    rng: StdRng,
    /// Probability that any datagram is lost.
    pub loss: f64,
    /// One-way latency range.
    pub latency: (Duration, Duration),
    /// Datagrams handed to the network.
    pub sent: u64,
    pub lost: u64,
    /// Events from every node, with the node's index.
    pub events: Vec<(usize, Event)>,
}

/// The address of simulated node `i` (a distinct IP each).
pub fn sim_addr(i: usize) -> SocketAddr {
    let i = i as u32 + 1;
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8)), 6690)
}

impl SimNet {
    /// `n` nodes with random ids, none connected yet.
    pub fn new(n: usize, config: &DiscoveryConfig, seed: u64) -> SimNet {
        let mut rng = StdRng::seed_from_u64(seed);
        let now = Instant::now();
        let nodes: Vec<Node> =
            (0..n).map(|_| Node::new(NodeId(rng.random()), config.clone(), rng.random(), now)).collect();
        let addrs: Vec<SocketAddr> = (0..n).map(sim_addr).collect();
        let by_addr = addrs.iter().enumerate().map(|(i, a)| (*a, i)).collect();
        SimNet {
            nodes,
            alive: vec![true; n],
            addrs,
            by_addr,
            queue: BinaryHeap::new(),
            in_flight: HashMap::new(),
            timers: BinaryHeap::new(),
            seq: 0,
            now,
            rng,
            loss: 0.0,
            latency: (Duration::from_micros(500), Duration::from_millis(5)),
            sent: 0,
            lost: 0,
            events: Vec::new(),
        }
    }

    /// An independent copy, to run another scenario on the same formed network.
    pub fn fork(&mut self) -> SimNet {
        SimNet {
            nodes: self.nodes.clone(),
            alive: self.alive.clone(),
            addrs: self.addrs.clone(),
            by_addr: self.by_addr.clone(),
            queue: self.queue.clone(),
            in_flight: self.in_flight.clone(),
            timers: self.timers.clone(),
            seq: self.seq,
            now: self.now,
            rng: StdRng::seed_from_u64(self.rng.random()),
            loss: self.loss,
            latency: self.latency,
            sent: self.sent,
            lost: self.lost,
            events: self.events.clone(),
        }
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        self.addrs[i]
    }

    /// Lets node `i`'s output into the network and schedules its next timer.
    pub fn flush(&mut self, i: usize) {
        let transmits = self.nodes[i].take_transmits();
        for t in transmits {
            self.sent += 1;
            if self.loss > 0.0 && self.rng.random::<f64>() < self.loss {
                self.lost += 1;
                continue;
            }
            let Some(&to) = self.by_addr.get(&t.to) else { continue };
            let (lo, hi) = self.latency;
            let delay = lo + (hi - lo).mul_f64(self.rng.random::<f64>());
            self.seq += 1;
            self.in_flight.insert(self.seq, Delivery { to, from: self.addrs[i], bytes: t.bytes });
            self.queue.push(Reverse((self.now + delay, self.seq)));
        }
        for e in self.nodes[i].take_events() {
            self.events.push((i, e));
        }
        let deadline = self.nodes[i].next_deadline();
        self.timers.push(Reverse((deadline, i)));
    }

    /// Runs until no datagram is in flight and no node has anything due within the idle
    /// horizon, or until `limit` of simulated time has passed.
    pub fn run_until_idle(&mut self, limit: Duration) {
        let end = self.now + limit;
        loop {
            let next_packet = self.queue.peek().map(|Reverse((t, _))| *t);
            // Drop stale timer entries (a node's deadline moved later).
            while let Some(Reverse((t, i))) = self.timers.peek().copied() {
                if !self.alive[i] || t < self.nodes[i].next_deadline() {
                    self.timers.pop();
                } else {
                    break;
                }
            }
            let next_timer = self.timers.peek().map(|Reverse((t, _))| *t);
            let next = match (next_packet, next_timer) {
                (Some(p), Some(t)) => p.min(t),
                (Some(p), None) => p,
                (None, Some(t)) if t <= self.now + IDLE_HORIZON => t,
                _ => return,
            };
            if next > end {
                return;
            }
            self.now = self.now.max(next);
            if next_packet == Some(next) {
                let Some(Reverse((_, seq))) = self.queue.pop() else { continue };
                let Some(d) = self.in_flight.remove(&seq) else { continue };
                if self.alive[d.to] {
                    self.nodes[d.to].handle_datagram(self.now, d.from, &d.bytes);
                    self.flush(d.to);
                }
            } else if let Some(Reverse((_, i))) = self.timers.pop()
                && self.alive[i]
            {
                self.nodes[i].poll(self.now);
                self.flush(i);
            }
        }
    }

    /// Joins every node to the network one after another, each through a random node that
    /// joined before it.
    pub fn form(&mut self) {
        for i in 1..self.nodes.len() {
            let j = self.rng.random_range(0..i);
            let addr = self.addrs[j];
            let now = self.now;
            self.nodes[i].bootstrap(now, &[addr]);
            self.flush(i);
            self.run_until_idle(Duration::from_secs(60));
        }
    }

    /// Kills a random `fraction` of the nodes, except those in `keep`.
    pub fn kill(&mut self, fraction: f64, keep: &[usize]) -> usize {
        let mut killed = 0;
        for i in 0..self.nodes.len() {
            if !keep.contains(&i) && self.rng.random::<f64>() < fraction {
                self.alive[i] = false;
                killed += 1;
            }
        }
        killed
    }

    pub fn index_of(&self, addr: &SocketAddr) -> Option<usize> {
        self.by_addr.get(addr).copied()
    }

    pub fn random_alive(&mut self, exclude: &[usize]) -> usize {
        loop {
            let i = self.rng.random_range(0..self.nodes.len());
            if self.alive[i] && !exclude.contains(&i) {
                return i;
            }
        }
    }

    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }
}
