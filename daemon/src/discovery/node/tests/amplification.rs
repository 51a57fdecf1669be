//! The amplification property test: whatever contacts answer, the node never sends an
//! address that did not prove itself more bytes than others paid for.

use super::*;

/// How a contact of the amplification property test answers what the node sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Never answers: the node's requests to it (a validated address) are retried.
    Silent,
    /// Answers with a pong, no nodes, `not_found`.
    Plain,
    /// Lists its victims: as the nodes closest to any target, and as the swarm's members.
    Lister,
    /// Acknowledges a get_peers, and a `found` arrives from one of its victims (spoofed).
    Founder,
}

/// A step of the amplification property test.
#[derive(Debug, Clone)]
enum Step {
    /// A contact pings the node and keeps the token of the pong.
    Ping(usize),
    /// A contact sends a request with the token it holds (none yet: a wrong one): 0 find_node,
    /// 1 get_peers, 2 announce, 3 a forward for the node's swarm naming one of the contact's
    /// victims as the origin, 4 the same for a swarm the node does not know.
    Request(usize, u8),
    /// A datagram from a victim's address (spoofed): 0 the noise as it is, 1 a ping, 2 to 4 a
    /// get_peers, announce or find_node with a token that address was never given.
    Spoof(usize, u8, Vec<u8>),
    /// Time passes (milliseconds): the node's timers run, contacts answer what it sends.
    Wait(u16),
}

/// Contacts of the amplification property test (they prove their addresses).
const CONTACTS: usize = 3;

fn contact(c: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 1, c as u8 + 1], 6690))
}

fn contact_id(c: usize) -> NodeId {
    id(0x40 + c as u8, 1)
}

/// Victim `j` of contact `c`: listed or named only by `c` (and by nobody else, except as the
/// source of a `found`), never answering, never proving its address.
fn victim(c: usize, j: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 10 + c as u8, j as u8 + 1], 7000))
}

fn victim_id(c: usize, j: usize) -> NodeId {
    id(0x80 + c as u8, j as u8 + 1)
}

/// One node under attack, the byte counts per address, and who made the node aware of each
/// victim. Everything the node sends goes through [`World::route`].
struct World {
    n: Node,
    now: Instant,
    hash: InfoHash,
    behaviours: Vec<Behaviour>,
    /// Victims per contact.
    victims: usize,
    /// Tokens the node gave each contact (in pongs).
    tokens: Vec<Option<Token>>,
    /// Bytes the node sent to each address: all, and those in requests.
    sent: HashMap<SocketAddr, usize>,
    requests: HashMap<SocketAddr, usize>,
    /// Bytes the node received from each address.
    received: HashMap<SocketAddr, usize>,
    /// For each victim, the contacts whose datagrams named it (lists, forwards) or may pay
    /// for asking it (the first hops, for a `found` from its address).
    causers: HashMap<SocketAddr, std::collections::BTreeSet<usize>>,
    /// For each victim, the bytes of the datagrams each of which may be answered to it once,
    /// no larger: those from its address, and forwards naming it as their origin.
    answerable: HashMap<SocketAddr, usize>,
    /// `found`s sent so far (the next one comes from the next victim).
    founds: usize,
}

impl World {
    /// The node joins a swarm and bootstraps from the contacts.
    fn new(behaviours: Vec<Behaviour>, victims: usize) -> World {
        let (mut n, now) = node(6);
        let hash = InfoHash([4; 32]);
        let contacts: Vec<SocketAddr> = (0..CONTACTS).map(contact).collect();
        n.bootstrap(now, &contacts);
        n.join(now, hash, PeerStatus::Seeding, &[]);
        let mut w = World {
            n,
            now,
            hash,
            behaviours,
            victims,
            tokens: vec![None; CONTACTS],
            sent: HashMap::new(),
            requests: HashMap::new(),
            received: HashMap::new(),
            causers: HashMap::new(),
            answerable: HashMap::new(),
            founds: 0,
        };
        w.flush();
        w
    }

    fn contact_of(to: &SocketAddr) -> Option<usize> {
        (0..CONTACTS).find(|&c| contact(c) == *to)
    }

    fn all_victims(&self) -> Vec<SocketAddr> {
        (0..CONTACTS).flat_map(|c| (0..self.victims).map(move |j| victim(c, j))).collect()
    }

    /// The node handles `bytes` from `from`; returns what it sends at once.
    fn deliver(&mut self, from: SocketAddr, bytes: &[u8]) -> Vec<Transmit> {
        *self.received.entry(from).or_default() += bytes.len();
        if World::contact_of(&from).is_none() {
            *self.answerable.entry(from).or_default() += bytes.len();
        }
        self.n.handle_datagram(self.now, from, bytes);
        self.n.take_transmits()
    }

    /// Counts what the node sends, and lets the contacts answer it, until it sends nothing more.
    fn route(&mut self, mut out: Vec<Transmit>) {
        while !out.is_empty() {
            let mut answers = Vec::new();
            for t in out {
                let p = wire::decode(&t.bytes).expect("the node sends valid datagrams");
                *self.sent.entry(t.to).or_default() += t.bytes.len();
                if p.body.is_request() {
                    *self.requests.entry(t.to).or_default() += t.bytes.len();
                }
                if let Some(c) = World::contact_of(&t.to) {
                    answers.extend(self.answer(c, &p));
                }
            }
            out = Vec::new();
            for (from, bytes) in answers {
                out.extend(self.deliver(from, &bytes));
            }
        }
    }

    fn flush(&mut self) {
        let out = self.n.take_transmits();
        self.route(out);
    }

    /// What contact `c` sends back for `p` (the node's datagram), per its behaviour.
    fn answer(&mut self, c: usize, p: &Packet) -> Vec<(SocketAddr, Vec<u8>)> {
        let behaviour = self.behaviours[c];
        if behaviour == Behaviour::Silent {
            return Vec::new();
        }
        let listed: Vec<usize> = if behaviour == Behaviour::Lister { (0..self.victims).collect() } else { Vec::new() };
        for &j in &listed {
            self.causers.entry(victim(c, j)).or_default().insert(c);
        }
        let reply = |body| (contact(c), wire::encode(&Packet { txid: p.txid, sender: contact_id(c), body }));
        match &p.body {
            Body::Ping => vec![reply(Body::Pong { token: [c as u8 + 1; 16], observed: contact(c) })],
            Body::FindNode { .. } => {
                let nodes =
                    listed.iter().take(MAX_NODES).map(|&j| NodeRecord { id: victim_id(c, j), addr: victim(c, j) });
                vec![reply(Body::Nodes { nodes: nodes.collect() })]
            }
            Body::GetPeers { info_hash, request_id, .. } => match behaviour {
                Behaviour::Lister => {
                    let peers = listed.iter().take(MAX_PEERS).map(|&j| PeerRecord {
                        id: victim_id(c, j),
                        addr: victim(c, j),
                        status: PeerStatus::Seeding,
                    });
                    let (request_id, info_hash) = (*request_id, *info_hash);
                    vec![reply(Body::Peers { request_id, info_hash, holder: None, peers: peers.collect() })]
                }
                Behaviour::Founder => {
                    let j = self.founds % self.victims;
                    self.founds += 1;
                    // Any first hop of the attempt may pay for asking it.
                    self.causers.entry(victim(c, j)).or_default().extend(0..CONTACTS);
                    let found = Body::Found { request_id: *request_id, info_hash: *info_hash, hops: 2, token: [9; 16] };
                    let found = wire::encode(&Packet { txid: 0, sender: victim_id(c, j), body: found });
                    vec![reply(Body::Forwarded { request_id: *request_id }), (victim(c, j), found)]
                }
                _ => vec![reply(Body::NotFound { request_id: *request_id, info_hash: *info_hash, hops: 0 })],
            },
            Body::Forward { request_id, .. } => vec![reply(Body::Forwarded { request_id: *request_id })],
            Body::Announce { info_hash, .. } => vec![reply(Body::Announced { info_hash: *info_hash })],
            _ => Vec::new(),
        }
    }

    fn step(&mut self, step: Step) -> Result<(), TestCaseError> {
        match step {
            Step::Ping(c) => {
                let out = self.deliver(contact(c), &request(contact_id(c), Body::Ping));
                for t in out.iter().filter(|t| t.to == contact(c)) {
                    if let Ok(Packet { body: Body::Pong { token, .. }, .. }) = wire::decode(&t.bytes) {
                        self.tokens[c] = Some(token);
                    }
                }
                self.route(out);
            }
            Step::Request(c, kind) => {
                let token = self.tokens[c].unwrap_or([0; 16]);
                let j = self.founds % self.victims;
                let origin = NodeRecord { id: victim_id(c, j), addr: victim(c, j) };
                let request_id = 7 + j as u64;
                let forward = |info_hash| Body::Forward { info_hash, request_id, hops: 1, hops_left: 3, origin, token };
                let body = match kind {
                    0 => Body::FindNode { target: [3; 32], token },
                    1 => Body::GetPeers { info_hash: self.hash, request_id: 5, hop_limit: 3, token },
                    2 => Body::Announce { info_hash: self.hash, status: PeerStatus::Leeching, token },
                    3 => forward(self.hash),
                    _ => forward(InfoHash([0x55; 32])),
                };
                let bytes = request(contact_id(c), body);
                let forwards = kind >= 3;
                if forwards {
                    self.causers.entry(origin.addr).or_default().insert(c);
                    *self.answerable.entry(origin.addr).or_default() += bytes.len();
                }
                let out = self.deliver(contact(c), &bytes);
                // What goes to the origin at once: one answer, no larger than the forward.
                let to_origin: Vec<usize> = out.iter().filter(|t| t.to == origin.addr).map(|t| t.bytes.len()).collect();
                prop_assert!(
                    !forwards || (to_origin.len() <= 1 && to_origin.iter().all(|&n| n <= bytes.len())),
                    "{to_origin:?} bytes to the origin of a forward of {}",
                    bytes.len()
                );
                self.route(out);
            }
            Step::Spoof(v, kind, noise) => {
                let (c, j) = (v % CONTACTS, (v / CONTACTS) % self.victims);
                let (from, sender) = (victim(c, j), victim_id(c, j));
                let bytes = match kind {
                    0 => noise,
                    1 => request(sender, Body::Ping),
                    2 => request(
                        sender,
                        Body::GetPeers { info_hash: self.hash, request_id: 3, hop_limit: 3, token: [1; 16] },
                    ),
                    3 => request(
                        sender,
                        Body::Announce { info_hash: self.hash, status: PeerStatus::Seeding, token: [2; 16] },
                    ),
                    _ => request(sender, Body::FindNode { target: [3; 32], token: [4; 16] }),
                };
                let out = self.deliver(from, &bytes);
                // Its answers: none larger than what it sent.
                for t in out.iter().filter(|t| t.to == from) {
                    prop_assert!(
                        t.bytes.len() <= bytes.len(),
                        "{} bytes sent for {} received",
                        t.bytes.len(),
                        bytes.len()
                    );
                }
                self.route(out);
            }
            Step::Wait(ms) => self.wait(Duration::from_millis(u64::from(ms))),
        }
        self.check()
    }

    fn wait(&mut self, d: Duration) {
        let until = self.now + d;
        loop {
            let t = self.n.next_deadline().max(self.now + Duration::from_millis(1));
            if t > until {
                break;
            }
            self.now = t;
            self.n.poll(t);
            self.flush();
        }
        self.now = until;
    }

    /// Bytes received from `addrs`.
    fn received_from<'a>(&self, addrs: impl Iterator<Item = &'a SocketAddr>) -> usize {
        addrs.map(|a| self.received.get(a).copied().unwrap_or(0)).sum()
    }

    /// No victim got more bytes than came from it and from whoever made the node aware of it.
    /// Of those, answers (`pong`, `retry`, `found`, `not_found`) are no more than the datagrams
    /// they answer; and requests are paid for from credit: the victims that only one contact
    /// made known together got no more requests than came from them and from it. And the
    /// datagram accounting closes.
    fn check(&self) -> Result<(), TestCaseError> {
        let victims = self.all_victims();
        let none = std::collections::BTreeSet::new();
        let causers = |v: &SocketAddr| self.causers.get(v).unwrap_or(&none);
        let get = |m: &HashMap<SocketAddr, usize>, v: &SocketAddr| m.get(v).copied().unwrap_or(0);
        for v in &victims {
            let payers: Vec<SocketAddr> = causers(v).iter().map(|&c| contact(c)).chain([*v]).collect();
            let paid = self.received_from(payers.iter());
            let sent = get(&self.sent, v);
            prop_assert!(sent <= paid, "{sent} bytes to {v}; {paid} from it and contacts {:?}", causers(v));
            let (answers, answerable) = (sent - get(&self.requests, v), get(&self.answerable, v));
            prop_assert!(answers <= answerable, "{answers} bytes of answers to {v}, for {answerable}");
        }
        for c in 0..CONTACTS {
            let group: Vec<SocketAddr> =
                victims.iter().filter(|v| causers(v).iter().all(|&x| x == c)).copied().collect();
            let to: usize = group.iter().map(|v| get(&self.sent, v)).sum();
            let paid = self.received_from(group.iter().chain([&contact(c)]));
            prop_assert!(to <= paid, "{to} bytes to the victims only contact {c} named; {paid} from them and it");
        }
        let c = self.n.counters;
        prop_assert_eq!(c.received, c.handled + c.dropped_malformed + c.rate_limited + c.dropped_unsolicited);
        Ok(())
    }
}

fn behaviour() -> impl Strategy<Value = Behaviour> {
    prop_oneof![Just(Behaviour::Silent), Just(Behaviour::Plain), Just(Behaviour::Lister), Just(Behaviour::Founder)]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..CONTACTS).prop_map(Step::Ping),
        (0..CONTACTS, 0u8..5).prop_map(|(c, k)| Step::Request(c, k)),
        (0..64usize, 0u8..5, proptest::collection::vec(any::<u8>(), 0..400)).prop_map(|(v, k, b)| Step::Spoof(v, k, b)),
        (0u16..3000).prop_map(Step::Wait),
    ]
}

proptest! {
    /// Whatever arrives, from contacts that prove their addresses (pinging for a token and
    /// using it, answering the node's requests, some with lists of victims or with `found`s
    /// from a victim's address) and from victims' addresses (spoofed), while the node's timers
    /// run (so its requests are retried): no victim gets more bytes than the node received
    /// from it and from those that made the node aware of it; answers to it are no more than
    /// the datagrams they answer, and requests to the victims one contact named are no more
    /// than what came from them and from it; and the datagram accounting always closes.
    ///
    /// Answers and requests together, too: a forward's bytes once paid for its `found` to the
    /// origin and also earned its sender credit for first contacts, so one contact's victims
    /// together got up to 1.5 times what came from it (found here: 1,249 bytes for 1,167; with
    /// `PROPTEST_CASES=20000`, 3,361 for 3,306). Now the answer spends that credit
    /// (`Node::answer_forward`).
    ///
    /// To see it fail: let `Node::attempts_for` return `rpc_attempts` for every address
    /// (retries to addresses never validated), or let `Node::affordable` keep every item
    /// without spending credit.
    #[test]
    fn no_amplification_and_accounting_closes(
        behaviours in proptest::collection::vec(behaviour(), CONTACTS),
        victims in 1usize..=16,
        steps in proptest::collection::vec(step(), 1..40),
    ) {
        let mut w = World::new(behaviours, victims);
        for s in steps {
            w.step(s)?;
        }
        // Long enough for every retry and lookup attempt still due.
        w.wait(Duration::from_secs(12));
        w.check()?;
    }
}

/// The property test's world exercises what it checks: retries to contacts, requests to
/// victims paid for by a lister's bytes and by a founder's, `found`s to the origins of
/// forwards.
#[test]
fn the_amplification_world_sends_retries_and_paid_requests() {
    let script = [Step::Ping(1), Step::Request(1, 2), Step::Ping(2), Step::Request(2, 3), Step::Wait(3000)];
    let run = |behaviours: Vec<Behaviour>| {
        let mut w = World::new(behaviours, 16);
        for step in script.clone() {
            w.step(step).unwrap();
        }
        w.wait(Duration::from_secs(12));
        w.check().unwrap();
        w
    };
    let requests =
        |w: &World, c: usize| (0..16).map(|j| w.requests.get(&victim(c, j)).copied().unwrap_or(0)).sum::<usize>();
    let all = |w: &World, c: usize| (0..16).map(|j| w.sent.get(&victim(c, j)).copied().unwrap_or(0)).sum::<usize>();
    let w = run(vec![Behaviour::Silent, Behaviour::Lister, Behaviour::Plain]);
    assert!(w.n.counters.retries > 0, "the node retried requests: {:?}", w.n.counters);
    assert_eq!(w.sent[&contact(0)], 4 * wire::MIN_REQUEST_LEN, "the silent contact's bootstrap ping was sent 4 times");
    assert!(requests(&w, 1) > 0, "the lister's victims were asked (paid by its credit)");
    assert!(all(&w, 2) > requests(&w, 2), "the origin of a forward was told `found`");
    let w = run(vec![Behaviour::Silent, Behaviour::Founder, Behaviour::Founder]);
    assert!(
        requests(&w, 1) + requests(&w, 2) > 0,
        "a founder's victim was asked (paid by its bytes and a first hop's)"
    );
}
