#!/usr/bin/env python3
"""The cost of one `/metrics` scrape with many torrents.

One daemon (release build) manages --torrents seeding torrents (small files, dropped in
`torrents/` and loaded by one reload); then --scrapes scrapes of `GET /metrics` and as many
`status` requests on the control socket (the JSON status document, which reads the same status
cells), interleaved, one connection each. Reported: median and p90 wall time per scrape, the
daemon's CPU per scrape (its utime + stime over the scrapes, less what it spent idle over as
long), the response size, and the scrape's time as a ratio to the status request measured in
the same run (the machine is shared and noisy; the ratio is the figure).

Usage: python3 bench/metrics_scrape.py [--torrents 1000] [--scrapes 50] [--out bench/results/metrics_scrape.md]
"""

import argparse
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

from benchlib import BIN, ROOT, Run, build, ctl, free_port, write_result  # noqa: E402 (beside this script)

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_secs(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def status_request(sock_path):
    """One `status` request on the control socket, framed as docs/CONTROL.md says."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    body = json.dumps({"version": 1, "request": {"type": "status", "id": None}}).encode()
    s.sendall(struct.pack(">I", len(body)) + body)
    head = b""
    while len(head) < 4:
        head += s.recv(4 - len(head))
    n = struct.unpack(">I", head)[0]
    data = bytearray()
    while len(data) < n:
        chunk = s.recv(min(1 << 20, n - len(data)))
        if not chunk:
            break
        data += chunk
    s.close()
    return len(data)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--torrents", type=int, default=1000)
    ap.add_argument("--scrapes", type=int, default=50)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "metrics_scrape.md"))
    args = ap.parse_args()
    run = Run()
    build()
    p2pctl = os.path.join(BIN, "p2pctl")
    with tempfile.TemporaryDirectory(prefix="p2pd-scrape-") as work:
        cfg = os.path.join(work, "cfg")
        data = os.path.join(work, "data")
        os.makedirs(os.path.join(cfg, "torrents"))
        os.makedirs(data)
        http = f"127.0.0.1:{free_port()}"
        sock = os.path.join(work, "c.sock")
        with open(os.path.join(cfg, "p2pd.yaml"), "w") as f:
            f.write(f"listen: 127.0.0.1:{free_port()}\nstate_dir: {work}/state\ndata_dir: {data}\n"
                    f"control_socket: {sock}\nlog_level: warn\nmetrics_listen: {http}\n")
        # Content and descriptors, made by p2pctl create; torrent files as an operator writes them.
        for i in range(args.torrents):
            path = os.path.join(data, f"file-{i:05}.bin")
            with open(path, "wb") as f:
                f.write(os.urandom(4096))
            desc = subprocess.run([p2pctl, "create", path, "-o", "-"], capture_output=True, text=True, check=True).stdout
            body = "".join(f"  {line}\n" for line in desc.splitlines() if not line.startswith("#"))
            with open(os.path.join(cfg, "torrents", f"t{i:05}.yaml"), "w") as f:
                f.write(f"descriptor:\n{body}")
        daemon = subprocess.Popen([os.path.join(BIN, "p2pd"), "--config-dir", cfg], stderr=open(os.path.join(work, "log"), "w"))
        try:
            deadline = time.time() + 300
            while True:
                r = ctl(cfg, "status", "--json", check=False)
                if r.returncode == 0:
                    torrents = json.loads(r.stdout)["torrents"]
                    if len(torrents) == args.torrents and all(t["state"] == "seeding" for t in torrents):
                        break
                if time.time() > deadline:
                    sys.exit(f"the torrents did not all seed within 300 s; see {work}/log")
                time.sleep(0.5)
            time.sleep(2)
            url = f"http://{http}/metrics"
            # Warm-up.
            size = len(urllib.request.urlopen(url).read())
            status_bytes = status_request(sock)
            scrape_times, status_times = [], []
            busy = 0.0
            for _ in range(args.scrapes):
                c0, t0 = cpu_secs(daemon.pid), time.perf_counter()
                body = urllib.request.urlopen(url).read()
                t1 = time.perf_counter()
                busy += cpu_secs(daemon.pid) - c0
                scrape_times.append(t1 - t0)
                t0 = time.perf_counter()
                status_request(sock)
                status_times.append(time.perf_counter() - t0)
                series = sum(1 for line in body.decode().splitlines() if line and not line.startswith("#"))
            # The daemon's own idle CPU over as long as the scrapes took.
            c0 = cpu_secs(daemon.pid)
            time.sleep(sum(scrape_times))
            idle = cpu_secs(daemon.pid) - c0
        finally:
            daemon.terminate()
            daemon.wait(timeout=120)

    med = statistics.median(scrape_times)
    p90 = sorted(scrape_times)[int(0.9 * (len(scrape_times) - 1))]
    smed = statistics.median(status_times)
    cpu_per = max(busy - idle, 0.0) / args.scrapes
    text = "\n".join(run.header(
        f"One /metrics scrape with {args.torrents} torrents",
        f"Setup: one p2pd managing {args.torrents} seeding torrents (4 KiB files); {args.scrapes} scrapes "
        "(`GET /metrics`, a new connection each, from Python's urllib) interleaved with as many `status` "
        "requests on the control socket.",
    ) + [
        "| figure | value |",
        "|---|---|",
        f"| scrape wall time, median (p90) | {med * 1000:.1f} ms ({p90 * 1000:.1f} ms) |",
        f"| daemon CPU per scrape (its CPU over the scrapes less its idle CPU over as long) | {cpu_per * 1000:.1f} ms |",
        f"| response | {size / 1024:.0f} KiB, {series} series |",
        f"| `status` on the control socket (all {args.torrents} torrents, {status_bytes / 1024:.0f} KiB of JSON), median | {smed * 1000:.1f} ms |",
        f"| **scrape time / status time** | **{med / smed:.2f}** |",
        "",
        f"Scrapes (ms): {[round(x * 1000, 1) for x in scrape_times]}",
        "",
    ])
    write_result(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
