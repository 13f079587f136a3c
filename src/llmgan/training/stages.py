"""The stages around the adversarial steps that `train` and the embedding baseline share: the
discriminator's warm-up (step 0) and the before/after sample replies."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from llmgan.config import RunConfig
from llmgan.io import last_user_message

WARMUP_LOG = "warmup.jsonl"  # RUN/warmup.jsonl: the warm-up's discriminator metrics and held-out AUROC


def sample_eval(model, tok, rows, n: int, seed: int, cfg: RunConfig) -> list[dict]:
    """A few sample replies for held-out prompts (demo / before-after)."""
    from llmgan.generator import generate_responses

    rows = rows.select(range(min(n, len(rows))))
    prompts = [list(m) for m in rows["prompt"]]
    texts = generate_responses(model, tok, prompts, max_new_tokens=cfg.generation.max_new_tokens,
                               temperature=0.8, top_p=0.95, seed=seed, progress=False)
    return [{"prompt": last_user_message(p), "real": r, "generated": t} for p, r, t in zip(prompts, rows["response"], texts)]


def heldout_set(cfg: RunConfig, model, tok, eval_rows, discriminator) -> Optional[tuple[list, list, list]]:
    """discriminator.heldout_size > 0: the first N rows of the held-out split, one start-model sample each at the
    training sampling (a fixed seed), set as D's held-out set; returns (prompts, fakes, reals) or None."""
    from llmgan.generator import generate_responses

    n = min(cfg.discriminator.heldout_size, len(eval_rows)) if eval_rows is not None else 0
    if n <= 0:
        return None
    rows = eval_rows.select(range(n))
    prompts, reals = [list(m) for m in rows["prompt"]], list(rows["response"])
    g = cfg.generation
    fakes = generate_responses(model, tok, prompts, max_new_tokens=g.max_new_tokens, temperature=g.temperature,
                               top_p=g.top_p, seed=cfg.train.seed * 100003 + 4242, progress=False)
    discriminator.set_heldout(prompts, fakes, reals)
    return prompts, fakes, reals


def warmup_discriminator(cfg: RunConfig, model, tok, train, discriminator, progress: bool = True, rank: int = 0,
                         eval_rows=None, run_dir: Optional[Path] = None) -> list[dict]:
    """0. Discriminator-only steps on the starting policy's samples, before the generator moves.

    Each process (`rank`) draws its own prompts; D's gradients are averaged over processes, so every
    process ends the warm-up with the same discriminator. With discriminator.heldout_size (and `eval_rows`,
    the held-out split): D's AUROC on a fixed held-out set every heldout_every steps, an early end once it
    stops rising (warmup_patience), and at the end the judge's strongest detector on the same texts
    (heldout_judge): the teacher should not be weaker than the judge. Rows go to RUN/warmup.jsonl."""
    import torch

    from llmgan.generator import generate_responses
    from llmgan.io import append_jsonl

    d = cfg.discriminator
    held = heldout_set(cfg, model, tok, eval_rows, discriminator)
    log: list[dict] = []

    def record(row: dict) -> None:
        log.append(row)
        if run_dir is not None and rank == 0:
            append_jsonl(Path(run_dir) / WARMUP_LOG, row)

    def check(step: int, m: dict) -> None:
        row = {"step": step, **{k: v for k, v in m.items() if k.startswith("discriminator/")}}
        if held is not None and (step == 0 or (d.heldout_every and step % d.heldout_every == 0)):
            row["discriminator/heldout_auroc"] = discriminator.heldout_auroc()
        record(row)
        if progress and step:
            auc = row.get("discriminator/heldout_auroc")
            print(f"  D warm-up {step}/{d.warmup_steps}: loss {m.get('discriminator/loss', float('nan')):.3f} "
                  f"acc {m.get('discriminator/accuracy', float('nan')):.2f}" + (f" held-out AUROC {auc:.3f}" if auc else ""))

    if held is not None:
        check(0, {})
    g = cfg.generation
    rng = torch.Generator().manual_seed(cfg.train.seed + 1 + 7919 * rank)
    best = log[0]["discriminator/heldout_auroc"] if held is not None else -1.0  # before any update: the baseline
    stale, steps = 0, 0
    for step in range(d.warmup_steps):
        idx = torch.randperm(len(train), generator=rng)[: cfg.train.prompts_per_step].tolist()
        rows = train.select(idx)
        prompts = [list(m) for m in rows["prompt"] for _ in range(g.num_generations)]
        reals = [r for r in rows["response"] for _ in range(g.num_generations)]
        texts = generate_responses(model, tok, prompts, max_new_tokens=g.max_new_tokens, temperature=g.temperature,
                                   top_p=g.top_p, seed=cfg.train.seed * 100003 + step + 7919 * rank, progress=False,
                                   batch_size=len(prompts))
        check(step + 1, discriminator.train_step(prompts=prompts, completions=texts, response=reals))
        steps = step + 1
        auc = log[-1].get("discriminator/heldout_auroc")
        if auc is not None and d.warmup_patience:
            best, stale = (auc, 0) if auc > best + 0.005 else (best, stale + 1)
            if stale >= d.warmup_patience:
                break
    if held is not None:
        end = {"step": steps, "end_of_warmup": True, "discriminator/heldout_auroc": discriminator.heldout_auroc()}
        if d.heldout_judge and rank == 0:
            from llmgan.evaluation import score_for_selection

            prompts, fakes, reals = held
            judge = score_for_selection([last_user_message(p) for p in prompts], reals, fakes, seed=cfg.train.seed)
            end.update({"judge/heldout_auroc_max": judge["detector_auroc_max"],
                        "judge/heldout_auroc_max_detector": judge["detector_auroc_max_detector"]})
        record(end)
        if progress:
            line = f"  D warm-up ended after {steps} steps: held-out AUROC {end['discriminator/heldout_auroc']:.3f}"
            if "judge/heldout_auroc_max" in end:
                weaker = end["discriminator/heldout_auroc"] < end["judge/heldout_auroc_max"]
                line += (f"; the judge's strongest detector ({end['judge/heldout_auroc_max_detector']}) "
                         f"{end['judge/heldout_auroc_max']:.3f} on the same texts"
                         + (": the teacher is weaker than the judge" if weaker else ""))
            print(line)
    return log
