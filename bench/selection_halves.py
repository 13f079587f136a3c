"""How well does checkpoint selection (`llmgan select`) pick, judged on prompts it did not see? Validation only.

`llmgan select` scores every candidate of a run (the start model and each kept checkpoint) on the same 250
validation prompts and ships the one with the lowest `detector_auroc_max`. Whether that choice holds on other
prompts can be measured without the test split: split the validation prompts into two halves (by prompt text,
so no post is in both), choose with a rule on half A, and score the chosen candidate on half B against the
start model on half B. Repeated over random halvings, this gives, for each rule, the mean gain over the start
model on unseen prompts and how optimistic the choosing half was (the winner's curse: A-score minus B-score).

It reads only what selection wrote (RUN/selection/selection.json and RUN/selection/step-N.jsonl) and runs the
same detectors on the same texts (the default ones, minilm_lr and ngram_lr, 5-fold), at half the size.
No sampling, no training; the test split is never read.

Rules (each a function of the half-A scores of a run's candidates, in `RULES`):
  lowest         the shipped rule: lowest detector_auroc_max (the earliest step on a tie)
  one_se         the earliest step within one standard error (bootstrap) of the lowest (Breiman's 1-SE rule)
  length_guard   the lowest among candidates with length W1 <= 2 words (issue 14's bar); else the lowest
  last           the last checkpoint
  start          the start model (SFT): the reference, its gain is 0 by construction

`--max-step N` keeps only the candidates up to step N, so one long run answers "would a shorter game have done as
well?": the same run with `--max-step 30` and without it, on the same halvings (the seed fixes them).

Usage (2 cores: about 6 s per run and halving, plus the embedding of its texts):
  python bench/selection_halves.py runs/r12-reply-cap runs/r13-reply-cap-s1 --halvings 20 -o out/selection-halves.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

W1_BAR = 2.0  # issue 14: length W1 <= 2 words


def _lowest(c: Sequence[dict]) -> int:
    return min(range(len(c)), key=lambda i: (c[i]["auroc"], c[i]["step"]))


def _one_se(c: Sequence[dict]) -> int:
    best = c[_lowest(c)]
    bar = best["auroc"] + best["se"]
    return min((i for i in range(len(c)) if c[i]["auroc"] <= bar), key=lambda i: c[i]["step"])


def _length_guard(c: Sequence[dict]) -> int:
    ok = [i for i in range(len(c)) if c[i]["w1"] <= W1_BAR]
    return min(ok, key=lambda i: (c[i]["auroc"], c[i]["step"])) if ok else _lowest(c)


RULES: dict[str, Callable[[Sequence[dict]], int]] = {
    "lowest": _lowest,
    "one_se": _one_se,
    "length_guard": _length_guard,
    "last": lambda c: max(range(len(c)), key=lambda i: c[i]["step"]),
    "start": lambda c: min(range(len(c)), key=lambda i: c[i]["step"]),
}


def load_run(run: Path, max_step: int | None = None) -> tuple[list[int], list[str], list[str], dict[int, list[str]]]:
    """(steps, prompts, real responses, {step: generated}) of a run's selection; with `max_step`, only the
    candidates up to that step."""
    from llmgan.evaluation.reading import read_pairs

    sel = json.loads((run / "selection" / "selection.json").read_text())
    steps = [c["step"] for c in sel["candidates"] if max_step is None or c["step"] <= max_step]
    gen, prompts, real = {}, None, None
    for s in steps:
        p, r, g = read_pairs(run / "selection" / f"step-{s}.jsonl")
        if real is None:
            prompts, real = list(p), list(r)
        elif list(r) != real:
            raise SystemExit(f"{run}: step-{s}.jsonl holds other real responses than step-{steps[0]}.jsonl")
        gen[s] = list(g)
    return steps, prompts, real, gen


def score_half(idx, gen_texts, real_texts, gen_emb, real_emb, *, seed: int, with_se: bool) -> dict[str, float]:
    """detector_auroc_max of one candidate on the rows `idx` (the default detectors, as `llmgan select`), its
    bootstrap standard error when asked, and the length W1 in words."""
    import numpy as np

    from llmgan.evaluation import detectors as det
    from llmgan.evaluation import textstats as ts
    from llmgan.evaluation.folds import prompt_groups

    g, r = [gen_texts[i] for i in idx], [real_texts[i] for i in idx]
    groups = prompt_groups(None, len(idx))
    pairs, aucs = [], []
    for d in det.resolve(None):
        out = det.run_detector(d, g, r, gen_emb[idx], real_emb[idx], groups=groups, seed=seed)
        pairs.append((out["generated"], out["real"]))
        aucs.append(out["auroc"])
    res = {"auroc": max(aucs), "w1": ts.wasserstein(ts.word_counts(g), ts.word_counts(r))}
    if with_se:
        low, high = det.max_auroc_ci(pairs, n_resamples=200, seed=seed)
        res["se"] = (high - low) / (2 * 1.96)
    res["auroc"] = float(np.round(res["auroc"], 6))
    return res


def study(runs: Sequence[str], halvings: int, seed: int = 0, max_step: int | None = None) -> dict[str, Any]:
    import numpy as np

    from llmgan.evaluation.embed import embed

    per_run: dict[str, Any] = {}
    for run_name in runs:
        steps, prompts, real, gen = load_run(Path(run_name), max_step)
        real_emb = embed(real, threads=1)
        gen_emb = {s: embed(gen[s], threads=1) for s in steps}
        distinct = sorted(set(prompts))
        rng = np.random.default_rng(seed)
        outcomes: dict[str, list[dict]] = {k: [] for k in RULES}
        for h in range(halvings):
            in_a = set(rng.permutation(distinct)[: len(distinct) // 2].tolist())
            a = np.array([i for i, p in enumerate(prompts) if p in in_a])
            b = np.array([i for i, p in enumerate(prompts) if p not in in_a])
            sa = [{"step": s, **score_half(a, gen[s], real, gen_emb[s], real_emb, seed=seed + h, with_se=True)}
                  for s in steps]
            sb = {s: score_half(b, gen[s], real, gen_emb[s], real_emb, seed=seed + h, with_se=False) for s in steps}
            start_b = sb[min(steps)]["auroc"]
            for k, rule in RULES.items():
                c = sa[rule(sa)]
                outcomes[k].append({"step": c["step"], "a": c["auroc"], "b": sb[c["step"]]["auroc"],
                                    "gain_b": sb[c["step"]]["auroc"] - start_b})
            print(f"{run_name}: halving {h + 1}/{halvings}", file=sys.stderr, flush=True)
        per_run[run_name] = {k: summarize(v) for k, v in outcomes.items()}
    pooled = {k: {"mean_gain_b": statistics.mean(per_run[r][k]["mean_gain_b"] for r in runs)} for k in RULES}
    return {"runs": per_run, "pooled": pooled, "halvings": halvings, "seed": seed, "max_step": max_step}


def summarize(v: Sequence[dict]) -> dict[str, Any]:
    """Mean B-score gain over the start model, the share of halvings where the chosen one is lower than the
    start model on B, the mean optimism (A - B) and how often each step was chosen."""
    gains = [o["gain_b"] for o in v]
    return {"mean_gain_b": statistics.mean(gains), "sd_gain_b": statistics.stdev(gains) if len(gains) > 1 else 0.0,
            "share_below_start_b": sum(g < 0 for g in gains) / len(gains),
            "mean_optimism": statistics.mean(o["a"] - o["b"] for o in v),
            "chosen_steps": {str(s): sum(o["step"] == s for o in v) for s in sorted({o["step"] for o in v})}}


def table(result: dict[str, Any]) -> str:
    lines = [f"Each cell: the chosen candidate's detector_auroc_max on half B minus the start model's on half B, mean "
             f"over {result['halvings']} halvings of the validation prompts (negative: harder to detect than the "
             f"start model); in brackets the share of halvings where it is below the start model, and how often each "
             f"step was chosen (step:count). `python bench/selection_halves.py RUN ... --halvings "
             f"{result['halvings']} --seed {result['seed']}"
             + (f" --max-step {result['max_step']}" if result.get("max_step") is not None else "") + "`.", "",
             "| run | " + " | ".join(RULES) + " |", "| --- |" + " ---: |" * len(RULES)]
    for run, by_rule in result["runs"].items():
        cells = [f"{by_rule[k]['mean_gain_b']:+.3f} ({by_rule[k]['share_below_start_b']:.0%}; "
                 f"{'/'.join(f'{s}:{n}' for s, n in by_rule[k]['chosen_steps'].items())})" for k in RULES]
        lines.append(f"| {Path(run).name} | " + " | ".join(cells) + " |")
    lines.append("| **mean over runs** | " + " | ".join(f"**{result['pooled'][k]['mean_gain_b']:+.3f}**"
                                                      for k in RULES) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders with a finished selection/")
    p.add_argument("--halvings", type=int, default=20, help="random splits of the validation prompts (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-step", type=int, help="consider only the candidates up to this step (default: all)")
    p.add_argument("-o", "--output", help="write the result as JSON here (and a Markdown table beside it)")
    args = p.parse_args(argv)
    result = study(args.runs, args.halvings, args.seed, args.max_step)
    md = table(result)
    print(md)
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
        Path(args.output).with_suffix(".md").write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
