"""All paired differences to SFT written so far, pooled: how large a gain the per-seed bar needs.

Usage:
  python bench/pooled_paired.py docs/results/issue14/compare-reply-cap-seeds.md ... [--exclude reply-base]

Each argument is a `comparison.md` written by `llmgan evaluate --compare` (copied to docs/results). From
each it reads the lines "NAME, strongest detector: D (95% interval LO to HI)" of the section "Detector
AUROC minus BASELINE's", so every file must have been compared against the same baseline (the caller's
job: this script cannot see which SFT model a file used). A system that appears in several files with the
same numbers counts once; `--exclude` drops systems by name (the base model, say).

It prints each system, then the pool: how many differences there are, their mean and standard deviation,
how many intervals clear 0, and the mean half-width of an interval. From that half-width h it gives the
power of the issue's per-seed test under a normal approximation: with a true gain g and a standard error
s = h / 1.96, one seed clears 0 with probability Phi(g / s - 1.96), and three seeds all do with its cube.
The systems are not independent runs (most share seed 0, the SFT model and the test prompts), so the pool
describes what has been measured, not a sampling distribution.
"""

from __future__ import annotations

import argparse
import re
import statistics
from math import erf, sqrt
from pathlib import Path

LINE = re.compile(r"^- (?P<name>.+?), strongest detector: (?P<d>[-+]\d\.\d+) "
                  r"\(95% interval (?P<lo>[-+]\d\.\d+) to (?P<hi>[-+]\d\.\d+)\)")


def read(paths: list[str], exclude: set[str]) -> dict[str, tuple[float, float, float, str]]:
    """{name: (difference, low, high, first file)} from the compare reports, deduplicated by value."""
    systems: dict[str, tuple[float, float, float, str]] = {}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            m = LINE.match(line)
            if not m or m["name"] in exclude:
                continue
            value = (float(m["d"]), float(m["lo"]), float(m["hi"]))
            old = systems.get(m["name"])
            if old is not None and old[:3] != value:
                raise SystemExit(f"{path}: {m['name']} has {value}, but {old[3]} has {old[:3]}; "
                                 "two different systems share a name: compare them in separate calls")
            systems.setdefault(m["name"], (*value, path))
    return systems


def clear_probability(gain: float, half_width: float) -> float:
    """P(one seed's 95 % interval clears 0 | true gain `gain` > 0), normal approximation."""
    z = gain / (half_width / 1.96) - 1.96
    return 0.5 * (1.0 + erf(z / sqrt(2.0)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reports", nargs="+", help="comparison.md files against one baseline")
    ap.add_argument("--exclude", nargs="*", default=[], help="system names to leave out")
    ap.add_argument("--gains", nargs="*", type=float, default=[0.03, 0.05, 0.07, 0.09],
                    help="true gains (AUROC points) to give the power for")
    args = ap.parse_args()
    systems = read(args.reports, set(args.exclude))
    if len(systems) < 2:
        raise SystemExit("fewer than two paired differences found: are these `llmgan evaluate --compare` reports?")
    for name, (d, lo, hi, path) in systems.items():
        print(f"{name:28s} {d:+.3f} ({lo:+.3f}, {hi:+.3f}){'  clear of 0' if hi < 0 or lo > 0 else ''}  [{Path(path).name}]")
    diffs = [v[0] for v in systems.values()]
    half = statistics.mean((v[2] - v[1]) / 2 for v in systems.values())
    clear = sum(v[2] < 0 for v in systems.values())
    print(f"\n{len(diffs)} differences: mean {statistics.mean(diffs):+.3f}, sd {statistics.stdev(diffs):.3f}, "
          f"median {statistics.median(diffs):+.3f}; {sum(d < 0 for d in diffs)} below 0, {clear} clear of 0 "
          f"(interval below 0); mean interval half-width {half:.3f}")
    for g in args.gains:
        p = clear_probability(g, half)
        print(f"true gain {g:.2f}: one seed clears 0 with p = {p:.2f}; three of three with p = {p ** 3:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
