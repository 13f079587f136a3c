"""How much room does best of n leave for a better ranker? The teacher's pick against the judge's own pick (issue 14).

Every plain draw judged as its own system (`llmgan evaluate --compare draw-0 ... draw-{n-1} ...`) leaves, in
OUT/draw-k.samples.csv, each row's out-of-fold score under every detector (higher = more machine-like). Per
prompt this script compares, under each detector:
- the mean score of all n draws (what one plain sample gets on average),
- the score of the draw the teacher picks (D's highest logit),
- the lowest score among the n draws: the judge's own pick, a ceiling no ranker can pass with these draws
  (it is read off the judge's scores, so it is a bound, not a method),
- the within-prompt rank correlation between D's logit and minus the detector's score (1: D orders the n draws
  as the detector does), and, as the yardstick for it, the same correlation between this detector and the
  other two (the judge's per-row scores are noisy too, so even another detector is far from 1). The ceiling
  is optimistic for the same reason: the lowest of n noisy scores is low partly by chance.
If the teacher's pick is close to the ceiling, a better ranker cannot help and the draws themselves must get
better (a better generator); if it is far, the ranker is what holds the gain back.

Example (post teacher 1, validation):
  python bench/ranking_room.py --teacher out/bon-post-s1/run/teacher \\
      --draws out/r25/post-val-best4-t1.jsonl.draws/draw-{0,1,2,3}.jsonl \\
      --judged out/r25/judge-post-val-ensemble/draw-{0,1,2,3}.samples.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from surface_teacher import conversation, read_draws, text_of

DETECTORS = {"strongest": "detector_score", "minilm_lr": "score_minilm_lr", "ngram_lr": "score_ngram_lr",
             "finetuned": "score_finetuned"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="RUN/teacher that ranks the draws")
    p.add_argument("--draws", nargs="+", required=True, type=Path, help="draw files, one per draw, same prompts")
    p.add_argument("--judged", nargs="+", required=True, type=Path,
                   help="the judge's samples.csv of each draw, in the same order")
    args = p.parse_args()
    if len(args.judged) != len(args.draws):
        p.error("one --judged file per --draws file")

    import numpy as np
    import torch
    from scipy.stats import spearmanr

    from llmgan.adversarial.teacher import Teacher

    torch.set_num_threads(2)
    draws = read_draws(args.draws)
    judged = []  # the judge's rows in the draws' order (its samples.csv has its own order)
    for k, f in enumerate(args.judged):
        by_text = {(r["real"], r["generated"]): r for r in csv.DictReader(f.open(encoding="utf-8"))}
        try:
            judged.append([by_text[(r["real"], text_of(r))] for r in draws[k]])
        except KeyError:
            raise SystemExit(f"{f} does not hold the texts of {args.draws[k]}") from None
    prompts = [conversation(r) for r in draws[0]]
    teacher = Teacher.load(args.teacher)
    logits = torch.stack([teacher.logits(prompts, [text_of(r) for r in d]) for d in draws]).numpy()  # [N, M]
    pick = logits.argmax(axis=0)
    m = len(prompts)
    print(f"{m} prompts x {len(draws)} draws; teacher {args.teacher}")
    print(f"{'detector':<10} {'mean draw':>10} {'D pick':>8} {'ceiling':>8} {'D share of room':>16} {'rank corr':>10} "
          f"{'other detectors':>16}")
    scores = {name: np.array([[float(row[col]) for row in j] for j in judged]) for name, col in DETECTORS.items()}
    singles = [x for x in scores if x != "strongest"]
    for name, s in scores.items():  # s [N, M]
        mean, ceiling = s.mean(axis=0), s.min(axis=0)
        d_pick = s[pick, np.arange(m)]
        share = (mean.mean() - d_pick.mean()) / max(mean.mean() - ceiling.mean(), 1e-9)
        corr = np.nanmean([spearmanr(logits[:, i], -s[:, i]).statistic for i in range(m)])
        others = [np.nanmean([spearmanr(-scores[o][:, i], -s[:, i]).statistic for i in range(m)])
                  for o in singles if o != name]
        print(f"{name:<10} {mean.mean():>10.3f} {d_pick.mean():>8.3f} {ceiling.mean():>8.3f} {share:>16.0%} "
              f"{corr:>10.2f} {'' if name == 'strongest' else ' / '.join(f'{x:.2f}' for x in others):>16}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
