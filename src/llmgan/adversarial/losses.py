"""Discriminator losses: one registry entry each (`LOSSES`), pure functions on logits.

A loss takes the discriminator's logits on real responses and on fakes and returns a scalar to
minimise. `paired` losses get real_logits [N] aligned with fake_logits [N] (pair i = a fake and the real
reply to the same prompt; replayed fakes carry their own real); unpaired ones get real_logits [R]
(the batch's unique reals) and fake_logits [M]. To add one: `register_loss("name", fn, paired=...)`
with `fn(real_logits, fake_logits, settings) -> scalar` (settings: DiscriminatorSettings);
`discriminator.loss=name` then selects it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F


def bce_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Class-balanced binary cross-entropy with real = 1, fake = 0.

    real_logits: [N], fake_logits: [M] -> scalar. Targets are 1 - s for reals and s for fakes
    (s = label_smoothing). The real and fake terms are averaged separately and then together, so the
    usual G fakes per real do not tilt D towards calling everything fake. Either side may be empty.
    Uses BCE-with-logits (softplus form), which is stable for any logit.
    """
    terms = []
    if real_logits.numel():
        target = torch.full_like(real_logits, 1.0 - label_smoothing)
        terms.append(F.binary_cross_entropy_with_logits(real_logits, target))
    if fake_logits.numel():
        target = torch.full_like(fake_logits, label_smoothing)
        terms.append(F.binary_cross_entropy_with_logits(fake_logits, target))
    if not terms:
        raise ValueError("bce_loss needs at least one real or fake logit")
    return torch.stack(terms).mean()


def bradley_terry_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Pairwise Bradley-Terry loss of GAD (arXiv 2511.10643): mean over pairs of -log sigmoid(D(real) - D(fake)).

    real_logits: [N], fake_logits: [N] (pair i = real_logits[i] vs fake_logits[i]) -> scalar.
    Computed as -logsigmoid(diff), never log(sigmoid(.)), so large margins neither underflow nor give NaN.
    """
    if real_logits.shape != fake_logits.shape:
        raise ValueError(f"bradley_terry_loss needs paired logits, got {tuple(real_logits.shape)} "
                         f"and {tuple(fake_logits.shape)}")
    if not real_logits.numel():
        raise ValueError("bradley_terry_loss needs at least one pair")
    return -F.logsigmoid(real_logits - fake_logits).mean()


@dataclass(frozen=True)
class Loss:
    """A registry entry: fn(real_logits, fake_logits, settings) -> scalar, and whether it needs pairs."""

    fn: Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]
    paired: bool = False


LOSSES: dict[str, Loss] = {}
"""Loss name -> Loss. The names are what `discriminator.loss` accepts."""


def register_loss(name: str, fn: Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor], paired: bool = False) -> Loss:
    LOSSES[name] = Loss(fn, paired)
    return LOSSES[name]


# looked up at call time (not bound here), so a test can replace bce_loss / bradley_terry_loss in this module
register_loss("bce", lambda real, fake, s: bce_loss(real, fake, s.label_smoothing))
register_loss("bradley_terry", lambda real, fake, s: bradley_terry_loss(real, fake), paired=True)
