"""One encoded batch of the discriminator's training (`EncodedBatch`), and the pure helpers around it:
padding and concatenation, the relevance negatives' pairing, a sub-batch of some fakes, balanced accuracy.

Shapes: M completions (fakes) in a batch, R unique real responses, T tokens, H the encoder's width (for a
token-reading discriminator the "hidden" tensors are token ids [B, T] instead of states [B, T, H]).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F


@dataclasses.dataclass
class EncodedBatch:
    """One generation batch, encoded. M completions, R unique real responses."""

    prompts: list            # [M] prompt of each completion (str or messages)
    fakes: list[str]         # [M] completion texts
    reals: list[str]         # [R] unique real responses
    pair: torch.Tensor       # [M] long: index into reals of each completion's real response
    fake_h: torch.Tensor     # [M, Tf, H]
    fake_m: torch.Tensor     # [M, Tf] bool
    real_h: torch.Tensor     # [R, Tr, H]
    real_m: torch.Tensor     # [R, Tr] bool
    # relevance negatives (discriminator.mismatched_negatives > 0): real response mis_real[k] read after another
    # prompt of the batch, the prompt of real mis_pair[k]; None when off or the batch has one prompt
    mis_h: Optional[torch.Tensor] = None     # [R', Tm, H]
    mis_m: Optional[torch.Tensor] = None     # [R', Tm] bool
    mis_pair: Optional[torch.Tensor] = None  # [R'] long: index into reals of the prompt each one is read after
    mis_real: Optional[torch.Tensor] = None  # [R'] long: index into reals of the response each one is
    # discriminator.mark_end: the generator's flag per completion, True where it stopped at the token cap (None
    # when not known: D then reads the text's length; `features.HiddenStateEncoder._response_ids`)
    fake_cut: Optional[list] = None          # [M] bool or None


def pad_cat(parts: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate (hidden [b_i, T_i, H] or token ids [b_i, T_i], mask [b_i, T_i]) pairs along the batch,
    right-padding to max T_i."""
    t = max(h.shape[1] for h, _ in parts)
    hs, ms = [], []
    for h, m in parts:
        pad = t - h.shape[1]
        hs.append(F.pad(h, (0, pad) if h.ndim == 2 else (0, 0, 0, pad)) if pad else h)  # token ids [b, T]: 2-d
        ms.append(F.pad(m, (0, pad), value=False) if pad else m)
    return torch.cat(hs), torch.cat(ms)


def prompt_key(prompt: Any) -> str:
    """A prompt (string or messages) as one comparable string."""
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, ensure_ascii=False)


def mismatched_prompts(prompt_keys: Sequence[str]) -> list[int]:
    """For each real response i (its prompt's key at i), the index j of another real whose prompt differs,
    so that (prompt of j, response i) is a reply to the wrong post; -1 where none exists (one prompt).

    Deterministic: the next real (cyclically) with a different prompt. [R] keys -> [R] indices.
    """
    n = len(prompt_keys)
    out = []
    for i in range(n):
        j = next((k % n for k in range(i + 1, i + n) if prompt_keys[k % n] != prompt_keys[i]), -1)
        out.append(j)
    return out


def select_rows(batch: EncodedBatch, fake_rows: Sequence[int]) -> EncodedBatch:
    """The sub-batch of the fakes at `fake_rows` [M'] (in that order, repeats allowed): their real responses,
    and the relevance negatives made of those reals, each with the real reply of the prompt it is read after
    (added to the reals when not there yet). No encoding: slices of `batch`'s tensors, so a pool encoded once
    serves many updates. Real responses stay in `batch`'s order; `pair` and `mis_pair` are re-indexed."""
    device = batch.pair.device
    picked = [int(i) for i in fake_rows]
    rows = torch.as_tensor(picked, dtype=torch.long, device=device)
    keep = set(batch.pair[rows].tolist())
    mis = []
    if batch.mis_h is not None and batch.mis_real is not None:
        mis = [k for k, i in enumerate(batch.mis_real.tolist()) if i in keep]
        partner = batch.mis_pair.tolist()
        keep |= {partner[k] for k in mis}
    reals = sorted(keep)
    new_index = torch.full((len(batch.reals),), -1, dtype=torch.long, device=device)
    real_idx = torch.as_tensor(reals, dtype=torch.long, device=device)
    new_index[real_idx] = torch.arange(len(reals), device=device)
    out = EncodedBatch([batch.prompts[i] for i in picked], [batch.fakes[i] for i in picked],
                       [batch.reals[i] for i in reals], new_index[batch.pair[rows]], batch.fake_h[rows],
                       batch.fake_m[rows], batch.real_h[real_idx], batch.real_m[real_idx],
                       fake_cut=None if batch.fake_cut is None else [batch.fake_cut[i] for i in picked])
    if mis:
        k = torch.as_tensor(mis, dtype=torch.long, device=device)
        out.mis_h, out.mis_m = batch.mis_h[k], batch.mis_m[k]
        out.mis_pair, out.mis_real = new_index[batch.mis_pair[k]], new_index[batch.mis_real[k]]
    return out


def balanced_accuracy(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> float:
    """Mean of the accuracy on reals (logit > 0) and on fakes (logit < 0)."""
    parts = [(real_logits > 0).float().mean()] if real_logits.numel() else []
    parts += [(fake_logits < 0).float().mean()] if fake_logits.numel() else []
    return float(torch.stack(parts).mean()) if parts else float("nan")
