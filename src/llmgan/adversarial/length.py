"""Length, taken out of the discriminator and taught exactly: the maths of `discriminator.length_matched` and
`reward.length_weight` (issue 14: past the first game steps, most of what D's reward taught was length,
overshooting human length in both directions as D lagged behind the generator).

The realism log-ratio of a response x of length L splits in two:

    log p_human(x) / p_gen(x) = log p_human(L) / p_gen(L)  +  log p_human(x | L) / p_gen(x | L)

- The second term is left to a *length-matched* D: each (real, generated) pair it trains on is cut to the
  shorter one's token count (`matched_prefix_masks`), so both sides show the same number of tokens and
  neither an ending; D can only learn content and style. (For a causal LM's states cutting the mask is
  exact: a state never saw the tokens after it.)
- The first is one-dimensional, so it needs no learner: `length_log_ratio` estimates it with two kernel
  densities over log(1 + tokens), the human lengths D has seen and the generator's latest ones
  (`LengthHistory`). It is 0 once the generator writes human lengths, so it cannot overshoot the way a
  lagging D does.

Shapes: N responses; lengths are token counts as the discriminator reads them (after its cap).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Iterable, Optional

import torch


def matched_prefix_masks(fake_m: torch.Tensor, real_m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks of N (fake, real) pairs [N, Tf], [N, Tr] (bool, True on the leading response tokens) -> the same
    masks with both rows of each pair cut to k = min(fake tokens, real tokens) tokens."""
    if fake_m.shape[0] != real_m.shape[0]:
        raise ValueError(f"{fake_m.shape[0]} fakes and {real_m.shape[0]} reals are not pairs")
    k = torch.minimum(fake_m.sum(1), real_m.sum(1))[:, None]  # [N, 1]
    cut = lambda m: m & (torch.arange(m.shape[1], device=m.device)[None, :] < k)  # noqa: E731
    return cut(fake_m), cut(real_m)


def silverman_bandwidth(x: torch.Tensor) -> float:
    """Silverman's rule for a Gaussian kernel on the 1-d sample x [K]: 0.9 min(sd, IQR / 1.34) K^(-1/5)
    (at least 0.05, so a sample of one repeated value still has a density)."""
    x = x.double()
    if x.numel() < 2:
        return 0.25
    sd = float(x.std())
    iqr = float(torch.quantile(x, 0.75) - torch.quantile(x, 0.25)) / 1.34
    spread = min(sd, iqr) if iqr > 0 else sd
    return max(0.9 * spread * x.numel() ** -0.2, 0.05)


def log_density(points: torch.Tensor, sample: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """Log of a Gaussian kernel density fitted to `sample` [K], at `points` [N] -> [N] (float64)."""
    z = (points.double()[:, None] - sample.double()[None, :]) / bandwidth  # [N, K]
    return torch.logsumexp(-0.5 * z * z, dim=1) - math.log(sample.numel() * bandwidth * math.sqrt(2 * math.pi))


def length_log_ratio(lengths: torch.Tensor, human: torch.Tensor, generated: torch.Tensor,
                     bound: float = 5.0) -> torch.Tensor:
    """log p_human(L) - log p_gen(L) for the token counts `lengths` [N], both densities kernel estimates over
    log(1 + L) from `human` [Kh] and `generated` [Kg] token counts with one shared bandwidth (the larger of
    the two Silverman bandwidths, so the ratio compares like with like) -> [N] float32, clamped to
    [-bound, bound] (a length neither sample has seen is not an infinite reward). Zeros when either
    sample is empty."""
    if human.numel() == 0 or generated.numel() == 0:
        return torch.zeros(lengths.shape, dtype=torch.float32)
    h, g, x = (torch.log1p(t.double().cpu()) for t in (human, generated, lengths))
    bw = max(silverman_bandwidth(h), silverman_bandwidth(g))
    ratio = log_density(x, h, bw) - log_density(x, g, bw)
    return ratio.clamp(-bound, bound).float()


class LengthHistory:
    """The token counts behind `length_log_ratio`: the human responses the discriminator has read (at most
    `human_size`, the most recent) and the generator's latest `window` completions."""

    def __init__(self, window: int, human_size: int = 4096):
        self.human: deque[int] = deque(maxlen=human_size)
        self.generated: deque[int] = deque(maxlen=max(1, window))

    def add(self, human: Iterable[int] = (), generated: Iterable[int] = ()) -> None:
        self.human.extend(int(n) for n in human)
        self.generated.extend(int(n) for n in generated)

    def ratio(self, lengths: torch.Tensor, bound: float = 5.0) -> torch.Tensor:
        """`length_log_ratio` of `lengths` [N] against this history -> [N]."""
        return length_log_ratio(lengths, torch.tensor(list(self.human)), torch.tensor(list(self.generated)), bound)

    def state_dict(self) -> dict:
        return {"human": list(self.human), "generated": list(self.generated)}

    def load_state_dict(self, state: Optional[dict]) -> None:
        if state:
            self.human.clear()
            self.generated.clear()
            self.add(state.get("human", ()), state.get("generated", ()))
