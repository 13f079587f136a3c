"""Which cased character n-grams separate drafts from the real responses? An analysis, not a method (issue 14).

When every draft of a prompt is detectable for the same reason, no ranking of the drafts removes it (RESULTS.md,
"Three ways to rank better"). This script shows what a cased n-gram reader sees in that shared gap: it fits a
TF-IDF of cased character 1-4-grams (sublinear, min_df 3) and a logistic regression (C = 1) on the generated
texts of the given draw files against the real responses of the first file (each real once), and prints the
n-grams with the most negative weights (towards generated) and the most positive (towards human), then the share
of texts that contain a few marks. Run it on validation draws only: reading test texts to design a method
would choose settings on the test split.

Example (the four top-p 0.95 validation draws of the seventeenth session, draws 0 and 1):
  python bench/surface_gap.py out/r27/post-val-p95-best4-t1.jsonl.draws/draw-{0,1}.jsonl
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from surface_teacher import read_draws, text_of

MARKS = ("@", "#", "\n", "’", "'", "“", '"', "!", "?", " my ", " I ")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("draws", nargs="+", type=Path, help="draw files (same prompts), validation split")
    p.add_argument("--top", type=int, default=30, help="n-grams to print on each side")
    args = p.parse_args()

    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    draws = read_draws(args.draws)
    real = [r["real"] for r in draws[0]]
    gen = [text_of(r) for d in draws for r in d]
    vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 4), lowercase=False, sublinear_tf=True, min_df=3)
    x = vec.fit_transform(real + gen)
    y = np.r_[np.ones(len(real)), np.zeros(len(gen))]
    coef = LogisticRegression(C=1.0, max_iter=2000).fit(x, y).coef_[0]
    names, order = vec.get_feature_names_out(), np.argsort(coef)
    print(f"{len(gen)} generated texts against {len(real)} real ones")
    print("towards generated:", " ".join(repr(names[i]) for i in order[:args.top]))
    print("towards human:    ", " ".join(repr(names[i]) for i in order[::-1][:args.top]))
    for mark in MARKS:
        share = [float(np.mean([mark in t for t in texts])) for texts in (real, gen)]
        print(f"  {mark!r:8} in {share[0]:.0%} of the real texts, {share[1]:.0%} of the generated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
