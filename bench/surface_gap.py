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

--shares fits nothing: per file, the share of texts with each of SHARES (an @-mention, an emoji, " I " as a word,
the last character, ...), the real responses of the first file once, then each file's generated texts. A warm-up
pool (RUN/warmup_pool.jsonl, `real` and `fake`) reads the same way. On a test split, use it only to describe a
result already measured, never to choose. Example (twenty-sixth session):
  python bench/surface_gap.py --shares out/r28/post-val-best4-p512.jsonl.draws/draw-{0,1,2,3}.jsonl \
      out/r36/post-val-bias.draws/draw-{0,1,2,3}.jsonl out/r28/post-val-best4-p512.jsonl \
      out/r36/post-val-bias-rank/best-4-t0.jsonl
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from surface_teacher import read_draws, text_of

MARKS = ("@", "#", "\n", "’", "'", "“", '"', "!", "?", " my ", " I ")
EMOJI = re.compile("[\U0001F300-\U0001FAFF\u2600-\u27BF]")


def last_mark(text: str) -> str:
    """What a text ends with: ".", "!?", "word" (a letter or digit), "emoji/symbol" (a character past U+2000) or
    "other"."""
    text = text.rstrip()
    if not text:
        return "other"
    c = text[-1]
    return ("." if c == "." else "!?" if c in "!?" else "word" if c.isalnum()
            else "emoji/symbol" if ord(c) > 0x2000 else "other")


SHARES = {"@": lambda t: "@" in t, "#": lambda t: "#" in t, "emoji": lambda t: bool(EMOJI.search(t)),
          ":": lambda t: ":" in t, "I": lambda t: bool(re.search(r"\bI\b", t)),
          "my": lambda t: bool(re.search(r"\bmy\b", t)), "quote": lambda t: '"' in t or "“" in t,
          "ends .": lambda t: last_mark(t) == ".", "ends emoji/symbol": lambda t: last_mark(t) == "emoji/symbol"}


def print_shares(paths: list[Path]) -> None:
    """The share of texts with each of SHARES: the first file's real responses, then each file's generated texts."""
    draws = read_draws(paths)
    rows = [("real", [r["real"] for r in draws[0]])] + [(str(f), [text_of(r) for r in d]) for f, d in zip(paths, draws)]
    print("texts with | " + " | ".join(SHARES) + " | file")
    for name, texts in rows:
        print(" | ".join([f"{len(texts)}"] + [f"{100 * sum(map(f, texts)) / len(texts):.1f} %" for f in SHARES.values()]
                         + [name]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("draws", nargs="+", type=Path, help="draw files (same prompts), validation split")
    p.add_argument("--top", type=int, default=30, help="n-grams to print on each side")
    p.add_argument("--shares", action="store_true", help="only the share of texts with each of SHARES, per file")
    args = p.parse_args()
    if args.shares:
        print_shares(args.draws)
        return 0

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
