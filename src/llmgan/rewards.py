"""From discriminator scores to generator rewards, and the stateful reward callable TRL calls.

Pure pieces: `shape_reward` (logit -> reward, one registry `REWARD_SHAPES`), `group_normalize`
(per-group / batch / no advantage normalisation, for llmgan's own loop and tests), `ReplayBuffer`.
The stateful piece: `DiscriminatorReward`, called by TRL's GRPOTrainer once per generation batch;
on each call it encodes the batch, takes its own discriminator update(s), and returns the shaped
reward of every completion under the updated discriminator.

Shapes: N completions in a batch, G completions per prompt (TRL repeats each dataset row G times in
a row, so the batch is N/G groups of G consecutive completions).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
import warnings
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import torch
import torch.nn.functional as F

from llmgan.discriminator import Discriminator, HiddenStateEncoder, as_text, bce_loss, bradley_terry_loss
from llmgan.errors import LlmganError

class SaturationStop(LlmganError):
    """The discriminator's accuracy sat above saturation_high (reward saturated) or below saturation_low
    (no signal) for a whole window, and reward.stop_on_saturation is set."""


# ---------------------------------------------------------------------------------------------
# Pure functions


REWARD_SHAPES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    # log sigmoid(D): log-probability of "real"; <= 0, smooth, steep only when D is confident it is fake
    "log_sigmoid": F.logsigmoid,
    # the raw logit (already clipped): unbounded in both directions
    "logit": lambda z: z,
    # sigmoid(D): probability of "real" in [0, 1]; flat (no signal) once D saturates
    "probability": torch.sigmoid,
}
"""Reward shape name -> function of the clipped logit [N] -> reward [N]. Add a shape here only (and to
the `RewardSettings.kind` Literal)."""


def shape_reward(logits: torch.Tensor, kind: str = "log_sigmoid", clip: float = 10.0) -> torch.Tensor:
    """logits [N] (real = positive) -> rewards [N] float32, always finite.

    NaN logits become 0 (no opinion); +-inf and everything else are clamped to [-clip, clip] before
    the shape is applied (clip <= 0 disables the clamp, but infinities are still bounded by 1e4).
    """
    if kind not in REWARD_SHAPES:
        raise LlmganError(f"reward.kind must be one of {', '.join(REWARD_SHAPES)} (got {kind!r})")
    bound = clip if clip and clip > 0 else 1e4
    z = torch.nan_to_num(logits.detach().float(), nan=0.0, posinf=bound, neginf=-bound).clamp(-bound, bound)
    return REWARD_SHAPES[kind](z)


def group_normalize(rewards: torch.Tensor, group_size: int, scale_by_std: bool = True, eps: float = 1e-4,
                    mode: str = "group") -> torch.Tensor:
    """Advantages from rewards [N] -> [N].

    mode 'group': subtract the mean of each block of `group_size` consecutive rewards (one prompt's
    completions) and, with scale_by_std, divide by that block's std + eps. 'batch': the same with the
    whole batch as one group. 'none': rewards unchanged. The std is the unbiased one (n - 1), as in
    TRL's GRPO, and 0 for a group of one.
    """
    if mode == "none":
        return rewards.clone()
    if mode == "group":
        if group_size < 1 or rewards.numel() % group_size:
            raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
        grouped = rewards.reshape(-1, group_size)
    elif mode == "batch":
        grouped = rewards.reshape(1, -1)
    else:
        raise ValueError(f"mode must be group, batch or none (got {mode!r})")
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale_by_std:
        std = grouped.std(dim=1, keepdim=True) if grouped.shape[1] > 1 else torch.zeros_like(grouped[:, :1])
        centred = centred / (std + eps)
    return centred.reshape(rewards.shape)


def trl_scale_rewards(settings: Any) -> str:
    """RewardSettings -> TRL GRPOConfig.scale_rewards ('group', 'batch' or 'none').

    TRL always centres rewards on the group mean; scale_rewards only picks the divisor: the group std
    ('group'), the batch std ('batch'), or nothing ('none'). So reward.normalize=batch becomes group-mean
    / batch-std there, and normalize=none still centres per group (the rewards here are never normalised).
    """
    if not settings.scale_by_std or settings.normalize == "none":
        return "none"
    return "batch" if settings.normalize == "batch" else "group"


def _flatten_optimizer_state(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """torch optimizer state_dict -> (tensors for safetensors, JSON-able rest). Inverse: `_unflatten_optimizer_state`."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for pid, per_param in state["state"].items():
        for key, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{pid}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    per_param: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, pid, key = name.split(".", 2)
            per_param.setdefault(int(pid), {})[key] = value
    for pid, values in meta.get("scalars", {}).items():
        per_param.setdefault(int(pid), {}).update(values)
    return {"state": per_param, "param_groups": meta["param_groups"]}


# ---------------------------------------------------------------------------------------------
# Replay buffer


class ReplayBuffer:
    """The most recent synthetic samples, as texts: {"prompt", "fake", "real"} dicts, oldest first.

    Texts are the record: with the 'policy' encoder features go stale as the policy moves (a
    replayed sample must be re-encoded by today's encoder to be comparable with today's reals), and
    texts go straight into a JSON checkpoint. With a frozen encoder ('reference' or another model) a
    text's features never change, so `features` (aligned with `items`) may carry each item's encoded
    response positions ({"fake": [t, H], "real": [t', H]} tensors, or None) to spare re-encoding them
    at every replay: measured in BENCHMARKS.md, the re-encoding was half of the discriminator's cost
    per step. The real response of the same prompt is kept so Bradley-Terry pairs survive replay.

    Sampling is without replacement and deterministic: it uses the buffer's own torch.Generator,
    saved with the buffer.
    """

    def __init__(self, capacity: int, seed: int = 0):
        self.capacity = max(0, int(capacity))
        self.items: list[dict] = []
        self.features: list[Optional[dict[str, torch.Tensor]]] = []
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.items)

    def add(self, items: Iterable[dict], features: Optional[Iterable[Optional[dict]]] = None) -> None:
        """Append items (and their cached features, or None each); beyond capacity the oldest are dropped."""
        if not self.capacity:
            return
        items = [dict(i) for i in items]
        features = list(features) if features is not None else [None] * len(items)
        if len(features) != len(items):
            raise ValueError(f"{len(items)} replay items but {len(features)} feature entries")
        self.items.extend(items)
        self.features.extend(features)
        drop = max(0, len(self.items) - self.capacity)
        del self.items[:drop]
        del self.features[:drop]

    def sample_indices(self, n: int) -> list[int]:
        """min(n, len) distinct indices into `items`, drawn with the buffer's generator."""
        n = min(int(n), len(self.items))
        if n <= 0:
            return []
        return torch.randperm(len(self.items), generator=self.generator)[:n].tolist()

    def sample(self, n: int) -> list[dict]:
        return [self.items[i] for i in self.sample_indices(n)]

    def state_dict(self) -> dict:
        return {"capacity": self.capacity, "items": [dict(i) for i in self.items], "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore texts and RNG; cached features are not part of the state (see DiscriminatorReward.save)."""
        self.capacity = int(state["capacity"])
        self.items = [dict(i) for i in state["items"]]
        self.features = [None] * len(self.items)
        if state.get("generator") is not None:
            self.generator.set_state(state["generator"])


# ---------------------------------------------------------------------------------------------
# Saturation watcher


class SaturationWatcher:
    """Window of the last `window` discriminator accuracies; reports when all of them sit above `high`
    (saturated: the reward carries no gradient) or below `low` (D has no signal).

    `update(acc)` returns 'high' or 'low' on the step a streak first fills the window, else None, so
    a long streak warns once; it re-arms when the streak breaks.
    """

    def __init__(self, window: int, high: float, low: float):
        self.window, self.high, self.low = window, high, low
        self.values: deque = deque(maxlen=max(1, window))
        self.active: Optional[str] = None

    def update(self, accuracy: float) -> Optional[str]:
        self.values.append(float(accuracy))
        state = None
        if self.window > 0 and len(self.values) == self.window:
            if all(v > self.high for v in self.values):
                state = "high"
            elif all(v < self.low for v in self.values):
                state = "low"
        fired = state if state is not None and state != self.active else None
        self.active = state
        return fired

    def state_dict(self) -> dict:
        return {"values": list(self.values), "active": self.active}

    def load_state_dict(self, state: dict) -> None:
        self.values = deque((float(v) for v in state["values"]), maxlen=max(1, self.window))
        self.active = state.get("active")


# ---------------------------------------------------------------------------------------------
# The reward callable


@dataclasses.dataclass
class _Batch:
    """One generation batch, encoded. M completions, R unique real responses."""

    prompts: list            # [M] prompt of each completion (str or messages)
    fakes: list[str]         # [M] completion texts
    reals: list[str]         # [R] unique real responses
    pair: torch.Tensor       # [M] long: index into reals of each completion's real response
    fake_h: torch.Tensor     # [M, Tf, H]
    fake_m: torch.Tensor     # [M, Tf] bool
    real_h: torch.Tensor     # [R, Tr, H]
    real_m: torch.Tensor     # [R, Tr] bool


def _pad_cat(parts: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate (hidden [b_i, T_i, H], mask [b_i, T_i]) pairs along the batch, right-padding to max T_i."""
    t = max(h.shape[1] for h, _ in parts)
    hs, ms = [], []
    for h, m in parts:
        pad = t - h.shape[1]
        hs.append(F.pad(h, (0, 0, 0, pad)) if pad else h)
        ms.append(F.pad(m, (0, pad), value=False) if pad else m)
    return torch.cat(hs), torch.cat(ms)


def _stack_rows(rows: Sequence[torch.Tensor], hidden_size: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad per-row features [t_i, H] into (hidden [n, max(1, t_i), H], mask [n, T] bool)."""
    t = max([1, *(r.shape[0] for r in rows)])
    dtype = rows[0].dtype if rows else torch.float32
    hidden = torch.zeros(len(rows), t, hidden_size, dtype=dtype, device=device)
    mask = torch.zeros(len(rows), t, dtype=torch.bool, device=device)
    for j, r in enumerate(rows):
        hidden[j, :r.shape[0]] = r
        mask[j, :r.shape[0]] = True
    return hidden, mask


def _prompt_key(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, ensure_ascii=False)


def _balanced_accuracy(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> float:
    """Mean of the accuracy on reals (logit > 0) and on fakes (logit < 0)."""
    parts = [(real_logits > 0).float().mean()] if real_logits.numel() else []
    parts += [(fake_logits < 0).float().mean()] if fake_logits.numel() else []
    return float(torch.stack(parts).mean()) if parts else float("nan")


class DiscriminatorReward:
    """Stateful reward function for TRL's GRPOTrainer: trains the discriminator as it scores.

    `reward(prompts=..., completions=..., completion_ids=..., response=[...], **columns) -> list[float]`

    Each call:
      1. encodes the completions (fakes) and the batch's unique real responses with the encoder;
      2. takes `settings.steps_per_generator_step` AdamW updates of D on reals vs fakes, where a share
         `replay_fraction` of each update's fakes is drawn from the replay buffer (the rest is a fresh
         random subset of this batch's completions), with BCE or Bradley-Terry loss;
      3. scores the completions with the updated D in eval mode and returns the *shaped* reward
         (`reward.kind`, clipped at `reward.clip`), one finite float per completion (an empty
         completion gets D's learned "empty" score).
    The rewards are not normalised here: TRL's GRPOTrainer centres them per prompt group and scales
    them per `scale_rewards` (map RewardSettings with `trl_scale_rewards`); `group_normalize` is
    for llmgan's own loop.

    `train_step(prompts, completions, response)` runs steps 1-2 only (the discriminator warm-up
    before the generator moves). After every call `self.metrics` holds the latest metrics (and they
    are passed to TRL's `log_metric` when TRL provides it). The saturation watcher follows the
    post-update accuracy of `__call__` only (warm-up accuracy starts at chance by design) and warns
    or raises `SaturationStop` after metrics and the replay buffer are updated.

    Determinism: dropout and subset sampling draw from the reward's own torch.Generator (dropout
    runs under a forked RNG seeded from it), so D's trajectory does not depend on, nor disturb, the
    trainer's global RNG, and `state_dict()` round trips reproduce the next rewards exactly.

    Multi-process: D is built from `seed` (identical on every rank) and, when torch.distributed is
    initialized with world size > 1, its gradients are averaged with all_reduce before every
    optimizer step, so D stays identical on all ranks while each rank contributes its own samples.
    Metrics are averaged the same way, so all ranks take the same saturation decision. Every rank
    must call the reward the same number of times (TRL does).
    """

    def __init__(self, settings: Any, reward: Any, encoder: HiddenStateEncoder, seed: int = 0,
                 accelerator: Any = None, real_column: str = "response", device: Any = None):
        self.__name__ = "discriminator"  # TRL names reward functions by __name__
        self.settings = settings
        self.reward_settings = reward
        self.encoder = encoder
        self.accelerator = accelerator
        self.real_column = real_column
        # D's device: given (the training device, where the trainer will move the policy), else the encoder's now
        self.device = torch.device(device) if device is not None else encoder.device
        with torch.random.fork_rng(devices=[]):  # same init on every rank, global RNG untouched
            torch.manual_seed(seed)
            self.model = Discriminator(encoder.hidden_size, width=settings.width, layers=settings.layers,
                                       heads=settings.heads, dropout=settings.dropout, pooling=settings.pooling,
                                       lstm=settings.lstm)
        self.model.to(self.device)
        # No weight decay on norms, biases and the empty vector (1-d parameters).
        decay = [p for p in self.model.parameters() if p.ndim > 1]
        no_decay = [p for p in self.model.parameters() if p.ndim <= 1]
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": settings.weight_decay},
                                            {"params": no_decay, "weight_decay": 0.0}], lr=settings.lr)
        self.generator = torch.Generator().manual_seed(seed)
        self.replay = ReplayBuffer(settings.replay_size, seed=seed + 1)
        self.watcher = SaturationWatcher(reward.saturation_window, reward.saturation_high, reward.saturation_low)
        self.updates = 0  # discriminator optimizer steps so far
        self.calls = 0    # scored generator batches so far
        self.metrics: dict[str, float] = {}
        self.faults: list[str] = []  # NaN/Inf found in the latest call (D's update skipped, rewards sanitised)
        # A frozen encoder's features of a text never change: keep them with the replay buffer.
        self.cache_features = bool(getattr(settings, "cache_replay_features", True)) and \
            getattr(settings, "encoder", "reference") != "policy"
        self.cache_hits = 0  # replayed rows served from cached features (benchmark/diagnostics)

    # -- public API ------------------------------------------------------------------------------

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Any = None,
                 response: Optional[Sequence[Any]] = None, **kwargs: Any) -> list[float]:
        """One generator step's rewards: prompts [N], completions [N] (strings or [{role, content}]),
        response [N] real responses (TRL repeats the dataset column per generation) -> N floats.

        completion_ids are ignored on purpose: fakes are re-tokenized from text exactly like reals.
        """
        if response is None:
            response = kwargs.get(self.real_column)
        batch, metrics = self._train(prompts, completions, response, self.settings.steps_per_generator_step)
        t0 = time.perf_counter()
        real_logits, fake_logits = self._logits(batch)
        bad = int((~torch.isfinite(fake_logits)).sum())
        if bad:
            self.faults.append(f"discriminator score is NaN/Inf for {bad} of {fake_logits.numel()} completions")
        rewards = shape_reward(fake_logits, self.reward_settings.kind, self.reward_settings.clip)
        metrics["timing/discriminator"] += self._elapsed(t0)
        metrics.update(self._score_metrics(real_logits, fake_logits))
        metrics["generator/reward_mean"] = float(rewards.mean())
        metrics["generator/reward_std"] = float(rewards.std()) if rewards.numel() > 1 else 0.0
        self.calls += 1
        self._finish(batch, metrics, kwargs.get("log_metric"))
        self._watch(self.metrics["discriminator/accuracy"])
        return [float(r) for r in rewards.cpu()]

    def train_step(self, prompts: Sequence[Any], completions: Sequence[Any], response: Sequence[Any],
                   steps: Optional[int] = None) -> dict[str, float]:
        """Discriminator-only update (warm-up): like a call, but returns the metrics, not rewards.

        steps defaults to settings.steps_per_generator_step (at least 1).
        """
        steps = max(1, self.settings.steps_per_generator_step) if steps is None else steps
        batch, metrics = self._train(prompts, completions, response, steps)
        real_logits, fake_logits = self._logits(batch)
        metrics.update(self._score_metrics(real_logits, fake_logits))
        self._finish(batch, metrics, None)
        return dict(self.metrics)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "replay": self.replay.state_dict(), "generator": self.generator.get_state(),
                "updates": self.updates, "calls": self.calls, "watcher": self.watcher.state_dict(),
                "replay_features": [dict(f) if f else None for f in self.replay.features]}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.replay.load_state_dict(state["replay"])
        self.generator.set_state(state["generator"])
        self.updates, self.calls = int(state["updates"]), int(state["calls"])
        self.watcher.load_state_dict(state["watcher"])
        features = state.get("replay_features")
        if self.cache_features and features is not None and len(features) == len(self.replay.items):
            self.replay.features = [dict(f) if f else None for f in features]

    WEIGHTS_FILE = "discriminator.safetensors"
    STATE_FILE = "discriminator_state.json"
    OPTIMIZER_FILE = "discriminator_optimizer.safetensors"
    REPLAY_FEATURES_FILE = "replay_features.safetensors"  # optional: written when features are cached
    LEGACY_OPTIMIZER_FILE = "discriminator_optimizer.pt"  # read (weights_only) if a checkpoint predates the safetensors file

    def save(self, directory: str | Path) -> None:
        """Write D's weights, optimizer tensors and RNG states (safetensors) and the rest (JSON) to `directory`.

        Only safetensors and JSON: nothing in a checkpoint is unpickled when it is read back.
        """
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = self.state_dict()
        save_file({k: v.detach().contiguous().cpu() for k, v in state["model"].items()},
                  str(directory / self.WEIGHTS_FILE), metadata={"format": "pt"})
        replay = state["replay"]
        tensors, optimizer_meta = _flatten_optimizer_state(state["optimizer"])
        tensors["rng.generator"] = state["generator"]
        tensors["rng.replay_generator"] = replay.pop("generator")
        save_file(tensors, str(directory / self.OPTIMIZER_FILE), metadata={"format": "pt"})
        # The frozen encoder's cached replay features, so a resumed run replays bit-identical features.
        # (cloned: items of one prompt group share their real's tensor, and safetensors refuses shared memory)
        cached = {f"{i}.{kind}": t.detach().cpu().clone() for i, f in enumerate(self.replay.features) if f
                  for kind, t in f.items()}
        if cached:
            save_file(cached, str(directory / self.REPLAY_FEATURES_FILE), metadata={"format": "pt"})
        meta = {"format": 2, "input_size": self.encoder.hidden_size, "updates": state["updates"],
                "calls": state["calls"], "watcher": state["watcher"], "replay": replay, "optimizer": optimizer_meta,
                "discriminator": dataclasses.asdict(self.settings) if dataclasses.is_dataclass(self.settings) else None,
                "reward": dataclasses.asdict(self.reward_settings) if dataclasses.is_dataclass(self.reward_settings) else None}
        (directory / self.STATE_FILE).write_text(json.dumps(meta, ensure_ascii=False, indent=1))

    def load(self, directory: str | Path) -> None:
        """Restore what `save` wrote (the discriminator architecture must match the current settings)."""
        from safetensors.torch import load_file

        directory = Path(directory)
        optimizer_file = self.OPTIMIZER_FILE
        if not (directory / optimizer_file).is_file() and (directory / self.LEGACY_OPTIMIZER_FILE).is_file():
            optimizer_file = self.LEGACY_OPTIMIZER_FILE
        missing = [f for f in (self.WEIGHTS_FILE, self.STATE_FILE, optimizer_file) if not (directory / f).is_file()]
        if missing:
            raise LlmganError(f"discriminator checkpoint in {directory} is incomplete: missing {', '.join(missing)}")
        meta = json.loads((directory / self.STATE_FILE).read_text())
        if optimizer_file == self.LEGACY_OPTIMIZER_FILE:
            other = torch.load(directory / optimizer_file, map_location="cpu", weights_only=True)
        else:
            tensors = load_file(str(directory / optimizer_file), device="cpu")
            other = {"optimizer": _unflatten_optimizer_state(tensors, meta["optimizer"]),
                     "generator": tensors["rng.generator"], "replay_generator": tensors["rng.replay_generator"]}
        weights = load_file(str(directory / self.WEIGHTS_FILE), device=str(self.device))
        replay = dict(meta["replay"], generator=other["replay_generator"])
        try:
            self.load_state_dict({"model": weights, "optimizer": other["optimizer"], "replay": replay,
                                  "generator": other["generator"], "updates": meta["updates"],
                                  "calls": meta["calls"], "watcher": meta["watcher"]})
        except (RuntimeError, ValueError, KeyError) as exc:
            raise LlmganError(f"discriminator checkpoint in {directory} does not fit the current discriminator "
                              f"settings (layers/width/heads/pooling/lstm/encoder): {str(exc).splitlines()[0]}") from None
        features_file = directory / self.REPLAY_FEATURES_FILE
        if self.cache_features and features_file.is_file():
            cached = load_file(str(features_file), device=str(self.device))
            for key, tensor in cached.items():
                index, kind = key.split(".", 1)
                i = int(index)
                if 0 <= i < len(self.replay.features) and tensor.ndim == 2 and tensor.shape[1] == self.encoder.hidden_size:
                    self.replay.features[i] = {**(self.replay.features[i] or {}), kind: tensor}

    # -- internals -------------------------------------------------------------------------------

    def _elapsed(self, t0: float) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - t0

    def _encode(self, prompts: Sequence[Any], completions: Sequence[Any], response: Optional[Sequence[Any]]) -> _Batch:
        if response is None:
            raise LlmganError(f"the discriminator reward needs the real responses: the training dataset must have a "
                              f"'{self.real_column}' column")
        if not len(prompts) == len(completions) == len(response):
            raise ValueError(f"prompts ({len(prompts)}), completions ({len(completions)}) and {self.real_column} "
                             f"({len(response)}) must have one entry per completion")
        fakes = [as_text(c) for c in completions]
        # TRL repeats each dataset row once per generation: keep every (prompt, real) pair once.
        index: dict[tuple[str, str], int] = {}
        real_prompts, reals, pair = [], [], []
        for p, r in zip(prompts, response):
            text = as_text(r)
            key = (_prompt_key(p), text)
            if key not in index:
                index[key] = len(reals)
                real_prompts.append(p)
                reals.append(text)
            pair.append(index[key])
        cond = self.encoder.condition_on_prompt
        fake_h, fake_m = (t.to(self.device) for t in self.encoder.encode(list(prompts) if cond else None, fakes))
        real_h, real_m = (t.to(self.device) for t in self.encoder.encode(real_prompts if cond else None, reals))
        return _Batch(list(prompts), fakes, reals, torch.tensor(pair, dtype=torch.long, device=self.device),
                      fake_h, fake_m, real_h, real_m)

    def _replay_features(self, used: list[int], kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Features [len(used), T, H] and mask of the replay items `used`, `kind` 'fake' or 'real': served
        from the buffer's cached features where present, the rest encoded now (and cached, if frozen)."""
        rows: dict[int, torch.Tensor] = {}
        missing = []
        for i in used:
            cached = self.replay.features[i]
            if cached is not None and kind in cached:
                rows[i] = cached[kind]
            else:
                missing.append(i)
        if missing:
            items = [self.replay.items[i] for i in missing]
            prompts = [it["prompt"] for it in items] if self.encoder.condition_on_prompt else None
            h, m = (t.to(self.device) for t in self.encoder.encode(prompts, [it[kind] for it in items]))
            for j, i in enumerate(missing):
                rows[i] = h[j, :int(m[j].sum())].clone()
                if self.cache_features:
                    self.replay.features[i] = {**(self.replay.features[i] or {}), kind: rows[i]}
        self.cache_hits += len(used) - len(missing)
        return _stack_rows([rows[i] for i in used], self.encoder.hidden_size, self.device)

    @contextlib.contextmanager
    def _own_rng(self):
        """Run dropout on a fork of the global RNG seeded from self.generator (restored afterwards)."""
        seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        cuda = self.device.type == "cuda"
        index = self.device.index if self.device.index is not None else (torch.cuda.current_device() if cuda else None)
        with torch.random.fork_rng(devices=[index] if cuda else []):
            torch.random.default_generator.manual_seed(seed)
            if cuda:
                with torch.cuda.device(index):
                    torch.cuda.manual_seed(seed)
            yield

    def _world_size(self) -> int:
        dist = torch.distributed
        return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

    def _sync_gradients(self) -> None:
        """Average D's gradients over ranks (every parameter, so all ranks issue the same collectives)."""
        world = self._world_size()
        if world == 1:
            return
        for p in self.model.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            torch.distributed.all_reduce(p.grad, op=torch.distributed.ReduceOp.SUM)
            p.grad.div_(world)

    def _train(self, prompts, completions, response, steps: int) -> tuple[_Batch, dict[str, float]]:
        """Encode the batch and take `steps` D updates. Returns the batch and partial metrics."""
        s = self.settings
        self.faults = []
        t0 = time.perf_counter()
        batch = self._encode(prompts, completions, response)
        # Replay: each step's fakes are round(replay_fraction * M) buffer samples + the rest from this batch.
        m = len(batch.fakes)
        n_replay = min(round(s.replay_fraction * m), len(self.replay)) if s.replay_size else 0
        draws = [self.replay.sample_indices(n_replay) for _ in range(steps)]
        used = sorted({i for d in draws for i in d})
        local = {i: j for j, i in enumerate(used)}
        rep_h = rep_m = rep_rh = rep_rm = None
        if used:
            rep_h, rep_m = self._replay_features(used, "fake")
            if s.loss == "bradley_terry":
                rep_rh, rep_rm = self._replay_features(used, "real")
        metrics = {"timing/encode": self._elapsed(t0)}

        t0 = time.perf_counter()
        with torch.no_grad():  # accuracy on fresh samples, before D trains on them
            self.model.eval()
            real_logits, fake_logits = self._logits(batch)
        metrics["discriminator/accuracy_before_update"] = _balanced_accuracy(real_logits, fake_logits)
        losses = []
        with torch.enable_grad():  # TRL may call rewards inside no_grad
            for draw in draws:
                rep = torch.tensor([local[i] for i in draw], dtype=torch.long, device=self.device)
                cur = torch.randperm(m, generator=self.generator)[:m - len(draw)].to(self.device)
                parts = [(batch.real_h, batch.real_m), (batch.fake_h[cur], batch.fake_m[cur])]
                if len(draw):
                    parts.append((rep_h[rep], rep_m[rep]))
                    if rep_rh is not None:
                        parts.append((rep_rh[rep], rep_rm[rep]))
                hidden, mask = _pad_cat(parts)
                self.model.train()
                with self._own_rng():
                    logits = self.model(hidden, mask)
                r = len(batch.reals)
                real_logits, fake_logits = logits[:r], logits[r:r + m]
                if s.loss == "bradley_terry":
                    paired_reals = real_logits[batch.pair[cur]]
                    if len(draw):
                        paired_reals = torch.cat([paired_reals, logits[r + m:]])
                    loss = bradley_terry_loss(paired_reals, fake_logits)
                else:
                    loss = bce_loss(real_logits, fake_logits, s.label_smoothing)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self._sync_gradients()
                # NaN/Inf in the loss or a gradient: skip this update (D keeps its weights), report the cause.
                # The gradients are the same on every rank after _sync_gradients, so all ranks skip together.
                grads_ok = all(bool(torch.isfinite(p.grad).all()) for p in self.model.parameters() if p.grad is not None)
                if not grads_ok:
                    self.faults.append(f"discriminator loss {float(loss.detach()):.4g}, gradient NaN/Inf: update skipped")
                elif not torch.isfinite(loss.detach()) and self._world_size() == 1:
                    self.faults.append(f"discriminator loss is {float(loss.detach())}: update skipped")
                else:
                    self.optimizer.step()
                    self.updates += 1
                self.optimizer.zero_grad(set_to_none=True)
                losses.append(float(loss.detach()))
        self.model.eval()
        metrics["timing/discriminator"] = self._elapsed(t0)
        metrics["discriminator/loss"] = sum(losses) / len(losses) if losses else float("nan")
        metrics["discriminator/replay_samples"] = float(n_replay)
        metrics["discriminator/skipped_updates"] = float(len(self.faults))
        return batch, metrics

    @torch.no_grad()
    def _logits(self, batch: _Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """D in eval mode on the batch: (real logits [R], fake logits [M]), one forward."""
        self.model.eval()
        hidden, mask = _pad_cat([(batch.real_h, batch.real_m), (batch.fake_h, batch.fake_m)])
        logits = self.model(hidden, mask).float()
        return logits[:len(batch.reals)], logits[len(batch.reals):]

    @staticmethod
    def _score_metrics(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> dict[str, float]:
        return {"discriminator/accuracy": _balanced_accuracy(real_logits, fake_logits),
                "discriminator/real_score": float(torch.sigmoid(real_logits).mean()),
                "discriminator/fake_score": float(torch.sigmoid(fake_logits).mean())}

    def _finish(self, batch: _Batch, metrics: dict[str, float], log_metric: Optional[Callable]) -> None:
        """Push this batch's fakes to the replay buffer, average metrics over ranks, publish them."""
        pairs = batch.pair.tolist()
        features = None
        if self.cache_features:  # frozen encoder: keep each fake's response features (and its real's, for BT pairs)
            n_fake = batch.fake_m.sum(1).tolist()
            features = [{"fake": batch.fake_h[j, :int(n)].detach().clone()} for j, n in enumerate(n_fake)]
            if self.settings.loss == "bradley_terry":
                n_real = batch.real_m.sum(1).tolist()
                reals = [batch.real_h[i, :int(n)].detach().clone() for i, n in enumerate(n_real)]  # once per real
                for f, i in zip(features, pairs):
                    f["real"] = reals[i]
        self.replay.add(({"prompt": p, "fake": f, "real": batch.reals[int(i)]}
                         for p, f, i in zip(batch.prompts, batch.fakes, pairs)), features)
        world = self._world_size()
        if world > 1:
            keys = sorted(metrics)
            values = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(values, op=torch.distributed.ReduceOp.SUM)
            metrics = dict(zip(keys, (values / world).tolist()))
        self.metrics = metrics
        if callable(log_metric):
            for key, value in metrics.items():
                log_metric(key, value)

    def _is_main(self) -> bool:
        if self.accelerator is not None:
            return bool(self.accelerator.is_main_process)
        dist = torch.distributed
        return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0

    def _watch(self, accuracy: float) -> None:
        if math.isnan(accuracy):
            return
        r = self.reward_settings
        fired = self.watcher.update(accuracy)
        if fired is None:
            return
        if fired == "high":
            message = (f"discriminator accuracy stayed above {r.saturation_high} for {r.saturation_window} steps: "
                       "the reward is saturated (try a smaller discriminator.lr, fewer steps_per_generator_step, "
                       "label_smoothing, or loss=bradley_terry)")
        else:
            message = (f"discriminator accuracy stayed below {r.saturation_low} for {r.saturation_window} steps: "
                       "the reward carries no signal (try a larger discriminator.lr, more warmup_steps, or "
                       "another hidden_layer)")
        message = f"generator step {self.calls}: {message}"  # a distinct text, so Python's warning filter shows each streak
        if r.stop_on_saturation:
            raise SaturationStop(message + "; stopping because reward.stop_on_saturation is set")
        if self._is_main():
            warnings.warn(message, RuntimeWarning, stacklevel=3)
