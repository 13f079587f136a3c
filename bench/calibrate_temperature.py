"""A sampling temperature calibrated on the data: drafts as likely as real text under the model that writes them.

At temperature 1.0 a 135M LoRA model is over-dispersed: its plain post drafts are less likely under the model
that wrote them than the real posts are (-3.63 against -3.08 nats per token on post validation, RESULTS.md,
seventeenth session). Entropy-rate calibration (Braverman et al., arXiv 1906.05664) fixes that with one scalar
chosen so that the generations' log-loss equals the log-loss of real text. This script finds that temperature
from drafts already sampled at a few temperatures on the same prompts; it reads no detector and no test row:
- per temperature, the mean log-probability per token of the drafts (response tokens and the end-of-turn
  token, given the chat-formatted prompt; per-text means, averaged) under --model, and of the real responses
  to the same prompts (bench/likelihood_ranker.py's scorer);
- T*: the temperature where the drafts' curve meets the real value, by linear interpolation between the two
  temperatures that bracket it (`crossing`), rounded to 0.01; none when no pair brackets it.
Writes OUT/summary.json and prints one line per temperature.

Sample the drafts first, one file per temperature, on prompts the judge will not read, e.g. the last 256
validation topics:
  for T in 0.8 0.9 1.0; do llmgan generate data/right-post --split validation --offset 1169 --limit 256 \\
      --model runs/r37-post-sft/final/generator --seed 7 --temperature $T --top-p 1.0 --max-new-tokens 71 \\
      -o out/r39/cal-T$T.jsonl; done
  python bench/calibrate_temperature.py --model runs/r37-post-sft/final/generator \\
      --draws 0.8=out/r39/cal-T0.8.jsonl 0.9=out/r39/cal-T0.9.jsonl 1.0=out/r39/cal-T1.0.jsonl -o out/r39/calibration
A draft cut at the token cap is scored with the end-of-turn token it never wrote (as in likelihood_ranker.py),
which lowers its mean a little; real texts longer than the cap are scored whole.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# likelihood_ranker (beside this file) brings surface_teacher, which puts src/ on sys.path and sets the offline
# environment variables.
from likelihood_ranker import mean_logprobs, prompt_ids
from surface_teacher import conversation, read_draws, text_of


def crossing(temps: list[float], values: list[float], target: float) -> float | None:
    """temps [K], values [K] (the drafts' mean log-prob at each temperature), target (the real texts') -> the
    temperature where the piecewise-linear curve through (temps, values), sorted by temperature, first meets
    target; None when no two neighbouring temperatures bracket it."""
    pts = sorted(zip(temps, values))
    for (t0, v0), (t1, v1) in zip(pts, pts[1:]):
        if v0 == target:
            return t0
        if (v0 - target) * (v1 - target) < 0:
            return t0 + (target - v0) * (t1 - t0) / (v1 - v0)
    return pts[-1][0] if pts and pts[-1][1] == target else None


def parse_draw(spec: str) -> tuple[float, Path]:
    """'T=FILE' -> (T, FILE)."""
    t, sep, path = spec.partition("=")
    try:
        if not sep or not path:
            raise ValueError
        return float(t), Path(path)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--draws takes TEMPERATURE=FILE, got {spec!r}") from None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the model that wrote the drafts (RUN/sft/final/generator)")
    p.add_argument("--draws", nargs="+", required=True, type=parse_draw,
                   help="TEMPERATURE=FILE, one per temperature, the same prompts in the same order")
    p.add_argument("-o", "--output", required=True, type=Path, help="folder for summary.json")
    args = p.parse_args()

    import numpy as np
    import torch

    from llmgan.io import write_json
    from llmgan.models import load_model, load_tokenizer

    torch.set_num_threads(2)
    temps = [t for t, _ in args.draws]
    if len(set(temps)) != len(temps) or len(temps) < 2:
        raise SystemExit(f"--draws needs at least two distinct temperatures, got {temps}")
    draws = read_draws([f for _, f in args.draws])  # checks the files share their prompts
    args.output.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model, tok = load_model(args.model), load_tokenizer(args.model, padding_side="right")
    heads = prompt_ids(tok, [conversation(r) for r in draws[0]])
    real = float(np.mean(mean_logprobs(model, tok, heads, [r["real"] for r in draws[0]])))
    per_t = {}
    for t, d in zip(temps, draws):
        lp = mean_logprobs(model, tok, heads, [text_of(r) for r in d])
        per_t[t] = {"mean_logprob": float(np.mean(lp)),
                    "mean_words": float(np.mean([len(text_of(r).split()) for r in d])),
                    # None where the file does not record it (drafts from before `llmgan generate` wrote the flag)
                    "cut_at_cap": (float(np.mean([r["cut_at_cap"] for r in d]))
                                   if all(isinstance(r.get("cut_at_cap"), bool) for r in d) else None)}
        cut = "" if per_t[t]["cut_at_cap"] is None else f", {per_t[t]['cut_at_cap']:.1%} cut at the cap"
        print(f"T={t:g}: drafts {per_t[t]['mean_logprob']:.3f} nats per token (real {real:.3f}), "
              f"{per_t[t]['mean_words']:.1f} words{cut}", flush=True)
    hit = crossing(temps, [per_t[t]["mean_logprob"] for t in temps], real)
    summary = {"model": args.model, "draws": {str(t): str(f) for t, f in args.draws}, "prompts": len(draws[0]),
               "real_mean_logprob": real, "per_temperature": {str(t): v for t, v in per_t.items()},
               "temperature": None if hit is None else round(hit, 2),
               "seconds": round(time.perf_counter() - t0)}
    write_json(args.output / "summary.json", summary)
    if hit is None:
        print(f"the real value {real:.3f} is not between the drafts' values at {sorted(temps)}: sample a wider range "
              f"of temperatures; wrote {args.output / 'summary.json'}", flush=True)
        return 1
    print(f"calibrated temperature {summary['temperature']:.2f} ({len(draws[0])} prompts, {summary['seconds']} s); "
          f"wrote {args.output / 'summary.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
