"""`train.objective=embedding`: the earlier prototype's objective, kept as a baseline.

The generator samples responses; the discriminator is trained on real vs synthetic features exactly
as in the policy-gradient path; then the discriminator's loss on the synthetic responses (label
"real") is back-propagated through the *generator's own encoding* of its already-decoded text into
the generator's weights. There is no policy gradient (the sampled tokens carry no gradient, so the
update only reshapes the generator's hidden states, not what it writes) and no KL term. The earlier
prototype saw the discriminator's loss rise while nothing about the text improved; this module lets
that be measured against `objective=policy_gradient` under the same data, discriminator and logging.

A plain PyTorch loop (TRL has no such objective): numbered steps, timed phases, the same run folder
layout and metrics names as `llmgan train`. `--resume` is not supported for this baseline. NaN/Inf
faults are handled as in `llmgan train` (the same FaultLog): a step with a non-finite discriminator loss or score, generator
loss or gradient norm does not update the generator, is logged (faults.jsonl, `faults/skipped_steps`),
and `train.max_consecutive_faults` such steps in a row stop the run with a clear error.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from llmgan.config import RunConfig
from llmgan.errors import LlmganError
from llmgan.training.runs import prepare_run_dir, removed_if_nothing_kept


def train_embedding(cfg: RunConfig, resume: bool = False, overwrite: bool = False, progress: bool = True) -> Path:
    """The baseline's run into train.output_dir; returns the run folder (see the module docstring)."""
    if resume:
        raise LlmganError("--resume supports train.objective=policy_gradient only (embedding is a short baseline)")
    run_dir = prepare_run_dir(cfg, resume=False, overwrite=overwrite)
    with removed_if_nothing_kept(run_dir, fresh=True):
        return _train_embedding(cfg, run_dir, progress)


def _train_embedding(cfg: RunConfig, run_dir: Path, progress: bool) -> Path:
    import torch
    import torch.nn.functional as F
    from torch.utils.tensorboard import SummaryWriter
    from transformers import set_seed

    from llmgan.adversarial.d_trainer import DiscriminatorTrainer
    from llmgan.adversarial.features import HiddenStateEncoder
    from llmgan.generator import generate_responses
    from llmgan.io import append_jsonl, last_user_message, write_error, write_json, write_rows
    from llmgan.models import build_policy
    from llmgan.plots import plot_metrics
    from llmgan.training.dataset import load_train_dataset
    from llmgan.training.runs import FaultLog, save_final
    from llmgan.training.stages import sample_eval, warmup_discriminator

    set_seed(cfg.train.seed)
    tok, model = build_policy(cfg)
    train_rows, eval_rows = load_train_dataset(cfg, tok)
    d, g, t = cfg.discriminator, cfg.generation, cfg.train
    feats = HiddenStateEncoder.from_settings(d, policy=model, tokenizer=tok, dtype=cfg.model.dtype,
                                             max_prompt_tokens=cfg.data.max_prompt_tokens)
    disc = DiscriminatorTrainer(d, cfg.reward, feats, seed=t.seed)
    # the generator encodes its own responses, with gradient (the prototype's design)
    own = HiddenStateEncoder(model, tok, layer=d.hidden_layer, condition_on_prompt=d.condition_on_prompt,
                             max_response_tokens=d.max_response_tokens, max_prompt_tokens=cfg.data.max_prompt_tokens,
                             mark_end=d.mark_end)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=t.lr)
    before = sample_eval(model, tok, eval_rows, 4, t.seed, cfg) if progress else None
    warmup_discriminator(cfg, model, tok, train_rows, disc, progress)

    writer = SummaryWriter(str(run_dir / "tensorboard"))
    rng = torch.Generator().manual_seed(t.seed)
    metrics_path = run_dir / "metrics.jsonl"
    faults = FaultLog(run_dir, t.max_consecutive_faults)
    try:
        for step in range(1, t.steps + 1):
            t_step = time.perf_counter()
            idx = torch.randperm(len(train_rows), generator=rng)[: t.prompts_per_step].tolist()
            rows = train_rows.select(idx)
            prompts = [list(m) for m in rows["prompt"] for _ in range(g.num_generations)]
            reals = [r for r in rows["response"] for _ in range(g.num_generations)]
            # 1. generate
            t0 = time.perf_counter()
            texts, cut = generate_responses(model, tok, prompts, max_new_tokens=g.max_new_tokens,
                                            temperature=g.temperature, top_p=g.top_p, seed=None, progress=False,
                                            batch_size=len(prompts), return_cut=True)
            cut = cut if d.mark_end else None  # read only by discriminator.mark_end
            t_gen = time.perf_counter() - t0
            # 2.-3. encode and discriminator update (identical to the policy-gradient path)
            m = disc.train_step(prompts=prompts, completions=texts, response=reals, cut=cut)
            # 4.-5. generator update: D's loss with label "real", back-propagated through the policy's encoding
            t0 = time.perf_counter()
            model.train()
            hidden, mask = own.encode(prompts, texts, requires_grad=True, cut=cut)
            disc.model.eval()
            logits = disc.model(hidden, mask)
            loss = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm)
            causes = list(disc.faults)
            if not torch.isfinite(loss):
                causes.append(f"generator loss is {loss.item()}")
            if not torch.isfinite(grad_norm):
                causes.append(f"generator gradient norm is {grad_norm.item()}")
            if causes:  # skip the update: the weights do not move
                faults.record(step, causes)
            else:
                faults.ok()
                opt.step()
            opt.zero_grad(set_to_none=True)
            disc.model.zero_grad(set_to_none=True)  # D is trained only by its own loss
            t_upd = time.perf_counter() - t0
            row = {"step": step, **{k: float(v) for k, v in m.items()},
                   "generator/loss": loss.item(), "generator/grad_norm": grad_norm.item(),
                   "generator/reward_mean": float(F.logsigmoid(logits.detach()).mean()),
                   "generator/completion_length": float(sum(map(len, tok(texts, add_special_tokens=False)["input_ids"])) / len(texts)),
                   "timing/generate": t_gen, "timing/update": t_upd, "timing/step": time.perf_counter() - t_step,
                   "faults/skipped_steps": float(faults.skipped)}
            try:
                append_jsonl(metrics_path, row)
            except OSError as exc:
                raise LlmganError(f"cannot write {metrics_path}: {write_error(exc, run_dir)}") from None
            for k, v in row.items():
                if k != "step" and math.isfinite(v):
                    writer.add_scalar(k, v, step)
            if t.sample_every and step % t.sample_every == 0:
                write_rows([{"prompt": last_user_message(p), "real": r, "generated": x} for p, r, x in zip(prompts, reals, texts)],
                           run_dir / "samples" / f"step_{step:05d}.jsonl")
            faults.check(step)
            if progress:
                print(f"step {step}/{t.steps}: D acc {row.get('discriminator/accuracy', float('nan')):.2f} "
                      f"G loss {row['generator/loss']:.3f} len {row['generator/completion_length']:.0f}")
    finally:
        writer.close()
        plot_metrics(metrics_path, run_dir / "plots")
    save_final(run_dir, model, tok, disc)
    if before is not None:
        after = sample_eval(model, tok, eval_rows, 4, t.seed, cfg)
        write_json(run_dir / "samples_before_after.json", {"before": before, "after": after})
    return run_dir

