"""Log-probabilities of the scored tokens on the CPU: the game's update and KL reference, and the SFT loss.

Why not TRL's own path everywhere: TRL (1.16) scores tokens with a fused, tiled LM head. With Triton (CUDA,
XPU) it projects only the scored positions; on any other device (this project's CPU) it projects every
position of prompt + response through the 49k-word LM head, and its backward projects them again. py-spy put
37 % of a reply game step's samples inside that head. On one reply-shaped batch of 16 (bench/bench_update.py,
BENCHMARKS.md) the update's forward + backward took 21.6 s with it and 6.6 s here, the reference forward 8.4 s
and 3.9 s, an SFT step 10.3 s (with TRL's default checkpointing) and 5.6 s.

- `completion_logps` (the game): the model's own forward with transformers' `logits_to_keep`, so only the
  last K + 1 positions get logits.
- `labelled_logps` (SFT): the decoder once, then only the labelled positions through the LM head; valid for
  what `plain_lm_head` accepts.
The numbers are TRL's (tests/test_logprobs.py compares values and gradients, and two SFT steps end to end).
The trainers use these on the CPU only and keep TRL's path where Triton runs.
"""

from __future__ import annotations

from typing import Optional

import torch


def completion_logps_and_entropy(logits: torch.Tensor, completion_ids: torch.Tensor,
                                 completion_mask: torch.Tensor, temperature: float = 1.0, with_entropy: bool = True
                                 ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Log-probability and entropy of each completion token under softmax(logits / temperature).

    logits [B, K, V]: position k predicts completion_ids[:, k] ([B, K]); completion_mask [B, K] is 0 on
    padding. Returns (log_probs [B, K], entropy [B, K] or None without `with_entropy`), both float32 and 0
    where the mask is 0 (as TRL's fused head returns them). log_probs carries the gradient; entropy does not
    (it is a metric here). Each pass over [B, K, V] costs, so the entropy is computed only when asked for."""
    z = logits.float()
    logp = torch.log_softmax(z if temperature == 1.0 else z / temperature, dim=-1)
    token = logp.gather(-1, completion_ids.long().unsqueeze(-1)).squeeze(-1)
    keep = completion_mask.bool()
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = -(logp.exp() * logp).sum(-1).masked_fill(~keep, 0.0)
    return token.masked_fill(~keep, 0.0), entropy


def completion_logps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int,
                     temperature: float = 1.0, batch_size: Optional[int] = None, with_entropy: bool = True
                     ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """input_ids, attention_mask [B, T] (prompt then completion; the last `logits_to_keep` = K positions are
    the completion) -> (log_probs [B, K], entropy [B, K] or None) of the completion tokens, in chunks of
    batch_size rows. The model computes logits for the last K + 1 positions only."""
    batch_size = batch_size or input_ids.size(0)
    logps, entropies = [], []
    for start in range(0, input_ids.size(0), batch_size):
        ids, mask = input_ids[start:start + batch_size], attention_mask[start:start + batch_size]
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=logits_to_keep + 1, use_cache=False).logits
        lp, ent = completion_logps_and_entropy(logits[:, :-1], ids[:, -logits_to_keep:], mask[:, -logits_to_keep:],
                                               temperature, with_entropy)
        logps.append(lp)
        entropies.append(ent)
    return torch.cat(logps), (torch.cat(entropies) if with_entropy else None)


def labelled_logps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The SFT loss's tokens: input_ids, attention_mask, labels [B, T] (labels -100 where there is no loss)
    -> (log_probs [N], entropy [N], is_top1 [N]) of the N labelled tokens (the label at t + 1 is predicted at
    t), in row-major order. The model's decoder runs once; only those N positions go through the LM head.
    For an unwrapped causal LM or a peft model around one, without logit soft-capping or scaling (the caller
    checks `plain_lm_head`)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = getattr(base, base.base_model_prefix)
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    target = labels[:, 1:]
    keep = target != -100
    logits = base.get_output_embeddings()(hidden[:, :-1][keep])  # [N, V]
    ids = target[keep]
    lp, ent = completion_logps_and_entropy(logits[None], ids[None], torch.ones_like(ids)[None])
    return lp[0], ent[0], (logits.detach().argmax(-1) == ids)


def plain_lm_head(model) -> bool:
    """Whether `labelled_logps` computes what the model's own forward would: a causal LM (or a peft model
    around one) whose logits are the LM head's output, not soft-capped or scaled, and not wrapped for
    data-parallel training (its forward must run through the wrapper)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    return (config is not None and hasattr(base, "get_output_embeddings") and base.get_output_embeddings() is not None
            and hasattr(base, getattr(base, "base_model_prefix", "") or "-")
            and not getattr(config, "final_logit_softcapping", None)
            and getattr(config, "logit_scale", None) in (None, 1, 1.0)
            and not isinstance(model, torch.nn.parallel.DistributedDataParallel))
