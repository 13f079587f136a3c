"""A second, surface-reading teacher beside the warmed-up discriminator: does ranking by both beat D alone? (issue 14)

The teacher (RUN/teacher) reads the start model's hidden states. On posts its best of 4 moved MiniLM and the
fine-tuned detector clear of SFT but left the cased n-gram detector within noise for two teachers of three. A
ranking can only fix what the ranker sees, so this script adds a ranker that reads the surface: a cased character
n-gram logistic regression, fitted on the same warm-up pool D was warmed up on (SFT samples against the real
responses of training prompts). Nothing here reads the judge's code or the split being judged:
1. S, the surface model: TF-IDF of cased character 1-4-grams (sublinear, min_df 2) and a logistic regression
   (C = 1, sklearn's default), fitted on RUN/warmup_pool.jsonl (real = 1, SFT sample = 0). Not tuned.
2. D's and S's logits on the teacher's held-out set (RUN/heldout.jsonl: validation prompts, the set that stopped
   D's warm-up); a 2-feature logistic regression on [D, S] fitted there gives the weights of the combined score
   w_D * D + w_S * S. The held-out AUROC of D, S and the combination (5-fold cross-fitted) is printed: the
   combination is only worth judging if it separates better than D alone on the held-out set.
3. For the given draws (files of `bench/best_of_n.py` samples-k.jsonl or `llmgan generate --best-of` draw-k.jsonl,
   all for the same prompts), D's and S's logits; per prompt the draw the combination scores highest
   (best-N-surface.jsonl) and, as a check, D's own pick (best-N-d.jsonl, which must equal the shipped ranking).
Then judge, e.g. against the mean of the 4 plain samples:
  llmgan evaluate --compare W/plain-0.jsonl ... W/plain-3.jsonl W/best-4.jsonl OUT/best-4-surface.jsonl \\
      --pool-baseline 4 --detectors all --threads 2 -o OUT/judge

Example:
  python bench/surface_teacher.py --teacher out/bon-post-s1/run/teacher --run out/bon-post-s1/run \\
      --draws out/bon-post-s1/test/samples-{0,1,2,3}.jsonl -o out/r25/post-t1-test
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def text_of(row: dict) -> str:
    return row["fake"] if "fake" in row else row["generated"]


def conversation(row: dict) -> list[dict]:
    """A draw row -> its chat prompt: the conversation itself (best_of_n.py's samples, `llmgan generate --best-of`'s
    draw files), or, for `llmgan generate`'s output rows (the last user message as a string), the row's system
    message, if any, and that user message, as the generator was prompted."""
    if isinstance(row["prompt"], list):
        return row["prompt"]
    return ([{"role": "system", "content": row["system"]}] if row.get("system") else []) + \
        [{"role": "user", "content": row["prompt"]}]


def read_draws(paths: list[Path]) -> list[list[dict]]:
    """Draw files (best_of_n.py samples-k.jsonl or generate's draw-k.jsonl) -> rows[k][i]; all for one prompt list."""
    draws = [read_jsonl(f) for f in paths]
    for k, d in enumerate(draws[1:], 1):
        if [r["real"] for r in d] != [r["real"] for r in draws[0]]:
            raise SystemExit(f"{paths[k]} is not for the prompts of {paths[0]}")
    return draws


def add_draw_arguments(p: argparse.ArgumentParser) -> None:
    """--draws and -o/--output, as every script that ranks a set of draws takes them."""
    p.add_argument("--draws", nargs="+", required=True, type=Path, help="draw files, one per draw, same prompts")
    p.add_argument("-o", "--output", required=True, type=Path, help="folder for the picks and summary.json")


def open_draws(args: argparse.Namespace) -> tuple[Path, list[list[dict]], list]:
    """Two threads for torch, the output folder made, the draws read -> (output folder, draws[k][i], prompts[i])."""
    import torch

    torch.set_num_threads(2)
    args.output.mkdir(parents=True, exist_ok=True)
    draws = read_draws(args.draws)
    return args.output, draws, [conversation(r) for r in draws[0]]


def open_draws_with_teacher(doc: str):
    """The start of the scripts that rank draws with their cut-at-cap flags (complete_first.py, trim_cut.py): parse
    --teacher, --cap, --draws and -o (help: `doc`), read the draws, load the teacher and its start model's tokenizer
    -> (args, output folder, draws[k][i], prompts[i], teacher, tokenizer)."""
    from llmgan.adversarial.teacher import Teacher
    from llmgan.models import load_tokenizer

    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="RUN/teacher (the warmed-up D)")
    p.add_argument("--cap", type=int, required=True, help="the max_new_tokens the draws were sampled with")
    add_draw_arguments(p)
    args = p.parse_args()
    out, draws, prompts = open_draws(args)
    teacher = Teacher.load(args.teacher)
    return args, out, draws, prompts, teacher, load_tokenizer(str(teacher.cfg.model.name))


def cut_flags(draws: list[list[dict]], tok, cap: int) -> tuple[list[list[bool]], list[list[bool]], bool]:
    """Whether each draft stopped at the token cap: (flags[k][i], proxy[k][i], recorded). flags are the rows'
    `cut_at_cap` when every row records it (`llmgan generate` since the twenty-first session), else the proxy:
    the draft re-tokenized by `tok` is at least cap - 1 tokens long (one tokenizer call per draw)."""
    proxy = [[len(ids) >= cap - 1 for ids in tok([text_of(r) for r in d], add_special_tokens=False)["input_ids"]]
             for d in draws]
    recorded = all(isinstance(r.get("cut_at_cap"), bool) for d in draws for r in d)
    return ([[r["cut_at_cap"] for r in d] for d in draws] if recorded else proxy), proxy, recorded


def write_picks(draws: list[list[dict]], chosen, path: Path) -> list[dict]:
    """Per prompt i the text of draw chosen[i], as `llmgan generate` rows (what `llmgan evaluate` reads), with the
    draw's `cut_at_cap` where the draw files have it."""
    from llmgan.generator import output_rows
    from llmgan.io import write_rows

    kept = [draws[int(chosen[i])][i] for i in range(len(draws[0]))]
    rows = output_rows([conversation(r) for r in draws[0]], [r["real"] for r in draws[0]], [text_of(r) for r in kept],
                       [r.get("cut_at_cap") for r in kept])
    write_rows(rows, path)
    return rows


def surface_model():
    """S: TF-IDF of cased character 1-4-grams and a logistic regression (sklearn defaults)."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(TfidfVectorizer(analyzer="char", ngram_range=(1, 4), lowercase=False, sublinear_tf=True,
                                         min_df=2, dtype=np.float64),
                         LogisticRegression(max_iter=2000))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="RUN/teacher (the warmed-up D)")
    p.add_argument("--run", required=True, help="the run folder holding warmup_pool.jsonl and heldout.jsonl")
    add_draw_arguments(p)
    args = p.parse_args()

    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from llmgan.adversarial.teacher import Teacher
    from llmgan.io import write_json

    out, draws, prompts = open_draws(args)
    run = Path(args.run)
    pool, held = read_jsonl(run / "warmup_pool.jsonl"), read_jsonl(run / "heldout.jsonl")
    t0 = time.perf_counter()
    # 1. S on the warm-up pool
    s_model = surface_model()
    s_model.fit([r["real"] for r in pool] + [r["fake"] for r in pool], [1] * len(pool) + [0] * len(pool))
    # 2. D and S on the held-out set; the combination's weights
    teacher = Teacher.load(args.teacher)

    def both(prompts, texts):
        d = teacher.logits(prompts, texts).numpy().astype(np.float64)
        s = s_model.decision_function(texts)
        return np.stack([d, s], axis=1)

    x_held = np.concatenate([both([r["prompt"] for r in held], [r["real"] for r in held]),
                             both([r["prompt"] for r in held], [r["fake"] for r in held])])
    y_held = np.array([1] * len(held) + [0] * len(held))
    stack = LogisticRegression().fit(x_held, y_held)
    w = stack.coef_[0]
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    cv = cross_val_predict(LogisticRegression(), x_held, y_held, cv=folds, method="decision_function")
    held_auroc = {"d": roc_auc_score(y_held, x_held[:, 0]), "s": roc_auc_score(y_held, x_held[:, 1]),
                  "d_plus_s_crossfitted": roc_auc_score(y_held, cv)}
    print(f"held-out AUROC ({len(held)} + {len(held)}): D {held_auroc['d']:.3f}, S {held_auroc['s']:.3f}, "
          f"D+S {held_auroc['d_plus_s_crossfitted']:.3f}; weights D {w[0]:.3f}, S {w[1]:.3f}", flush=True)
    # 3. every draw, and the picks
    x = np.stack([both(prompts, [text_of(r) for r in d]) for d in draws])  # [N, M, 2]
    combined = x @ w
    n, m = combined.shape
    summary = {"teacher": args.teacher, "run": str(run), "draws": [str(f) for f in args.draws],
               "surface_model": "TF-IDF cased char 1-4-grams (sublinear, min_df 2) + LogisticRegression(C=1)",
               "heldout_auroc": held_auroc, "weights": {"d": float(w[0]), "s": float(w[1])},
               "heldout_rows": len(held), "pool_rows": len(pool), "picks": {}}
    for name, score in (("d", x[:, :, 0]), ("surface", combined)):
        chosen = score.argmax(axis=0)
        rows = write_picks(draws, chosen, out / f"best-{n}-{name}.jsonl")
        summary["picks"][name] = {"chosen": chosen.tolist(),
                                  "mean_words": float(np.mean([len(r["generated"].split()) for r in rows]))}
    agree = float(np.mean(np.array(summary["picks"]["d"]["chosen"]) == np.array(summary["picks"]["surface"]["chosen"])))
    summary["picks_agree"] = agree
    summary["seconds"] = round(time.perf_counter() - t0)
    write_json(out / "summary.json", summary)
    print(f"{m} prompts x {n} draws: the two rankings pick the same draw for {agree:.0%}; "
          f"{summary['seconds']} s; wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
