"""The completion log-probs of the generator update on the CPU (llmgan.training.logprobs): hand-computed values,
and the same values and gradients as TRL's fused LM head on a tiny random model."""

from __future__ import annotations

import json
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
    alone, none = completion_logps_and_entropy(logits, ids, mask, temperature=2.0, with_entropy=False)
    assert none is None and torch.equal(alone, logps)
    logps.sum().backward()
    # d log p_2 / d logit_j = (1[j = 2] - p_j) / T
    assert torch.allclose(logits.grad[0, 0], torch.tensor([-0.125, -0.125, 0.25]))
    assert torch.all(logits.grad[0, 1] == 0)


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=True)
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
    _, ent, _ = AdversarialGRPOTrainer._get_per_token_logps_and_entropies(fake, model, ids, mask, 3,
                                                                          compute_entropy=True)
    assert ent.shape == (2, 3) and torch.all(ent > 0)


def test_labelled_logps_match_trls_fused_head_for_sft():
    """SFT's loss tokens: the same log-probs, entropies, top-1 hits and gradients as TRL's fused head, with
    right padding and a prompt of different length in each row."""
    from trl.trainer.utils import add_fused_lm_head

    from llmgan.training.logprobs import labelled_logps, plain_lm_head

    ours, theirs = tiny_llama(), tiny_llama()
    add_fused_lm_head(theirs, outputs=("log_probs", "entropy", "is_top1"))
    assert plain_lm_head(ours)
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 97, (3, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[1, -3:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    for row, prompt in enumerate((4, 2, 6)):
        labels[row, :prompt] = -100
    lp, ent, top1 = labelled_logps(ours, ids, mask, labels)
    out = theirs(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    keep = labels[:, 1:] != -100
    assert lp.shape == (int(keep.sum()),)
    assert torch.allclose(lp, out.log_probs[keep], atol=1e-5)
    assert torch.allclose(ent, out.entropy[keep], atol=1e-5)
    assert torch.equal(top1, out.is_top1[keep].bool())
    (-lp.sum()).backward()
    (-out.log_probs.sum()).backward()
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-5), name


def test_sft_on_the_cpu_trains_what_trls_path_trains(tiny_model_dir, demo_data, tmp_path, monkeypatch):
    """Two SFT steps through llmgan's CPU loss give the same adapter and losses as through TRL's own loss."""
    from safetensors.torch import load_file

    import llmgan.training.logprobs as logprobs
    from llmgan.config import load_config
    from llmgan.training.sft import sft

    def cfg(out):
        return load_config(None, [
            f"model.name={tiny_model_dir}", f"data.path={demo_data}", f"train.output_dir={out}",
            "data.max_prompt_tokens=32", "generation.num_generations=2", "generation.max_new_tokens=6",
            "train.prompts_per_step=2", "train.sft_steps=2", "train.log_every=1", "train.save_every=2"])

    calls = []
    real = logprobs.labelled_logps
    monkeypatch.setattr(logprobs, "labelled_logps", lambda *a: calls.append(1) or real(*a))
    ours = sft(cfg(tmp_path / "ours"), progress=False)
    assert len(calls) == 2  # one loss per step went through llmgan's path
    monkeypatch.setattr(logprobs, "plain_lm_head", lambda model: False)
    theirs = sft(cfg(tmp_path / "trl"), progress=False)
    assert len(calls) == 2
    a = load_file(ours / "final" / "generator" / "adapter_model.safetensors")
    b = load_file(theirs / "final" / "generator" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and any(v.abs().sum() > 0 for k, v in a.items() if "lora_B" in k)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    rows = [[r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "sft/loss" in r]
            for run in (ours, theirs)]
    assert len(rows[0]) == 2
    for x, y in zip(*rows):
        for key in ("sft/loss", "sft/entropy", "sft/mean_token_accuracy", "sft/num_tokens"):
            assert x[key] == pytest.approx(y[key], rel=1e-4), key
