"""The stages around the adversarial steps that `train` and the embedding baseline share: the
discriminator's warm-up (step 0) and the before/after sample replies."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from llmgan.config import RunConfig
from llmgan.io import last_user_message

WARMUP_LOG = "warmup.jsonl"  # RUN/warmup.jsonl: the warm-up's discriminator metrics and held-out AUROC
HELDOUT_FILE = "heldout.jsonl"  # RUN/heldout.jsonl: D's held-out set (prompt, real, start-model sample)
POOL_FILE = "warmup_pool.jsonl"  # RUN/warmup_pool.jsonl: discriminator.warmup_pool's start-model samples


def sample_eval(model, tok, rows, n: int, seed: int, cfg: RunConfig) -> list[dict]:
    """A few sample replies for held-out prompts (demo / before-after)."""
    from llmgan.generator import generate_responses

    rows = rows.select(range(min(n, len(rows))))
    prompts = [list(m) for m in rows["prompt"]]
    texts = generate_responses(model, tok, prompts, max_new_tokens=cfg.generation.max_new_tokens,
                               temperature=0.8, top_p=0.95, seed=seed, progress=False)
    return [{"prompt": last_user_message(p), "real": r, "generated": t} for p, r, t in zip(prompts, rows["response"], texts)]


def heldout_set(cfg: RunConfig, model, tok, eval_rows, discriminator, run_dir: Optional[Path] = None,
                read_back: bool = True) -> Optional[tuple[list, list, list]]:
    """discriminator.heldout_size > 0: the first N rows of the held-out split, one start-model sample each at the
    training sampling (a fixed seed), set as D's held-out set; returns (prompts, fakes, reals) or None.
    With `run_dir` the samples are kept in RUN/heldout.jsonl and, with `read_back`, read back from there by a
    later call (a resumed run, a warm-up started again), so they are generated once per run. Several processes
    pass read_back=False: every rank then samples (the same seeded texts), as every rank must run the same
    generation calls."""
    n = min(cfg.discriminator.heldout_size, len(eval_rows)) if eval_rows is not None else 0
    if n <= 0:
        return None
    rows = eval_rows.select(range(n))
    prompts, reals = [list(m) for m in rows["prompt"]], list(rows["response"])
    mark = cfg.discriminator.mark_end  # the samples' cut flags only where D reads them
    fakes = start_model_samples(cfg, model, tok, prompts, reals, cfg.train.seed * 100003 + 4242,
                                Path(run_dir) / HELDOUT_FILE if run_dir is not None else None, read_back=read_back,
                                with_cut=mark)
    fakes, cut = fakes if mark else (fakes, None)
    discriminator.set_heldout(prompts, fakes, reals, cut)
    return prompts, fakes, reals


def start_model_samples(cfg: RunConfig, model, tok, prompts: list, reals: list, seed: int,
                        path: Optional[Path] = None, progress: bool = False, read_back: bool = True,
                        temperatures: Optional[list[float]] = None, with_cut: bool = False):
    """One sample per prompt at the training sampling, seeded. With `path` they are written there (JSONL:
    prompt, real, fake, `cut_at_cap` and `sampling`: the model, seed and generation settings that made them);
    with `read_back` too, a file there that holds the same prompts, real responses and sampling is read instead.
    temperatures: prompt i is sampled at temperatures[i % len], seed + that index, instead of at
    generation.temperature (discriminator.warmup_pool_temperatures; one temperature: one call, as before).
    Returns the texts; with_cut: (texts, cut), cut[i] True where sample i stopped at the token cap, and a file
    without those flags (written before they were kept) is sampled again rather than read."""
    from llmgan.generator import generate_responses, read_back_samples, write_samples

    g = cfg.generation
    temps = list(temperatures or []) or [g.temperature]
    sampling = {"model": str(cfg.model.name), "seed": seed, "temperature": temps[0] if len(temps) == 1 else temps,
                "top_p": g.top_p, "max_new_tokens": g.max_new_tokens}
    kept = read_back_samples(path, prompts, reals, sampling, text_key="fake", with_cut=True) if read_back else None
    if kept is not None and not (with_cut and None in kept[1]):
        return kept if with_cut else kept[0]
    fakes: list[str] = [""] * len(prompts)
    cut: list[bool] = [False] * len(prompts)
    for j, t in enumerate(temps):
        idx = list(range(j, len(prompts), len(temps)))
        part, part_cut = generate_responses(model, tok, [prompts[i] for i in idx], max_new_tokens=g.max_new_tokens,
                                            temperature=t, top_p=g.top_p, seed=seed + j, progress=progress,
                                            return_cut=True)
        for i, text, c in zip(idx, part, part_cut):
            fakes[i], cut[i] = text, c
    if path is not None:
        write_samples(path, prompts, reals, fakes, sampling, text_key="fake", cut=cut)
    return (fakes, cut) if with_cut else fakes


def warmup_discriminator(cfg: RunConfig, model, tok, train, discriminator, progress: bool = True, rank: int = 0,
                         eval_rows=None, run_dir: Optional[Path] = None) -> list[dict]:
    """0. Discriminator-only steps on the starting policy's samples, before the generator moves.

    Each warm-up step makes steps_per_generator_step AdamW updates of D on a batch of (prompt, start-model
    sample, real response) triples (replay included, as in the game): by default prompts_per_step x
    num_generations samples generated fresh for the step (`discriminator.train_step`); with
    discriminator.warmup_pool, warmup_batch triples from a pool of start-model samples drawn once
    (RUN/warmup_pool.jsonl) and encoded once (`discriminator.select`, `train_on`), in a new order every pass
    over it (a batch that spans two passes may hold one triple twice). Sampling and encoding are most of a
    fresh step on a CPU, so a pool buys many more D updates per minute, at the price of seeing each sample
    several times. The pool stays encoded on D's device for the warm-up (for a large encoder: pool x
    response tokens x hidden size floats, three times over with relevance negatives).

    Each process (`rank`) draws its own prompts; D's gradients are averaged over processes, so every
    process ends the warm-up with the same discriminator. With discriminator.heldout_size (and `eval_rows`,
    the held-out split): D's AUROC on a fixed held-out set every heldout_every steps, an early end once it
    stops rising (warmup_patience), and at the end the judge's strongest detector on the same texts
    (heldout_judge): the teacher should not be weaker than the judge. Rows go to RUN/warmup.jsonl, with
    each step's time split into timing/generate, timing/encode (fresh samples only; a pool's encoding is
    timing/pool_encode in the step-0 row) and timing/discriminator. With several processes nothing is read
    back from the run folder: every rank samples, so all of them run the same generation calls.
    At the end the warmed-up D goes to RUN/teacher/ (`llmgan.adversarial.teacher`), a reranker for
    `llmgan generate --best-of N --teacher RUN/teacher`."""
    import time

    import torch

    from llmgan.generator import generate_responses
    from llmgan.io import append_jsonl

    d = cfg.discriminator
    main_dir = Path(run_dir) if run_dir is not None and rank == 0 else None
    dist = torch.distributed
    single = not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)
    t0 = time.perf_counter()
    held = heldout_set(cfg, model, tok, eval_rows, discriminator, run_dir=main_dir, read_back=single)
    first = {"timing/heldout_samples": time.perf_counter() - t0}
    log: list[dict] = []

    def record(row: dict) -> None:
        log.append(row)
        if main_dir is not None:
            append_jsonl(main_dir / WARMUP_LOG, row)

    def check(step: int, m: dict) -> None:
        row = {"step": step, **{k: v for k, v in m.items() if k.startswith(("discriminator/", "timing/"))}}
        if held is not None and (step == 0 or (d.heldout_every and step % d.heldout_every == 0)):
            row["discriminator/heldout_auroc"] = discriminator.heldout_auroc()
        record(row)
        if progress and step:
            auc = row.get("discriminator/heldout_auroc")
            print(f"  D warm-up {step}/{d.warmup_steps}: loss {m.get('discriminator/loss', float('nan')):.3f} "
                  f"acc {m.get('discriminator/accuracy', float('nan')):.2f}" + (f" held-out AUROC {auc:.3f}" if auc else ""))

    g = cfg.generation
    rng = torch.Generator().manual_seed(cfg.train.seed + 1 + 7919 * rank)
    pool = None
    if d.warmup_pool and d.warmup_steps:
        t0 = time.perf_counter()
        idx = torch.randperm(len(train), generator=rng)[: d.warmup_pool].tolist()
        rows = train.select(idx)
        prompts, reals = [list(m) for m in rows["prompt"]], list(rows["response"])
        fakes = start_model_samples(cfg, model, tok, prompts, reals, cfg.train.seed * 100003 + 99991 + 7919 * rank,
                                    main_dir / POOL_FILE if main_dir is not None else None, progress=progress,
                                    read_back=single, temperatures=d.warmup_pool_temperatures, with_cut=d.mark_end)
        fakes, cut = fakes if d.mark_end else (fakes, None)  # the cut flags only where D reads them
        first["timing/pool_samples"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        # encoded once: the policy does not move during the warm-up, so its states of a text stay the same
        pool = discriminator.encode(prompts, fakes, reals, cut)
        first["timing/pool_encode"] = time.perf_counter() - t0
        if progress:
            at = f" at temperatures {d.warmup_pool_temperatures}" if d.warmup_pool_temperatures else ""
            print(f"  D warm-up pool: {len(fakes)} start-model samples{at} ({first['timing/pool_samples']:.0f} s), "
                  f"encoded ({first['timing/pool_encode']:.0f} s)")
    if held is not None or pool is not None:
        check(0, first)
    best = log[0]["discriminator/heldout_auroc"] if held is not None else -1.0  # before any update: the baseline
    stale, steps = 0, 0
    batch = d.warmup_batch or cfg.train.prompts_per_step * g.num_generations
    order: list[int] = []
    for step in range(d.warmup_steps):
        if pool is not None:
            while len(order) < batch:  # a new pass over the pool, in a new order
                order += torch.randperm(len(pool.fakes), generator=rng).tolist()
            take, order = order[:batch], order[batch:]
            check(step + 1, discriminator.train_on(discriminator.select(pool, take), metrics={"timing/generate": 0.0}))
        else:
            t0 = time.perf_counter()
            idx = torch.randperm(len(train), generator=rng)[: cfg.train.prompts_per_step].tolist()
            rows = train.select(idx)
            prompts = [list(m) for m in rows["prompt"] for _ in range(g.num_generations)]
            reals = [r for r in rows["response"] for _ in range(g.num_generations)]
            texts, cut = generate_responses(model, tok, prompts, max_new_tokens=g.max_new_tokens,
                                            temperature=g.temperature, top_p=g.top_p,
                                            seed=cfg.train.seed * 100003 + step + 7919 * rank,
                                            progress=False, batch_size=len(prompts), return_cut=True)
            generated = time.perf_counter() - t0
            check(step + 1, {**discriminator.train_step(prompts=prompts, completions=texts, response=reals,
                                                        cut=cut if d.mark_end else None),
                             "timing/generate": generated})
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
    if main_dir is not None:  # the warmed-up D, for `llmgan generate --best-of N --teacher RUN/teacher`
        from llmgan.adversarial.teacher import TEACHER_DIR, save_teacher

        end = log[-1] if log and log[-1].get("end_of_warmup") else {}
        save_teacher(cfg, discriminator, main_dir / TEACHER_DIR,
                     {"warmup_steps": steps, **{k: v for k, v in end.items() if k.startswith(("discriminator/", "judge/"))}})
    return log
