#!/usr/bin/env python3
"""Scale of one node: 1,000 torrents added through p2pctl.

Measures, against the real release binaries:
  - RSS per idle torrent (daemon RSS with N torrents minus RSS with none, divided by N);
  - `p2pctl status --json` latency with N torrents, as a ratio to the same command against the
    same daemon with no torrents (measured first, in the same run);
  - that a reload with one changed torrent file touches only that torrent (every other torrent's
    running_secs keeps growing; the changed one reports the change).

The daemon's state and data directories are on a disk, not tmpfs, since every `add` fsyncs a
torrent file: under $TMPDIR (or the system temporary directory) unless that is in memory, else
under target/bench-tmp; --dir chooses another place. The result names the filesystem.

Usage: python3 bench/scale.py [--torrents 1000] [--runs 100] [--dir DIR] [--out bench/results/scale.md]
Builds with `cargo build --release` first.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import BIN, ROOT, Run, build, ctl, disk_workdir, fs_type, write_result  # noqa: E402 (beside this script)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def timed_status(cfg, runs):
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        ctl(cfg, "status", "--json")
        samples.append(time.perf_counter() - t)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--torrents", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--dir", help="where the daemon's state and data go (default: a directory on a disk, see above)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "scale.md"))
    args = ap.parse_args()
    run = Run()
    build()

    if args.dir:
        work = tempfile.mkdtemp(prefix="p2pd-scale-", dir=args.dir)
        fs = fs_type(work)
    else:
        work, fs = disk_workdir("p2pd-scale-")
    os.chmod(work, 0o700)
    cfg = os.path.join(work, "cfg")
    os.makedirs(cfg)
    with open(os.path.join(cfg, "p2pd.yaml"), "w") as f:
        f.write(f"listen: 127.0.0.1:0\nstate_dir: {work}/state\ndata_dir: {work}/data\n"
                f"control_socket: {work}/run/control.sock\nlog_level: warn\n")
    log = open(os.path.join(work, "p2pd.log"), "w")
    daemon = subprocess.Popen([os.path.join(BIN, "p2pd"), "--config-dir", cfg], stderr=log)
    try:
        for _ in range(500):
            if ctl(cfg, "status", check=False).returncode == 0:
                break
            time.sleep(0.01)
        base_median, base_p99 = timed_status(cfg, args.runs)
        rss0 = rss_kib(daemon.pid)

        src = os.path.join(work, "src")
        descs = os.path.join(work, "descs")
        os.makedirs(src)
        os.makedirs(descs)
        t = time.perf_counter()
        for i in range(args.torrents):
            p = os.path.join(src, f"t{i:05}.bin")
            with open(p, "wb") as f:
                f.write(os.urandom(16 * 1024 + i))
            ctl(cfg, "create", p, "-o", os.path.join(descs, f"t{i:05}.desc"))
        create_s = time.perf_counter() - t
        hashes = []
        t = time.perf_counter()
        for i in range(args.torrents):
            hashes.append(ctl(cfg, "add", os.path.join(descs, f"t{i:05}.desc")).stdout.strip())
        add_s = time.perf_counter() - t
        # Wait until every torrent is past checking.
        while True:
            st = json.loads(ctl(cfg, "status", "--json").stdout)
            if all(x["state"] == "leeching" for x in st["torrents"]) and len(st["torrents"]) == args.torrents:
                break
            time.sleep(0.2)
        time.sleep(1.0)
        rss1 = rss_kib(daemon.pid)
        median, p99 = timed_status(cfg, args.runs)
        size = len(ctl(cfg, "status", "--json").stdout)

        # Reload with one changed file: only that torrent is touched.
        time.sleep(1.1)
        before = {x["info_hash"]: x["running_secs"] for x in json.loads(ctl(cfg, "status", "--json").stdout)["torrents"]}
        victim = hashes[len(hashes) // 2]
        path = os.path.join(cfg, "torrents", f"{victim}.yaml")
        text = open(path).read().replace("data_dir:", "upload_rate: 1MiB\ndata_dir:", 1)
        open(path, "w").write(text)
        t = time.perf_counter()
        report = ctl(cfg, "reload").stdout
        reload_s = time.perf_counter() - t
        after = {x["info_hash"]: x["running_secs"] for x in json.loads(ctl(cfg, "status", "--json").stdout)["torrents"]}
        applied = [l.strip() for l in report.splitlines() if l.startswith("  ")]
        restarted = [h for h in before if after[h] < before[h]]
        only_victim = applied == [f"t{hashes.index(victim):05}.bin: upload_rate unlimited → 1 MiB/s"] and not restarted
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)

    per_torrent = (rss1 - rss0) / args.torrents
    lines = run.header(
        f"Scale of one node: {args.torrents} torrents",
        f"State and data: {os.path.dirname(work)} on {fs}.",
    ) + [
        "| figure | value |",
        "|---|---|",
        f"| daemon RSS, no torrents | {rss0 / 1024:.1f} MiB |",
        f"| daemon RSS, {args.torrents} idle torrents | {rss1 / 1024:.1f} MiB |",
        f"| **RSS per idle torrent** | **{per_torrent:.1f} KiB** |",
        f"| `status --json` latency, no torrents (baseline: process start + round trip) | median {base_median * 1000:.1f} ms, p99 {base_p99 * 1000:.1f} ms |",
        f"| `status --json` latency, {args.torrents} torrents | median {median * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms ({size / 1024:.0f} KiB of JSON) |",
        f"| **status latency ratio to the baseline** | **median {median / base_median:.2f}×, p99 {p99 / base_p99:.2f}×** |",
        f"| `p2pctl add`, {args.torrents} in a row | {add_s:.1f} s ({add_s / args.torrents * 1000:.1f} ms each, each fsyncs its torrent file) |",
        f"| `p2pctl create`, {args.torrents} small files | {create_s:.1f} s |",
        f"| reload with one changed file | {reload_s * 1000:.0f} ms; touched only that torrent: **{'yes' if only_victim else 'NO'}** |",
    ]
    if not only_victim:
        lines.append(f"\nreload report: {applied}; restarted: {len(restarted)}")
    write_result(args.out, "\n".join(lines) + "\n")
    return 0 if only_victim else 1


if __name__ == "__main__":
    sys.exit(main())
