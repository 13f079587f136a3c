"""From discriminator scores to generator rewards: the registry of reward shapes, group normalisation,
and `DiscriminatorReward`, the discriminator trainer as a plain TRL reward function.

Shapes: N completions in a batch, G completions per prompt (TRL repeats each dataset row G times in
a row, so the batch is N/G groups of G consecutive completions). To add a reward shape:
`register_reward_shape("name", fn)` with fn(clipped logits [N]) -> rewards [N]; `reward.kind=name`
then selects it (config validation reads the names from `REWARD_SHAPES`).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from llmgan.adversarial.d_trainer import DiscriminatorTrainer
from llmgan.adversarial.features import cut_flags
from llmgan.errors import LlmganError
from llmgan.models import end_token_ids

REWARD_SHAPES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    # log sigmoid(D): log-probability of "real"; <= 0, smooth, steep only when D is confident it is fake
    "log_sigmoid": F.logsigmoid,
    # the raw logit (already clipped): unbounded in both directions
    "logit": lambda z: z,
    # sigmoid(D): probability of "real" in [0, 1]; flat (no signal) once D saturates
    "probability": torch.sigmoid,
}
"""Reward shape name -> function of the clipped logit [N] -> reward [N]; the names `reward.kind` accepts."""

def register_reward_shape(name: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    REWARD_SHAPES[name] = fn


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



def reward_metrics(rewards: torch.Tensor) -> dict[str, float]:
    """generator/reward_mean and generator/reward_std (unbiased; 0 for one completion) of rewards [N]."""
    return {"generator/reward_mean": float(rewards.mean()),
            "generator/reward_std": float(rewards.std()) if rewards.numel() > 1 else 0.0}


class DiscriminatorReward(DiscriminatorTrainer):
    """The discriminator trainer as a reward function for TRL's stock GRPOTrainer: each call encodes the
    batch, updates D, scores the completions with the updated D and returns the shaped rewards.

    `reward(prompts=..., completions=..., completion_ids=..., response=[...], **columns) -> list[float]`,
    one finite float per completion (an empty completion gets D's learned "empty" score). The rewards are
    not normalised here: GRPO centres them per prompt group and scales them per `scale_rewards` (map
    RewardSettings with `trl_scale_rewards`). llmgan's own trainer (`llmgan.training.trainer`) writes these
    steps out in its reward hook instead, timing each; this callable serves other trainers and tests.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.__name__ = "discriminator"  # TRL names reward functions by __name__

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Any = None,
                 response: Optional[Sequence[Any]] = None, **kwargs: Any) -> list[float]:
        """prompts [N], completions [N] (strings or [{role, content}]), response [N] real responses (TRL
        repeats the dataset column per generation) -> N floats. Fakes are re-tokenized from text exactly like
        reals; completion_ids only say, for discriminator.mark_end, which completions stopped at the cap."""
        cut = None
        if completion_ids is not None and getattr(self.encoder, "end_id", None) is not None:
            # every id that ends a completion, as the trainer's flags count them (a model may declare several;
            # the tokenizer's EOS, the encoder's end mark, is one of them)
            ends = end_token_ids(self.encoder.model, self.encoder.tokenizer)
            cut = cut_flags(completion_ids, [*ends, self.encoder.tokenizer.pad_token_id])
        batch = self.encode(prompts, completions, kwargs.get(self.real_column) if response is None else response, cut)
        metrics = self.update(batch)
        real_logits, fake_logits = self.score(batch)
        rewards = self.shape(fake_logits, batch)
        metrics.update({**self.score_metrics(real_logits, fake_logits), **reward_metrics(rewards),
                        **self.length_metrics(batch)})
        self.finish(batch, metrics, kwargs.get("log_metric"))
        self.watch(self.metrics["discriminator/accuracy"])
        return [float(r) for r in rewards.cpu()]

    def shape(self, fake_logits: torch.Tensor, batch: Any = None) -> torch.Tensor:
        """D's logits on the fakes [N] -> rewards [N] with this run's `reward.kind` and `reward.clip`; with
        `reward.length_weight` w > 0 and the encoded `batch`, plus w x log p_human(L) / p_generated(L) of each
        fake's token count L (`llmgan.adversarial.length`)."""
        rewards = shape_reward(fake_logits, self.reward_settings.kind, self.reward_settings.clip)
        weight = float(getattr(self.reward_settings, "length_weight", 0.0))
        if weight and batch is not None:
            rewards = rewards + weight * self.lengths.ratio(batch.fake_m.sum(1)).to(rewards.device)
        return rewards

    def length_metrics(self, batch: Any) -> dict[str, float]:
        """With `reward.length_weight` > 0: generator/length_log_ratio (mean over the fakes), and the mean token
        counts of the fakes (generator/response_tokens) and of the human lengths behind the estimate; else {}."""
        if not float(getattr(self.reward_settings, "length_weight", 0.0)):
            return {}
        lengths = batch.fake_m.sum(1)
        human = list(self.lengths.human)
        return {"generator/length_log_ratio": float(self.lengths.ratio(lengths).mean()),
                "generator/response_tokens": float(lengths.float().mean()),
                "generator/human_response_tokens": sum(human) / len(human) if human else float("nan")}
