"""Adversarial training: `llmgan train --config configs/<name>.yaml [key=value ...]`.

The generator (an instruction-tuned causal LM, LoRA by default) writes G completions per prompt.
The encoder (by default the frozen starting model, i.e. the policy with its LoRA adapters disabled)
turns real and synthetic responses into hidden states at one layer; the discriminator, a small
transformer encoder with a classifier head, is trained on them (BCE or GAD's Bradley-Terry loss,
k updates per generator update, a replay buffer of older fakes), and its score on the fresh fakes is
the generator's reward. The generator update is GRPO from TRL (`GRPOTrainer`): rewards normalised
within each prompt group, and a k3 KL penalty to the starting model (coefficient `train.beta`).

Each step, top to bottom (see `AdversarialGRPOTrainer` and `llmgan.rewards.DiscriminatorReward`):
  0. discriminator warm-up (once, before the generator moves)
  1. generate    G completions per prompt with the policy (TRL, HF generate on CPU)
  2. encode      real and synthetic responses with the encoder model (no LM head)
  3. discriminator update  k steps on real vs synthetic (+ replay)
  4. rewards and advantages  shaped D score, normalised per group (TRL)
  5. generator update  GRPO loss with the KL leash (TRL)
Each phase is timed (`timing/generate`, `timing/discriminator`, `timing/reference`, `timing/update`).

How it differs from the textbook GAN and from RLGAF: the discriminator never back-propagates into the
generator (text is discrete); the generator only sees a scalar reward per completion, and the KL term
keeps it near the starting model. `train.objective=embedding` instead reproduces the earlier
prototype's objective (D's loss back-propagated through the generator's encoding of its own text) as a
baseline; it has no policy gradient and no KL.

A run folder holds config.yaml (resolved), metrics.jsonl (namespaced keys), tensorboard/, samples/,
plots/*.png and checkpoint-N/ folders (adapter or full model, discriminator as safetensors,
optimizers, schedulers, RNG states, replay buffer), the newest marked complete by a COMPLETE file.
`--resume RUN` continues from the newest complete checkpoint.

One CPU: the shipped configs run the 135M default in float32 (`make demo` is a 12-step version).
One GPU: add `model.dtype=bfloat16` (and `model.gradient_checkpointing=true` for big models).
Many GPUs / nodes: `accelerate launch --config_file configs/accelerate/<ddp|zero2|zero3|fsdp>.yaml
-m llmgan train --config ...`; the discriminator's gradients are all-reduced so it stays identical on
every rank.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Optional

from llmgan.config import RunConfig, config_to_dict, load_config
from llmgan.errors import LlmganError

COMPLETE_MARKER = "COMPLETE"

# TRL metric name -> llmgan's namespaced name
TRL_METRIC_NAMES = {
    "kl": "generator/kl",
    "entropy": "generator/entropy",
    "reward": "generator/reward_mean",
    "reward_std": "generator/reward_std",
    "completions/mean_length": "generator/completion_length",
    "completions/clipped_ratio": "generator/clipped_ratio",
    "frac_reward_zero_std": "generator/frac_reward_zero_std",
    "loss": "generator/loss",
    "grad_norm": "generator/grad_norm",
    "learning_rate": "generator/learning_rate",
    "step_time": "timing/step",
}


# ---------------------------------------------------------------------------------------------
# Run folder helpers


def checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    run = Path(run_dir)
    found = [p for p in run.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    found.sort(key=lambda p: int(p.name.split("-")[-1]))
    return [p for p in found if (p / COMPLETE_MARKER).is_file()]


def latest_checkpoint(run_dir: str | Path) -> Optional[Path]:
    c = checkpoints(run_dir)
    return c[-1] if c else None


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _truncate_prompt(messages: list[dict], tokenizer, max_tokens: int) -> list[dict]:
    """Cut the last user message so it has at most `max_tokens` tokens (keeps its beginning)."""
    out = [dict(m) for m in messages]
    for m in reversed(out):
        if m["role"] == "user":
            ids = tokenizer(m["content"], add_special_tokens=False)["input_ids"]
            if len(ids) > max_tokens:
                m["content"] = tokenizer.decode(ids[:max_tokens])
            break
    return out


def load_train_dataset(cfg: RunConfig, tokenizer):
    """The training split as TRL expects it: `prompt` (messages) and `response` (the real reply)."""
    from llmgan.data import load_prepared

    if not cfg.data.path:
        raise LlmganError("data.path is empty: give the folder written by `llmgan prepare` (data.path=DIR)")
    ds = load_prepared(cfg.data.path)
    if cfg.data.train_split not in ds:
        raise LlmganError(f"split '{cfg.data.train_split}' not in {cfg.data.path}; splits: {', '.join(ds)}")
    train = ds[cfg.data.train_split]
    if cfg.data.max_train_samples:
        train = train.shuffle(seed=cfg.train.seed).select(range(min(len(train), cfg.data.max_train_samples)))
    train = train.select_columns(["prompt", "response"])
    n = cfg.data.max_prompt_tokens
    train = train.map(lambda r: {"prompt": _truncate_prompt(r["prompt"], tokenizer, n)})
    if len(train) < cfg.train.prompts_per_step:
        raise LlmganError(f"training split has {len(train)} rows, fewer than train.prompts_per_step={cfg.train.prompts_per_step}")
    eval_rows = ds[cfg.data.eval_split] if cfg.data.eval_split in ds else train
    return train, eval_rows


# ---------------------------------------------------------------------------------------------
# Model set-up


def build_policy(cfg: RunConfig):
    """Tokenizer and policy (peft LoRA model unless model.lora.enabled is false)."""
    from llmgan.models import load_model, load_tokenizer

    tok = load_tokenizer(cfg.model.name, trust_remote_code=cfg.model.trust_remote_code)
    model = load_model(cfg.model.name, dtype=cfg.model.dtype, trust_remote_code=cfg.model.trust_remote_code)
    if cfg.model.lora.enabled:
        from peft import LoraConfig, get_peft_model

        targets = cfg.model.lora.target_modules
        lora = LoraConfig(r=cfg.model.lora.r, lora_alpha=cfg.model.lora.alpha, lora_dropout=cfg.model.lora.dropout,
                          target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")],
                          task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
    return tok, model


def grpo_args(cfg: RunConfig, run_dir: Path):
    """TRL GRPOConfig from llmgan's config (one generation and one update per step)."""
    import torch
    from trl import GRPOConfig

    from llmgan.rewards import trl_scale_rewards

    t, g = cfg.train, cfg.generation
    on_gpu = torch.cuda.is_available()
    bf16 = cfg.model.dtype == "bfloat16" or (cfg.model.dtype == "auto" and on_gpu and torch.cuda.is_bf16_supported())
    return GRPOConfig(
        output_dir=str(run_dir),
        per_device_train_batch_size=t.prompts_per_step * g.num_generations,
        gradient_accumulation_steps=1,
        num_generations=g.num_generations,
        max_completion_length=g.max_new_tokens,
        temperature=g.temperature,
        top_p=g.top_p,
        top_k=0,
        beta=t.beta,
        learning_rate=t.lr,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=int(round(t.warmup_ratio * t.steps)),
        max_grad_norm=t.max_grad_norm,
        max_steps=t.steps,
        num_iterations=1,
        scale_rewards=trl_scale_rewards(cfg.reward),
        loss_type="dapo",
        logging_steps=t.log_every,
        save_strategy="steps",
        save_steps=t.save_every,
        save_total_limit=t.keep_checkpoints,
        seed=t.seed,
        data_seed=t.seed,
        report_to="none",
        disable_tqdm=True,
        use_cpu=not on_gpu,
        bf16=bf16,
        gradient_checkpointing=cfg.model.gradient_checkpointing,
        use_vllm=g.backend == "vllm",
        vllm_mode="colocate",
        log_completions=False,
        remove_unused_columns=False,
        save_only_model=False,
        dataloader_num_workers=0,
    )


def _make_trainer_class():
    """Build the GRPOTrainer subclass lazily (importing TRL is slow; `--help` must stay fast)."""
    from trl import GRPOTrainer

    class AdversarialGRPOTrainer(GRPOTrainer):
        """GRPOTrainer with the discriminator reward's state in checkpoints and per-phase timings.

        Only bookkeeping is overridden: generation, the loss and the update are TRL's.
        """

        def __init__(self, *args, disc_reward=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.disc_reward = disc_reward
            self._phase: dict[str, float] = {}
            self.last_samples: list[dict] = []

        # 1. generate (timed)
        def _generate(self, prompts):
            t0 = time.perf_counter()
            out = super()._generate(prompts)
            self._phase["generate"] = self._phase.get("generate", 0.0) + time.perf_counter() - t0
            return out

        # 2.-4. encode, discriminator update, rewards: inside the reward callable, which logs its own
        # metrics (discriminator/*, generator/reward_*, timing/encode, timing/discriminator) through TRL
        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            t0 = time.perf_counter()
            out = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            self._phase["reward"] = time.perf_counter() - t0
            texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
            self.last_samples = [{"prompt": p[-1]["content"] if isinstance(p, list) else p, "real": x.get("response", ""),
                                  "generated": t, "reward": float(r)}
                                 for p, x, t, r in zip(prompts, inputs, texts, out[:, 0].tolist())]
            return out

        def _generate_and_score_completions(self, inputs):
            self._phase = {}
            t0 = time.perf_counter()
            out = super()._generate_and_score_completions(inputs)
            total = time.perf_counter() - t0
            mode = "train" if self.model.training else "eval"
            gen, reward = self._phase.get("generate", 0.0), self._phase.get("reward", 0.0)
            self._metrics[mode]["timing/generate"].append(gen)
            # the rest of scoring is the reference (and old-policy) log-prob forward passes
            self._metrics[mode]["timing/reference"].append(max(total - gen - reward, 0.0))
            self._phase["scoring_total"] = total
            return out

        # 5. generator update (timed: the training step minus generation and scoring)
        def training_step(self, model, inputs, num_items_in_batch=None):
            t0 = time.perf_counter()
            loss = super().training_step(model, inputs, num_items_in_batch)
            self._metrics["train"]["timing/update"].append(
                max(time.perf_counter() - t0 - self._phase.get("scoring_total", 0.0), 0.0))
            return loss

        # checkpoints: TRL/transformers write the folder; we add the discriminator and mark it complete last
        def _save_checkpoint(self, model, trial):
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            try:
                super()._save_checkpoint(model, trial)
                if self.args.should_save:
                    self.disc_reward.save(folder / "discriminator")
                    (folder / COMPLETE_MARKER).write_text(str(self.state.global_step))
            except OSError as exc:
                prev = latest_checkpoint(folder.parent)
                raise LlmganError(f"could not write checkpoint {folder}: {exc.strerror or exc}; the previous "
                                  f"checkpoint {prev or '(none)'} is intact") from None

        def _load_optimizer_and_scheduler(self, checkpoint):
            super()._load_optimizer_and_scheduler(checkpoint)
            if checkpoint is not None:
                d = Path(checkpoint) / "discriminator"
                if not d.is_dir():
                    raise LlmganError(f"checkpoint {checkpoint} has no discriminator state")
                self.disc_reward.load(d)

    return AdversarialGRPOTrainer


def _make_logging_callback(run_dir: Path, total_steps: int, progress: bool):
    from transformers import TrainerCallback

    from llmgan.generator import write_rows

    class RunLogger(TrainerCallback):
        """metrics.jsonl + TensorBoard with namespaced keys, samples every N steps, a rich progress bar."""

        def __init__(self, sample_every: int):
            self.sample_every = sample_every
            self.trainer = None  # set after the trainer is built (for its last samples)
            self.metrics_path = run_dir / "metrics.jsonl"
            self.writer = None
            self.bar = None
            self.task = None

        def on_train_begin(self, args, state, control, **kw):
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"))
            if progress:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

                self.bar = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                    TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
                self.bar.start()
                self.task = self.bar.add_task("train", total=total_steps, completed=state.global_step, info="")

        def on_log(self, args, state, control, logs=None, **kw):
            if not logs or "train_runtime" in logs:
                return
            row = {"step": state.global_step}
            for k, v in logs.items():
                if not isinstance(v, (int, float)):
                    continue
                name = TRL_METRIC_NAMES.get(k, k if "/" in k else None)
                if name is not None:
                    row[name] = float(v)
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            for k, v in row.items():
                if k != "step" and math.isfinite(v):
                    self.writer.add_scalar(k, v, state.global_step)
            if self.bar is not None:
                info = (f"D acc {row.get('discriminator/accuracy', float('nan')):.2f}  "
                        f"reward {row.get('generator/reward_mean', float('nan')):+.3f}  "
                        f"KL {row.get('generator/kl', float('nan')):.4f}  "
                        f"len {row.get('generator/completion_length', float('nan')):.0f}")
                self.bar.update(self.task, completed=state.global_step, info=info)

        def on_step_end(self, args, state, control, **kw):
            last = getattr(self.trainer, "last_samples", None)
            if self.sample_every and state.global_step % self.sample_every == 0 and last:
                write_rows(last, run_dir / "samples" / f"step_{state.global_step:05d}.jsonl")

        def on_train_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.stop()
            if self.writer is not None:
                self.writer.close()

    return RunLogger


# ---------------------------------------------------------------------------------------------
# The adversarial run


def prepare_run_dir(cfg: RunConfig, resume: bool, overwrite: bool = False) -> Path:
    run_dir = Path(cfg.train.output_dir)
    if run_dir.exists() and any(run_dir.iterdir()) and not resume:
        if not overwrite:
            raise LlmganError(f"run folder {run_dir} exists; resume it with --resume {run_dir}, or pass --overwrite")
        shutil.rmtree(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        import yaml

        (run_dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    except OSError as exc:
        raise LlmganError(f"cannot write to run folder {run_dir}: {exc.strerror or exc}") from None
    return run_dir


def sample_eval(model, tok, rows, n: int, seed: int, cfg: RunConfig) -> list[dict]:
    """A few sample replies for held-out prompts (demo / before-after)."""
    from llmgan.generator import generate_responses

    rows = rows.select(range(min(n, len(rows))))
    prompts = [list(m) for m in rows["prompt"]]
    texts = generate_responses(model, tok, prompts, max_new_tokens=cfg.generation.max_new_tokens,
                               temperature=0.8, top_p=0.95, seed=seed, progress=False)
    return [{"prompt": p[-1]["content"], "real": r, "generated": t} for p, r, t in zip(prompts, rows["response"], texts)]


def warmup_discriminator(cfg: RunConfig, model, tok, train, disc_reward, progress: bool = True) -> None:
    """0. Discriminator-only steps on the starting policy's samples, before the generator moves."""
    import torch

    from llmgan.generator import generate_responses

    n = cfg.discriminator.warmup_steps
    if n <= 0:
        return
    g = cfg.generation
    rng = torch.Generator().manual_seed(cfg.train.seed + 1)
    for step in range(n):
        idx = torch.randperm(len(train), generator=rng)[: cfg.train.prompts_per_step].tolist()
        rows = train.select(idx)
        prompts = [list(m) for m in rows["prompt"] for _ in range(g.num_generations)]
        reals = [r for r in rows["response"] for _ in range(g.num_generations)]
        texts = generate_responses(model, tok, prompts, max_new_tokens=g.max_new_tokens, temperature=g.temperature,
                                   top_p=g.top_p, seed=cfg.train.seed * 100003 + step, progress=False,
                                   batch_size=len(prompts))
        m = disc_reward.train_step(prompts=prompts, completions=texts, response=reals)
        if progress:
            print(f"  D warm-up {step + 1}/{n}: loss {m.get('discriminator/loss', float('nan')):.3f} "
                  f"acc {m.get('discriminator/accuracy', float('nan')):.2f}")


def train(cfg: RunConfig, resume: bool = False, overwrite: bool = False, progress: bool = True) -> Path:
    """Run (or resume) adversarial training; returns the run folder."""
    cfg.validate()
    if cfg.train.objective == "embedding":
        from llmgan.embedding_objective import train_embedding

        return train_embedding(cfg, resume=resume, overwrite=overwrite, progress=progress)
    from transformers import set_seed

    from llmgan.discriminator import HiddenStateEncoder
    from llmgan.plots import plot_metrics
    from llmgan.rewards import DiscriminatorReward

    run_dir = prepare_run_dir(cfg, resume, overwrite)
    ckpt = latest_checkpoint(run_dir) if resume else None
    set_seed(cfg.train.seed)
    tok, model = build_policy(cfg)
    train_rows, eval_rows = load_train_dataset(cfg, tok)

    # the encoder reads hidden states; 'reference' = the policy with adapters disabled (a frozen copy of
    # the start model for full fine-tuning)
    encoder = HiddenStateEncoder.from_settings(cfg.discriminator, policy=model, tokenizer=tok,
                                               dtype=cfg.model.dtype, max_prompt_tokens=cfg.data.max_prompt_tokens,
                                               trust_remote_code=cfg.model.trust_remote_code)
    disc_reward = DiscriminatorReward(cfg.discriminator, cfg.reward, encoder, seed=cfg.train.seed)

    Trainer = _make_trainer_class()
    run_logger = _make_logging_callback(run_dir, cfg.train.steps, progress)(cfg.train.sample_every)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*loss_type.*")
        trainer = Trainer(model=model, reward_funcs=[disc_reward], args=grpo_args(cfg, run_dir),
                          train_dataset=train_rows, processing_class=tok,
                          callbacks=[run_logger], disc_reward=disc_reward)
    run_logger.trainer = trainer
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # our RunLogger prints (progress bar) and writes the metrics

    before = None
    if ckpt is None:
        if resume:
            print(f"no complete checkpoint in {run_dir}; starting from step 0")
        before = sample_eval(model, tok, eval_rows, 4, cfg.train.seed, cfg) if progress else None
        warmup_discriminator(cfg, model, tok, train_rows, disc_reward, progress)
    else:
        print(f"resuming from {ckpt}")
    try:
        trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    finally:
        plot_metrics(run_dir / "metrics.jsonl", run_dir / "plots")
    # final generator (adapter or full model) + discriminator, atomically
    final = run_dir / "final"
    tmp = run_dir / ".final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.model.save_pretrained(tmp / "generator", safe_serialization=True)
    tok.save_pretrained(tmp / "generator")
    disc_reward.save(tmp / "discriminator")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    if before is not None:
        after = sample_eval(trainer.model, tok, eval_rows, 4, cfg.train.seed, cfg)
        _write_json_atomic(run_dir / "samples_before_after.json", {"before": before, "after": after})
    return run_dir


# ---------------------------------------------------------------------------------------------
# CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config (see configs/); defaults when omitted")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.steps=20 data.path=DIR")
    p.add_argument("--resume", metavar="RUN", help="continue the run in folder RUN from its newest complete checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.resume:
        run_dir = Path(args.resume)
        cfg_file = run_dir / "config.yaml"
        if not cfg_file.is_file():
            raise LlmganError(f"{run_dir} is not a run folder (no config.yaml)")
        cfg = load_config(args.config or cfg_file, overrides + [f"train.output_dir={run_dir}"])
    else:
        cfg = load_config(args.config, overrides)
    run_dir = train(cfg, resume=bool(args.resume), overwrite=args.overwrite, progress=not args.quiet)
    print(f"run folder: {run_dir}  (metrics.jsonl, plots/, final/generator, final/discriminator)")
    return 0
