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
After the last step, with `selection.enabled`, `llmgan select` scores the start model and every kept
checkpoint on the validation split and copies the hardest to detect to RUN/selected/generator (the last
generator is only a candidate: see llmgan.selection).

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
import errno
import json
import math
import os
import pickle
import shutil
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Optional

from llmgan.config import RunConfig, config_to_dict, load_config
from llmgan.errors import LlmganError

COMPLETE_MARKER = "COMPLETE"
STAGING_DIR = ".staging"  # checkpoints are written here, then renamed into the run folder
LLMGAN_STATE_FILE = "llmgan_state.json"  # fault counters saved with each checkpoint

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


def checkpoint_step(path: str | Path) -> int:
    return int(Path(path).name.split("-")[-1])


def clean_incomplete_checkpoints(run_dir: str | Path) -> list[str]:
    """Remove what an interrupted save left: the staging folder and checkpoint folders without COMPLETE
    (written by older versions, which saved in place). Returns the names removed."""
    run = Path(run_dir)
    removed = []
    staging = run / STAGING_DIR
    if staging.exists():
        shutil.rmtree(staging, ignore_errors=True)
        removed.append(STAGING_DIR)
    for p in run.glob("checkpoint-*"):
        if p.is_dir() and not (p / COMPLETE_MARKER).is_file():
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    return removed


def rotate_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Keep the newest `keep` complete checkpoints; delete older ones (and incomplete leftovers)."""
    clean_incomplete_checkpoints(run_dir)
    for old in checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def _check_safetensors(path: Path) -> None:
    """The header parses and the file is as long as the header says (a truncated file is not)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError("shorter than a safetensors header")
        n = int.from_bytes(head, "little")
        if n > size - 8:
            raise ValueError("truncated header")
        header = json.loads(f.read(n))
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != size:
        raise ValueError(f"{size} bytes, the header needs {8 + n + end} (truncated)")


def _check_torch_zip(path: Path) -> None:
    """A torch.save file (zip format): its index is readable and every entry lies inside the file."""
    import zipfile

    size = path.stat().st_size
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if info.header_offset + info.compress_size > size:
                raise ValueError(f"entry {info.filename} runs past the end of the file (truncated)")


def check_checkpoint(path: str | Path) -> None:
    """Raise LlmganError naming the first file of checkpoint `path` that cannot be read.

    Checks without loading tensors: safetensors headers and lengths, torch zip indexes, JSON syntax;
    catches truncated and corrupted files (a disk that filled up, a copy cut short).
    """
    import zipfile

    path = Path(path)
    for f in sorted(q for q in path.rglob("*") if q.is_file()):
        try:
            if f.suffix == ".safetensors":
                _check_safetensors(f)
            elif f.suffix in (".pt", ".pth", ".bin"):
                _check_torch_zip(f)
            elif f.suffix == ".json":
                json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError, KeyError, TypeError, IndexError, zipfile.BadZipFile) as exc:
            why = "not a complete zip archive" if isinstance(exc, zipfile.BadZipFile) else (str(exc).splitlines() or [type(exc).__name__])[0]
            raise LlmganError(f"checkpoint {path.name} cannot be loaded: {f.relative_to(path)} is damaged ({why})") from None


def resume_checkpoint(run_dir: str | Path, name: Optional[str] = None) -> Optional[Path]:
    """The checkpoint `--resume` continues from: `name` (e.g. checkpoint-3) or the newest complete one.

    It is checked first (`check_checkpoint`); a damaged one is reported by name, with the previous
    complete checkpoint offered. None when the run has no complete checkpoint (and no name was given).
    """
    run = Path(run_dir)
    found = checkpoints(run)
    if name:
        if Path(name).name != name:
            raise LlmganError(f"--checkpoint takes a checkpoint name such as checkpoint-3, not a path (got {name})")
        chosen = run / name
        if chosen not in found:
            raise LlmganError(f"{name} is not a complete checkpoint of {run}; complete checkpoints: "
                              f"{', '.join(p.name for p in found) or '(none)'}")
    elif not found:
        return None
    else:
        chosen = found[-1]
    try:
        check_checkpoint(chosen)
    except LlmganError as exc:
        earlier = [p for p in found if checkpoint_step(p) < checkpoint_step(chosen)]
        offer = (f"; resume from the previous checkpoint with: llmgan train --resume {run} --checkpoint {earlier[-1].name}"
                 if earlier else "; there is no earlier complete checkpoint: start again with --overwrite")
        raise LlmganError(f"{exc}{offer}") from None
    return chosen


def _write_errors() -> tuple:
    errors: list = [OSError, RuntimeError]  # torch.save reports a full disk as a RuntimeError
    try:
        from safetensors import SafetensorError

        errors.append(SafetensorError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


WRITE_ERRORS = _write_errors()
"""What a failed write raises: OSError (open/write/rename), RuntimeError (torch.save), SafetensorError."""


def is_write_error(exc: BaseException) -> bool:
    """A failed write: one of WRITE_ERRORS, or the plain Exception that Rust-backed savers (tokenizers)
    raise with an 'os error N' message."""
    if isinstance(exc, WRITE_ERRORS):
        return True
    return type(exc) is Exception and "os error" in str(exc)


def write_error(exc: BaseException, folder: Path) -> str:
    """One line on why a write into `folder` failed, with the free space left there."""
    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else (str(exc).splitlines() or [type(exc).__name__])[0]
    try:
        free = shutil.disk_usage(folder).free
        why += f" (free space there: {free / 2**20:.0f} MiB)"
    except OSError:
        pass
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        why += "; free some space"
    elif isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        why += "; the folder is not writable"
    return why


def _rewrite_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def truncate_run_logs(run_dir: str | Path, step: int) -> None:
    """Make the run folder read as one clean run up to `step` (the checkpoint resumed from): rows of
    metrics.jsonl and faults.jsonl past it (written before an interruption) and a half-written last
    line are dropped (atomically), samples past it are removed."""
    run = Path(run_dir)
    for name in ("metrics.jsonl", "faults.jsonl"):
        path = run / name
        if not path.is_file():
            continue
        keep = []
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut short by the interruption
            if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
                keep.append(line + "\n")
        _rewrite_atomic(path, "".join(keep))
    for sample in (run / "samples").glob("step_*.jsonl"):
        digits = sample.stem.split("_")[-1]
        if digits.isdigit() and int(digits) > step:
            sample.unlink()


def _write_json_atomic(path: Path, data: Any) -> None:
    _rewrite_atomic(path, json.dumps(data, indent=2))


def _truncate_prompt(messages: list[dict], tokenizer, max_tokens: int) -> list[dict]:
    """Cut the last user message so it has at most `max_tokens` tokens (keeps its beginning).

    The cut text is tokenized again by the trainer, so it must still fit then: a cut inside a character
    (a byte-level token holding half of it decodes to U+FFFD, which takes more tokens) moves back to the
    previous character boundary.
    """
    out = [dict(m) for m in messages]
    for m in reversed(out):
        if m["role"] == "user":
            content = m["content"]
            ids = tokenizer(content, add_special_tokens=False)["input_ids"]
            if len(ids) > max_tokens:
                text = ""
                for keep in range(max_tokens, 0, -1):
                    cand = tokenizer.decode(ids[:keep])
                    if "\ufffd" in cand and "\ufffd" not in content:
                        continue
                    if len(tokenizer(cand, add_special_tokens=False)["input_ids"]) <= max_tokens:
                        text = cand
                        break
                m["content"] = text
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
    if g.backend == "vllm" and not on_gpu:
        raise LlmganError("generation.backend=vllm needs a CUDA GPU (vLLM does not run on this machine's CPU); "
                          "use generation.backend=hf")
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
        save_total_limit=None,  # rotation is llmgan's, after a checkpoint is complete (AdversarialGRPOTrainer)
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
        # every trainable parameter takes part in each forward (LoRA or full); False also lets DDP work with
        # gradient checkpointing
        ddp_find_unused_parameters=False,
    )


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT/SIGTERM after writing a checkpoint (the CLI exits with code 130)."""


class _StopRequest:
    """SIGINT/SIGTERM handler: the first signal asks the trainer to finish its step, write a checkpoint and
    stop; a second one stops at once (KeyboardInterrupt). Installed only around the training loop, only
    from the main thread; the previous handlers are put back afterwards."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: Optional[int] = None
        self._previous: dict = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for s in self.SIGNALS:
            self._previous[s] = signal.getsignal(s)
            signal.signal(s, self._handle)

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            self.restore()
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\n{signal.Signals(signum).name} received: finishing this step, then writing a checkpoint and "
              "stopping (send it again to stop at once, without a checkpoint)", file=sys.stderr, flush=True)


def _make_stop_callback(request: _StopRequest):
    from transformers import TrainerCallback

    class StopOnSignal(TrainerCallback):
        """After the step during which a signal arrived: save a checkpoint and end training."""

        def on_step_end(self, args, state, control, **kw):
            if request.signum is not None:
                control.should_save = True
                control.should_training_stop = True

    return StopOnSignal()


def _clock() -> float:
    """perf_counter after the GPU has finished its queued work (CUDA runs asynchronously, so phase timings
    would otherwise land in whichever phase next waits for the GPU)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()


def _make_trainer_class():
    """Build the GRPOTrainer subclass lazily (importing TRL is slow; `--help` must stay fast)."""
    import torch
    from trl import GRPOTrainer

    class AdversarialGRPOTrainer(GRPOTrainer):
        """GRPOTrainer with the discriminator reward's state in checkpoints, per-phase timings, atomic
        checkpoints and NaN/Inf fault handling.

        Only bookkeeping is overridden: generation, the loss and the update are TRL's.

        Checkpoints: TRL/transformers write `checkpoint-N` inside `<run>/.staging/`; the discriminator's
        state, the fault counters and a COMPLETE marker are added, then the folder is renamed into the run
        folder (an atomic rename on one file system), and only then are old checkpoints rotated away. A
        run killed at any moment has only complete checkpoints in its folder.

        Faults: a step in which a reward, the discriminator's or the generator's loss, or the generator's
        gradient norm is NaN/Inf is skipped (gradients dropped before the optimizer step, so the weights
        do not move), printed and logged with its cause (faults.jsonl, `faults/skipped_steps`); after
        `max_consecutive_faults` such steps in a row the run stops with an LlmganError.
        """

        def __init__(self, *args, disc_reward=None, keep_checkpoints: int = 2, max_consecutive_faults: int = 5,
                     **kwargs):
            super().__init__(*args, **kwargs)
            self.disc_reward = disc_reward
            self.keep_checkpoints = keep_checkpoints
            self.max_consecutive_faults = max_consecutive_faults
            self.skipped_steps = 0
            self.consecutive_faults = 0
            self._faults: list[str] = []
            self._staging: Optional[str] = None
            self._phase: dict[str, float] = {}
            self.last_samples: list[dict] = []

        # 1. generate (timed)
        def _generate(self, prompts):
            t0 = _clock()
            out = super()._generate(prompts)
            self._phase["generate"] = self._phase.get("generate", 0.0) + _clock() - t0
            return out

        # 2.-4. encode, discriminator update, rewards: inside the reward callable, which logs its own
        # metrics (discriminator/*, generator/reward_*, timing/encode, timing/discriminator) through TRL
        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            t0 = _clock()
            out = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            self._phase["reward"] = _clock() - t0
            self._faults += list(getattr(self.disc_reward, "faults", None) or [])
            bad = ~torch.isfinite(out)
            if bad.any():
                names = [n for i, n in enumerate(self.reward_func_names) if bad[:, i].any()]
                self._faults.append(f"reward is NaN/Inf for {int(bad.any(dim=1).sum())} of {out.shape[0]} "
                                    f"completions ({', '.join(names)})")
                out = torch.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)  # the step is skipped anyway
            texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
            self.last_samples = [{"prompt": p[-1]["content"] if isinstance(p, list) else p, "real": x.get("response", ""),
                                  "generated": t, "reward": float(r)}
                                 for p, x, t, r in zip(prompts, inputs, texts, out[:, 0].tolist())]
            return out

        def _generate_and_score_completions(self, inputs):
            self._phase = {}
            t0 = _clock()
            out = super()._generate_and_score_completions(inputs)
            total = _clock() - t0
            mode = "train" if self.model.training else "eval"
            gen, reward = self._phase.get("generate", 0.0), self._phase.get("reward", 0.0)
            self._metrics[mode]["timing/generate"].append(gen)
            # the rest of scoring is the reference (and old-policy) log-prob forward passes
            self._metrics[mode]["timing/reference"].append(max(total - gen - reward, 0.0))
            self._phase["scoring_total"] = total
            return out

        # 5. generator update (timed: the training step minus generation and scoring)
        def training_step(self, model, inputs, num_items_in_batch=None):
            self._faults = []
            t0 = _clock()
            loss = super().training_step(model, inputs, num_items_in_batch)
            self._metrics["train"]["timing/update"].append(
                max(_clock() - t0 - self._phase.get("scoring_total", 0.0), 0.0))
            if not bool(torch.isfinite(loss.detach()).all()):
                self._faults.append(f"generator loss is {float(loss.detach().float().mean())}")
            return loss

        # faults: decided after backward, before the optimizer step (transformers calls this every step)
        def _get_grad_norm(self, model, grad_norm=None):
            grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
            value = float(grad_norm) if grad_norm is not None else 0.0
            if not math.isfinite(value):
                self._faults.append(f"generator gradient norm is {value}")
            if self.accelerator.num_processes > 1:  # every rank must take the same decision, or weights diverge
                flag = torch.tensor([1.0 if self._faults else 0.0], device=self.accelerator.device)
                if self.accelerator.reduce(flag, reduction="sum").item() > 0 and not self._faults:
                    self._faults.append("a NaN/Inf value on another process")
            if self._faults:
                model.zero_grad(set_to_none=True)  # the optimizer step that follows has nothing to apply
                self._record_fault()
            else:
                self.consecutive_faults = 0
            return grad_norm

        def _record_fault(self) -> None:
            step = self.state.global_step + 1
            causes = list(dict.fromkeys(self._faults))
            self._faults = []
            self.skipped_steps += 1
            self.consecutive_faults += 1
            run_dir = Path(self.args.output_dir)
            if self.args.should_save:
                print(f"step {step} skipped (weights not updated): {'; '.join(causes)}", file=sys.stderr, flush=True)
                try:
                    with open(run_dir / "faults.jsonl", "a") as f:
                        f.write(json.dumps({"step": step, "causes": causes,
                                            "consecutive": self.consecutive_faults}) + "\n")
                except OSError as exc:
                    raise LlmganError(f"cannot write to run folder {run_dir}: {exc.strerror or exc}") from None
            if self.consecutive_faults >= self.max_consecutive_faults:
                last = latest_checkpoint(run_dir)
                raise LlmganError(
                    f"stopped at step {step}: {self.consecutive_faults} consecutive steps had NaN/Inf values "
                    f"(train.max_consecutive_faults={self.max_consecutive_faults}; last cause: {'; '.join(causes)}; "
                    f"all causes in {run_dir / 'faults.jsonl'}). The weights were not updated by those steps; "
                    f"{f'the newest checkpoint is {last}' if last else 'no checkpoint was written yet'}. Try a lower "
                    f"train.lr or discriminator.lr, train.max_grad_norm, or check the data")

        def log(self, logs, start_time=None):
            if "train_runtime" not in logs:
                logs["faults/skipped_steps"] = float(self.skipped_steps)
            super().log(logs, start_time)

        # checkpoints: written under .staging/, completed with the discriminator and a marker, then renamed
        def _get_output_dir(self, trial):
            return self._staging if self._staging is not None else super()._get_output_dir(trial)

        def _save_checkpoint(self, model, trial):
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            run_dir = Path(super()._get_output_dir(trial=trial))
            name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            staging, target = run_dir / STAGING_DIR, run_dir / name
            main = self.args.should_save
            try:
                if main:
                    shutil.rmtree(staging, ignore_errors=True)
                    staging.mkdir(parents=True)
                self.accelerator.wait_for_everyone()
                self._staging = str(staging)
                try:
                    super()._save_checkpoint(model, trial)
                finally:
                    self._staging = None
                self.accelerator.wait_for_everyone()  # every rank's files (RNG states) are in place
                if main:
                    folder = staging / name
                    self.disc_reward.save(folder / "discriminator")
                    (folder / LLMGAN_STATE_FILE).write_text(json.dumps(
                        {"skipped_steps": self.skipped_steps, "consecutive_faults": self.consecutive_faults}))
                    (folder / COMPLETE_MARKER).write_text(str(self.state.global_step))
                    if target.exists():  # a checkpoint of the same step from before a resume: replace it
                        os.replace(target, staging / f"replaced-{name}")
                    os.replace(folder, target)
                    shutil.rmtree(staging, ignore_errors=True)
                    rotate_checkpoints(run_dir, self.keep_checkpoints)
            except Exception as exc:
                if not is_write_error(exc):
                    raise
                shutil.rmtree(staging, ignore_errors=True)
                prev = latest_checkpoint(run_dir)
                raise LlmganError(f"could not write checkpoint {target.name} in {run_dir}: {write_error(exc, run_dir)}; "
                                  f"the previous checkpoint {prev.name if prev else '(none)'} is intact") from None
            self.accelerator.wait_for_everyone()

        def _load_optimizer_and_scheduler(self, checkpoint):
            super()._load_optimizer_and_scheduler(checkpoint)
            if checkpoint is not None:
                d = Path(checkpoint) / "discriminator"
                if not d.is_dir():
                    raise LlmganError(f"checkpoint {checkpoint} has no discriminator state")
                self.disc_reward.load(d)
                state_file = Path(checkpoint) / LLMGAN_STATE_FILE
                if state_file.is_file():
                    state = json.loads(state_file.read_text())
                    self.skipped_steps = int(state.get("skipped_steps", 0))
                    self.consecutive_faults = int(state.get("consecutive_faults", 0))

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

            # on resume, TensorBoard drops the events past the checkpoint (written before an interruption)
            self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=state.global_step + 1 if state.global_step else None)
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
            try:
                with open(self.metrics_path, "a") as f:
                    f.write(json.dumps(row) + "\n")
            except OSError as exc:
                raise LlmganError(f"cannot write {self.metrics_path}: {write_error(exc, run_dir)}; the newest "
                                  f"checkpoint {latest_checkpoint(run_dir) or '(none)'} is intact") from None
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
                try:
                    write_rows(last, run_dir / "samples" / f"step_{state.global_step:05d}.jsonl")
                except OSError as exc:
                    raise LlmganError(f"cannot write samples to {run_dir / 'samples'}: {write_error(exc, run_dir)}; "
                                      f"the newest checkpoint {latest_checkpoint(run_dir) or '(none)'} is intact") from None

        def on_train_end(self, args, state, control, **kw):
            self.close()

        def close(self) -> None:
            """Stop the progress bar and flush TensorBoard (also after an error or an interruption)."""
            if self.bar is not None:
                self.bar.stop()
                self.bar = None
            if self.writer is not None:
                try:
                    self.writer.close()
                except OSError:
                    pass
                self.writer = None

    return RunLogger


# ---------------------------------------------------------------------------------------------
# The adversarial run


RUN_FOLDER_ENTRIES = ("config.yaml", "metrics.jsonl", "faults.jsonl", "tensorboard", "plots", "samples", "final", "sft",
                      "selection", "selected",
                      "samples_before_after.json", "README.md", "completions", STAGING_DIR, ".final.tmp")
"""What `llmgan train` (and TRL: README.md model card) writes at the top of a run folder, besides checkpoint-N."""


def _is_run_entry(name: str) -> bool:
    return (name in RUN_FOLDER_ENTRIES or name.startswith("checkpoint-")
            or (name.startswith(".") and name.endswith(".tmp")))  # atomic-write temporaries


def prepare_run_dir(cfg: RunConfig, resume: bool, overwrite: bool = False) -> Path:
    """Create (or reuse with `resume`) the run folder `train.output_dir` and write the resolved config.

    Every file a run writes has a fixed name inside this folder: no other config value becomes part of
    a path that is written. `overwrite` deletes the folder only when everything in it is something a
    run writes (so a mistyped train.output_dir=. or a data folder is never deleted).
    """
    run_dir = Path(cfg.train.output_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise LlmganError(f"train.output_dir {run_dir} is a file, not a folder")
    if run_dir.exists() and any(run_dir.iterdir()) and not resume:
        if not overwrite:
            raise LlmganError(f"run folder {run_dir} exists; resume it with --resume {run_dir}, or pass --overwrite")
        foreign = sorted(p.name for p in run_dir.iterdir() if not _is_run_entry(p.name))
        if foreign or not (run_dir / "config.yaml").is_file():
            raise LlmganError(f"refusing to --overwrite {run_dir}: it is not an llmgan run folder "
                              f"({'it holds ' + ', '.join(foreign[:5]) if foreign else 'no config.yaml'}); "
                              "delete it yourself or choose another train.output_dir")
        shutil.rmtree(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        import yaml

        _rewrite_atomic(run_dir / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    except OSError as exc:
        raise LlmganError(f"cannot write to run folder {run_dir}: {write_error(exc, run_dir.parent)}") from None
    return run_dir


def check_context_length(cfg: RunConfig, model, tokenizer, rows) -> None:
    """The longest (truncated, templated) training prompt plus generation.max_new_tokens must fit the
    model's context; otherwise one clear error before training starts."""
    from llmgan.discriminator import unwrap_model
    from llmgan.models import apply_chat

    config = getattr(unwrap_model(model), "config", None)
    context = getattr(config, "max_position_embeddings", None) if config is not None else None
    if not isinstance(context, int) or not len(rows):
        return
    prompts = [list(m) for m in rows["prompt"]]
    # cheap bound first: the template around an empty user message, plus the cut user message (+2 tokens
    # of slack for merges at the joins); only when that does not fit are all prompts measured
    frames = {json.dumps([m for m in p if m["role"] != "user"]): p for p in prompts}
    empty = [[dict(m, content="") if m["role"] == "user" else m for m in p] for p in frames.values()]
    base = max(len(ids) for ids in tokenizer(apply_chat(tokenizer, empty), add_special_tokens=False)["input_ids"])
    if base + cfg.data.max_prompt_tokens + 2 + cfg.generation.max_new_tokens <= context:
        return
    texts = apply_chat(tokenizer, prompts)
    longest = max(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
    need = longest + cfg.generation.max_new_tokens
    if need > context:
        raise LlmganError(f"the longest training prompt ({longest} tokens with the chat template, after cutting the "
                          f"user message to data.max_prompt_tokens={cfg.data.max_prompt_tokens}) plus "
                          f"generation.max_new_tokens={cfg.generation.max_new_tokens} is {need} tokens, more than the "
                          f"model's context of {context}; lower data.max_prompt_tokens or generation.max_new_tokens")


def sample_eval(model, tok, rows, n: int, seed: int, cfg: RunConfig) -> list[dict]:
    """A few sample replies for held-out prompts (demo / before-after)."""
    from llmgan.generator import generate_responses

    rows = rows.select(range(min(n, len(rows))))
    prompts = [list(m) for m in rows["prompt"]]
    texts = generate_responses(model, tok, prompts, max_new_tokens=cfg.generation.max_new_tokens,
                               temperature=0.8, top_p=0.95, seed=seed, progress=False)
    return [{"prompt": p[-1]["content"], "real": r, "generated": t} for p, r, t in zip(prompts, rows["response"], texts)]


def warmup_discriminator(cfg: RunConfig, model, tok, train, disc_reward, progress: bool = True, rank: int = 0) -> None:
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
        m = disc_reward.train_step(prompts=prompts, completions=texts, response=reals)
        if progress:
            print(f"  D warm-up {step + 1}/{n}: loss {m.get('discriminator/loss', float('nan')):.3f} "
                  f"acc {m.get('discriminator/accuracy', float('nan')):.2f}")


def _resume_point(run_dir: Path, checkpoint: Optional[str]) -> Optional[Path]:
    """Clean up after an interruption and pick the checkpoint to continue from (None: from step 0)."""
    removed = clean_incomplete_checkpoints(run_dir)
    if removed:
        print(f"removed incomplete checkpoint data: {', '.join(removed)}")
    ckpt = resume_checkpoint(run_dir, checkpoint)
    step = checkpoint_step(ckpt) if ckpt is not None else 0
    later = [p for p in checkpoints(run_dir) if checkpoint_step(p) > step]
    for p in later:  # resuming from an earlier checkpoint replaces the history after it
        shutil.rmtree(p)
    if later:
        print(f"removed checkpoints after {ckpt.name if ckpt else 'step 0'}: {', '.join(p.name for p in later)}")
    truncate_run_logs(run_dir, step)
    return ckpt


def save_final(run_dir: Path, model, tok, disc, trainer: Any = None) -> Path:
    """Write final/generator (adapter or full model) and final/discriminator atomically (temp folder, rename).

    With a `trainer` running several processes, every process takes part in gathering the generator's
    weights (transformers' `Trainer.save_model` handles DDP, DeepSpeed ZeRO-3 and FSDP); the main process
    writes them with the tokenizer and the discriminator (identical on every rank) and renames the folder.
    """
    final, tmp = run_dir / "final", run_dir / ".final.tmp"
    accelerator = trainer.accelerator if trainer is not None and trainer.accelerator.num_processes > 1 else None
    main = accelerator is None or accelerator.is_main_process
    try:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        if accelerator is not None:
            accelerator.wait_for_everyone()
            trainer.save_model(str(tmp / "generator"))
            if main:  # transformers also pickles its TrainingArguments there; config.yaml holds the settings
                (tmp / "generator" / "training_args.bin").unlink(missing_ok=True)
        else:
            model.save_pretrained(tmp / "generator", safe_serialization=True)
        if main:
            tok.save_pretrained(tmp / "generator")
            disc.save(tmp / "discriminator")
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
    except Exception as exc:
        if not is_write_error(exc):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        raise LlmganError(f"could not write the final models to {final}: {write_error(exc, run_dir)}; the newest "
                          f"checkpoint {latest_checkpoint(run_dir) or '(none)'} is intact") from None
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return final


def train(cfg: RunConfig, resume: bool = False, overwrite: bool = False, progress: bool = True,
          checkpoint: Optional[str] = None) -> Path:
    """Run (or resume) adversarial training; returns the run folder.

    resume: continue `train.output_dir` from its newest complete checkpoint (or `checkpoint`, a name
    such as 'checkpoint-3'); metrics and samples past that step are dropped first, so the folder reads
    as one uninterrupted run. SIGINT/SIGTERM during training: the current step finishes, a checkpoint
    is written and `TrainingInterrupted` (a KeyboardInterrupt) is raised.
    """
    cfg.validate()
    if cfg.train.objective == "embedding":
        from llmgan.embedding_objective import train_embedding

        if checkpoint:
            raise LlmganError("--checkpoint needs train.objective=policy_gradient")
        return train_embedding(cfg, resume=resume, overwrite=overwrite, progress=progress)
    if checkpoint and not resume:
        raise LlmganError("--checkpoint goes with --resume RUN")
    from accelerate import PartialState
    from transformers import set_seed

    from llmgan.discriminator import HiddenStateEncoder
    from llmgan.plots import plot_metrics
    from llmgan.rewards import DiscriminatorReward

    # Under `accelerate launch` / torchrun this sets up the process group (gloo on CPU, NCCL on GPUs);
    # alone it is a single process. The main process alone touches the run folder.
    import torch

    state = PartialState(cpu=not torch.cuda.is_available())  # cpu=True: gloo across CPU processes
    main = state.is_main_process
    device = state.device if state.device.type != "cpu" else torch.device("cpu")
    progress = progress and main
    run_dir, ckpt = _prepare_on_main(state, cfg, resume, overwrite, checkpoint)
    if cfg.train.sft_warm_start:
        cfg = _sft_warm_start(cfg, run_dir, state, progress)
    set_seed(cfg.train.seed)
    tok, model = build_policy(cfg)
    train_rows, eval_rows = load_train_dataset(cfg, tok)
    check_context_length(cfg, model, tok, train_rows)

    # the encoder reads hidden states; 'reference' = the policy with adapters disabled (a frozen copy of
    # the start model for full fine-tuning). D lives on this process's device (the policy is moved there
    # by the trainer below; a separate encoder model is placed there now).
    encoder = HiddenStateEncoder.from_settings(cfg.discriminator, policy=model, tokenizer=tok,
                                               dtype=cfg.model.dtype, max_prompt_tokens=cfg.data.max_prompt_tokens,
                                               trust_remote_code=cfg.model.trust_remote_code, device=device)
    disc_reward = DiscriminatorReward(cfg.discriminator, cfg.reward, encoder, seed=cfg.train.seed,
                                      device=device)

    Trainer = _make_trainer_class()
    # metrics.jsonl, TensorBoard, samples and the progress bar: written once, by the main process (TRL
    # averages the logged metrics over processes, the reward averages D's metrics)
    run_logger = _make_logging_callback(run_dir, cfg.train.steps, progress)(cfg.train.sample_every) if main else None
    stop = _StopRequest()
    callbacks = [c for c in (run_logger, _make_stop_callback(stop)) if c is not None]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*loss_type.*")
        trainer = Trainer(model=model, reward_funcs=[disc_reward], args=grpo_args(cfg, run_dir),
                          train_dataset=train_rows, processing_class=tok,
                          callbacks=callbacks, disc_reward=disc_reward,
                          keep_checkpoints=cfg.train.keep_checkpoints,
                          max_consecutive_faults=cfg.train.max_consecutive_faults)
    disc_reward.accelerator = trainer.accelerator
    if run_logger is not None:
        run_logger.trainer = trainer
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # our RunLogger prints (progress bar) and writes the metrics

    before = None
    if ckpt is None:
        if resume and main:
            print(f"no complete checkpoint in {run_dir}; starting from step 0")
        before = sample_eval(model, tok, eval_rows, 4, cfg.train.seed, cfg) if progress else None
        warmup_discriminator(cfg, model, tok, train_rows, disc_reward, progress, rank=state.process_index)
    elif main:
        print(f"resuming from {ckpt}")
    stop.install()
    try:
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
            except OSError as exc:
                print(f"warning: could not write plots: {write_error(exc, run_dir)}", file=sys.stderr)
    if stop.signum is not None:
        last = latest_checkpoint(run_dir)
        print(f"stopped by {signal.Signals(stop.signum).name} after step {trainer.state.global_step}; checkpoint "
              f"{last} written; continue with: llmgan train --resume {run_dir}", file=sys.stderr, flush=True)
        raise TrainingInterrupted(f"stopped after step {trainer.state.global_step}; checkpoint {last}")
    save_final(run_dir, trainer.model, tok, disc_reward, trainer=trainer)
    if before is not None:
        after = sample_eval(trainer.model, tok, eval_rows, 4, cfg.train.seed, cfg)
        _write_json_atomic(run_dir / "samples_before_after.json", {"before": before, "after": after})
    state.wait_for_everyone()
    if cfg.selection.enabled and main:
        from llmgan.selection import select

        del trainer, model, encoder, disc_reward  # free the training models before the candidates are loaded
        select(run_dir, device=str(device), progress=progress)
    return run_dir


SFT_DIR = "sft"  # the warm start's own run folder inside the adversarial run folder


def _sft_warm_start(cfg: RunConfig, run_dir: Path, state: Any, progress: bool) -> RunConfig:
    """train.sft_warm_start: supervised fine-tuning first (RUN/sft, `llmgan sft` with this config), then the
    adversarial run starts from RUN/sft/final/generator, which is also its KL reference and (with
    encoder=reference) the discriminator's encoder. Done once: a resumed run reuses the finished SFT model,
    an SFT stage cut short is run again."""
    import dataclasses

    from llmgan.sft import sft

    if state.num_processes > 1:
        raise LlmganError("train.sft_warm_start runs in a single process; with several processes run "
                          "`llmgan sft` first and pass its final/generator folder as model.name")
    sft_dir = run_dir / SFT_DIR
    generator = sft_dir / "final" / "generator"
    if not generator.is_dir():
        if progress:
            print(f"SFT warm start: {cfg.train.sft_steps} supervised steps into {sft_dir}")
        sft_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, output_dir=str(sft_dir),
                                                                     sft_warm_start=False))
        sft(sft_cfg, overwrite=sft_dir.exists(), progress=False)
    elif progress:
        print(f"SFT warm start: using {generator}")
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name=str(generator)))


def _prepare_on_main(state: Any, cfg: RunConfig, resume: bool, overwrite: bool,
                     checkpoint: Optional[str]) -> tuple[Path, Optional[Path]]:
    """Run-folder preparation and the resume point, on the main process only; the others wait for its
    outcome (the folder, the checkpoint, or its error, raised on every process so none hangs)."""
    if state.num_processes == 1:
        run_dir = prepare_run_dir(cfg, resume, overwrite)
        return run_dir, (_resume_point(run_dir, checkpoint) if resume else None)
    from accelerate.utils import broadcast_object_list

    outcome: list[Any] = [None]
    if state.is_main_process:
        try:
            run_dir = prepare_run_dir(cfg, resume, overwrite)
            ckpt = _resume_point(run_dir, checkpoint) if resume else None
            outcome = [{"run_dir": str(run_dir), "ckpt": str(ckpt) if ckpt else None}]
        except LlmganError as exc:
            outcome = [{"error": str(exc)}]
    broadcast_object_list(outcome, from_process=0)
    result = outcome[0]
    if "error" in result:
        raise LlmganError(result["error"])
    return Path(result["run_dir"]), (Path(result["ckpt"]) if result["ckpt"] else None)


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
