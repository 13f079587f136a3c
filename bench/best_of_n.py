"""How far can the teacher's reward take the generator? Best-of-n under the warmed-up discriminator (issue 14).

The adversarial stage moves the policy toward the completions its discriminator (D) scores as human. Best-of-n
sampling under the same reward is the usual yardstick of what a reward gives at a KL budget (its KL to the start
model is at most log n - (n-1)/n nats per response, arXiv 2401.01879; KL-regularised RL is compared with it at
equal KL, arXiv 2210.10760). So best-of-n under D, judged by `llmgan evaluate`, shows what this teacher can give
at that KL with no optimiser in the way:
- if best-of-8 under D beats the start model by much more than the game's -0.03 under the judge, the teacher
  has more to give and the optimiser (few prompts, few steps on a CPU) is what holds the game back;
- if best-of-8 ties, the teacher's preferences are not the judge's, and more steps or a better optimiser
  cannot help: what D reads has to change.

What it does, on the validation split (--split test reads the test split instead, for a best-of-n chosen on
validation; the teacher's warm-up and held-out set stay on validation):
1. the teacher: the config's D, warmed up exactly as `llmgan train` warms it up (build_components, then
   `warmup_discriminator`) in --work; a pool and held-out set already sampled by a run of the same config
   (--reuse RUN: its warmup_pool.jsonl and heldout.jsonl) are copied in and read back instead of sampled again;
   the warm-up saves the teacher in --work/run/teacher, as `llmgan train` saves RUN/teacher;
2. n samples per prompt for --limit prompts of --split at the training sampling, each draw k with
   its own seed (1000 + 100 x --seed + k), kept in --work/samples-k.jsonl (a later call reuses them);
3. D's logit of every (prompt, sample), in chunks;
4. for each n in --ns, per prompt the sample D ranks most human among draws 0..n-1 (best-n.jsonl), and for
   the largest n also the one it ranks least human (worst-N.jsonl, the control); rows in `llmgan generate`'s
   format, ready for `llmgan evaluate --compare`.
With --split train (a seeded draw of --limit training prompts) and --dataset-out DIR, the picks of the
largest n are also written as a prepared dataset (train: those prompts with D's pick as the response;
validation and test: the source's own) for `llmgan sft`: one round of rejection-sampling fine-tuning on the
teacher's choices (RAFT, arXiv 2304.06767; best-of-n distillation, arXiv 2407.14622).
Then judge them, e.g.
  llmgan evaluate --compare out/bon/best-1.jsonl out/bon/best-2.jsonl out/bon/best-4.jsonl out/bon/best-8.jsonl \\
      out/bon/worst-8.jsonl --detectors all --threads 2 -o out/bon/judge
best-1 is one plain sample per prompt (draw 0): the start model as shipped. The plot of the judge against n:
  python bench/best_of_n.py --plot out/bon/judge/comparison.json -o docs/results/issue14/best-of-n-reply.png

The shipped form of step 4 is `llmgan generate --best-of N --teacher RUN/teacher` (draw k seeded --seed + k: with
--seed 1000 its draws are this script's seed-0 draws).

Example (RESULTS.md, "How far the teacher's ranking reaches"):
  python bench/best_of_n.py --config configs/twon-reply.yaml --model runs/r12-reply-cap/sft/final/generator \\
      --reuse runs/r20-reply-p8-s0 --n 8 --limit 250 --work out/bon
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def draws(cfg, model, tok, prompts: list, reals: list, n: int, work: Path, seed: int = 0) -> list[list[str]]:
    """n samples per prompt at the config's training sampling -> texts[k][i]; draw k is seeded
    1000 + 100 * seed + k and kept in work/samples-k.jsonl (read back when it holds the same prompts, reals and
    sampling)."""
    from llmgan.training.stages import start_model_samples

    out = []
    for k in range(n):
        t0 = time.perf_counter()
        out.append(start_model_samples(cfg, model, tok, prompts, reals, 1000 + 100 * seed + k, work / f"samples-{k}.jsonl",
                                       progress=False))
        print(f"draw {k + 1}/{n}: {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def d_logits(disc, prompts: list, texts: list[list[str]], reals: list, chunk: int = 8) -> list[list[float]]:
    """D's logit (higher = more human) of every draw texts[k][i], read with prompt i -> scores[k][i]. The n draws
    of `chunk` prompts go through D together, so the discriminator's encode keeps each (prompt, real) pair once
    and a real reply is encoded once per chunk, not once per draw."""
    import torch

    n = len(texts)
    scores = [[0.0] * len(prompts) for _ in range(n)]
    with torch.no_grad():
        for s in range(0, len(prompts), chunk):
            rows = [(i, k) for i in range(s, min(s + chunk, len(prompts))) for k in range(n)]
            batch = disc.encode([prompts[i] for i, _ in rows], [texts[k][i] for i, k in rows], [reals[i] for i, _ in rows])
            _, fake = disc.score(batch)
            for (i, k), x in zip(rows, fake.cpu().tolist()):
                scores[k][i] = float(x)
    return scores


def write_dataset(source: str, prompts: list, responses: list[str], out: Path) -> None:
    """A prepared dataset at `out`: train = (prompt, response) pairs; the other splits and the card as in `source`."""
    from datasets import Dataset, DatasetDict

    from llmgan.data import CARD_NAME, load_prepared

    src = load_prepared(source)
    splits = {"train": Dataset.from_dict({"prompt": prompts, "response": responses})}
    splits.update({k: v.select_columns(["prompt", "response"]) for k, v in src.items() if k != "train"})
    DatasetDict(splits).save_to_disk(str(out))
    card = json.loads((Path(source) / CARD_NAME).read_text())
    card["best_of_n"] = {"source": str(source), "train_rows": len(responses)}
    (out / CARD_NAME).write_text(json.dumps(card, indent=1, ensure_ascii=False))


DETECTORS = ("detector_auroc_max", "detector_auroc_minilm_lr", "detector_auroc_ngram_lr", "detector_auroc_finetuned")


def plot(comparison: Path, out: Path) -> None:
    """Each detector's AUROC (all rows, 95 % bootstrap interval) of best-of-n against n, worst-of-N beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = json.loads(comparison.read_text())["systems"]
    best = sorted((int(k.split("-")[1]), v) for k, v in systems.items() if k.startswith("best-"))
    worst = [(int(k.split("-")[1]), v) for k, v in systems.items() if k.startswith("worst-")]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for j, key in enumerate(DETECTORS):
        xs = [n * (1 + 0.03 * (j - 1.5)) for n, _ in best]
        ys = [v[key] for _, v in best]
        err = [[v[key] - v[key + "_ci"]["low"] for _, v in best], [v[key + "_ci"]["high"] - v[key] for _, v in best]]
        line = ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=key.replace("detector_auroc_", ""))
        for n, v in worst:
            ax.plot([n * 1.35 * (1 + 0.03 * (j - 1.5))], [v[key]], marker="v", color=line[0].get_color())
    floor = best[0][1].get("human_detector_auroc_max")
    if floor is not None:
        ax.axhline(floor, color="grey", ls=":", label="human floor (strongest)")
    ax.set_xscale("log", base=2)
    ax.set_xticks([n for n, _ in best] + [n * 1.35 for n, _ in worst])
    ax.set_xticklabels([str(n) for n, _ in best] + [f"worst of {n}" for n, _ in worst])
    ax.set_xlabel("best of n under the teacher (n samples per prompt)")
    ax.set_ylabel("judge AUROC (0.5 = indistinguishable)")
    ax.set_title("How far the teacher's ranking takes the start model (validation)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


def main() -> int:
    if "--plot" in sys.argv:
        q = argparse.ArgumentParser(description="plot the judge against n from an `llmgan evaluate --compare` folder")
        q.add_argument("--plot", required=True, type=Path, help="comparison.json of best-1 ... best-n (and worst-n)")
        q.add_argument("-o", "--output", required=True, type=Path, help="the PNG to write")
        a = q.parse_args()
        plot(a.plot, a.output)
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="the run config whose discriminator is the teacher")
    p.add_argument("--model", required=True, help="the start model (e.g. RUN/sft/final/generator)")
    p.add_argument("--reuse", help="a run of the same config and model: its warm-up pool and held-out samples are reused")
    p.add_argument("--n", type=int, default=8, help="samples per prompt")
    p.add_argument("--ns", default="1,2,4,8", help="best-of sizes to write (each <= --n)")
    p.add_argument("--limit", type=int, default=250, help="prompts: the first N of validation or test, N drawn from train")
    p.add_argument("--work", required=True, help="folder for the teacher's warm-up, the samples and the picks")
    p.add_argument("--seed", type=int, default=0, help="train.seed of the teacher; also moves the draws' seeds")
    p.add_argument("--split", choices=("validation", "train", "test"), default="validation",
                   help="validation or test: the first --limit prompts; train: --limit training prompts drawn with "
                        "--seed. The teacher's warm-up reads the validation split whatever this is")
    p.add_argument("--dataset-out", help="with --split train: write the best-of-n picks as a prepared dataset here")
    args = p.parse_args()
    if args.dataset_out and args.split != "train":
        p.error("--dataset-out needs --split train (the picks become training responses)")

    from llmgan.config import load_config
    from llmgan.generator import output_rows
    from llmgan.io import write_json, write_rows
    from llmgan.training.components import build_components
    from llmgan.training.dataset import resolve_data_caps
    from llmgan.training.stages import HELDOUT_FILE, POOL_FILE, WARMUP_LOG, warmup_discriminator

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ns = sorted({int(x) for x in args.ns.split(",")})
    if ns[-1] > args.n:
        p.error(f"--ns {args.ns} asks for best-of-{ns[-1]}, more than --n {args.n} samples per prompt")
    cfg = load_config(args.config, [f"model.name={args.model}", "train.sft_warm_start=false",
                                    f"train.seed={args.seed}", f"train.output_dir={work / 'run'}"])
    run_dir = work / "run"
    run_dir.mkdir(exist_ok=True)
    cfg = resolve_data_caps(cfg, run_dir, write=True)
    if args.reuse:
        for name in (POOL_FILE, HELDOUT_FILE):
            if (Path(args.reuse) / name).is_file() and not (run_dir / name).is_file():
                shutil.copy(Path(args.reuse) / name, run_dir / name)
    # 1. the teacher, warmed up as `llmgan train` warms it up
    (run_dir / WARMUP_LOG).unlink(missing_ok=True)
    parts = build_components(cfg, run_dir, quiet=True)
    model, tok, disc = parts.policy, parts.tokenizer, parts.discriminator
    t0 = time.perf_counter()
    log = warmup_discriminator(cfg, model, tok, parts.train_rows, disc, progress=True, eval_rows=parts.eval_rows,
                               run_dir=run_dir)
    warmup_s = time.perf_counter() - t0
    end = log[-1]
    # 2. n samples per prompt of --split
    if args.split == "train":
        import torch

        idx = torch.randperm(len(parts.train_rows), generator=torch.Generator().manual_seed(args.seed + 31))
        rows = parts.train_rows.select(idx[: args.limit].tolist())
        work = work / "train"
        work.mkdir(exist_ok=True)
    elif args.split == "test":  # only where n was chosen on validation: nothing here is tuned on test
        from llmgan.data import load_prepared

        test = load_prepared(cfg.data.path)["test"]
        rows = test.select(range(min(args.limit, len(test))))
        work = work / "test"
        work.mkdir(exist_ok=True)
    else:
        rows = parts.eval_rows.select(range(min(args.limit, len(parts.eval_rows))))
    prompts, reals = [list(m) for m in rows["prompt"]], list(rows["response"])
    t0 = time.perf_counter()
    texts = draws(cfg, model, tok, prompts, reals, args.n, work, args.seed)
    sample_s = time.perf_counter() - t0
    # 3. D's logit of every sample
    t0 = time.perf_counter()
    scores = d_logits(disc, prompts, texts, reals)
    score_s = time.perf_counter() - t0
    # 4. the picks
    summary = {"config": args.config, "model": args.model, "n": args.n, "prompts": len(prompts),
               "teacher_heldout_auroc": end.get("discriminator/heldout_auroc"),
               "judge_heldout_auroc_max": end.get("judge/heldout_auroc_max"), "warmup_steps": end.get("step"),
               "seconds": {"warmup": round(warmup_s), "sampling": round(sample_s), "scoring": round(score_s)},
               "picks": {}}
    for n in ns:
        for name, pick in [(f"best-{n}", max)] + ([(f"worst-{n}", min)] if n == ns[-1] and n > 1 else []):
            chosen = [pick(range(n), key=lambda k: scores[k][i]) for i in range(len(prompts))]
            if name == f"best-{ns[-1]}":
                chosen_top = chosen
            picked = [texts[k][i] for i, k in enumerate(chosen)]
            write_rows(output_rows(prompts, reals, picked), work / f"{name}.jsonl")
            summary["picks"][name] = {
                "mean_d_logit": sum(scores[k][i] for i, k in enumerate(chosen)) / len(chosen),
                "mean_words": sum(len(t.split()) for t in picked) / len(picked),
                "kl_bound_nats": (math.log(n) - (n - 1) / n) if name.startswith("best") else None}
    if args.dataset_out:
        write_dataset(cfg.data.path, prompts, [texts[k][i] for i, k in enumerate(chosen_top)], Path(args.dataset_out))
        summary["dataset_out"] = args.dataset_out
    write_json(work / "summary.json", summary)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
