"""Where the CPU of a testbed scenario goes: a `perf` profile of the whole machine by thread
name, p2pd's top symbols, and the machine's system calls, wake-ups and context switches per
GiB delivered.

Runs `p2pd-testbed scenario K` (root) under `perf stat -a` (system calls, wake-ups and context
switches, counted on every CPU) around `perf record -a` (cpu-clock sampled at 499 Hz on every
CPU: core-seconds = samples / 499). Both cover the whole command — the fleet's build, the seed's
check, the floor, the transfer and the teardown — and the per-GiB figures divide by the bytes
the run delivered to all leechers (its JSON's `summary.delivered_bytes`); the transfer
dominates a 256 MiB scenario, and its own machine CPU per GiB (the testbed's figure, over the
transfer alone) is quoted beside.

Thread names: p2pd's own is `p2pd`, its one network thread (builds before 2026-12-03 also had
`p2pd-worker-N`); `async-io` and `blocking-N` threads (p2pd hashes and writes pieces on its
blocking threads) exist in p2pd and in the testbed alike and are shown apart. perf's overhead is in the figures.

Usage: sudo python3 bench/profile_testbed.py --scenario 2 [--out bench/results/profile-scenario-2.md]
(scenario 6 runs both its variants; the per-GiB figures divide by what both delivered)
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

HZ = 499
GIB = float(1 << 30)
COUNTED = ["raw_syscalls:sys_enter", "sched:sched_wakeup", "context-switches"]


def by_comm(data):
    """{thread name: cpu-clock samples}."""
    out = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "comm", "-F", "sample,comm",
                          "--percent-limit", "0"], capture_output=True, text=True, check=True).stdout
    counts = {}
    for line in out.splitlines():
        m = re.match(r"\s*(\d+)\s+(.+?)\s*$", line)
        if m and not line.lstrip().startswith("#"):
            counts[m.group(2)] = counts.get(m.group(2), 0) + int(m.group(1))
    return counts


def top_symbols(data, comms, limit):
    """[(samples, dso, symbol)] of the threads named `comms`, largest first."""
    out = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "--comms", ",".join(comms),
                          "--sort", "dso,sym", "-F", "sample,dso,sym", "--percent-limit", "0"],
                         capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s*(\d+)\s+(\S+)\s+\[[.k]\]\s+(.+?)\s*$", line)
        if m:
            rows.append((int(m.group(1)), m.group(2), m.group(3)))
    rows.sort(reverse=True)
    return rows[:limit]


def counted(stat_file):
    """{event: count} from `perf stat -x,` output."""
    counts = {}
    with open(stat_file) as f:
        for line in f:
            parts = line.strip().split(",")
            if len(parts) > 2 and parts[0].isdigit():
                counts[parts[2]] = int(parts[0])
    return counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", type=int, default=2)
    parser.add_argument("--symbols", type=int, default=25)
    parser.add_argument("--out")
    args = parser.parse_args()
    out_path = args.out or os.path.join(benchlib.ROOT, "bench", "results", f"profile-scenario-{args.scenario}.md")
    if os.geteuid() != 0:
        sys.exit("profile_testbed.py: the testbed needs root (network namespaces); run it with sudo")
    run = benchlib.Run()
    benchlib.build()
    work = tempfile.mkdtemp(prefix="p2pd-profile-")
    data, stat = os.path.join(work, "perf.data"), os.path.join(work, "stat.csv")
    results = os.path.join(work, "results")
    testbed = os.path.join(benchlib.BIN, "p2pd-testbed")
    command = ["perf", "stat", "-a", "-x,", "-o", stat, *sum((["-e", e] for e in COUNTED), []), "--",
               "perf", "record", "-a", "-q", "-e", f"cpu-clock/freq={HZ}/", "-o", data, "--",
               testbed, "scenario", str(args.scenario), "--out", results]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"profile_testbed.py: {' '.join(command)} failed:\n{done.stderr.strip()}")
    # Scenario 6 makes two results (at once, rolling); the profile covers both.
    runs = benchlib.load_results(results, f"scenario-{args.scenario}*.json")
    for r in runs:
        if not r["outcome"]["success"] or not r["summary"].get("delivered_bytes"):
            sys.exit(f"profile_testbed.py: the scenario failed: {r['outcome'].get('error')}")
    delivered = sum(r["summary"]["delivered_bytes"] for r in runs)
    gib = delivered / GIB
    cpu = by_comm(data)
    total = sum(cpu.values())
    ours = [c for c in cpu if c == "p2pd" or c.startswith("p2pd-worker")]
    counts = counted(stat)
    each = [
        f"`{r['name']}`: delivered {r['summary']['delivered_bytes'] / (1 << 20):.0f} MiB to "
        f"{r['parameters']['leechers']} leechers; slowest {r['summary']['slowest_ratio']:.3f} × T_min; over the "
        f"transfer alone the machine spent {r['summary']['machine_cpu_secs_per_gib']:.2f} core-s/GiB "
        f"({r['summary']['machine_to_link_floor']:.2f} × the link floor) and the floor "
        f"{r['floor']['receiver_cpu_secs_per_gib']:.2f} (receiver) + {r['floor']['sender_cpu_secs_per_gib']:.2f} (sender)."
        for r in runs
    ]
    lines = run.header(
        f"Profile of testbed scenario {args.scenario} ({runs[0]['title']})",
        f"Profiled: `perf stat -a` and `perf record -a` (cpu-clock at {HZ} Hz) over the whole "
        f"`p2pd-testbed scenario {args.scenario}` command ({gib:.2f} GiB delivered in all).",
        *each,
    )
    lines += ["## The machine, per GiB delivered (whole command)", "", "| figure | total | per GiB delivered |", "|---|---|---|",
              f"| cpu-clock samples (core-s) | {total / HZ:.1f} | {total / HZ / gib:.2f} |"]
    for event in COUNTED:
        n = counts.get(event, 0)
        lines.append(f"| {event} | {n} | {n / gib:.0f} |")
    lines += ["", "## Where the CPU went, by thread name", "", "| thread | core-s | per GiB delivered | share |", "|---|---|---|---|"]
    for comm, n in sorted(cpu.items(), key=lambda x: -x[1])[:16]:
        lines.append(f"| `{comm}` | {n / HZ:.1f} | {n / HZ / gib:.2f} | {100 * n / total:.1f} % |")
    ours_total = sum(cpu[c] for c in ours)
    lines += ["", f"## p2pd's top {args.symbols} symbols (threads {', '.join(f'`{c}`' for c in sorted(ours))}: "
              f"{ours_total / HZ:.1f} core-s)", "", "| share of those threads | dso | symbol |", "|---|---|---|"]
    for n, dso, sym in top_symbols(data, ours, args.symbols):
        lines.append(f"| {100 * n / max(ours_total, 1):.1f} % | {dso} | `{sym}` |")
    benchlib.write_result(out_path, "\n".join(lines) + "\n")
    subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
