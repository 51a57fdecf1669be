#!/usr/bin/env python3
"""Soak: daemons on loopback for a long time, with churn and garbage traffic.

Starts --nodes daemons joined through the first. A long-lived torrent is seeded by the first
node and fetched by the others; every --churn-every seconds a third of the other nodes are
stopped (alternately SIGKILL and SIGTERM) and started again; every 20 s one node adds a
fresh small torrent and another removes an older one (with --delete-data); all the while a
thread sends garbage datagrams and half-open TCP connections to every node.

Every 10 s it samples, per node: RSS, open file descriptors, routing table size, the largest
peer table, bytes written to its state directory (from /proc/PID/io of the process, which
includes content; the state directory's own growth is sampled too) — and checks that every
completed content file still has the SHA-256 its descriptor says.

The figures that must stay flat are compared between the first and the last quarter of the
run (after a warm-up); the result, with the command, goes to --out.

Usage: python3 bench/soak.py [--minutes 60] [--nodes 6] [--churn-every 60]
       [--out bench/results/soak.md]       (binaries: $P2PD_BIN_DIR, else target/release)
"""

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import BIN, ROOT, Run, build, ctl, free_port, write_result  # noqa: E402 (beside this script)


class Node:
    def __init__(self, work, i, bootstrap):
        self.cfg = os.path.join(work, f"n{i}")
        os.makedirs(self.cfg)
        self.port = free_port()
        boot = f'bootstrap: ["{bootstrap}"]\n' if bootstrap else ""
        with open(os.path.join(self.cfg, "p2pd.yaml"), "w") as f:
            f.write(f"listen: 127.0.0.1:{self.port}\nstate_dir: state\ndata_dir: data\ncontrol_socket: run/c.sock\nlog_level: warn\n{boot}")
        self.proc = None
        self.kills = 0
        self.restarts = 0
        self.start()

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        self.proc = subprocess.Popen([os.path.join(BIN, "p2pd"), "--config-dir", self.cfg], stderr=open(os.path.join(self.cfg, "log"), "a"))
        for _ in range(1000):
            if ctl(self.cfg, "status", check=False).returncode == 0:
                return
            if self.proc.poll() is not None:
                raise SystemExit(f"p2pd exited at start-up; see {self.cfg}/log")
            time.sleep(0.01)
        raise SystemExit(f"p2pd did not answer; see {self.cfg}/log")

    def stop(self, kill=False):
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        self.proc.wait(timeout=60)
        self.kills += kill
        self.restarts += 1

    def status(self):
        r = ctl(self.cfg, "status", "--json", check=False)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def sample(self):
        s = self.status()
        if s is None:
            return None
        pid = self.proc.pid
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        state_bytes = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(os.path.join(self.cfg, "state")) for f in fs)
        largest = 0
        for t in s["torrents"]:
            r = ctl(self.cfg, "peers", t["info_hash"], "--json", check=False)
            if r.returncode == 0:
                largest = max(largest, len(json.loads(r.stdout)["peers"]))
        return {"rss_kib": rss, "fds": fds, "routing": s["node"].get("routing_table_size", 0), "peer_table": largest,
                "state_bytes": state_bytes, "torrents": len(s["torrents"]), "warnings": len(s["node"].get("state_warnings", []))}


def make_file(path, size):
    with open(path, "wb") as f:
        f.write(os.urandom(size))


def garbage(nodes, stop, counter):
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    while not stop.is_set():
        for n in nodes:
            try:
                udp.sendto(os.urandom(random.randint(1, 1400)), ("127.0.0.1", n.port))
                counter["datagrams"] += 1
            except OSError:
                pass
        if random.random() < 0.02:
            n = random.choice(nodes)
            try:
                s = socket.create_connection(("127.0.0.1", n.port), timeout=1)
                s.send(os.urandom(random.randint(0, 60)))
                s.close()
                counter["connections"] += 1
            except OSError:
                pass
        time.sleep(0.002)


def verify(node, name, sha):
    path = os.path.join(node.cfg, "data", name)
    if not os.path.exists(path):
        return True
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest() == sha


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--nodes", type=int, default=6)
    ap.add_argument("--churn-every", type=float, default=60)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "soak.md"))
    args = ap.parse_args()
    run = Run()
    build()
    work = tempfile.mkdtemp(prefix="p2pd-soak-")
    nodes = []
    stop = threading.Event()
    counter = {"datagrams": 0, "connections": 0}
    try:
        nodes.append(Node(work, 0, None))
        for i in range(1, args.nodes):
            nodes.append(Node(work, i, nodes[0].addr))
        src = os.path.join(work, "main.bin")
        make_file(src, 32 << 20)
        sha = hashlib.sha256(open(src, "rb").read()).hexdigest()
        desc = os.path.join(work, "main.desc")
        ctl(nodes[0].cfg, "create", src, "-o", desc, "--bootstrap", nodes[0].addr)
        os.makedirs(os.path.join(nodes[0].cfg, "data"), exist_ok=True)
        shutil.copy(src, os.path.join(nodes[0].cfg, "data", "main.bin"))
        for n in nodes:
            ctl(n.cfg, "add", desc)
        threading.Thread(target=garbage, args=(nodes, stop, counter), daemon=True).start()

        samples, small, bad = [], [], 0
        start = time.time()
        end = start + args.minutes * 60
        next_churn, next_small, next_sample = start + args.churn_every, start + 20, start
        rng = random.Random(1)
        k = 0
        while time.time() < end:
            now = time.time()
            if now >= next_sample:
                next_sample += 10
                row = {"t": round(now - start)}
                for i, n in enumerate(nodes):
                    s = n.sample()
                    if s:
                        row[i] = s
                    if not verify(n, "main.bin", sha):
                        bad += 1
                samples.append(row)
            if now >= next_churn:
                next_churn += args.churn_every
                for n in rng.sample(nodes[1:], max(1, (len(nodes) - 1) // 3)):
                    k += 1
                    n.stop(kill=k % 2 == 0)
                    n.start()
            if now >= next_small:
                next_small += 20
                path = os.path.join(work, f"small{len(small)}.bin")
                make_file(path, rng.randint(1, 4) << 20)
                d = path + ".desc"
                owner = rng.choice(nodes)
                ctl(owner.cfg, "create", path, "-o", d, "--bootstrap", nodes[0].addr)
                os.makedirs(os.path.join(owner.cfg, "data"), exist_ok=True)
                shutil.copy(path, os.path.join(owner.cfg, "data", os.path.basename(path)))
                h = ctl(owner.cfg, "add", d, check=False).stdout.strip()
                ctl(rng.choice(nodes).cfg, "add", d, check=False)
                small.append(h)
                if len(small) > 5:
                    old = small.pop(0)
                    for n in nodes:
                        ctl(n.cfg, "remove", old, "--delete-data", check=False)
            time.sleep(0.2)
        stop.set()
        write_result(args.out, report(run, samples, nodes, counter, bad))
    finally:
        stop.set()
        for n in nodes:
            if n.proc and n.proc.poll() is None:
                n.proc.kill()
                n.proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def report(run, samples, nodes, counter, bad):
    usable = samples[max(1, len(samples) // 10):]  # after warm-up
    q = max(1, len(usable) // 4)
    first, last = usable[:q], usable[-q:]

    def metric(rows, key):
        vals = [row[i][key] for row in rows for i in range(len(nodes)) if i in row]
        return statistics.median(vals) if vals else 0, max(vals) if vals else 0

    lines = run.header("Soak: daemons on loopback with churn and garbage traffic") + [
        f"- restarts: {sum(n.restarts for n in nodes)}, of which {sum(n.kills for n in nodes)} after SIGKILL and the rest after SIGTERM",
        f"- garbage: {counter['datagrams']} datagrams and {counter['connections']} junk TCP connections sent",
        f"- content checks failed: {bad} (every sample re-hashes every completed copy)",
        "",
        "| per node | first quarter: median / max | last quarter: median / max |",
        "|---|---|---|",
    ]
    for key, unit in [("rss_kib", "KiB"), ("fds", ""), ("routing", "entries"), ("peer_table", "entries"), ("state_bytes", "bytes"), ("warnings", "")]:
        a, b = metric(first, key), metric(last, key)
        lines.append(f"| {key} ({unit}) | {a[0]:g} / {a[1]:g} | {b[0]:g} / {b[1]:g} |" if unit else f"| {key} | {a[0]:g} / {a[1]:g} | {b[0]:g} / {b[1]:g} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
