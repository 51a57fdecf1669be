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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "create_speed.md"))
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "p2pctl"], cwd=ROOT, check=True)
    p2pctl = os.path.join(ROOT, "target", "release", "p2pctl")
    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as work:
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
    text = "\n".join([
        "# Descriptor creation speed",
        "",
        f"Command: `python3 bench/create_speed.py --size-mib {args.size_mib} --runs {args.runs}`  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; file on tmpfs (page cache), release build.",
        "",
        "| tool | median time | throughput |",
        "|---|---|---|",
        f"| `sha256sum` (the limit) | {statistics.median(sha):.2f} s | {sha_rate:.0f} MiB/s |",
        f"| `openssl dgst -sha256` (SHA-NI; the hardware limit) | {statistics.median(ossl):.2f} s | {ossl_rate:.0f} MiB/s |",
        f"| `p2pctl create` (default piece size) | {statistics.median(ours):.2f} s | {our_rate:.0f} MiB/s |",
        "",
        f"**p2pctl create / sha256sum = {our_rate / sha_rate:.2f}; p2pctl create / openssl = {our_rate / ossl_rate:.2f}**",
        "",
        f"Runs (s): sha256sum {[round(x, 2) for x in sha]}, openssl {[round(x, 2) for x in ossl]}, p2pctl {[round(x, 2) for x in ours]}.",
        "Debian's coreutils sha256sum does not use the CPU's SHA extensions; p2pctl (sha2 crate) and openssl do.",
        "",
    ])
    print(text)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
