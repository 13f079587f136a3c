"""The replay buffer of older synthetic samples the discriminator keeps training on."""

from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

import torch


class ReplayBuffer:
    """The most recent synthetic samples, as texts: {"prompt", "fake", "real"} dicts (and "cut", the generator's
    cut flag, where known), oldest first.

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



def stack_rows(rows: Sequence[torch.Tensor], hidden_size: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad per-row features [t_i, H] into (hidden [n, max(1, t_i), H], mask [n, T] bool); per-row
    token ids [t_i] (a token-reading discriminator's) into (ids [n, T] long, zero-padded, mask)."""
    t = max([1, *(r.shape[0] for r in rows)])
    dtype = rows[0].dtype if rows else torch.float32
    tokens = bool(rows) and rows[0].ndim == 1
    hidden = torch.zeros(len(rows), t, *(() if tokens else (hidden_size,)), dtype=dtype, device=device)
    mask = torch.zeros(len(rows), t, dtype=torch.bool, device=device)
    for j, r in enumerate(rows):
        hidden[j, :r.shape[0]] = r
        mask[j, :r.shape[0]] = True
    return hidden, mask

