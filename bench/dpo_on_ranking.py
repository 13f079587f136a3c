"""Can a pairwise objective move the policy where the teacher's ranking points? One DPO round on (D's best, D's
worst) of n start-model samples per training prompt (issue 14; RESULTS.md, "Reranking with the teacher, shipped").

`bench/best_of_n.py --split train --n 4 --ns 1,4 --limit 512` writes, for a seeded draw of 512 training prompts,
best-4.jsonl and worst-4.jsonl: of 4 SFT samples per prompt, the one the warmed-up discriminator scores most and
least human. RAFT (likelihood on the best alone) tied SFT on validation; DPO (arXiv 2305.18290, TRL's
DPOTrainer) learns from the pair instead, so what separates the two picks of one prompt is what moves. A new
LoRA on the start model (the config's model.lora), the start model as DPO's reference (the adapter disabled);
the merged result goes to OUT/generator, ready for `llmgan generate --model OUT/generator`.

With --pool RUN/warmup_pool.jsonl instead of --best/--worst it runs one round of SPIN (self-play fine-tuning,
arXiv 2401.01335): the chosen text is the real response and the rejected one the start model's own sample for the
same prompt, the pairs the teacher warmed up on. That objective aims at what all the model's drafts share and
human text does not, which no ranking of the drafts can remove (RESULTS.md, twentieth session).

Examples (the runs in RESULTS.md; one epoch of 512 pairs, 16 a step; the first took 15:21 on the 2-core CPU):
  python bench/dpo_on_ranking.py --config configs/twon-reply.yaml --model runs/r12-reply-cap/sft/final/generator \\
      --best out/bon/train/best-4.jsonl --worst out/bon/train/worst-4.jsonl -o runs/r23-dpo-s0 --steps 32
  python bench/dpo_on_ranking.py --config configs/twon-post.yaml --model runs/r23-post-s0/sft/final/generator \\
      --pool runs/r28-post-pool512-t1/warmup_pool.jsonl -o runs/r30-post-spin --steps 32
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

# surface_teacher (beside this file) puts src/ on sys.path and sets the offline environment variables
from surface_teacher import conversation


def pairs(best: Path, worst: Path) -> list[dict]:
    """TRL's conversational preference rows from two files in `llmgan generate`'s format, row by row (the same
    prompts in the same order); a prompt whose best and worst are the same text is left out."""
    rows = []
    with open(best, encoding="utf-8") as fb, open(worst, encoding="utf-8") as fw:
        for b, w in zip(fb, fw):
            b, w = json.loads(b), json.loads(w)
            if b["prompt"] != w["prompt"]:
                raise SystemExit(f"{best} and {worst} do not hold the same prompts in the same order")
            if b["generated"] == w["generated"]:
                continue
            rows.append({"prompt": conversation(b), "chosen": [{"role": "assistant", "content": b["generated"]}],
                         "rejected": [{"role": "assistant", "content": w["generated"]}]})
    return rows


def spin_pairs(pool: Path) -> list[dict]:
    """TRL's conversational preference rows from a warm-up pool (`RUN/warmup_pool.jsonl`: prompt messages, real,
    fake): the real response chosen over the start model's sample; a row whose two texts are equal is left out."""
    rows = []
    with open(pool, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r["real"] == r["fake"]:
                continue
            rows.append({"prompt": r["prompt"], "chosen": [{"role": "assistant", "content": r["real"]}],
                         "rejected": [{"role": "assistant", "content": r["fake"]}]})
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="the run config (model.lora, train.seed)")
    p.add_argument("--model", required=True, help="the start model, also DPO's reference (e.g. RUN/sft/final/generator)")
    p.add_argument("--best", type=Path, help="best-N.jsonl of bench/best_of_n.py --split train")
    p.add_argument("--worst", type=Path, help="worst-N.jsonl of the same call")
    p.add_argument("--pool", type=Path, help="instead of --best/--worst: RUN/warmup_pool.jsonl, for SPIN (real "
                   "response chosen over the start model's sample)")
    p.add_argument("-o", "--output", required=True, help="output folder (OUT/generator: the merged model)")
    p.add_argument("--steps", type=int, default=32, help="optimizer steps (32 x 16 pairs = one epoch of 512)")
    p.add_argument("--batch", type=int, default=16, help="pairs per step")
    p.add_argument("--lr", type=float, default=1e-4, help="learning rate (the config's train.lr)")
    p.add_argument("--beta", type=float, default=0.1, help="DPO's beta (TRL's default)")
    args = p.parse_args()

    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from llmgan.config import load_config
    from llmgan.models import build_policy

    if (args.pool is not None and (args.best or args.worst)) or (args.pool is None and not (args.best and args.worst)):
        p.error("give either --best and --worst, or --pool alone")
    rows = spin_pairs(args.pool) if args.pool else pairs(args.best, args.worst)
    print(f"{len(rows)} pairs")
    cfg = load_config(args.config, [f"model.name={args.model}"])
    torch.manual_seed(cfg.train.seed)
    tok, model = build_policy(cfg)
    dpo = DPOConfig(output_dir=args.output, per_device_train_batch_size=args.batch, max_steps=args.steps,
                    learning_rate=args.lr, beta=args.beta, lr_scheduler_type="constant", logging_steps=4,
                    save_strategy="no", report_to="none", use_cpu=not torch.cuda.is_available(), seed=cfg.train.seed,
                    max_length=256, dataloader_num_workers=0, gradient_checkpointing=False)
    trainer = DPOTrainer(model=model, args=dpo, train_dataset=Dataset.from_list(rows), processing_class=tok)
    t0 = time.perf_counter()
    trainer.train()
    print(f"train: {time.perf_counter() - t0:.0f} s")
    merged = trainer.model.merge_and_unload()
    merged.save_pretrained(Path(args.output) / "generator", safe_serialization=True)
    tok.save_pretrained(Path(args.output) / "generator")
    (Path(args.output) / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1))
    print(f"wrote {Path(args.output) / 'generator'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
