"""Detector AUROC of several evaluations minus a baseline's, with paired bootstrap intervals.

Usage:
  python bench/paired_difference.py out/r5/eval-sft out/r5/eval-sft-adv out/r5/eval-sft-adv-s1 ...

The first folder is the baseline. Each argument is a folder written by `llmgan evaluate` (its
samples.csv holds every prompt's out-of-fold detector scores); rows are matched on (prompt, real), so
the systems must have been evaluated on the same pairs. The computation of `llmgan evaluate --compare`
without embedding anything again (rows are resampled in another order, so an interval's ends can differ
from --compare's in the third decimal).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from llmgan.evaluation.detectors import auroc_difference_ci


def _scores(folder: str) -> pd.DataFrame:
    s = pd.read_csv(Path(folder) / "samples.csv", keep_default_na=False)
    return s.set_index(["prompt", "real"])[["detector_score", "real_detector_score"]].sort_index()


def main(folders: list[str]) -> int:
    if len(folders) < 2:
        print(__doc__)
        return 2
    base = _scores(folders[0])
    for f in folders[1:]:
        other = _scores(f)
        if not other.index.equals(base.index):
            print(f"{f}: not the same (prompt, real) pairs as {folders[0]}; skipped")
            continue
        d, lo, hi = auroc_difference_ci(base["detector_score"], base["real_detector_score"],
                                        other["detector_score"], other["real_detector_score"])
        print(f"{Path(f).name} minus {Path(folders[0]).name}: {d:+.3f} (95% interval {lo:+.3f} to {hi:+.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
