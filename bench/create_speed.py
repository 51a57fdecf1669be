#!/usr/bin/env python3
"""Descriptor creation speed: `p2pctl create` against `sha256sum` on the same file.

All three read the whole file and SHA-256 it once; the figures are p2pctl's throughput as a
ratio to `sha256sum` and to `openssl dgst -sha256` (the hardware limit), measured in the same
run on the same page-cached file. Median of --runs runs each, interleaved.

Usage: python3 bench/create_speed.py [--size-mib 1024] [--runs 3] [--out bench/results/create_speed.md]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import BIN, ROOT, Run, build, fs_type, write_result  # noqa: E402 (beside this script)


def sha_extensions():
    with open("/proc/cpuinfo") as f:
        return any(l.startswith("flags") and "sha_ni" in l.split() for l in f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "create_speed.md"))
    args = ap.parse_args()
    run = Run()
    build("-p", "p2pctl")
    p2pctl = os.path.join(BIN, "p2pctl")
    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as work:
        where = fs_type(work)
        path = os.path.join(work, "content.bin")
        with open(path, "wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(1 << 20))
        size = args.size_mib << 20
        sha, ours, ossl = [], [], []
        for _ in range(args.runs):
            t = time.perf_counter()
            subprocess.run(["openssl", "dgst", "-sha256", path], check=True, capture_output=True)
            ossl.append(time.perf_counter() - t)
            t = time.perf_counter()
            subprocess.run(["sha256sum", path], check=True, capture_output=True)
            sha.append(time.perf_counter() - t)
            t = time.perf_counter()
            subprocess.run([p2pctl, "create", path, "-o", os.path.join(work, "c.desc")], check=True, capture_output=True)
            ours.append(time.perf_counter() - t)
    sha_rate = size / statistics.median(sha) / 2**20
    our_rate = size / statistics.median(ours) / 2**20
    ossl_rate = size / statistics.median(ossl) / 2**20
    text = "\n".join(run.header(
        "Descriptor creation speed",
        f"Data: a {args.size_mib} MiB file on {where}, read from the page cache by every tool; median of {args.runs} runs each, interleaved.",
        f"CPU SHA extensions (`sha_ni` in /proc/cpuinfo): {'yes' if sha_extensions() else 'no'}.",
    ) + [
        "| tool | median time | throughput |",
        "|---|---|---|",
        f"| `sha256sum` | {statistics.median(sha):.2f} s | {sha_rate:.0f} MiB/s |",
        f"| `openssl dgst -sha256` | {statistics.median(ossl):.2f} s | {ossl_rate:.0f} MiB/s |",
        f"| `p2pctl create` (default piece size) | {statistics.median(ours):.2f} s | {our_rate:.0f} MiB/s |",
        "",
        f"**p2pctl create / sha256sum = {our_rate / sha_rate:.2f}; p2pctl create / openssl = {our_rate / ossl_rate:.2f}**",
        "",
        f"Runs (s): sha256sum {[round(x, 2) for x in sha]}, openssl {[round(x, 2) for x in ossl]}, p2pctl {[round(x, 2) for x in ours]}.",
        "",
    ])
    write_result(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
