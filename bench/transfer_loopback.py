#!/usr/bin/env python3
"""Transfers between real daemons on loopback.

1. One seed to one leecher, --size-mib (default 1 GiB): throughput as a ratio to the
   single-core SHA-256 rate measured in the same run (the leecher must hash every byte, so that
   is the limit on this machine), and to a bare pipeline without p2pd run on the same data, the
   testbed's floor (`p2pd-testbed floor`, testbed/src/floor.rs), compiled like p2pd: it receives
   the content over one loopback TCP connection (sent by sendfile), SHA-256s each piece as it
   arrives, checks it against the descriptor and writes it, then fdatasyncs the file, and
   reports its receiving and sending threads' CPU; CPU seconds per GiB of each daemon against
   the floor's; peak RSS.
2. One seed and three leechers, --swarm-mib (default 256 MiB): time until the last leecher is
   complete, and the bytes the seed uploaded as a multiple of the content size.

Data lives on tmpfs (/dev/shm) so that the disk is not what is measured, and that memory is
touched once before the runs (see warm_memory).

Completion is timed by the daemon, at the event: a leecher's `completed_secs` (status --json) is
the time from its torrent's start — when it accepted the `add` — to the moment it turned
`seeding` (every piece verified); discovery and connection set-up are included. The script
learns of completion from `p2pctl wait`, whose 100 ms polling is therefore outside the figure.
The round trip of `p2pctl add` itself is given apart. With three leechers, each leecher's
completion is placed on the script's clock at (its `add` returned) + completed_secs, which is
late by at most that leecher's add round trip.

Usage: python3 bench/transfer_loopback.py [--size-mib 1024] [--swarm-mib 256] [--runs 3]
       [--warm-mib 16384] [--out bench/results/transfer_loopback.md]
Builds the workspace (`cargo build --release`: p2pd, p2pctl and p2pd-testbed); with
$P2PD_BIN_DIR, that directory must hold p2pd-testbed as well.
"""

import argparse
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import BIN, ROOT, Run, build, ctl, fs_type, free_port, write_result  # noqa: E402 (beside this script)
TICKS = os.sysconf("SC_CLK_TCK")


class Daemon:
    def __init__(self, work, name):
        self.cfg = os.path.join(work, name)
        os.makedirs(self.cfg)
        self.port = free_port()
        with open(os.path.join(self.cfg, "p2pd.yaml"), "w") as f:
            f.write(f"listen: 127.0.0.1:{self.port}\nstate_dir: state\ndata_dir: data\ncontrol_socket: run/c.sock\nlog_level: warn\n")
        self.proc = subprocess.Popen([os.path.join(BIN, "p2pd"), "--config-dir", self.cfg], stderr=open(os.path.join(self.cfg, "log"), "w"))
        for _ in range(500):
            if ctl(self.cfg, "status", check=False).returncode == 0:
                break
            time.sleep(0.01)
        self.peak_rss = 0

    def cpu(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def rss(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def torrent(self, h):
        for t in json.loads(ctl(self.cfg, "status", "--json").stdout)["torrents"]:
            if t["info_hash"] == h:
                return t
        return None

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def warm_memory(mib=None):
    """Touches `mib` MiB of free memory (default: most of it) through tmpfs and frees it. In
    this virtual machine the first touch of guest memory costs several times a later one
    (measured: 400-600 MB/s against 2.5 GB/s for writes to tmpfs), because the host backs
    pages on demand and takes back freed ones a few seconds later (free page reporting). The
    benchmark measures p2pd, not that: every timed section starts right after this, so that
    the pages it writes are backed already, for p2pd and the bare pipeline alike."""
    with open("/proc/meminfo") as f:
        free_kib = next(int(l.split()[1]) for l in f if l.startswith("MemAvailable:"))
    mib = max(0, min(free_kib // 1024 - 4096, 16384 if mib is None else mib))
    path = os.path.join("/dev/shm", "p2pd-bench-warm")
    chunk = b"\0" * (16 << 20)
    with open(path, "wb") as f:
        for _ in range(mib // 16):
            f.write(chunk)
    os.remove(path)


def sha_rate(size=256 << 20, rounds=4):
    buf = os.urandom(size)
    t = time.perf_counter()
    for _ in range(rounds):
        hashlib.sha256(buf).digest()
    return size * rounds / (time.perf_counter() - t)


def bare_pipeline(content, work):
    """The same job without p2pd, compiled (`p2pd-testbed floor`, testbed/src/floor.rs): receive
    the file over one loopback TCP connection, SHA-256 each piece (the descriptor's, default piece
    size), check it, write it to a new tmpfs file, fdatasync. Returns its JSON: `secs` from
    connecting to the synced file, as the binary measures them (p2pd's time is also given as a
    ratio to it), and its receiving and sending threads' CPU per GiB."""
    desc = os.path.join(work, "bare.desc")
    subprocess.run([os.path.join(BIN, "p2pctl"), "create", content, "-o", desc], check=True, capture_output=True)
    out = os.path.join(work, "bare.bin")
    done = subprocess.run([os.path.join(BIN, "p2pd-testbed"), "floor", desc, content, out], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"p2pd-testbed floor failed: {done.stderr.strip()}")
    os.remove(out)
    return json.loads(done.stdout)


def add_timed(daemon, desc):
    """Issues `p2pctl add`; (when it was issued, when it returned), on the script's clock."""
    issued = time.perf_counter()
    ctl(daemon.cfg, "add", desc)
    return issued, time.perf_counter()


def completed_secs(daemon, h):
    """The daemon's own time from the torrent's start to complete and verified."""
    t = daemon.torrent(h)
    if t is None or t["state"] != "seeding" or t.get("completed_secs") is None:
        sys.exit(f"{daemon.cfg}: torrent {h[:12]} is not complete with a completed_secs: {t}")
    return t["completed_secs"]


def make_content(work, mib):
    path = os.path.join(work, "content.bin")
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    return path


def seed(work, content):
    s = Daemon(work, "seed")
    desc = os.path.join(work, "content.desc")
    ctl(s.cfg, "create", content, "-o", desc, "--bootstrap", f"127.0.0.1:{s.port}")
    os.makedirs(os.path.join(s.cfg, "data"))
    shutil.copy(content, os.path.join(s.cfg, "data", "content.bin"))
    h = ctl(s.cfg, "add", desc).stdout.strip()
    while s.torrent(h)["state"] != "seeding":
        time.sleep(0.05)
    return s, desc, h


def watch_rss(daemons, stop):
    while not stop.is_set():
        for d in daemons:
            try:
                d.peak_rss = max(d.peak_rss, d.rss())
            except OSError:
                pass
        time.sleep(0.05)


def pipe_run(mib):
    work = tempfile.mkdtemp(prefix="p2pd-xfer-", dir="/dev/shm")
    try:
        content = make_content(work, mib)
        warm_memory(2 * mib)
        bare = bare_pipeline(content, work)
        s, desc, h = seed(work, content)
        l = Daemon(work, "leecher")
        daemons = [s, l]
        stop = threading.Event()
        threading.Thread(target=watch_rss, args=(daemons, stop), daemon=True).start()
        warm_memory(2 * mib)
        cpu0 = [d.cpu() for d in daemons]
        issued, returned = add_timed(l, desc)
        # One waiting client tells us it is over (it polls every 100 ms, outside the figure).
        ctl(l.cfg, "wait", h, "--timeout", "600")
        cpu = [d.cpu() - c for d, c in zip(daemons, cpu0)]
        elapsed = completed_secs(l, h)
        stop.set()
        same = subprocess.run(["cmp", content, os.path.join(l.cfg, "data", "content.bin")]).returncode == 0
        for d in daemons:
            d.stop()
        return {"elapsed": elapsed, "add": returned - issued, "bare": bare["secs"], "cpu_seed": cpu[0], "cpu_leecher": cpu[1],
                "floor_receiver": bare["receiver_cpu_secs_per_gib"], "floor_sender": bare["sender_cpu_secs_per_gib"],
                "rss_seed": s.peak_rss, "rss_leecher": l.peak_rss, "identical": same}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def swarm_run(mib, leechers):
    work = tempfile.mkdtemp(prefix="p2pd-swarm-", dir="/dev/shm")
    try:
        content = make_content(work, mib)
        s, desc, h = seed(work, content)
        ls = [Daemon(work, f"leecher{i}") for i in range(leechers)]
        warm_memory(2 * mib * leechers)
        adds = [add_timed(l, desc) for l in ls]
        for l in ls:
            ctl(l.cfg, "wait", h, "--timeout", "600")
        t0 = adds[0][0]
        last = max(returned + completed_secs(l, h) for (_, returned), l in zip(adds, ls)) - t0
        # Status counters are published once a second: read until they settle.
        uploaded = -1
        while uploaded != s.torrent(h)["uploaded"]:
            uploaded = s.torrent(h)["uploaded"]
            time.sleep(1.2)
        same = all(subprocess.run(["cmp", content, os.path.join(l.cfg, "data", "content.bin")]).returncode == 0 for l in ls)
        for d in [s] + ls:
            d.stop()
        return {"last": last, "seed_multiple": uploaded / (mib << 20), "identical": same}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--swarm-mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warm-mib", type=int, default=16384, help="memory to touch once before the runs (see warm_memory)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "transfer_loopback.md"))
    args = ap.parse_args()
    run = Run()
    build()
    gib = args.size_mib / 1024
    warm_memory(args.warm_mib)
    pipes, shas = [], []
    for _ in range(args.runs):
        shas.append(sha_rate())
        pipes.append(pipe_run(args.size_mib))
    swarms = [swarm_run(args.swarm_mib, 3) for _ in range(args.runs)]
    med = lambda xs: statistics.median(xs)
    runs = lambda rs, k: ", ".join("%.2f" % r[k] for r in rs)
    elapsed = med([p["elapsed"] for p in pipes])
    throughput = (args.size_mib << 20) / elapsed
    sha = med(shas)
    bare = med([p["bare"] for p in pipes])
    cpu_seed = med([p["cpu_seed"] for p in pipes]) / gib
    cpu_leecher = med([p["cpu_leecher"] for p in pipes]) / gib
    floor_sender = med([p["floor_sender"] for p in pipes])
    floor_receiver = med([p["floor_receiver"] for p in pipes])
    lines = run.header(
        "Transfers on loopback (real daemons)",
        f"Data: on {fs_type('/dev/shm')} (/dev/shm). Medians of {args.runs} runs.",
    ) + [
        f"## One seed → one leecher, {args.size_mib} MiB",
        "",
        "| figure | value |",
        "|---|---|",
        f"| single-core SHA-256 (the limit, same run) | {sha / 2**20:.0f} MiB/s |",
        f"| time from the leecher's start of the torrent to complete and verified (its `completed_secs`) | {elapsed:.2f} s (runs: {runs(pipes, 'elapsed')}) |",
        f"| `p2pctl add` round trip, not in the time above | {med([p['add'] for p in pipes]) * 1000:.1f} ms |",
        f"| throughput | {throughput / 2**20:.0f} MiB/s = **{throughput / sha:.2f} × SHA-256** |",
        f"| bare pipeline (`p2pd-testbed floor`: recv + SHA-256 per piece + write + fdatasync, no p2pd), same runs | {bare:.2f} s (runs: {runs(pipes, 'bare')}) |",
        f"| p2pd time / bare pipeline time | **{elapsed / bare:.2f}** |",
        f"| CPU per GiB, seed / leecher | {cpu_seed:.2f} / {cpu_leecher:.2f} core-s |",
        f"| CPU per GiB, bare pipeline sender / receiver (each its own thread) | {floor_sender:.2f} / {floor_receiver:.2f} core-s |",
        f"| CPU per GiB, leecher / bare receiver; seed / bare sender | **{cpu_leecher / floor_receiver:.2f}**; {cpu_seed / floor_sender:.2f} |",
        f"| peak RSS, seed / leecher | {med([p['rss_seed'] for p in pipes]) / 2**20:.0f} / {med([p['rss_leecher'] for p in pipes]) / 2**20:.0f} MiB |",
        f"| content identical | {all(p['identical'] for p in pipes)} |",
        "",
        f"## One seed and three leechers, {args.swarm_mib} MiB",
        "",
        "| figure | value |",
        "|---|---|",
        f"| time from the first `add` until the last leecher is complete (by `completed_secs`; late by at most one add round trip) | {med([s['last'] for s in swarms]):.2f} s (runs: {runs(swarms, 'last')}) |",
        f"| bytes the seed uploaded / content size | **{med([s['seed_multiple'] for s in swarms]):.2f}** (runs: {runs(swarms, 'seed_multiple')}) |",
        f"| content identical on every leecher | {all(s['identical'] for s in swarms)} |",
        "",
    ]
    write_result(args.out, "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
