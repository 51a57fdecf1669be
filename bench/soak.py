#!/usr/bin/env python3
"""Soak: daemons on loopback for a long time, with churn and garbage traffic.

Starts --nodes daemons joined through the first, in a directory on a disk (not tmpfs: the
kernel counts no written bytes there, and fsyncs cost nothing). A long-lived torrent is seeded
by the first node and fetched by the others; every --churn-every seconds a third of the nodes
(--nodes / 3, rounded, at least one; never the first, which seeds and is everyone's bootstrap
node) are stopped together, alternately by SIGKILL and SIGTERM, and then started again; every
20 s one node adds a fresh small torrent (1-4 MiB) that one other node fetches, and once six
exist every node removes the oldest (with --delete-data); all the while a thread sends garbage
datagrams and half-open TCP connections to every node.

Every 10 s it samples, per node: RSS, open file descriptors, routing table size, the largest
peer table, the size of its state directory, and the bytes the daemon has written to disk:
`write_bytes` of /proc/PID/io, summed over every process the node has had (read from each
stopped process before it is reaped). That counter covers everything the process writes —
content it fetched, state files, its log — not the state directory alone. At each sample it
also re-hashes the long-lived torrent's copy on every node that has ever reported it complete:
a copy that is missing, unreadable or has the wrong SHA-256 is a failed check. A daemon that
exits without being told to is counted and started again.

The figures that must stay flat are compared between the first and the last quarter of the
run (after a warm-up); the result goes to --out. Exit 1 if a content check failed or a daemon
exited on its own.

Usage: python3 bench/soak.py [--minutes 60] [--nodes 6] [--churn-every 60]
       [--out bench/results/soak.md]       (binaries: $P2PD_BIN_DIR, else target/release)
"""

import argparse
import errno
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
import threading
import time

from benchlib import BIN, ROOT, Run, build, ctl, disk_workdir, free_port, write_result  # noqa: E402 (beside this script)


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
        # /proc/PID/io write_bytes of the node's earlier processes, read before each was reaped.
        self.written_before = 0
        self.unexpected_exits = []
        # Set once the node has reported the long-lived torrent complete: from then on its copy
        # must exist and be intact in every sample.
        self.completed_main = False
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

    def restart(self, kill):
        """Stops the daemon by SIGKILL or SIGTERM (counted); `start` brings it back."""
        self.terminate(kill)
        self.kills += kill
        self.restarts += 1

    def terminate(self, kill=False):
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        if not self.reap(timeout=60):
            self.proc.kill()
            self.reap(timeout=60)
            raise SystemExit(f"p2pd did not exit within 60 s of SIGTERM; see {self.cfg}/log")

    def reap(self, timeout):
        """Waits for the process to exit, adds its lifetime's write_bytes to written_before
        (read while it is a zombie, so nothing it wrote is missed), then reaps it. False if it is
        still running after `timeout` seconds."""
        deadline = time.time() + timeout
        while os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is None:
            if time.time() > deadline:
                return False
            time.sleep(0.01)
        self.written_before += write_bytes(self.proc.pid)
        self.proc.wait()
        return True

    def restart_if_exited(self, now):
        """Counts and restarts a daemon that exited without being told to. (Not Popen.poll,
        which would reap the process before its write_bytes is read.)"""
        if os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is None:
            return False
        self.reap(timeout=1)
        self.unexpected_exits.append(f"{os.path.basename(self.cfg)} exited with {self.proc.returncode} at {now:.0f} s")
        self.start()
        return True

    def written(self):
        return self.written_before + write_bytes(self.proc.pid)

    def status(self):
        r = ctl(self.cfg, "status", "--json", check=False)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def sample(self):
        s = self.status()
        if s is None:
            return None
        pid = self.proc.pid
        try:
            with open(f"/proc/{pid}/status") as f:
                rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
            fds = len(os.listdir(f"/proc/{pid}/fd"))
        except (OSError, StopIteration):  # it exited since it answered: restart_if_exited sees to it
            return None
        state_bytes = dir_size(os.path.join(self.cfg, "state"))
        largest = 0
        for t in s["torrents"]:
            r = ctl(self.cfg, "peers", t["info_hash"], "--json", check=False)
            if r.returncode == 0:
                largest = max(largest, len(json.loads(r.stdout)["peers"]))
        if any(t["name"] == "main.bin" and t["state"] == "seeding" for t in s["torrents"]):
            self.completed_main = True
        return {"rss_kib": rss, "fds": fds, "routing": s["node"].get("routing_table_size", 0), "peer_table": largest,
                "state_bytes": state_bytes, "written": self.written(), "torrents": len(s["torrents"]),
                "warnings": len(s["node"].get("state_warnings", []))}


def dir_size(path):
    """Bytes in the files under `path` (a file renamed or removed while walking counts 0)."""
    total = 0
    for d, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(d, name))
            except FileNotFoundError:
                pass
    return total


def write_bytes(pid):
    """Bytes this process caused to be written to storage (/proc/PID/io `write_bytes`)."""
    with open(f"/proc/{pid}/io") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("write_bytes:"))


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
    """None if the node's completed copy of `name` is intact, else what is wrong with it."""
    path = os.path.join(node.cfg, "data", name)
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError as e:
        return f"{path}: {'missing' if e.errno == errno.ENOENT else 'unreadable'} ({e.strerror})"
    return None if h.hexdigest() == sha else f"{path}: SHA-256 {h.hexdigest()[:16]}…, expected {sha[:16]}…"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--nodes", type=int, default=6)
    ap.add_argument("--churn-every", type=float, default=60)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "soak.md"))
    args = ap.parse_args()
    run = Run()
    build()
    work, fs = disk_workdir("p2pd-soak-")
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

        samples, small = [], []
        checks = {"done": 0, "failed": []}
        churn = min(len(nodes) - 1, max(1, round(len(nodes) / 3)))
        start = time.time()
        end = start + args.minutes * 60
        next_churn, next_small, next_sample = start + args.churn_every, start + 20, start
        rng = random.Random(1)
        k = 0
        while time.time() < end:
            now = time.time()
            for n in nodes:
                n.restart_if_exited(now - start)
            if now >= next_sample:
                next_sample += 10
                row = {"t": now - start}
                for i, n in enumerate(nodes):
                    s = n.sample()
                    if s:
                        row[i] = s
                    if n.completed_main:
                        checks["done"] += 1
                        problem = verify(n, "main.bin", sha)
                        if problem:
                            checks["failed"].append(f"at {now - start:.0f} s: {problem}")
                samples.append(row)
            if now >= next_churn:
                next_churn += args.churn_every
                # A third of the nodes down at once, then all started again.
                down = rng.sample(nodes[1:], churn)
                for n in down:
                    k += 1
                    n.restart(kill=k % 2 == 0)
                for n in down:
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
        for n in nodes:  # SIGTERM, so that every process's write_bytes is counted
            n.terminate()
        text = report(run, args, fs, churn, samples, nodes, counter, checks)
        write_result(args.out, text)
        return 1 if checks["failed"] or any(n.unexpected_exits for n in nodes) else 0
    finally:
        stop.set()
        for n in nodes:
            if n.proc and n.proc.poll() is None:
                n.proc.kill()
                n.proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def write_rates(samples, count):
    """Per sample after the first: {node: KiB written per minute since the node's previous
    sample}, from the cumulative write_bytes."""
    rows, last = [], {}
    for row in samples:
        rates = {}
        for i in range(count):
            if i in row:
                if i in last:
                    t, w = last[i]
                    if row["t"] > t:
                        rates[i] = (row[i]["written"] - w) / 1024 / ((row["t"] - t) / 60)
                last[i] = (row["t"], row[i]["written"])
        rows.append(rates)
    return rows


def report(run, args, fs, churn, samples, nodes, counter, checks):
    rates = write_rates(samples, len(nodes))
    skip = max(1, len(samples) // 10)  # warm-up
    usable, usable_rates = samples[skip:], rates[skip:]
    q = max(1, len(usable) // 4)

    def metric(rows, key):
        vals = [row[i][key] if key else row[i] for row in rows for i in range(len(nodes)) if i in row]
        return (statistics.median(vals), max(vals)) if vals else (0, 0)

    failed = checks["failed"]
    exits = [e for n in nodes for e in n.unexpected_exits]
    completed = sum(n.completed_main for n in nodes)
    total_written = sum(n.written_before for n in nodes)  # every process has been stopped and reaped
    lines = run.header(
        "Soak: daemons on loopback with churn and garbage traffic",
        f"{args.nodes} daemons; state and data on {fs}; a sample every 10 s, {len(samples)} in all; "
        f"the first {skip} are warm-up, then the first and the last {q} are compared.",
    ) + [
        f"- churn: every {args.churn_every:g} s, {churn} of the {args.nodes} nodes stopped together and started again; "
        f"restarts: {sum(n.restarts for n in nodes)}, of which {sum(n.kills for n in nodes)} after SIGKILL and the rest after SIGTERM",
        f"- daemons that exited on their own: {len(exits)}" + (f" ({'; '.join(exits[:5])})" if exits else ""),
        f"- garbage: {counter['datagrams']} datagrams and {counter['connections']} junk TCP connections sent",
        f"- content checks: {checks['done']}, failed: {len(failed)} (each sample re-hashes the long-lived torrent's copy on every "
        f"node that has reported it complete; {completed} of {args.nodes} nodes had, by the end)",
    ] + [f"  - {f}" for f in failed[:10]] + [
        f"- written to disk by all daemons: {total_written / 2**20:.1f} MiB (/proc/PID/io write_bytes over every process: "
        f"content fetched, state files and log)",
        "",
        "| per node | first quarter: median / max | last quarter: median / max |",
        "|---|---|---|",
    ]
    for key, unit in [("rss_kib", "KiB"), ("fds", ""), ("routing", "entries"), ("peer_table", "entries"),
                      ("state_bytes", "bytes of state directory"), ("warnings", "")]:
        a, b = metric(usable[:q], key), metric(usable[-q:], key)
        name = f"{key} ({unit})" if unit else key
        lines.append(f"| {name} | {a[0]:g} / {a[1]:g} | {b[0]:g} / {b[1]:g} |")
    a, b = metric(usable_rates[:q], None), metric(usable_rates[-q:], None)
    lines.append(f"| written (KiB/min, /proc/PID/io write_bytes) | {a[0]:.0f} / {a[1]:.0f} | {b[0]:.0f} / {b[1]:.0f} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
