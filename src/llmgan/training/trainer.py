"""The GRPO trainer of the adversarial step, and what runs around it: TRL's arguments from llmgan's
config, the run logger (metrics.jsonl, TensorBoard, samples, progress), and SIGINT/SIGTERM handling.

`AdversarialGRPOTrainer` is TRL's `GRPOTrainer` with the adversarial step's phases written out in the
hooks TRL calls, in the order they run each step:
  1. generate                `_generate` (TRL samples G completions per prompt; timed here)
  2. encode                  `_discriminator_rewards`, called from TRL's reward hook `_calculate_rewards`
  3. discriminator update    `_discriminator_rewards`
  4. rewards and advantages  `_discriminator_rewards` (D's score, shaped); TRL then centres the rewards
                             per prompt group and scales them (advantages) and computes the reference
                             log-probs (`timing/reference`)
  5. generator update        `training_step` (TRL's GRPO loss with the KL leash, backward, optimizer step)
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import torch
from accelerate.utils import gather
from transformers import TrainerCallback
from trl import GRPOTrainer

from llmgan.adversarial.features import cut_flags
from llmgan.adversarial.reward import reward_metrics
from llmgan.config import RunConfig
from llmgan.errors import LlmganError
from llmgan.io import Progress, append_jsonl, last_user_message, write_error, write_rows
from llmgan.training.logprobs import completion_logps
from llmgan.training.runs import LLMGAN_STATE_FILE, AtomicCheckpoints, FaultLog, latest_checkpoint

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



def grpo_args(cfg: RunConfig, run_dir: Path):
    """TRL GRPOConfig from llmgan's config (one generation and one update per step)."""
    from trl import GRPOConfig

    from llmgan.adversarial.reward import trl_scale_rewards

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


class StopRequest:
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


class StopOnSignal(TrainerCallback):
    """After the step during which a signal arrived (StopRequest): save a checkpoint and end training."""

    def __init__(self, request: StopRequest):
        self.request = request

    def on_step_end(self, args, state, control, **kw):
        if self.request.signum is not None:
            control.should_save = True
            control.should_training_stop = True


def clock() -> float:
    """perf_counter after the GPU has finished its queued work (CUDA runs asynchronously, so phase timings
    would otherwise land in whichever phase next waits for the GPU)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()



class AdversarialGRPOTrainer(AtomicCheckpoints, GRPOTrainer):
    """GRPOTrainer with the adversarial step's phases 1-5 (module docstring), D's state in checkpoints,
    atomic checkpoints and NaN/Inf fault handling. Generation, advantages, the loss and the update are TRL's.

    `discriminator`: a `DiscriminatorReward` (also passed in `reward_funcs`, which names TRL's reward
    metrics `rewards/discriminator/*`); None runs TRL's own reward functions (a benchmark's baseline).

    Checkpoints: TRL/transformers write `checkpoint-N` inside `<run>/.staging/`; the discriminator's
    state, the fault counters and a COMPLETE marker are added, then the folder is renamed into the run
    folder (an atomic rename on one file system), and only then are old checkpoints rotated away.

    Faults: a step in which a reward, the discriminator's or the generator's loss, or the generator's
    gradient norm is NaN/Inf is skipped (gradients dropped before the optimizer step, so the weights
    do not move), printed and logged with its cause (faults.jsonl, `faults/skipped_steps`); after
    `max_consecutive_faults` such steps in a row the run stops with an LlmganError.
    """

    def __init__(self, *args, discriminator=None, keep_checkpoints: int = 2, max_consecutive_faults: int = 5,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.discriminator = discriminator
        self.keep_checkpoints = keep_checkpoints
        self.fault_log = FaultLog(self.args.output_dir, max_consecutive_faults, writes=self.args.should_save)
        self._faults: list[str] = []
        self._phase: dict[str, float] = {}
        self.last_samples: list[dict] = []

    # 1. generate: G completions per prompt with the policy (TRL)
    def _generate(self, prompts):
        t0 = clock()
        out = super()._generate(prompts)
        self._phase["generate"] = self._phase.get("generate", 0.0) + clock() - t0
        return out

    # 2.-4. TRL's reward hook: our steps 2-4 (or TRL's reward functions without a discriminator)
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        t0 = clock()
        if self.discriminator is None:
            out = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        else:
            out = self._discriminator_rewards(inputs, prompts, completions, completion_ids_list)
        self._phase["reward"] = clock() - t0
        bad = ~torch.isfinite(out)
        if bad.any():
            names = [n for i, n in enumerate(self.reward_func_names) if bad[:, i].any()]
            self._faults.append(f"reward is NaN/Inf for {int(bad.any(dim=1).sum())} of {out.shape[0]} "
                                f"completions ({', '.join(names)})")
            out = torch.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)  # the step is skipped anyway
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        self.last_samples = [{"prompt": last_user_message(p), "real": x.get("response", ""), "generated": t,
                              "reward": float(r)} for p, x, t, r in zip(prompts, inputs, texts, out[:, 0].tolist())]
        return out

    def _discriminator_rewards(self, inputs, prompts, completions, completion_ids) -> torch.Tensor:
        """Steps 2-4 on this process's completions [N] -> rewards [N * processes, 1], gathered (TRL
        normalises them per prompt group, and a group may span processes)."""
        d = self.discriminator
        reals = [x.get(d.real_column) for x in inputs] if inputs and d.real_column in inputs[0] else None
        # which completions stopped at the cap, as TRL's clipped_ratio counts them (read by discriminator.mark_end)
        cut = (cut_flags(completion_ids, [*self.eos_token_ids, self.processing_class.pad_token_id])
               if getattr(d.encoder, "end_id", None) is not None else None)
        # 2. encode: the completions and their prompts' real replies, with the encoder model
        t0 = clock()
        batch = d.encode(prompts, completions, reals, cut)
        metrics = {"timing/encode": clock() - t0}
        # 3. discriminator update: k steps on real vs synthetic (+ replay)
        t0 = clock()
        metrics.update(d.update(batch))
        # 4. rewards: the updated D scores the completions; the score is shaped (reward.kind, reward.clip), plus
        #    the length term (reward.length_weight)
        real_logits, fake_logits = d.score(batch)
        rewards = d.shape(fake_logits, batch)
        metrics["timing/discriminator"] = clock() - t0
        metrics.update({**d.score_metrics(real_logits, fake_logits), **reward_metrics(rewards),
                        **d.length_metrics(batch)})
        d.finish(batch, metrics, self._log_metric)  # replay push; metrics averaged over processes, logged
        self._faults += d.faults
        d.watch(d.metrics["discriminator/accuracy"])
        return gather(rewards.detach().float().to(self.accelerator.device)[:, None])

    def _generate_and_score_completions(self, inputs):
        self._phase = {}
        t0 = clock()
        out = super()._generate_and_score_completions(inputs)
        total = clock() - t0
        mode = "train" if self.model.training else "eval"
        gen, reward = self._phase.get("generate", 0.0), self._phase.get("reward", 0.0)
        self._metrics[mode]["timing/generate"].append(gen)
        # the rest of scoring is the reference (and old-policy) log-prob forward passes
        self._metrics[mode]["timing/reference"].append(max(total - gen - reward, 0.0))
        self._phase["scoring_total"] = total
        return out

    # the log-probs of the completions (the update's forward and the KL reference's): on the CPU only the
    # completion positions go through the LM head (llmgan.training.logprobs says why); TRL's path elsewhere
    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           compute_entropy=False, compute_aux_loss=False, **extra):
        plain = (input_ids.device.type == "cpu" and not compute_aux_loss
                 and all(v is None for v in extra.values())  # no images or token types
                 and not getattr(self, "_entropy_bonus_enabled", False))  # an entropy bonus needs its gradient
        if not plain:
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size,
                compute_entropy=compute_entropy, compute_aux_loss=compute_aux_loss, **extra)
        with self.accelerator.autocast():
            logps, entropies = completion_logps(model, input_ids, attention_mask, logits_to_keep,
                                                temperature=self.temperature, batch_size=batch_size,
                                                with_entropy=compute_entropy)
        return logps, entropies, None

    # 5. generator update: GRPO loss with the KL leash (TRL), timed as the training step minus 1-4
    def training_step(self, model, inputs, num_items_in_batch=None):
        self._faults = []
        t0 = clock()
        loss = super().training_step(model, inputs, num_items_in_batch)
        self._metrics["train"]["timing/update"].append(max(clock() - t0 - self._phase.get("scoring_total", 0.0), 0.0))
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
            step = self.state.global_step + 1
            self.fault_log.record(step, self._faults)
            self._faults = []
            self.fault_log.check(step)
        else:
            self.fault_log.ok()
        return grad_norm

    def log(self, logs, start_time=None):
        if "train_runtime" not in logs:
            logs["faults/skipped_steps"] = float(self.fault_log.skipped)
        super().log(logs, start_time)

    # checkpoints: AtomicCheckpoints writes them under .staging/; the discriminator and the fault counters go in too,
    # and come back on a resume (AtomicCheckpoints calls _load_extra)
    def _save_extra(self, folder: Path) -> None:
        if self.discriminator is not None:
            self.discriminator.save(folder / "discriminator")
        (folder / LLMGAN_STATE_FILE).write_text(json.dumps(self.fault_log.state_dict()))

    def _load_extra(self, folder: Path) -> None:
        d = folder / "discriminator"
        if self.discriminator is not None:
            if not d.is_dir():
                raise LlmganError(f"checkpoint {folder} has no discriminator state")
            self.discriminator.load(d)
        state_file = folder / LLMGAN_STATE_FILE
        if state_file.is_file():
            self.fault_log.load_state_dict(json.loads(state_file.read_text()))


PROGRESS_NOTE = (("discriminator/accuracy", "D acc", "{:.2f}"), ("generator/reward_mean", "reward", "{:.3f}"),
                 ("generator/kl", "KL", "{:.4f}"), ("generator/completion_length", "length", "{:.1f}"))


def progress_note(row: dict) -> str:
    """The few numbers a user watches during a run, from one metrics row: 'step 9: D acc 0.62, reward -0.705, ...'."""
    parts = [f"{label} {fmt.format(row[k])}" for k, label, fmt in PROGRESS_NOTE if k in row and math.isfinite(row[k])]
    return f"step {row['step']}: " + ", ".join(parts) if parts else ""


class RunLogger(TrainerCallback):
    """metrics.jsonl + TensorBoard with namespaced keys, samples every N steps, progress (io.Progress)."""

    def __init__(self, run_dir: Path, total_steps: int, sample_every: int, progress: bool):
        self.run_dir, self.total_steps, self.sample_every, self.progress = Path(run_dir), total_steps, sample_every, progress
        self.trainer = None  # set after the trainer is built (for its last samples)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.writer = None
        self.bar: Optional[Progress] = None
        self.task = None

    def _cannot_write(self, what: Path, exc: OSError) -> LlmganError:
        return LlmganError(f"cannot write {what}: {write_error(exc, self.run_dir)}; the newest checkpoint "
                           f"{latest_checkpoint(self.run_dir) or '(none)'} is intact")

    def on_train_begin(self, args, state, control, **kw):
        from torch.utils.tensorboard import SummaryWriter

        # on resume, TensorBoard drops the events past the checkpoint (written before an interruption)
        self.writer = SummaryWriter(str(self.run_dir / "tensorboard"),
                                    purge_step=state.global_step + 1 if state.global_step else None)
        if self.progress:
            self.bar = Progress(True, transient=False).__enter__()
            self.task = self.bar.add("train", self.total_steps)
            self.bar.advance(self.task, state.global_step)

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
            append_jsonl(self.metrics_path, row)
        except OSError as exc:
            raise self._cannot_write(self.metrics_path, exc) from None
        for k, v in row.items():
            if k != "step" and math.isfinite(v):
                self.writer.add_scalar(k, v, state.global_step)
        if self.bar is not None:
            self.bar.note(self.task, progress_note(row))

    def on_step_end(self, args, state, control, **kw):
        if self.bar is not None:
            self.bar.advance(self.task, 1)
        last = getattr(self.trainer, "last_samples", None)
        if self.sample_every and state.global_step % self.sample_every == 0 and last:
            try:
                write_rows(last, self.run_dir / "samples" / f"step_{state.global_step:05d}.jsonl")
            except OSError as exc:
                raise self._cannot_write(self.run_dir / "samples", exc) from None

    def on_train_end(self, args, state, control, **kw):
        self.close()

    def close(self) -> None:
        """Stop the progress bar and flush TensorBoard (also after an error or an interruption)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.writer is not None:
            try:
                self.writer.close()
            except OSError:
                pass
            self.writer = None
