"""Per-kernel time of two throughput.py --profile-kernels runs, side by side, largest difference first.

    python benchmarks/kernel_diff.py off_bf16.json off_kvint4.json [--rows 25]

Kernel names are compared as printed (the first 120 characters); a kernel only one run launches
shows 0 for the other.  Reads the "kernels_steady" list each run's JSON holds under "halinfer".
"""
from __future__ import annotations

import argparse
import json


def load(path: str) -> dict[str, tuple[int, float]]:
    rows = json.load(open(path))["halinfer"]["kernels_steady"]
    return {r["name"]: (r["launches"], r["ms"]) for r in rows}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--rows", type=int, default=25)
    args = p.parse_args(argv)
    a, b = load(args.a), load(args.b)
    names = sorted(set(a) | set(b), key=lambda n: -abs(b.get(n, (0, 0.0))[1] - a.get(n, (0, 0.0))[1]))
    print(f"{'A ms':>10} {'B ms':>10} {'B - A':>9} {'A n':>8} {'B n':>8}  kernel")
    for n in names[:args.rows]:
        (ca, ta), (cb, tb) = a.get(n, (0, 0.0)), b.get(n, (0, 0.0))
        print(f"{ta:10.2f} {tb:10.2f} {tb - ta:+9.2f} {ca:8d} {cb:8d}  {n}")


if __name__ == "__main__":
    main()
