"""Paired differences on subsets of the rows of one `llmgan evaluate --compare` run.

Usage:
  python bench/row_subsets.py JUDGE_DIR --pool 4 --rows 0:250 250:745 [--json OUT.json]

JUDGE_DIR is the folder `llmgan evaluate --compare` wrote (comparison.json and one NAME.samples.csv per system,
with each detector's out-of-fold scores of the generated and the real responses and the pair's row in the input).
For each range of rows (start:end, Python's slice of the input order) it prints each system's AUROC under every
detector and the strongest, and each later system's paired difference to the first system (or, with --pool P, to
the mean of the first P systems), with the same bootstrap over prompts as the command
(`llmgan.evaluation.detectors.pooled_max_auroc_difference_ci`, seed 0).

What it is for: a result measured on the first rows of a split can be checked on rows never read before, from the
same judge call. The detectors are not refitted: every score is out of fold on the whole file, so a subset's AUROC
is the same detectors' on fewer pairs (folds grouped by prompt, so no row is scored by a detector trained on it).
On the whole range (0:N) the numbers are those of comparison.json, and the script checks that they are.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from llmgan.evaluation.detectors import auroc, pooled_max_auroc_difference_ci


def read_system(judge: Path, name: str) -> pd.DataFrame:
    path = judge / (name.replace("/", "_") + ".samples.csv")
    if not path.is_file():
        sys.exit(f"error: {path} is missing; run llmgan evaluate --compare again with -o {judge}")
    s = pd.read_csv(path, keep_default_na=False)
    if "row" not in s.columns or not any(c.startswith("real_score_") for c in s.columns):
        sys.exit(f"error: {path} has no 'row' or 'real_score_<detector>' columns; it was written by an older "
                 "llmgan evaluate: run the comparison again")
    return s.sort_values("row").reset_index(drop=True)


def parse_range(text: str, n: int) -> tuple[int, int]:
    start, _, end = text.partition(":")
    lo, hi = int(start or 0), int(end or n)
    if not 0 <= lo < hi <= n:
        sys.exit(f"error: rows {text} are outside 0:{n}")
    return lo, hi


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("judge", type=Path, help="the -o folder of llmgan evaluate --compare")
    p.add_argument("--pool", type=int, default=1, help="the first P systems are the baseline (their mean AUROC)")
    p.add_argument("--rows", nargs="+", default=[":"], help="ranges start:end of input rows (default: all)")
    p.add_argument("--json", type=Path, help="write the numbers here too")
    args = p.parse_args()

    comparison = json.loads((args.judge / "comparison.json").read_text())
    names = list(comparison["systems"])
    if not 1 <= args.pool < len(names):
        sys.exit(f"error: --pool {args.pool} needs more systems than that ({len(names)} in {args.judge})")
    tables = {name: read_system(args.judge, name) for name in names}
    n = len(tables[names[0]])
    for name, t in tables.items():
        if len(t) != n or not (t["prompt"] == tables[names[0]]["prompt"]).all():
            sys.exit(f"error: {name} was not judged on the same prompts in the same order as {names[0]}")
    detectors = [c[len("real_score_"):] for c in tables[names[0]].columns if c.startswith("real_score_")]

    def pairs(t: pd.DataFrame, rows: slice) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(t[f"score_{d}"].to_numpy()[rows], t[f"real_score_{d}"].to_numpy()[rows]) for d in detectors]

    base_label = names[0] if args.pool == 1 else "mean of " + ", ".join(names[:args.pool])
    out = []
    for text in args.rows:
        lo, hi = parse_range(text, n)
        rows = slice(lo, hi)
        print(f"rows {lo}:{hi} ({hi - lo} pairs)")
        for name in names:
            aucs = {d: auroc(*pr)[0] for d, pr in zip(detectors, pairs(tables[name], rows))}
            strongest = max(aucs, key=aucs.get)
            print(f"  {name:28s} strongest {aucs[strongest]:.3f} ({strongest}); "
                  + " / ".join(f"{d} {a:.3f}" for d, a in aucs.items()))
            out.append({"rows": [lo, hi], "system": name, "auroc": aucs, "strongest": strongest})
        bases = [pairs(tables[b], rows) for b in names[:args.pool]]
        print(f"  paired difference to the {base_label}:")
        for name in names[args.pool:]:
            system = pairs(tables[name], rows)
            for label, keep in [("max", range(len(detectors)))] + [(d, [i]) for i, d in enumerate(detectors)]:
                diff, low, high = pooled_max_auroc_difference_ci([[b[i] for i in keep] for b in bases],
                                                                 [system[i] for i in keep], seed=0)
                noise = " -- within test-set noise" if low <= 0 <= high else ""
                print(f"    {name}, {'strongest detector' if label == 'max' else label}: {diff:+.3f} "
                      f"(95% interval {low:+.3f} to {high:+.3f}){noise}")
                out.append({"rows": [lo, hi], "system": name, "baseline": base_label, "detector": label,
                            "difference": diff, "low": low, "high": high})
                if (lo, hi) == (0, n):  # the whole file: must be comparison.json's numbers
                    ref = next((d for d in comparison["detector_auroc_difference_vs_first"]
                                if d["system"] == name and d["detector"] == label), None)
                    if ref is not None and ref.get("difference") is not None and (
                            ref["baseline"] != base_label or abs(ref["difference"] - diff) > 1e-6):
                        sys.exit(f"error: on all rows {name}/{label} gives {diff:+.4f} against {base_label}, "
                                 f"comparison.json {ref['difference']:+.4f} against {ref['baseline']}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
