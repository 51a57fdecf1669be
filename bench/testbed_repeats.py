#!/usr/bin/env python3
"""Runs one fleet-testbed scenario several times and writes the spread of its figures.

One run of a scenario is one sample on a shared 2-core machine: a scheduling hiccup can move
its ratio by several percent. This runs `p2pd-testbed scenario K` N times (as root), keeps each
run's result file, and writes a markdown table of every run plus min / median / max of the
slowest and median leecher's ratio to T_min and the seed's upload multiple.

    python3 bench/testbed_repeats.py --scenario 2 --runs 10 \\
        --out bench/results/testbed/scenario-2-repeats.md

`--summarize DIR...` writes the table from run directories made earlier instead (each holding
one scenario-K.json), e.g. to compare two builds.
"""

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile

from benchlib import BIN, Run, build

FIGURES = (("slowest_ratio", "slowest / T_min"), ("median_ratio", "median / T_min"), ("seed_upload_multiple", "seed upload / F"))


def run_all(scenario, runs, work):
    dirs = []
    for i in range(1, runs + 1):
        out = os.path.join(work, f"run{i}")
        cmd = [os.path.join(BIN, "p2pd-testbed"), "scenario", str(scenario), "--out", out]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"run {i} failed ({' '.join(cmd)}):\n{done.stderr.strip()}")
        summary = load(out)["summary"]
        print(f"run {i}/{runs}: slowest {summary['slowest_ratio']:.3f}, median {summary['median_ratio']:.3f}, "
              f"seed {summary['seed_upload_multiple']:.3f} F", flush=True)
        dirs.append(out)
    return dirs


def load(run_dir):
    files = glob.glob(os.path.join(run_dir, "scenario-*.json"))
    if len(files) != 1:
        sys.exit(f"{run_dir}: expected one scenario-*.json, found {len(files)}")
    with open(files[0]) as f:
        return json.load(f)


def table(run, results, source):
    first = results[0]
    lines = run.header(
        f"{first['title']}: {len(results)} runs",
        source,
        f"T_min = {first['bound']['t_min_secs']:.2f} s ({first['bound']['binding'].replace('_', ' ')} term).",
    ) + [
        "| run | slowest / T_min | median / T_min | seed upload / F | CPU busy | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(results, 1):
        s = r["summary"]
        lines.append(f"| {i} | {s['slowest_ratio']:.3f} | {s['median_ratio']:.3f} | {s['seed_upload_multiple']:.3f} | "
                     f"{s['cpu_busy_fraction'] * 100:.0f} % | {s['verdict'].replace('_', '-')} |")
    lines += ["", "| figure | min | median | max |", "|---|---|---|---|"]
    for key, name in FIGURES:
        values = [r["summary"][key] for r in results]
        lines.append(f"| {name} | {min(values):.3f} | {statistics.median(values):.3f} | {max(values):.3f} |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", type=int, choices=range(1, 6), default=2)
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
        dirs = run_all(args.scenario, args.runs, work)
        source = f"Each run: `p2pd-testbed scenario {args.scenario}`, one after the other."
    text = table(run, [load(d) for d in dirs], source)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
