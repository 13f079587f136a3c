"""The completion log-probs of the generator update on the CPU (llmgan.training.logprobs): hand-computed values,
and the same values and gradients as TRL's fused LM head on a tiny random model."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from llmgan.training.logprobs import completion_logps, completion_logps_and_entropy


def test_log_probs_and_entropy_by_hand():
    # softmax([0, 0, 2 ln 2] / 2) = (1/4, 1/4, 1/2): log p(token 2) = -ln 2, entropy = 1.5 ln 2
    logits = torch.tensor([[[0.0, 0.0, 2 * math.log(2)], [5.0, 1.0, 0.0]]], requires_grad=True)
    ids, mask = torch.tensor([[2, 1]]), torch.tensor([[1, 0]])
    logps, entropy = completion_logps_and_entropy(logits, ids, mask, temperature=2.0)
    assert logps.shape == entropy.shape == (1, 2)
    assert logps[0, 0].item() == pytest.approx(-math.log(2), abs=1e-6)
    assert entropy[0, 0].item() == pytest.approx(1.5 * math.log(2), abs=1e-6)
    assert logps[0, 1].item() == 0.0 and entropy[0, 1].item() == 0.0  # padding
    assert logps.requires_grad and not entropy.requires_grad
    logps.sum().backward()
    # d log p_2 / d logit_j = (1[j = 2] - p_j) / T
    assert torch.allclose(logits.grad[0, 0], torch.tensor([-0.125, -0.125, 0.25]))
    assert torch.all(logits.grad[0, 1] == 0)


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).float()


def test_same_values_and_gradients_as_trls_fused_head():
    """What the trainer returns on the CPU equals what TRL's own path returns, with left-padded prompts and
    right-padded completions, at a temperature other than 1."""
    from accelerate import Accelerator
    from trl import GRPOTrainer
    from trl.trainer.utils import add_fused_lm_head

    ours, theirs = tiny_llama(), tiny_llama()
    add_fused_lm_head(theirs, temperature=0.7, outputs=("log_probs", "entropy"))
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 97, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding of a short prompt
    mask[1, -2:] = 0  # a completion that ended early
    k = 5
    a, ent_a = completion_logps(ours, ids, mask, k, temperature=0.7, batch_size=2)
    trl_self = SimpleNamespace(accelerator=Accelerator(cpu=True))
    b, ent_b, _ = GRPOTrainer._get_per_token_logps_and_entropies(trl_self, theirs, ids, mask, k, compute_entropy=True)
    assert a.shape == b.shape == (3, k)
    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(ent_a, ent_b, atol=1e-5)
    assert a[1, -2:].abs().sum() == 0 and a[0].abs().min() > 0
    weights = torch.randn(3, k, generator=g)
    (a * weights).sum().backward()
    (b * weights).sum().backward()
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        assert p.grad is not None and torch.allclose(p.grad, q.grad, atol=1e-5), name


def test_the_trainer_takes_the_plain_path_on_the_cpu():
    """AdversarialGRPOTrainer scores through completion_logps on the CPU: a model without TRL's fused head
    works (TRL's own path would call it with fused_lm_head=True and fail), and the entropy is returned only
    when asked for."""
    from accelerate import Accelerator

    from llmgan.training.trainer import AdversarialGRPOTrainer

    model = tiny_llama()
    ids = torch.randint(0, 97, (2, 8), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    fake = SimpleNamespace(accelerator=Accelerator(cpu=True), temperature=1.0, _entropy_bonus_enabled=False)
    logps, ent, aux = AdversarialGRPOTrainer._get_per_token_logps_and_entropies(fake, model, ids, mask, 3)
    assert logps.shape == (2, 3) and ent is None and aux is None
    _, ent, _ = AdversarialGRPOTrainer._get_per_token_logps_and_entropies(fake, model, ids, mask, 3, compute_entropy=True)
    assert ent.shape == (2, 3) and torch.all(ent > 0)
