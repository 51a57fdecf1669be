#!/usr/bin/env python3
"""Lookup latency between real daemons on loopback.

Starts --nodes daemons (each joining the network through the first), seeds --torrents small
torrents spread over them, then has one more daemon add every descriptor (its only bootstrap
node is the first daemon) and reads its lookup statistics from `p2pctl status --json`
(latency of each get_peers lookup, from start to the peer list). The limit, measured in the same
run, is the round-trip time of one discovery ping/pong with a daemon on loopback: a lookup is at
least a ping (for a token) and a request/answer.

Usage: python3 bench/discovery_loopback.py [--nodes 8] [--torrents 200] [--out bench/results/discovery_loopback.md]
"""

import argparse
import json
import os
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
    cfg = os.path.join(work, f"n{i}")
    os.makedirs(cfg)
    port = free_port()
    boot = f"bootstrap: [\"{bootstrap}\"]\n" if bootstrap else ""
    with open(os.path.join(cfg, "p2pd.yaml"), "w") as f:
        f.write(f"listen: 127.0.0.1:{port}\nstate_dir: state\ndata_dir: data\ncontrol_socket: run/c.sock\nlog_level: warn\n{boot}")
    proc = subprocess.Popen([os.path.join(BIN, "p2pd"), "--config-dir", cfg], stderr=open(os.path.join(cfg, "log"), "w"))
    for _ in range(500):
        if ctl(cfg, "status", check=False).returncode == 0:
            break
        time.sleep(0.01)
    return cfg, port, proc


def ping_rtt(port, count):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.0)
    sender = os.urandom(32)
    samples = []
    for txid in range(count):
        pkt = b"P2" + bytes([1, 1]) + struct.pack(">I", txid + 1) + sender
        pad = 192 - len(pkt) - 2
        pkt += struct.pack(">H", pad) + bytes(pad)
        t = time.perf_counter()
        s.sendto(pkt, ("127.0.0.1", port))
        s.recvfrom(2048)
        samples.append(time.perf_counter() - t)
    samples.sort()
    return statistics.median(samples)


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
            boot = f"127.0.0.1:{nodes[0][1]}" if nodes else None
            nodes.append(start(work, i, boot))
            procs.append(nodes[-1][2])
        time.sleep(1.0)
        descs = []
        for t in range(args.torrents):
            cfg = nodes[1 + t % (args.nodes - 1)][0]
            data = os.path.join(cfg, "data")
            os.makedirs(data, exist_ok=True)
            path = os.path.join(data, f"t{t}.bin")
            with open(path, "wb") as f:
                f.write(os.urandom(16384 + t))
            desc = os.path.join(work, f"t{t}.desc")
            ctl(cfg, "create", path, "-o", desc, "--bootstrap", f"127.0.0.1:{nodes[0][1]}")
            ctl(cfg, "add", desc)
            descs.append(desc)
        time.sleep(2.0)
        rtt = ping_rtt(nodes[0][1], 500)
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
        limited = sum(json.loads(ctl(n[0], "status", "--json").stdout)["node"]["rpc"]["rate_limited"] for n in nodes)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)
    lk = st["lookups"]
    text = "\n".join(run.header("Lookup latency on loopback (real daemons)") + [
        f"{args.nodes} daemons on 127.0.0.1 joined through the first; {args.torrents} torrents seeded across them; one more daemon",
        "(knowing only the first daemon) adds every descriptor. Latency of each get_peers lookup as that daemon measured it.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| discovery ping/pong round trip (the limit, same run) | {rtt * 1000:.3f} ms |",
        f"| lookups completed / found | {lk['completed']} / {lk['found']} |",
        f"| lookup latency median | {lk['latency_p50_ms']:.3f} ms (**{lk['latency_p50_ms'] / (rtt * 1000):.1f}× the round trip**) |",
        f"| lookup latency p99 | {lk['latency_p99_ms']:.3f} ms ({lk['latency_p99_ms'] / (rtt * 1000):.1f}× the round trip) |",
        f"| RPC timeouts / retries at the newcomer | {st['rpc']['timeouts']} / {st['rpc']['retries']} |",
        f"| datagrams rate-limited at the other daemons | {limited} |",
        "",
    ])
    write_result(args.out, text)
    return 0 if lk["found"] == args.torrents else 1


if __name__ == "__main__":
    sys.exit(main())
