"""`DiscriminatorTrainer`: the discriminator's own training. It owns D (an architecture from
`discriminators.ARCHITECTURES`), its AdamW optimizer, the replay buffer, its RNG, the saturation watcher,
gradient sync across processes, and save/load.

The adversarial step calls it in order (see `llmgan.training.trainer.AdversarialGRPOTrainer`):
`encode(prompts, completions, reals) -> batch`, `update(batch, k) -> metrics` (k AdamW steps on reals vs
fakes + replay, with a loss from `losses.LOSSES`), `score(batch) -> (real_logits, fake_logits)` with the
updated D in eval mode, then `finish(batch, metrics, log_metric)` (replay push, metrics averaged over
processes) and `watch(accuracy)`. `train_step` is the warm-up's encode + update + finish.

Relevance negatives (`discriminator.mismatched_negatives`, prompt-conditioned encoders only): `encode` also
reads each real response after another prompt of the batch (`mismatched_prompts`), and every update adds
some of those as fakes (paired losses: against the right reply to that prompt), so D learns that a reply
to the wrong post is not a real reply; `discriminator/mismatch_accuracy` says how often D calls them fake.

Shapes: M completions (fakes) in a batch, R unique real responses, T tokens, H the encoder's width.

Determinism: dropout and subset sampling draw from D's own torch.Generator (dropout runs under a
forked RNG seeded from it), so D's trajectory does not depend on, nor disturb, the trainer's global
RNG, and `state_dict()` round trips reproduce the next steps exactly.

Multi-process: D is built from `seed` (identical on every rank) and, when torch.distributed is
initialized with world size > 1, its gradients are averaged with all_reduce before every optimizer
step, so D stays identical on all ranks while each rank contributes its own samples. Metrics are
averaged the same way, so all ranks take the same saturation decision. Every rank must take the same
number of steps (TRL does).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from llmgan.adversarial import d_checkpoint
from llmgan.adversarial.batch import (EncodedBatch, balanced_accuracy, mismatched_prompts, pad_cat, prompt_key,
                                     select_rows)
from llmgan.adversarial.discriminators import build_discriminator
from llmgan.adversarial.features import as_text
from llmgan.adversarial.length import LengthHistory, matched_prefix_masks
from llmgan.adversarial.losses import LOSSES
from llmgan.adversarial.replay import ReplayBuffer, stack_rows
from llmgan.adversarial.saturation import SaturationStop, SaturationWatcher
from llmgan.errors import LlmganError


class DiscriminatorTrainer:
    """The discriminator and its training; see the module docstring for the order of calls.

    `settings` is a DiscriminatorSettings, `reward` a RewardSettings (its saturation_* fields drive the
    watcher), `encoder` a HiddenStateEncoder (or anything with `encode`, `hidden_size`,
    `condition_on_prompt`, `device`). After `finish`, `self.metrics` holds the latest metrics; `faults`
    the NaN/Inf found since the latest `encode` (D's update skipped, scores sanitised).
    """

    def __init__(self, settings: Any, reward: Any, encoder: Any, seed: int = 0,
                 accelerator: Any = None, real_column: str = "response", device: Any = None):
        self.settings = settings
        self.reward_settings = reward
        self.encoder = encoder
        self.accelerator = accelerator
        self.real_column = real_column
        # D's device: given (the training device, where the trainer will move the policy), else the encoder's now
        self.device = torch.device(device) if device is not None else encoder.device
        with torch.random.fork_rng(devices=[]):  # same init on every rank, global RNG untouched
            torch.manual_seed(seed)
            self.model = build_discriminator(settings, encoder.hidden_size, encoder)
        self.model.to(self.device)
        # No weight decay on norms, biases and the empty vector (1-d parameters); frozen weights (a token-reading
        # D's copy of the LM under LoRA) are not optimised.
        decay = [p for p in self.model.parameters() if p.requires_grad and p.ndim > 1]
        no_decay = [p for p in self.model.parameters() if p.requires_grad and p.ndim <= 1]
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
        self._heldout: Optional[tuple[list, list, list]] = None  # set_heldout: (prompts, fakes, reals)
        self._heldout_cut: Optional[list] = None  # set_heldout: the fakes' cut flags (discriminator.mark_end)
        self._heldout_encoded: Optional[list] = None  # their encodings, kept when the encoder is frozen
        self.d_loss = LOSSES.get(settings.loss)  # a losses.Loss
        # discriminator.length_matched: D trains on (real, fake) pairs cut to one length; it needs each fake's real
        self.length_matched = bool(getattr(settings, "length_matched", False))
        self.keeps_reals = self.d_loss.paired or self.length_matched  # replay items keep their real's features
        # the token counts of the reals D read and the latest fakes: reward.length_weight's two densities
        self.lengths = LengthHistory(int(getattr(reward, "length_window", 64)))
        if self.d_loss is None:
            raise LlmganError(f"discriminator.loss must be one of {', '.join(LOSSES)} (got {settings.loss!r})")

    # -- held-out strength ---------------------------------------------------------------------
    def set_heldout(self, prompts: Sequence[Any], fakes: Sequence[Any], reals: Sequence[Any],
                    cut: Optional[Sequence[Optional[bool]]] = None) -> None:
        """A fixed held-out set on which `heldout_auroc` measures D: the start model's samples (`fakes`; `cut`, their
        cut flags as in `encode`) and the real responses (`reals`) to the same held-out prompts, one each per prompt.
        `finish` logs `discriminator/heldout_auroc` every `settings.heldout_every` scored batches (0: never)."""
        if not len(prompts) == len(fakes) == len(reals) or not len(prompts):
            raise ValueError("set_heldout needs one fake and one real response per prompt")
        self._heldout = ([p for p in prompts], [as_text(f) for f in fakes], [as_text(r) for r in reals])
        self._heldout_cut = None if cut is None else list(cut)
        self._heldout_encoded = None

    @torch.no_grad()
    def heldout_auroc(self, chunk: int = 32) -> float:
        """AUROC of D on the held-out set: real responses (positive) against the start model's samples;
        0.5 is chance, 1.0 a perfect teacher. nan without a held-out set (`set_heldout`)."""
        from llmgan.stats import rank_auroc

        if self._heldout is None:
            return float("nan")
        if self._heldout_encoded is None or not self.cache_features:
            prompts, fakes, reals = self._heldout
            cond = self.encoder.condition_on_prompt
            encoded = [tuple(t.to(self.device) for t in self.encoder.encode(prompts if cond else None, texts, cut=cut))
                       for texts, cut in ((reals, None), (fakes, self._heldout_cut))]
            self._heldout_encoded = encoded if self.cache_features else None
        else:
            encoded = self._heldout_encoded
        self.model.eval()
        real, fake = (torch.cat([self.model(h[i:i + chunk], m[i:i + chunk]).float().cpu()
                                 for i in range(0, len(h), chunk)]) for h, m in encoded)
        return rank_auroc(real.numpy(), fake.numpy())

    # -- the steps --------------------------------------------------------------------------------

    def encode(self, prompts: Sequence[Any], completions: Sequence[Any], response: Optional[Sequence[Any]],
               cut: Optional[Sequence[Optional[bool]]] = None) -> EncodedBatch:
        """prompts [M], completions [M] (strings or [{role, content}]), response [M] the real reply of each
        completion's prompt, cut [M] (optional) whether each completion stopped at the generation cap -> the
        batch: fakes and the unique reals, encoded."""
        self.faults = []
        return self._encode(prompts, completions, response, cut)

    def update(self, batch: EncodedBatch, steps: Optional[int] = None) -> dict[str, float]:
        """`steps` (default settings.steps_per_generator_step) AdamW updates of D on the batch's reals vs its
        fakes, a share `replay_fraction` of each update's fakes drawn from the replay buffer (the rest a
        fresh random subset of the batch), with the loss `settings.loss`. Returns partial metrics."""
        steps = self.settings.steps_per_generator_step if steps is None else steps
        s = self.settings
        # Replay: each step's fakes are round(replay_fraction * M) buffer samples + the rest from this batch.
        m = len(batch.fakes)
        n_replay = min(round(s.replay_fraction * m), len(self.replay)) if s.replay_size else 0
        draws = [self.replay.sample_indices(n_replay) for _ in range(steps)]
        used = sorted({i for d in draws for i in d})
        local = {i: j for j, i in enumerate(used)}
        rep_h = rep_m = rep_rh = rep_rm = None
        if used:
            rep_h, rep_m = self._replay_features(used, "fake")
            if self.keeps_reals:
                rep_rh, rep_rm = self._replay_features(used, "real")
        metrics = {}
        with torch.no_grad():  # accuracy on fresh samples, before D trains on them
            self.model.eval()
            real_logits, fake_logits = self._logits(batch)
        metrics["discriminator/accuracy_before_update"] = balanced_accuracy(real_logits, fake_logits)
        losses = []
        with torch.enable_grad():  # TRL may call rewards inside no_grad
            for draw in draws:
                rep = torch.tensor([local[i] for i in draw], dtype=torch.long, device=self.device)
                cur = torch.randperm(m, generator=self.generator)[:m - len(draw)].to(self.device)
                mis = self._mismatched_subset(batch, m)
                if self.length_matched:
                    hidden, mask, n_real = self._matched_rows(batch, cur, rep, rep_h, rep_m, rep_rh, rep_rm, mis)
                    self.model.train()
                    with self._own_rng():
                        logits = self.model(hidden, mask)
                    losses.append(self._step(self.d_loss.fn(logits[:n_real], logits[n_real:], s)))
                    continue
                parts = [(batch.real_h, batch.real_m), (batch.fake_h[cur], batch.fake_m[cur])]
                if len(draw):
                    parts.append((rep_h[rep], rep_m[rep]))
                    if rep_rh is not None:
                        parts.append((rep_rh[rep], rep_rm[rep]))
                if mis is not None:
                    parts.append((batch.mis_h[mis], batch.mis_m[mis]))
                hidden, mask = pad_cat(parts)
                self.model.train()
                with self._own_rng():
                    logits = self.model(hidden, mask)
                r = len(batch.reals)
                n_rep_real = len(draw) if self.d_loss.paired else 0
                real_logits, fake_logits = logits[:r], logits[r:r + m]
                if self.d_loss.paired:
                    real_logits = real_logits[batch.pair[cur]]
                    if len(draw):
                        real_logits = torch.cat([real_logits, logits[r + m:r + m + n_rep_real]])
                if mis is not None:  # a reply to the wrong post is one more fake (paired: with the right reply)
                    fake_logits = torch.cat([fake_logits, logits[r + m + n_rep_real:]])
                    if self.d_loss.paired:
                        real_logits = torch.cat([real_logits, logits[:r][batch.mis_pair[mis]]])
                losses.append(self._step(self.d_loss.fn(real_logits, fake_logits, s)))
        self.model.eval()
        if batch.mis_h is not None:
            with torch.no_grad():
                mis_logits = self.model(batch.mis_h, batch.mis_m).float()
            metrics["discriminator/mismatch_accuracy"] = float((mis_logits < 0).float().mean())
        metrics["discriminator/loss"] = sum(losses) / len(losses) if losses else float("nan")
        metrics["discriminator/replay_samples"] = float(n_replay)
        metrics["discriminator/skipped_updates"] = float(len(self.faults))
        return metrics

    def _step(self, loss: torch.Tensor) -> float:
        """Backward and one AdamW step on `loss` (gradients averaged over ranks) -> the loss as a float. NaN/Inf
        in the loss or a gradient skips the step (D keeps its weights) and reports the cause; the gradients
        are the same on every rank after _sync_gradients, so all ranks skip together."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._sync_gradients()
        grads_ok = all(bool(torch.isfinite(p.grad).all()) for p in self.model.parameters() if p.grad is not None)
        if not grads_ok:
            self.faults.append(f"discriminator loss {float(loss.detach()):.4g}, gradient NaN/Inf: update skipped")
        elif not torch.isfinite(loss.detach()) and self._world_size() == 1:
            self.faults.append(f"discriminator loss is {float(loss.detach())}: update skipped")
        else:
            self.optimizer.step()
            self.updates += 1
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def _matched_rows(self, batch: EncodedBatch, cur: torch.Tensor, rep: torch.Tensor, rep_h, rep_m, rep_rh, rep_rm,
                      mis: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """One length-matched update's input (`discriminator.length_matched`): every fake beside its own real,
        both cut to the shorter one's token count (`matched_prefix_masks`), so D sees no length and no ending.
        Rows: the reals of the current fakes `cur`, of the replayed fakes `rep`, the right replies of the
        relevance negatives `mis`, then those fakes in the same order -> (hidden, mask, number of real rows);
        row i of the reals pairs with row i of the fakes (paired losses; BCE reads them as two sets)."""
        pair = batch.pair[cur]
        reals = [(batch.real_h[pair], batch.real_m[pair])]
        fakes = [(batch.fake_h[cur], batch.fake_m[cur])]
        if len(rep):
            reals.append((rep_rh[rep], rep_rm[rep]))
            fakes.append((rep_h[rep], rep_m[rep]))
        if mis is not None:
            right = batch.mis_pair[mis]
            reals.append((batch.real_h[right], batch.real_m[right]))
            fakes.append((batch.mis_h[mis], batch.mis_m[mis]))
        cut_reals, cut_fakes = [], []
        for (rh, rm), (fh, fm) in zip(reals, fakes):
            fm, rm = matched_prefix_masks(fm, rm)
            cut_reals.append((rh, rm))
            cut_fakes.append((fh, fm))
        hidden, mask = pad_cat(cut_reals + cut_fakes)
        return hidden, mask, sum(len(h) for h, _ in cut_reals)

    def score(self, batch: EncodedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """D in eval mode: (real logits [R], fake logits [M]), counted as one scored generator batch; NaN/Inf
        scores of fakes are reported as a fault."""
        real_logits, fake_logits = self._logits(batch)
        bad = int((~torch.isfinite(fake_logits)).sum())
        if bad:
            self.faults.append(f"discriminator score is NaN/Inf for {bad} of {fake_logits.numel()} completions")
        self.calls += 1
        return real_logits, fake_logits

    def score_metrics(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> dict[str, float]:
        """discriminator/accuracy (balanced), real_score and fake_score (mean sigmoid)."""
        return {"discriminator/accuracy": balanced_accuracy(real_logits, fake_logits),
                "discriminator/real_score": float(torch.sigmoid(real_logits).mean()),
                "discriminator/fake_score": float(torch.sigmoid(fake_logits).mean())}

    def train_step(self, prompts: Sequence[Any], completions: Sequence[Any], response: Sequence[Any],
                   steps: Optional[int] = None, cut: Optional[Sequence[Optional[bool]]] = None) -> dict[str, float]:
        """Discriminator-only update (warm-up): encode, update, finish; returns the metrics.

        steps defaults to settings.steps_per_generator_step (at least 1); cut as in `encode`.
        """
        t0 = time.perf_counter()
        batch = self.encode(prompts, completions, response, cut)
        return self.train_on(batch, steps, {"timing/encode": self._elapsed(t0)})

    def train_on(self, batch: EncodedBatch, steps: Optional[int] = None,
                 metrics: Optional[dict] = None) -> dict[str, float]:
        """Discriminator-only update on an already encoded batch (a warm-up pool's `select`): update, score
        metrics, finish; returns the metrics (with `metrics` given merged in)."""
        steps = max(1, self.settings.steps_per_generator_step) if steps is None else steps
        metrics = dict(metrics or {})
        self.faults = []  # this call's skipped updates only (a pool is encoded once, before many calls)
        t0 = time.perf_counter()
        metrics.update(self.update(batch, steps))
        metrics["timing/discriminator"] = self._elapsed(t0)
        metrics.update(self.score_metrics(*self._logits(batch)))
        self.finish(batch, metrics, None)
        return dict(self.metrics)

    @staticmethod
    def select(batch: EncodedBatch, fake_rows: Sequence[int]) -> EncodedBatch:
        """The sub-batch of `batch`'s fakes at `fake_rows` with their reals (`adversarial.batch.select_rows`):
        a pool encoded once by `encode` feeds many `train_on` calls."""
        return select_rows(batch, fake_rows)

    def _model_state(self) -> dict:
        """D's weights to save: all of them, or the trainable ones of an architecture that rebuilds the rest
        from the start model (`trainable_only_in_checkpoints`, e.g. `lm` with LoRA)."""
        state = self.model.state_dict()
        if getattr(self.model, "trainable_only_in_checkpoints", False):
            trainable = {n for n, p in self.model.named_parameters() if p.requires_grad}
            state = {k: v for k, v in state.items() if k in trainable}
        return state

    def state_dict(self) -> dict:
        return {"model": self._model_state(), "optimizer": self.optimizer.state_dict(),
                "replay": self.replay.state_dict(), "generator": self.generator.get_state(),
                "updates": self.updates, "calls": self.calls, "watcher": self.watcher.state_dict(),
                "replay_features": [dict(f) if f else None for f in self.replay.features],
                "lengths": self.lengths.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if getattr(self.model, "trainable_only_in_checkpoints", False):
            expected = set(self._model_state())
            if set(state["model"]) != expected:
                raise RuntimeError(f"the checkpoint holds {len(state['model'])} trainable tensors, this discriminator "
                                   f"{len(expected)}")
            self.model.load_state_dict(state["model"], strict=False)
        else:
            self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.replay.load_state_dict(state["replay"])
        self.generator.set_state(state["generator"])
        self.updates, self.calls = int(state["updates"]), int(state["calls"])
        self.watcher.load_state_dict(state["watcher"])
        self.lengths.load_state_dict(state.get("lengths"))
        features = state.get("replay_features")
        if self.cache_features and features is not None and len(features) == len(self.replay.items):
            self.replay.features = [dict(f) if f else None for f in features]

    WEIGHTS_FILE = d_checkpoint.WEIGHTS_FILE
    STATE_FILE = d_checkpoint.STATE_FILE
    OPTIMIZER_FILE = d_checkpoint.OPTIMIZER_FILE
    REPLAY_FEATURES_FILE = d_checkpoint.REPLAY_FEATURES_FILE

    def save(self, directory: str | Path) -> None:
        """Write D's weights, optimizer tensors and RNG states (safetensors) and the rest (JSON) to `directory`;
        only safetensors and JSON (`llmgan.adversarial.d_checkpoint`)."""
        d_checkpoint.save(self, directory)

    def load(self, directory: str | Path) -> None:
        """Restore what `save` wrote (the discriminator architecture must match the current settings)."""
        d_checkpoint.load(self, directory)

    # -- internals -------------------------------------------------------------------------------

    def _elapsed(self, t0: float) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - t0

    def _encode(self, prompts: Sequence[Any], completions: Sequence[Any], response: Optional[Sequence[Any]],
                cut: Optional[Sequence[Optional[bool]]] = None) -> EncodedBatch:
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
            key = (prompt_key(p), text)
            if key not in index:
                index[key] = len(reals)
                real_prompts.append(p)
                reals.append(text)
            pair.append(index[key])
        cond = self.encoder.condition_on_prompt
        fake_h, fake_m = (t.to(self.device) for t in self.encoder.encode(list(prompts) if cond else None, fakes,
                                                                         cut=cut))
        real_h, real_m = (t.to(self.device) for t in self.encoder.encode(real_prompts if cond else None, reals))
        batch = EncodedBatch(list(prompts), fakes, reals, torch.tensor(pair, dtype=torch.long, device=self.device),
                       fake_h, fake_m, real_h, real_m, fake_cut=None if cut is None else list(cut))
        self.lengths.add(human=real_m.sum(1).tolist(), generated=fake_m.sum(1).tolist())
        if cond and getattr(self.settings, "mismatched_negatives", 0.0) > 0:
            other = mismatched_prompts([prompt_key(p) for p in real_prompts])
            rows = [i for i, j in enumerate(other) if j >= 0]
            if rows:
                batch.mis_h, batch.mis_m = (t.to(self.device) for t in self.encoder.encode(
                    [real_prompts[other[i]] for i in rows], [reals[i] for i in rows]))
                batch.mis_pair = torch.tensor([other[i] for i in rows], dtype=torch.long, device=self.device)
                batch.mis_real = torch.tensor(rows, dtype=torch.long, device=self.device)
        return batch

    def _mismatched_subset(self, batch: EncodedBatch, m: int) -> Optional[torch.Tensor]:
        """Which relevance negatives join this update: round(mismatched_negatives * M) of them (at most all),
        drawn with D's generator; None when there are none (no draw then, so runs without them are unchanged)."""
        if batch.mis_h is None:
            return None
        n = min(len(batch.mis_h), max(1, round(self.settings.mismatched_negatives * m)))
        return torch.randperm(len(batch.mis_h), generator=self.generator)[:n].to(self.device)

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
            cut = [it.get("cut") for it in items] if kind == "fake" else None  # the generator's flag, where kept
            h, m = (t.to(self.device) for t in self.encoder.encode(prompts, [it[kind] for it in items], cut=cut))
            for j, i in enumerate(missing):
                rows[i] = h[j, :int(m[j].sum())].clone()
                if self.cache_features:
                    self.replay.features[i] = {**(self.replay.features[i] or {}), kind: rows[i]}
        self.cache_hits += len(used) - len(missing)
        return stack_rows([rows[i] for i in used], self.encoder.hidden_size, self.device)

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
            if not p.requires_grad:
                continue
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            torch.distributed.all_reduce(p.grad, op=torch.distributed.ReduceOp.SUM)
            p.grad.div_(world)

    @torch.no_grad()
    def _logits(self, batch: EncodedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """D in eval mode on the batch: (real logits [R], fake logits [M]), one forward."""
        self.model.eval()
        hidden, mask = pad_cat([(batch.real_h, batch.real_m), (batch.fake_h, batch.fake_m)])
        logits = self.model(hidden, mask).float()
        return logits[:len(batch.reals)], logits[len(batch.reals):]

    def finish(self, batch: EncodedBatch, metrics: dict[str, float], log_metric: Optional[Callable]) -> None:
        """Push this batch's fakes to the replay buffer, average metrics over ranks, publish them."""
        pairs = batch.pair.tolist()
        features = None
        if self.cache_features:  # frozen encoder: keep each fake's response features (and its real's, for BT pairs)
            n_fake = batch.fake_m.sum(1).tolist()
            features = [{"fake": batch.fake_h[j, :int(n)].detach().clone()} for j, n in enumerate(n_fake)]
            if self.keeps_reals:
                n_real = batch.real_m.sum(1).tolist()
                reals = [batch.real_h[i, :int(n)].detach().clone() for i, n in enumerate(n_real)]  # once per real
                for f, i in zip(features, pairs):
                    f["real"] = reals[i]
        cuts = batch.fake_cut or [None] * len(batch.fakes)
        self.replay.add(({"prompt": p, "fake": f, "real": batch.reals[int(i)], **({} if c is None else {"cut": c})}
                         for p, f, i, c in zip(batch.prompts, batch.fakes, pairs, cuts)), features)
        every = getattr(self.settings, "heldout_every", 0)
        if every and self._heldout is not None and self.calls and self.calls % every == 0:
            metrics["discriminator/heldout_auroc"] = self.heldout_auroc()  # the same on every rank: one set
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

    def watch(self, accuracy: float) -> None:
        """Feed D's post-update accuracy to the saturation watcher: warn, or raise SaturationStop."""
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
