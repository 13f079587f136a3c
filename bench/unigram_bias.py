"""A unigram log-ratio correction at sampling time: do the SFT model's drafts get harder to detect when the tokens it
writes too rarely or too often (against the human responses of the same training prompts) are nudged back? (issue 14,
a probe on validation; nothing in the recipe uses it)

Why: what makes the post drafts detectable is shared by all drafts of a topic (RESULTS.md, "Three ways to rank
better"), so no ranking of them removes it. Part of it is surface marginals a cased n-gram reader sees: on post
validation 19.6 % of the real posts carry an @-mention against 9.6 % of the drafts, an emoji 10.4 % against 5.6 %.

  fit     count every token id in the real and the generated responses of a pool of training prompts (JSONL rows
          with `real` and `fake`, e.g. RUN/warmup_pool.jsonl, the teacher's warm-up pool: one SFT sample per
          training prompt); for ids seen at least --min-count times in the two together, bias = log p_real -
          log p_generated with add-one smoothing, clipped to [-clip, +clip]; every other id gets 0. Written as
          JSON with each id's token text and counts, largest |bias| first.
  sample  N draws of a prepared split with the bias added to the logits at every step (transformers'
          `sequence_bias`), draw k seeded --seed + k, in the format of `llmgan generate --best-of`'s draws folder
          (OUT/draw-k.jsonl, with `cut_at_cap`), read back when they exist. Rank them with
          bench/teacher_ensemble.py and judge with `llmgan evaluate --compare`.

This is the unigram case of a product of experts (the model's next-token distribution times a per-token density
ratio of the real to the generated text), fitted on training prompts only. It is not `llmgan generate`'s
`--end-ramp`, which moves only the end token and only near the cap.

Examples (the twenty-sixth session, RESULTS.md):
  python bench/unigram_bias.py fit --pool runs/r28-post-pool512-t1/warmup_pool.jsonl \\
      --model runs/r23-post-s0/sft/final/generator -o out/r36/unigram-bias.json
  python bench/unigram_bias.py sample data/right-post --split validation --limit 250 \\
      --model runs/r23-post-s0/sft/final/generator --bias out/r36/unigram-bias.json --n 4 --seed 1100 \\
      --max-new-tokens 71 -o out/r36/post-val-bias.draws
One CPU as above (4 draws of 250 topics in 8:07 on the 2-core machine, the 135M model); one GPU: --device cuda.
An interrupted `sample` keeps the finished draws and samples only the rest when run again.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from pathlib import Path


def unigram_bias(real_counts: Counter, gen_counts: Counter, min_count: int = 10, clip: float = 1.0) -> dict[int, float]:
    """{token id: log p_real(id) - log p_gen(id)} for ids seen at least `min_count` times in the two counts
    together, each probability add-one smoothed over those ids, clipped to [-clip, clip]."""
    kept = [t for t in set(real_counts) | set(gen_counts) if real_counts[t] + gen_counts[t] >= min_count]
    n_real = sum(real_counts[t] for t in kept) + len(kept)
    n_gen = sum(gen_counts[t] for t in kept) + len(kept)
    return {t: max(-clip, min(clip, math.log((real_counts[t] + 1) / n_real) - math.log((gen_counts[t] + 1) / n_gen)))
            for t in kept}


def fit(args: argparse.Namespace) -> int:
    from llmgan.models import load_tokenizer

    tok = load_tokenizer(args.model)
    real, gen = Counter(), Counter()
    rows = 0
    for path in args.pool:
        for line in Path(path).read_text(encoding="utf-8").split("\n"):
            if not line.strip():
                continue
            row = json.loads(line)
            real.update(tok(row["real"], add_special_tokens=False)["input_ids"])
            gen.update(tok(row["fake"], add_special_tokens=False)["input_ids"])
            rows += 1
    bias = unigram_bias(real, gen, args.min_count, args.clip)
    order = sorted(bias, key=lambda t: -abs(bias[t]))
    out = {"pool": [str(p) for p in args.pool], "model": str(args.model), "rows": rows, "min_count": args.min_count,
           "clip": args.clip, "tokens_real": sum(real.values()), "tokens_generated": sum(gen.values()),
           "bias": [{"id": t, "token": tok.convert_ids_to_tokens(t), "real": real[t], "generated": gen[t],
                     "bias": round(bias[t], 4)} for t in order]}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, ensure_ascii=False, indent=1), encoding="utf-8")
    print(f"{rows} pool rows; {len(bias)} ids with a bias ({sum(b > 0 for b in bias.values())} up, "
          f"{sum(b < 0 for b in bias.values())} down) -> {args.output}")
    for e in out["bias"][:20]:
        print(f"  {e['bias']:+.2f}  {e['token']!r}  real {e['real']}  generated {e['generated']}")
    return 0


def sample_draws(args: argparse.Namespace, prepare, tag: dict) -> int:
    """N draws of args.dataset's args.split (first args.limit rows) from args.model, draw k seeded args.seed + k, written
    as OUT/draw-k.jsonl in the format of `llmgan generate --best-of`'s draws folder (with `cut_at_cap`).
    `prepare(model, tokenizer, out)` changes how the model samples (its generation config) before any draw and may
    write what it used under `out`; `tag` joins each draw's sampling record, so a draw is read back only when it was
    sampled the same way. Shared by this script's `sample` and bench/vocab_mask.py."""
    from llmgan.data import load_prepared
    from llmgan.generator import generate_responses, read_back_samples, write_samples
    from llmgan.models import load_model, load_tokenizer

    data = load_prepared(args.dataset)
    if args.split not in data:
        sys.exit(f"split '{args.split}' not in {args.dataset}; splits: {', '.join(data)}")
    split = data[args.split]
    split = split.select(range(min(args.limit, len(split)))) if args.limit else split
    prompts, reals = [list(m) for m in split["prompt"]], list(split["response"])
    tok = load_tokenizer(args.model)
    model = load_model(args.model).to(args.device)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    prepare(model, tok, out)
    for k in range(args.n):
        sampling = {"model": str(args.model), "seed": args.seed + k, "temperature": args.temperature,
                    "top_p": args.top_p, "max_new_tokens": args.max_new_tokens, **tag}
        path = out / f"draw-{k}.jsonl"
        if read_back_samples(path, prompts, reals, sampling) is not None:
            print(f"draw {k}: read back from {path}")
            continue
        texts, cut = generate_responses(model, tok, prompts, max_new_tokens=args.max_new_tokens,
                                        temperature=args.temperature, top_p=args.top_p, seed=args.seed + k,
                                        progress=not args.quiet, return_cut=True)
        write_samples(path, prompts, reals, texts, sampling, cut=cut)
        print(f"draw {k}: {len(texts)} texts, {100 * sum(cut) / len(cut):.1f} % cut at the cap -> {path}", flush=True)
    return 0


def add_sample_arguments(s: argparse.ArgumentParser) -> None:
    """The arguments `sample_draws` reads."""
    s.add_argument("dataset", help="a prepared data folder (llmgan prepare)")
    s.add_argument("--split", default="validation")
    s.add_argument("--limit", type=int, default=None, help="only the first rows")
    s.add_argument("--model", required=True)
    s.add_argument("--n", type=int, default=4, help="draws per prompt")
    s.add_argument("--seed", type=int, default=1100, help="draw k is seeded this + k")
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--top-p", type=float, default=1.0)
    s.add_argument("--max-new-tokens", type=int, required=True)
    s.add_argument("--device", default="cpu")
    s.add_argument("--quiet", action="store_true")
    s.add_argument("-o", "--output", required=True, help="folder for draw-k.jsonl")


def sample(args: argparse.Namespace) -> int:
    bias = {int(e["id"]): float(e["bias"]) for e in json.loads(Path(args.bias).read_text())["bias"] if e["bias"]}

    def prepare(model, tok, out):
        model.generation_config.sequence_bias = {(t,): b for t, b in bias.items()}

    return sample_draws(args, prepare, {"unigram_bias": str(args.bias)})


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fit", help="fit the bias on a pool of (real, generated) training responses")
    f.add_argument("--pool", nargs="+", required=True, help="JSONL files with `real` and `fake` per row")
    f.add_argument("--model", required=True, help="the model whose tokenizer counts the tokens")
    f.add_argument("--min-count", type=int, default=10, help="ids seen fewer times in both together get no bias")
    f.add_argument("--clip", type=float, default=1.0, help="largest |bias| in logits")
    f.add_argument("-o", "--output", required=True, help="JSON file for the bias")
    s = sub.add_parser("sample", help="N draws of a split with the bias added at every step")
    add_sample_arguments(s)
    s.add_argument("--bias", required=True, help="the JSON written by fit")
    args = p.parse_args()
    return fit(args) if args.cmd == "fit" else sample(args)


if __name__ == "__main__":
    sys.exit(main())
