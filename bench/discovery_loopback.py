#!/usr/bin/env python3
"""Lookup latency between real daemons on loopback.

Starts --nodes daemons, each on its own loopback address (127.0.0.2, 127.0.0.3, …: p2pd budgets
new swarms per source host, 64 and then one every 10 s, so daemons sharing 127.0.0.1 would be
one host), each joining the network through the first, and seeds --torrents small torrents
spread over all but the first. Then one client of this script, on one UDP socket and one clock,
times two kinds of round trip against the first daemon:

  - a discovery ping/pong (the limit: the least one exchange costs on this machine, client
    overhead included);
  - a whole get_peers lookup of every torrent, done as a newcomer with no token does it
    (docs/PROTOCOL.md, "Finding a swarm"): ping the first hop for a token, get_peers; if the
    first hop knows the swarm it answers with the member list, else it forwards the request
    towards the hash and the holder sends `found`, and a get_peers to the holder gets the list.
    From the ping's send to the member list.

The lookup is given as a multiple of the ping round trip: both are timed by the same client in
the same way. A lookup that needs no forwarding is two round trips; the output says how many
were answered by the first hop and how many through a forwarded path.

Then one more daemon (knowing only the first) adds every descriptor; its own lookup counters
and latencies (`p2pctl status --json`, timed inside that daemon) are reported apart, with no
ratio: they are not timed like the round trips above.

Usage: python3 bench/discovery_loopback.py [--nodes 8] [--torrents 200] [--out bench/results/discovery_loopback.md]
"""

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

from benchlib import BIN, ROOT, Run, build, ctl, free_port, write_result  # noqa: E402 (beside this script)


def start(work, i, bootstrap):
    """Daemon `i` on 127.0.0.(i + 2); (config dir, (address, port), process)."""
    cfg = os.path.join(work, f"n{i}")
    os.makedirs(cfg)
    host = f"127.0.0.{i + 2}"
    port = free_port(host)
    boot = f"bootstrap: [\"{bootstrap}\"]\n" if bootstrap else ""
    with open(os.path.join(cfg, "p2pd.yaml"), "w") as f:
        f.write(f"listen: {host}:{port}\nstate_dir: state\ndata_dir: data\ncontrol_socket: run/c.sock\nlog_level: warn\n{boot}")
    proc = subprocess.Popen([os.path.join(BIN, "p2pd"), "--config-dir", cfg], stderr=open(os.path.join(cfg, "log"), "w"))
    for _ in range(500):
        if ctl(cfg, "status", check=False).returncode == 0:
            break
        time.sleep(0.01)
    return cfg, (host, port), proc


# Discovery datagram types (docs/PROTOCOL.md, "Datagram layout").
PING, GET_PEERS = 0x01, 0x03
PONG, PEERS, FORWARDED, FOUND, NOT_FOUND, RETRY = 0x81, 0x83, 0x84, 0x85, 0x86, 0x88
MIN_REQUEST = 192


class Client:
    """A discovery client: one UDP socket, one node id, the script's clock."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.id = os.urandom(32)
        self.txid = 0

    def send(self, addr, kind, body=b""):
        self.txid = (self.txid + 1) & 0xFFFFFFFF
        pkt = b"P2" + bytes([1, kind]) + struct.pack(">I", self.txid) + self.id + body
        pad = MIN_REQUEST - len(pkt) - 2
        self.sock.sendto(pkt + struct.pack(">H", pad) + bytes(pad), addr)
        return self.txid

    def receive(self, deadline):
        """(type, txid, body, source address) of the next datagram, or None at the deadline."""
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data, addr = self.sock.recvfrom(2048)
            except socket.timeout:
                return None
            if len(data) >= 40 and data[:3] == b"P2\x01":
                return data[3], struct.unpack(">I", data[4:8])[0], data[40:], addr

    def ping(self, addr, timeout=1.0):
        """The pong's token, or None."""
        txid = self.send(addr, PING)
        deadline = time.perf_counter() + timeout
        while (got := self.receive(deadline)) is not None:
            kind, tx, body, _ = got
            if kind == PONG and tx == txid:
                return body[:16]
        return None

    def lookup(self, first_hop, info_hash, timeout=2.0):
        """One lookup as a newcomer does it; ("direct" | "forwarded", seconds) or (why, None)."""
        t = time.perf_counter()
        deadline = t + timeout
        token = self.ping(first_hop, timeout)
        if token is None:
            return "no pong", None
        rid = random.getrandbits(64)
        request = lambda tok, hop_limit: info_hash + struct.pack(">QB", rid, hop_limit) + tok
        self.send(first_hop, GET_PEERS, request(token, 16))
        path, retried = "direct", set()
        while (got := self.receive(deadline)) is not None:
            kind, _, body, addr = got
            if kind == PEERS and body[:8] == struct.pack(">Q", rid):
                return path, time.perf_counter() - t
            if kind == FOUND and body[:8] == struct.pack(">Q", rid):
                path = "forwarded"
                self.send(addr, GET_PEERS, request(body[41:57], 0))
            elif kind == NOT_FOUND and body[:8] == struct.pack(">Q", rid):
                return "not_found", None
            elif kind == RETRY and addr not in retried:  # a token refused: follow once, as a node does
                retried.add(addr)
                self.send(addr, GET_PEERS, request(body[:16], 16 if addr == first_hop else 0))
        return "timed out", None


def ping_rtts(client, addr, count):
    samples = []
    for _ in range(count):
        t = time.perf_counter()
        if client.ping(addr) is None:
            raise SystemExit(f"no pong from {addr}")
        samples.append(time.perf_counter() - t)
    return samples


def pct(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * p))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=8)
    ap.add_argument("--torrents", type=int, default=200)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "discovery_loopback.md"))
    args = ap.parse_args()
    run = Run()
    build()
    work = tempfile.mkdtemp(prefix="p2pd-disc-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    procs = []
    try:
        nodes = []
        for i in range(args.nodes):
            boot = "%s:%d" % nodes[0][1] if nodes else None
            nodes.append(start(work, i, boot))
            procs.append(nodes[-1][2])
        time.sleep(1.0)
        descs, hashes = [], []
        for t in range(args.torrents):
            cfg = nodes[1 + t % (args.nodes - 1)][0]
            data = os.path.join(cfg, "data")
            os.makedirs(data, exist_ok=True)
            path = os.path.join(data, f"t{t}.bin")
            with open(path, "wb") as f:
                f.write(os.urandom(16384 + t))
            desc = os.path.join(work, f"t{t}.desc")
            ctl(cfg, "create", path, "-o", desc, "--bootstrap", "%s:%d" % nodes[0][1])
            hashes.append(ctl(cfg, "add", desc).stdout.strip())
            descs.append(desc)
        time.sleep(2.0)
        client = Client()
        first = nodes[0][1]
        rtts = ping_rtts(client, first, 500)
        outcomes = {}
        lookups = []
        for h in hashes:
            path, secs = client.lookup(first, bytes.fromhex(h))
            outcomes[path] = outcomes.get(path, 0) + 1
            if secs is not None:
                lookups.append(secs)
        leecher = start(work, args.nodes, None)
        procs.append(leecher[2])
        for d in descs:
            ctl(leecher[0], "add", d)
        deadline = time.time() + 120
        while time.time() < deadline:
            st = json.loads(ctl(leecher[0], "status", "--json").stdout)["node"]
            if st["lookups"]["completed"] >= args.torrents:
                break
            time.sleep(0.2)
        time.sleep(0.6)
        st = json.loads(ctl(leecher[0], "status", "--json").stdout)["node"]
        others = [json.loads(ctl(n[0], "status", "--json").stdout)["node"]["rpc"] for n in nodes]
        limited = sum(r["rate_limited"] for r in others)
        new_swarms_limited = sum(r["new_swarms_limited"] for r in others)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)
    lk = st["lookups"]
    rtt = statistics.median(rtts)
    found = len(lookups)
    shown = lambda x: f"{x * 1000:.3f} ms ({x / rtt:.1f}× the round trip)"
    text = "\n".join(run.header(
        "Lookup latency on loopback (real daemons)",
        f"{args.nodes} daemons on 127.0.0.2–127.0.0.{args.nodes + 1}, joined through the first; "
        f"{args.torrents} torrents seeded across all but the first.",
    ) + [
        "## Round trips timed by one client (this script: one UDP socket, one clock)",
        "",
        "Against the first daemon: 500 pings, then one lookup of each torrent done as a newcomer with no token does it",
        "(ping for a token, get_peers, and if a holder answers `found`, get_peers to it), from the ping's send to the member list.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| discovery ping/pong round trip (the limit) | median {rtt * 1000:.3f} ms, p99 {pct(rtts, 0.99) * 1000:.3f} ms |",
        f"| lookups with a member list / tried | {found} / {args.torrents}"
        + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(outcomes.items()) if k not in ('direct', 'forwarded'))})" if found < args.torrents else "") + " |",
        f"| answered by the first hop / through a forwarded path | {outcomes.get('direct', 0)} / {outcomes.get('forwarded', 0)} |",
        f"| lookup median | **{shown(statistics.median(lookups))}** |" if lookups else "| lookup median | none found |",
        f"| lookup p99 | {shown(pct(lookups, 0.99))} |" if lookups else "| lookup p99 | none found |",
        "",
        "## The newcomer daemon's own lookups (timed inside p2pd; not comparable with the round trips above)",
        "",
        "One more daemon, knowing only the first, adds every descriptor; from its `status --json`.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| lookups completed / found | {lk['completed']} / {lk['found']} |",
        f"| lookup latency median / p99 | {lk['latency_p50_ms']:.3f} ms / {lk['latency_p99_ms']:.3f} ms |",
        f"| RPC timeouts / retries at the newcomer | {st['rpc']['timeouts']} / {st['rpc']['retries']} |",
        f"| datagrams rate-limited at the other daemons | {limited} |",
        f"| announces of new swarms refused by the other daemons (per-host budget) | {new_swarms_limited} |",
        "",
    ])
    write_result(args.out, text)
    return 0 if found == args.torrents and lk["found"] >= args.torrents else 1


if __name__ == "__main__":
    sys.exit(main())
