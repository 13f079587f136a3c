"""What the cased n-gram detector (`ngram_lr`) reads: its heaviest features, and a few surface shares, for
generated against real responses in `llmgan evaluate` input files.

    python bench/ngram_features.py out/bon-post-s2/test/best-4.jsonl out/r23/post-sft-s0.jsonl

For each file the detector's model (llmgan.evaluation.detectors.ngram_model) is fitted once on all rows,
generated (label 1) against real (label 0), and the 20 features with the largest weights each way are printed
(\\x02 marks the start of a text). This is a description of the fitted model, not a held-out score: use it to
see what a system gets wrong on the surface, not to choose a setting.
"""

from __future__ import annotations

import json
import re
import sys

import numpy as np

from llmgan.evaluation.detectors import ngram_model

SURFACE = {"hashtag": lambda t: "#" in t, "mention": lambda t: "@" in t, "newline": lambda t: "\n" in t,
           "curly quote or …": lambda t: bool(re.search("[“”‘’…]", t)), "straight quote": lambda t: '"' in t,
           "starts with I": lambda t: t.lstrip().startswith("I "), "emoji": lambda t: bool(re.search("[\U0001F300-\U0001FAFF]", t))}


def main(paths: list[str]) -> int:
    if not paths:
        print(__doc__)
        return 2
    for path in paths:
        rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
        gen, real = [r["generated"] for r in rows], [r["real"] for r in rows]
        model = ngram_model().fit(np.asarray(gen + real, dtype=object), np.array([1] * len(gen) + [0] * len(real)))
        names = [n.split("__", 1)[1] for n in model[0].get_feature_names_out()]
        order = np.argsort(model[-1].coef_[0])
        print(f"{path} ({len(rows)} rows)")
        print("  generated:", ", ".join(repr(names[i]) for i in order[::-1][:20]))
        print("  real:     ", ", ".join(repr(names[i]) for i in order[:20]))
        print("  share of texts | generated | real")
        for label, test in SURFACE.items():
            print(f"  {label:17s} | {np.mean([test(t) for t in gen]):.2f} | {np.mean([test(t) for t in real]):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
