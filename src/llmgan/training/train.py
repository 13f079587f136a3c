"""Adversarial training: `llmgan train --config configs/<name>.yaml [key=value ...]`.

The generator (an instruction-tuned causal LM, LoRA by default) writes G completions per prompt.
The encoder (by default the frozen starting model, i.e. the policy with its LoRA adapters disabled)
turns real and synthetic responses into hidden states at one layer; the discriminator, a small
transformer encoder with a classifier head, is trained on them (BCE or GAD's Bradley-Terry loss,
k updates per generator update, a replay buffer of older fakes), and its score on the fresh fakes is
the generator's reward. The generator update is GRPO from TRL (`GRPOTrainer`): rewards normalised
within each prompt group, and a k3 KL penalty to the starting model (coefficient `train.beta`).

Each step, top to bottom (written out, in this order, in llmgan.training.trainer.AdversarialGRPOTrainer):
  0. discriminator warm-up (once, before the generator moves)
  1. generate    G completions per prompt with the policy (TRL, HF generate on CPU)
  2. encode      real and synthetic responses with the encoder model (no LM head)
  3. discriminator update  k steps on real vs synthetic (+ replay)
  4. rewards and advantages  shaped D score, normalised per group (TRL)
  5. generator update  GRPO loss with the KL leash (TRL)
Each phase is timed (`timing/generate`, `timing/encode`, `timing/discriminator`, `timing/reference`,
`timing/update`). `--help-config` lists every config key with its help and default.
After the last step, with `selection.enabled`, `llmgan select` scores the start model and every kept
checkpoint on the validation split and copies the hardest to detect to RUN/selected/generator (the last
generator is only a candidate: see `llmgan select --help`).

Other discriminators (docs/discriminator-options.md): `discriminator.architecture=lm` is GAD's, the start
model's own LM (its first `lm_layers` layers, LoRA) reading prompt and response as tokens, trained end to end;
`discriminator.mismatched_negatives` adds real replies read after the wrong post as fakes (relevance);
`discriminator.heldout_size` logs D's AUROC on a fixed held-out set and, with `warmup_patience`, warms D up
until it stops improving, then scores the same texts with llmgan evaluate's detectors (the teacher should
not be weaker than the judge); `discriminator.warmup_pool` warms D up on a pool of start-model samples drawn
once, pass after pass, instead of generating for every warm-up step; `data.response_cap_quantile` takes the
length caps from the data.
A train.sft_warm_start stage writes checkpoints too, and a resumed run continues it.

How it differs from the textbook GAN and from RLGAF: the discriminator never back-propagates into the
generator (text is discrete); the generator only sees a scalar reward per completion, and the KL term
keeps it near the starting model. `train.objective=embedding` instead reproduces the earlier
prototype's objective (D's loss back-propagated through the generator's encoding of its own text) as a
baseline; it has no policy gradient and no KL.

A run folder holds config.yaml (resolved), metrics.jsonl (namespaced keys), tensorboard/, samples/,
plots/*.png, faults.jsonl (steps skipped for NaN/Inf, with causes) and checkpoint-N/ folders (adapter
or full model, discriminator as safetensors, optimizers, schedulers, RNG states, replay buffer, a
COMPLETE marker). Checkpoints are written under .staging/ and renamed into place, so a run killed at
any moment (even SIGKILL) has only complete checkpoints; the last train.keep_checkpoints are kept.
`--resume RUN` continues from the newest complete checkpoint (`--checkpoint NAME` picks another; a
damaged one is reported by name with the previous one offered) and drops metrics and samples written
after it, so the resumed run matches an uninterrupted one. Ctrl-C (SIGINT) or SIGTERM: the current
step finishes, a checkpoint is written, exit code 130 (a second Ctrl-C stops at once). A step with a
NaN/Inf reward, loss or gradient is skipped and logged; train.max_consecutive_faults in a row stop
the run. See docs/reliability.md.

One CPU: the shipped configs run the 135M default in float32 (`make demo` is a 12-step version).
One GPU: add `model.dtype=bfloat16` (and `model.gradient_checkpointing=true` for big models).
Many GPUs / nodes: `accelerate launch --config_file configs/accelerate/<ddp|zero2|zero3|fsdp>.yaml
-m llmgan train --config ...`; the discriminator's gradients are all-reduced so it stays identical on
every rank.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any, Optional

from llmgan.config import RunConfig, load_config
from llmgan.errors import LlmganError
from llmgan.io import check_output_path
from llmgan.training.dataset import check_train_data, resolve_data_caps
from llmgan.training.runs import SFT_DIR, prepare_on_main, removed_if_nothing_kept


def train(cfg: RunConfig, resume: bool = False, overwrite: bool = False, progress: bool = True,
          checkpoint: Optional[str] = None) -> Path:
    """Run (or resume) adversarial training; returns the run folder.

    resume: continue `train.output_dir` from its newest complete checkpoint (or `checkpoint`, a name
    such as 'checkpoint-3'); metrics and samples past that step are dropped first, so the folder reads
    as one uninterrupted run. SIGINT/SIGTERM during training: the current step finishes, a checkpoint
    is written and `TrainingInterrupted` (a KeyboardInterrupt) is raised. The dataset is checked before
    the run folder is made and any model loads; a fresh run that fails before it kept anything (a metrics
    row, a checkpoint, a finished SFT stage) removes its folder, so a retry is not blocked.
    """
    cfg.validate()
    check_output_path(cfg.train.output_dir, kind="dir", what="train.output_dir")  # cheap checks first, then data
    check_train_data(cfg)
    if cfg.train.objective == "embedding":
        from llmgan.training.embedding_objective import train_embedding

        if checkpoint:
            raise LlmganError("--checkpoint needs train.objective=policy_gradient")
        return train_embedding(cfg, resume=resume, overwrite=overwrite, progress=progress)
    if checkpoint and not resume:
        raise LlmganError("--checkpoint goes with --resume RUN")
    # Under `accelerate launch` / torchrun this sets up the process group (gloo on CPU, NCCL on GPUs);
    # alone it is a single process. The main process alone touches the run folder.
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # cpu=True: gloo across CPU processes
    progress = progress and state.is_main_process
    run_dir, ckpt = prepare_on_main(state, cfg, resume, overwrite, checkpoint)
    with removed_if_nothing_kept(run_dir, fresh=not resume, main=state.is_main_process):
        return _run_stages(cfg, state, run_dir, ckpt, resume, progress)


def _run_stages(cfg: RunConfig, state: Any, run_dir: Path, ckpt: Optional[Path], resume: bool, progress: bool) -> Path:
    """SFT warm start (optional), build, D warm-up, the adversarial steps (TRL's loop), final models,
    before/after samples, selection (optional)."""
    import pickle

    import torch

    from llmgan.io import stderr_is_terminal, write_json, write_error
    from llmgan.models import quiet_libraries
    from llmgan.plots import plot_metrics
    from llmgan.training.components import build_components
    from llmgan.training.runs import latest_checkpoint, save_final
    from llmgan.training.stages import WARMUP_LOG, heldout_set, sample_eval, warmup_discriminator
    from llmgan.training.trainer import RunLogger, StopOnSignal, StopRequest, TrainingInterrupted

    main = state.is_main_process
    device = state.device if state.device.type != "cpu" else torch.device("cpu")
    # data.response_cap_quantile: generation and discriminator caps from the training responses (RUN/data_caps.json)
    cfg = resolve_data_caps(cfg, run_dir, write=main, progress=progress)
    if cfg.train.sft_warm_start:
        cfg = _sft_warm_start(cfg, run_dir, state, progress)
    # metrics.jsonl, TensorBoard, samples and progress: written once, by the main process (TRL averages the
    # logged metrics over processes, the discriminator averages its own)
    run_logger = RunLogger(run_dir, cfg.train.steps, cfg.train.sample_every, progress) if main else None
    stop = StopRequest()
    quiet = not (progress and stderr_is_terminal())  # library bars and FutureWarnings only when asked for
    parts = build_components(cfg, run_dir, device=device, quiet=quiet,
                             callbacks=[c for c in (run_logger, StopOnSignal(stop)) if c is not None])
    trainer, model, tok = parts.trainer, parts.policy, parts.tokenizer
    if run_logger is not None:
        run_logger.trainer = trainer

    before = None
    if ckpt is None:
        if resume and main:
            print(f"no complete checkpoint in {run_dir}; starting from step 0")
        before = sample_eval(model, tok, parts.eval_rows, 4, cfg.train.seed, cfg) if progress else None
        # 0. discriminator warm-up
        warmup_discriminator(cfg, model, tok, parts.train_rows, parts.discriminator, progress, rank=state.process_index,
                             eval_rows=parts.eval_rows, run_dir=run_dir)
    elif cfg.discriminator.heldout_size:
        # resumed: the same held-out set again (RUN/heldout.jsonl, else the same seeded samples), for
        # discriminator/heldout_auroc
        heldout_set(cfg, model, tok, parts.eval_rows, parts.discriminator, run_dir=run_dir if main else None,
                    read_back=state.num_processes == 1)
    if ckpt is not None and main:
        print(f"resuming from {ckpt}")
    # 1.-5. the adversarial steps: TRL's loop drives AdversarialGRPOTrainer (llmgan.training.trainer)
    stop.install()
    try:
        with quiet_libraries(quiet):
            trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    except pickle.UnpicklingError as exc:  # torch.load(weights_only=True) met something that is not plain tensors
        raise LlmganError(f"checkpoint {ckpt.name if ckpt else ''} holds a file that torch.load(weights_only=True) "
                          f"refuses to unpickle ({(str(exc).splitlines() or [''])[0][:200]}); it was not loaded: "
                          f"resume from another checkpoint (--checkpoint) or start again") from None
    finally:
        stop.restore()
        if run_logger is not None:
            run_logger.close()
            try:
                plot_metrics(run_dir / "metrics.jsonl", run_dir / "plots")
                if (run_dir / WARMUP_LOG).is_file():  # the warm-up's held-out AUROC (discriminator.heldout_size)
                    plot_metrics(run_dir / WARMUP_LOG, run_dir / "plots" / "warmup")
            except OSError as exc:
                print(f"warning: could not write plots: {write_error(exc, run_dir)}", file=sys.stderr)
    if stop.signum is not None:
        last = latest_checkpoint(run_dir)
        print(f"stopped by {signal.Signals(stop.signum).name} after step {trainer.state.global_step}; checkpoint "
              f"{last} written; continue with: llmgan train --resume {run_dir}", file=sys.stderr, flush=True)
        raise TrainingInterrupted(f"stopped after step {trainer.state.global_step}; checkpoint {last}")
    save_final(run_dir, trainer.model, tok, parts.discriminator, trainer=trainer)
    if before is not None:
        after = sample_eval(trainer.model, tok, parts.eval_rows, 4, cfg.train.seed, cfg)
        write_json(run_dir / "samples_before_after.json", {"before": before, "after": after})
    state.wait_for_everyone()
    if cfg.selection.enabled and main:
        from llmgan.training.selection import select

        del trainer, model, parts  # free the training models before the candidates are loaded
        select(run_dir, device=str(device), progress=progress)
    return run_dir


def _sft_warm_start(cfg: RunConfig, run_dir: Path, state: Any, progress: bool) -> RunConfig:
    """train.sft_warm_start: supervised fine-tuning first (RUN/sft, `llmgan sft` with this config), then the
    adversarial run starts from RUN/sft/final/generator, which is also its KL reference and (with
    encoder=reference) the discriminator's encoder. Done once: a resumed run reuses the finished SFT model,
    and an SFT stage cut short continues from its newest checkpoint (every train.save_every steps)."""
    import dataclasses

    from llmgan.training.sft import sft

    if state.num_processes > 1:
        raise LlmganError("train.sft_warm_start runs in a single process; with several processes run "
                          "`llmgan sft` first and pass its final/generator folder as model.name")
    sft_dir = run_dir / SFT_DIR
    generator = sft_dir / "final" / "generator"
    if not generator.is_dir():
        from llmgan.training.runs import latest_checkpoint

        resume = latest_checkpoint(sft_dir) is not None  # an SFT stage cut short continues from its checkpoint
        if progress:
            print(f"SFT warm start: {cfg.train.sft_steps} supervised steps into {sft_dir}"
                  + (f" (resuming from {latest_checkpoint(sft_dir).name})" if resume else ""))
        sft_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, output_dir=str(sft_dir),
                                                                     sft_warm_start=False))
        sft(sft_cfg, overwrite=sft_dir.exists() and not resume, progress=False, resume=resume)
    elif progress:
        print(f"SFT warm start: using {generator}")
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name=str(generator)))


# ---------------------------------------------------------------------------------------------
# CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config (see configs/); defaults when omitted")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.steps=20 data.path=DIR")
    p.add_argument("--resume", metavar="RUN", help="continue the run in folder RUN from its newest complete checkpoint")
    p.add_argument("--checkpoint", metavar="NAME",
                   help="with --resume: continue from this checkpoint (e.g. checkpoint-3) instead of the newest; "
                        "later checkpoints and metrics are dropped")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--help-config", action=_HelpConfig, help="list every config key with its default and help, and exit")


class _HelpConfig(argparse.Action):
    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from llmgan.config import config_help_text

        print(config_help_text())
        parser.exit()


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
    run_dir = train(cfg, resume=bool(args.resume), overwrite=args.overwrite, progress=not args.quiet,
                    checkpoint=args.checkpoint)
    from accelerate import PartialState

    if PartialState().is_main_process:  # the state train() set up: one line, not one per process
        print(f"run folder: {run_dir}  (metrics.jsonl, plots/, final/generator, final/discriminator)")
    return 0
