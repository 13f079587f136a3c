"""The stages around the adversarial steps that `train` and the embedding baseline share: the
discriminator's warm-up (step 0) and the before/after sample replies."""

from __future__ import annotations

from llmgan.config import RunConfig
from llmgan.io import last_user_message


def sample_eval(model, tok, rows, n: int, seed: int, cfg: RunConfig) -> list[dict]:
    """A few sample replies for held-out prompts (demo / before-after)."""
    from llmgan.generator import generate_responses

    rows = rows.select(range(min(n, len(rows))))
    prompts = [list(m) for m in rows["prompt"]]
    texts = generate_responses(model, tok, prompts, max_new_tokens=cfg.generation.max_new_tokens,
                               temperature=0.8, top_p=0.95, seed=seed, progress=False)
    return [{"prompt": last_user_message(p), "real": r, "generated": t} for p, r, t in zip(prompts, rows["response"], texts)]


def warmup_discriminator(cfg: RunConfig, model, tok, train, discriminator, progress: bool = True, rank: int = 0) -> None:
    """0. Discriminator-only steps on the starting policy's samples, before the generator moves.

    Each process (`rank`) draws its own prompts; D's gradients are averaged over processes, so every
    process ends the warm-up with the same discriminator."""
    import torch

    from llmgan.generator import generate_responses

    n = cfg.discriminator.warmup_steps
    if n <= 0:
        return
    g = cfg.generation
    rng = torch.Generator().manual_seed(cfg.train.seed + 1 + 7919 * rank)
    for step in range(n):
        idx = torch.randperm(len(train), generator=rng)[: cfg.train.prompts_per_step].tolist()
        rows = train.select(idx)
        prompts = [list(m) for m in rows["prompt"] for _ in range(g.num_generations)]
        reals = [r for r in rows["response"] for _ in range(g.num_generations)]
        texts = generate_responses(model, tok, prompts, max_new_tokens=g.max_new_tokens, temperature=g.temperature,
                                   top_p=g.top_p, seed=cfg.train.seed * 100003 + step + 7919 * rank, progress=False,
                                   batch_size=len(prompts))
        m = discriminator.train_step(prompts=prompts, completions=texts, response=reals)
        if progress:
            print(f"  D warm-up {step + 1}/{n}: loss {m.get('discriminator/loss', float('nan')):.3f} "
                  f"acc {m.get('discriminator/accuracy', float('nan')):.2f}")
