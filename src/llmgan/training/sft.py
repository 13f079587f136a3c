"""Supervised fine-tuning baseline: `llmgan sft --config configs/<name>.yaml [key=value ...]`.

Trains the generator on the real responses (TRL `SFTTrainer`, loss on the response tokens only,
LoRA by default) for `train.sft_steps` steps with `train.prompts_per_step * generation.num_generations`
examples per step, so that it sees as many (prompt, response) pairs per step as adversarial training
sees completions. It is the baseline every adversarial result is compared against, and an optional
warm start: pass the SFT run's `final/generator` as `model.name` to `llmgan train` (a LoRA adapter
folder is merged into its base model when loaded).

The run folder holds config.yaml, metrics.jsonl (`sft/loss`, ..., `timing/step` and the Unix `time` of each
row), plots/ and final/generator.
One CPU: as shipped. One GPU: `model.dtype=bfloat16`. Many GPUs: `accelerate launch -m llmgan sft ...`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Optional

from llmgan.config import RunConfig, load_config
from llmgan.io import check_output_path
from llmgan.training.dataset import check_train_data, resolve_data_caps
from llmgan.training.runs import AtomicCheckpoints, prepare_run_dir, removed_if_nothing_kept, resume_point


def sft(cfg: RunConfig, overwrite: bool = False, progress: bool = True, resume: bool = False) -> Path:
    """Supervised fine-tuning into train.output_dir; returns the run folder. The dataset and the output
    folder are checked before any model loads; a run that fails before it kept anything leaves no folder.

    A checkpoint is written every train.save_every steps (atomically; the newest train.keep_checkpoints kept); `resume`
    continues the folder from it (metrics past it dropped first), so an interrupted SFT loses at most
    save_every steps."""
    cfg.validate()
    check_output_path(cfg.train.output_dir, kind="dir", what="train.output_dir")  # cheap checks first, then data
    check_train_data(cfg, heldout=False)  # SFT trains no D, so data without a validation split will do
    run_dir = prepare_run_dir(cfg, resume=resume, overwrite=overwrite)
    ckpt = resume_point(run_dir, None) if resume else None
    with removed_if_nothing_kept(run_dir, fresh=not resume):
        return _sft(cfg, run_dir, progress, ckpt)


def _sft(cfg: RunConfig, run_dir: Path, progress: bool, ckpt: Optional[Path] = None) -> Path:
    from transformers import TrainerCallback, set_seed
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTTrainer

    from llmgan.io import append_jsonl, stderr_is_terminal
    from llmgan.models import build_policy, quiet_libraries
    from llmgan.plots import plot_metrics
    from llmgan.training.dataset import load_train_dataset
    from llmgan.training.logprobs import plain_lm_head
    from llmgan.training.runs import save_final

    cfg = resolve_data_caps(cfg, run_dir, progress=progress)  # data.response_cap_quantile (RUN/data_caps.json)
    set_seed(cfg.train.seed)
    quiet = not (progress and stderr_is_terminal())  # library bars and FutureWarnings only when asked for
    with quiet_libraries(quiet):
        tok, model = build_policy(cfg)
        train_rows, _ = load_train_dataset(cfg, tok, heldout=False)
        train_rows = train_rows.map(lambda r: {"completion": [{"role": "assistant", "content": r["response"]}]},
                                    remove_columns=["response"])
        args = sft_args(cfg, run_dir, progress)
        metrics_path = run_dir / "metrics.jsonl"

        class Log(TrainerCallback):
            """metrics.jsonl: sft/* from TRL, the Unix `time` of the row and `timing/step` (seconds per
            step since the previous row)."""

            last = (0, 0.0)

            def on_train_begin(self, args, state, control, **kw):
                self.last = (state.global_step, time.perf_counter())

            def on_log(self, args, state, control, logs=None, **kw):
                if logs and "train_runtime" not in logs and args.should_save:
                    step, t0 = self.last
                    now = time.perf_counter()
                    self.last = (state.global_step, now)
                    append_jsonl(metrics_path, {"step": state.global_step, "time": time.time(),
                                                **{f"sft/{k}": float(v) for k, v in logs.items() if isinstance(v, (int, float))},
                                                "timing/step": (now - t0) / max(state.global_step - step, 1)})

        class ResumableSFTTrainer(AtomicCheckpoints, SFTTrainer):
            keep_checkpoints = cfg.train.keep_checkpoints

            # On the CPU only the response tokens go through the LM head (llmgan.training.logprobs says why:
            # TRL's tiled head projects every position there, and again in backward); TRL's path elsewhere
            def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
                if not (inputs["input_ids"].device.type == "cpu" and not return_outputs
                        and set(inputs) <= {"input_ids", "attention_mask", "labels"}
                        and self.args.loss_type == "nll" and self.compute_loss_func is None
                        and self.label_smoother is None and not self.aux_loss_enabled
                        and self.accelerator.num_processes == 1 and plain_lm_head(model)):
                    return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
                return cpu_sft_loss(self, model, inputs, num_items_in_batch)

        trainer = ResumableSFTTrainer(model=model, args=args, train_dataset=train_rows, processing_class=tok,
                                      callbacks=[Log()])
        if not progress:  # transformers prints every log dict when its bar is off; metrics.jsonl has them
            trainer.remove_callback(PrinterCallback)
        if ckpt is not None and progress:
            print(f"SFT: resuming from {ckpt}")
        trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    plot_metrics(metrics_path, run_dir / "plots")
    save_final(run_dir, trainer.model, tok, None, trainer=trainer)
    return run_dir


def cpu_sft_loss(trainer, model, inputs: dict, num_items_in_batch=None):
    """The SFT loss as TRL's SFTTrainer computes it (the negative log-likelihood of the response tokens, summed
    and divided by the step's token count), and its entropy / mean_token_accuracy / num_tokens metrics, with
    only the response positions through the LM head (`llmgan.training.logprobs.labelled_logps`)."""
    import torch

    from llmgan.training.logprobs import labelled_logps

    logps, entropy, top1 = labelled_logps(model, inputs["input_ids"], inputs["attention_mask"], inputs["labels"])
    tokens = logps.numel() if num_items_in_batch is None else num_items_in_batch
    loss = -logps.sum() / torch.as_tensor(tokens).clamp(min=1)
    metrics = getattr(trainer, "_metrics", None)
    if metrics is not None:
        mode = "train" if model.training else "eval"
        n = max(logps.numel(), 1)
        metrics[mode]["entropy"].append(float(entropy.sum()) / n)
        metrics[mode]["mean_token_accuracy"].append(float(top1.sum()) / n)
        if mode == "train" and hasattr(trainer, "_total_train_tokens"):
            trainer._total_train_tokens += int(inputs["attention_mask"].sum())
            metrics[mode]["num_tokens"] = [trainer._total_train_tokens]
    return loss


def sft_args(cfg: RunConfig, run_dir: Path, progress: bool = True):
    """TRL SFTConfig from llmgan's config: `train.prompts_per_step * generation.num_generations` pairs a step,
    loss on the response tokens only. Gradient checkpointing follows `model.gradient_checkpointing` (off by
    default), as in the adversarial stage; TRL's SFTConfig would turn it on. With llmgan's CPU loss
    (`cpu_sft_loss`) a reply-shaped SFT step took 5.6 s without it and 8.1 s with it, the same loss
    (bench/bench_update.py, BENCHMARKS.md)."""
    import torch
    from trl import SFTConfig

    on_gpu = torch.cuda.is_available()
    return SFTConfig(
        output_dir=str(run_dir), per_device_train_batch_size=cfg.train.prompts_per_step * cfg.generation.num_generations,
        max_steps=cfg.train.sft_steps, learning_rate=cfg.train.sft_lr or cfg.train.lr,
        lr_scheduler_type=cfg.train.sft_lr_scheduler or cfg.train.lr_scheduler,
        warmup_steps=int(round(cfg.train.warmup_ratio * cfg.train.sft_steps)), max_grad_norm=cfg.train.max_grad_norm, logging_steps=cfg.train.log_every,
        save_strategy="steps", save_steps=cfg.train.save_every, save_only_model=False, seed=cfg.train.seed, data_seed=cfg.train.seed, report_to="none", disable_tqdm=not progress,
        use_cpu=not on_gpu, bf16=cfg.model.dtype == "bfloat16", completion_only_loss=True,
        gradient_checkpointing=cfg.model.gradient_checkpointing,
        max_length=cfg.data.max_prompt_tokens + cfg.generation.max_new_tokens * 2, dataloader_num_workers=0)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config (see configs/); defaults when omitted")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.sft_steps=50 data.path=DIR")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--resume", action="store_true", help="continue train.output_dir from its newest checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, list(args.overrides))
    run_dir = sft(cfg, overwrite=args.overwrite, progress=not args.quiet, resume=args.resume)
    print(f"run folder: {run_dir}  (final/generator is the SFT model; use it as model.name to warm-start llmgan train)")
    return 0
