#!/usr/bin/env python3
"""Compares two runs of multihead_bench saved as JSON, benchmark by benchmark.

    multihead_bench --benchmark_repetitions=5 --benchmark_out=a.json --benchmark_out_format=json
    ... (the other build, or the same one later) ... --benchmark_out=b.json
    python3 bench/compare.py a.json b.json [--filter REGEX]

For each benchmark in both files: its time in A and in B (the median aggregate when the runs had
repetitions, else the single run), B/A (below 1: B is faster), and each run's `roofline`, the
fraction of the machine's peak it reached in its own run. Times from one noisy host are only
comparable when A and B were run alternately (A, B, A, B, ...): the roofline column, measured
against each run's own peak, is the steadier figure when they were not.
"""
import argparse
import json
import re
import sys


def load(path):
    """{name: (real time in ms, roofline or None)} of one Google Benchmark JSON file."""
    with open(path) as f:
        data = json.load(f)
    scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}
    runs, medians = {}, {}
    for b in data.get("benchmarks", []):
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        name = b.get("run_name", b["name"])
        figure = (b["real_time"] * scale[b.get("time_unit", "ns")], b.get("roofline"))
        if b.get("run_type") == "aggregate":
            medians[name] = figure
        else:
            runs.setdefault(name, figure)  # the first repetition stands in without aggregates
    runs.update(medians)
    return runs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--filter", default="", help="only benchmarks whose name matches")
    args = parser.parse_args()
    a, b = load(args.a), load(args.b)
    names = [n for n in a if n in b and re.search(args.filter, n)]
    if not names:
        sys.exit("compare.py: no benchmark is in both files (and matches the filter)")
    width = max(len(n) for n in names)
    print(f"{'benchmark':<{width}} {'A ms':>10} {'B ms':>10} {'B/A':>7} {'roof A':>7} {'roof B':>7}")
    for n in names:
        (ta, ra), (tb, rb) = a[n], b[n]
        roof = lambda r: f"{r:7.2f}" if r is not None else f"{'-':>7}"
        print(f"{n:<{width}} {ta:10.3f} {tb:10.3f} {tb / ta:7.3f} {roof(ra)} {roof(rb)}")


if __name__ == "__main__":
    main()
