#!/usr/bin/env python3
"""Runs one fleet-testbed scenario several times and writes the spread of its figures.

One run of a scenario is one sample on a shared 2-core machine: a scheduling hiccup can move
its ratio by several percent. This runs `p2pd-testbed scenario K` N times (as root), keeps each
run's result files, and writes a markdown table of every run plus min / median / max of the
slowest and median leecher's ratio to T_min, the seed's upload multiple, and the CPU per GiB
delivered (whole machine) with its ratios to the floor measured in the same run (see
testbed/README.md). Scenario 6 makes two results per run (at once, rolling): one table each.

    python3 bench/testbed_repeats.py --scenario 2 --runs 10 \\
        --out bench/results/testbed/scenario-2-repeats.md

`--fs ext4` runs every scenario with each host's data on an ext4 image of its own.
`--summarize DIR...` writes the tables from run directories made earlier instead (each holding
one run's scenario-K*.json), e.g. to compare two builds.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

import benchlib
from benchlib import BIN, Run, build

FIGURES = (
    ("slowest_ratio", "slowest / T_min"),
    ("median_ratio", "median / T_min"),
    ("seed_upload_multiple", "seed upload / F"),
    ("machine_cpu_secs_per_gib", "machine core-s / GiB delivered"),
    ("leecher_to_floor", "leecher core-s / GiB ÷ floor receiver"),
    ("machine_to_floor", "machine core-s / GiB ÷ floor (receiver + sender)"),
    ("machine_to_link_floor", "machine core-s / GiB ÷ link floor"),
)


def fmt(value, digits=3):
    """A figure, or a dash where the run has none (a failed run, an older testbed)."""
    return "—" if value is None else f"{value:.{digits}f}"


def run_all(scenario, runs, work, fs):
    dirs = []
    for i in range(1, runs + 1):
        out = os.path.join(work, f"run{i}")
        cmd = [os.path.join(BIN, "p2pd-testbed"), "scenario", str(scenario), "--fs", fs, "--out", out]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"run {i} failed ({' '.join(cmd)}):\n{done.stderr.strip()}")
        for r in load(out):
            s = r["summary"]
            print(f"run {i}/{runs} {r['name']}: slowest {fmt(s['slowest_ratio'])}, median {fmt(s['median_ratio'])}, "
                  f"seed {s['seed_upload_multiple']:.3f} F, {fmt(s.get('machine_cpu_secs_per_gib'), 2)} core-s/GiB, "
                  f"{fmt(s.get('leecher_to_floor'), 2)} × floor", flush=True)
        dirs.append(out)
    return dirs


def load(run_dir):
    """Every result of one run directory (scenario 6 writes two), sorted by name."""
    return benchlib.load_results(run_dir)


def table(run, results, source):
    first = results[0]
    lines = run.header(
        f"{first['title']}: {len(results)} runs",
        source,
        f"T_min = {first['bound']['t_min_secs']:.2f} s ({first['bound']['binding'].replace('_', ' ')} term). "
        f"Data on {first['parameters'].get('filesystem') or 'tmpfs'}.",
    ) + [
        "| run | slowest / T_min | median / T_min | seed upload / F | CPU busy | machine core-s / GiB | leecher ÷ floor | machine ÷ floor | machine ÷ link floor | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(results, 1):
        s = r["summary"]
        verdict = (s["verdict"] or "failed").replace("_", "-")
        lines.append(f"| {i} | {fmt(s['slowest_ratio'])} | {fmt(s['median_ratio'])} | {s['seed_upload_multiple']:.3f} | "
                     f"{s['cpu_busy_fraction'] * 100:.0f} % | {fmt(s.get('machine_cpu_secs_per_gib'), 2)} | "
                     f"{fmt(s.get('leecher_to_floor'), 2)} | {fmt(s.get('machine_to_floor'), 2)} | "
                     f"{fmt(s.get('machine_to_link_floor'), 2)} | {verdict} |")
    lines += ["", "| figure | min | median | max |", "|---|---|---|---|"]
    for key, name in FIGURES:
        values = [r["summary"].get(key) for r in results]
        values = [v for v in values if v is not None]
        if values:
            lines.append(f"| {name} | {min(values):.3f} | {statistics.median(values):.3f} | {max(values):.3f} |")
        else:
            lines.append(f"| {name} | — | — | — |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", type=int, choices=range(1, 7), default=2)
    ap.add_argument("--fs", choices=("tmpfs", "ext4"), default="tmpfs", help="what holds each host's data")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--out", help="markdown file to write (default: stdout)")
    ap.add_argument("--summarize", nargs="+", metavar="DIR", help="summarize these run directories instead of running")
    args = ap.parse_args()
    run = Run()
    if args.summarize:
        dirs = args.summarize
        source = ("Runs made earlier (`p2pd-testbed scenario K`, one per directory); the commit above is the "
                  "tree's when this summary was written, not necessarily the runs'.")
    else:
        if os.geteuid() != 0:
            sys.exit("the fleet testbed builds network namespaces: run as root")
        build("-p", "p2pd", "-p", "p2pctl", "-p", "p2pd-testbed")
        work = tempfile.mkdtemp(prefix="p2pd-repeats-")
        dirs = run_all(args.scenario, args.runs, work, args.fs)
        source = f"Each run: `p2pd-testbed scenario {args.scenario} --fs {args.fs}`, one after the other."
    by_name = {}
    for d in dirs:
        for r in load(d):
            by_name.setdefault(r["name"], []).append(r)
    text = "\n".join(table(run, results, source) for _, results in sorted(by_name.items()))
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
