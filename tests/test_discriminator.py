"""Discriminator: losses on hand values, learning a trivial separation, masks (no NaN on empty rows),
and the hidden-state encoder on the tiny Llama (layers, early exit, padding, prompt conditioning, peft)."""

from __future__ import annotations

import math

import pytest
import torch

from llmgan.adversarial.discriminators import Discriminator
from llmgan.adversarial.features import HiddenStateEncoder, as_text
from llmgan.adversarial.losses import bce_loss, bradley_terry_loss
from llmgan.errors import LlmganError


pytestmark = pytest.mark.usefixtures("torch_one_thread")  # conftest: tiny tensors, one thread


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# ---------------------------------------------------------------------------------------------
# Losses


def test_bce_hand_values():
    zero = torch.zeros(3)
    assert bce_loss(zero, torch.zeros(5)).item() == pytest.approx(math.log(2))
    # real 2, fake -2, smoothing 0.1: both terms are -(0.9 log s(2) + 0.1 log s(-2))
    expected = 0.9 * softplus(-2) + 0.1 * softplus(2)
    assert bce_loss(torch.tensor([2.0]), torch.tensor([-2.0]), 0.1).item() == pytest.approx(expected, rel=1e-6)
    # class-balanced: one real at 0 (log 2) and many confident fakes (~0) average to log 2 / 2
    assert bce_loss(torch.tensor([0.0]), torch.full((7,), -30.0)).item() == pytest.approx(math.log(2) / 2, rel=1e-6)
    # one side only
    assert bce_loss(torch.tensor([1.0]), torch.empty(0)).item() == pytest.approx(softplus(-1), rel=1e-6)


def test_losses_stable_at_extreme_logits():
    real = torch.tensor([-1e4, 1e4], requires_grad=True)
    fake = torch.tensor([1e4, -1e4], requires_grad=True)
    for loss in (bce_loss(real, fake), bradley_terry_loss(real, fake)):
        assert torch.isfinite(loss)
        grads = torch.autograd.grad(loss, (real, fake))
        assert all(torch.isfinite(g).all() for g in grads)
    # the wrong-way pair costs exactly its margin (log(sigmoid) would give inf here)
    assert bradley_terry_loss(torch.tensor([-1e4]), torch.tensor([1e4])).item() == pytest.approx(2e4)


def test_bradley_terry_hand_values():
    assert bradley_terry_loss(torch.zeros(4), torch.zeros(4)).item() == pytest.approx(math.log(2))
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([0.0, 4.0])  # differences 1 and -1
    assert bradley_terry_loss(real, fake).item() == pytest.approx((softplus(-1) + softplus(1)) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="paired"):
        bradley_terry_loss(torch.zeros(2), torch.zeros(3))


# ---------------------------------------------------------------------------------------------
# The discriminator module


def random_batch(n: int, t: int, h: int, shift: torch.Tensor | None, gen: torch.Generator):
    """n sequences of 1..t tokens of N(shift, 1) features, right-padded with zeros."""
    x = torch.randn(n, t, h, generator=gen)
    if shift is not None:
        x = x + shift
    lengths = torch.randint(1, t + 1, (n,), generator=gen)
    mask = torch.arange(t)[None, :] < lengths[:, None]
    return x * mask[..., None], mask


@pytest.mark.parametrize("pooling,lstm", [("mean", False), ("attention", False), ("last", True)])
def test_discriminator_separates_shifted_distributions(pooling, lstm):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    h = 16
    shift = 0.6 * torch.randn(h, generator=gen)  # a direction, not a uniform offset (LayerNorm would remove that)
    d = Discriminator(h, width=32, layers=1, heads=2, dropout=0.0, pooling=pooling, lstm=lstm)
    opt = torch.optim.AdamW(d.parameters(), lr=3e-3)
    for _ in range(200):
        real, real_m = random_batch(32, 8, h, shift, gen)
        fake, fake_m = random_batch(32, 8, h, None, gen)
        loss = bce_loss(d(real, real_m), d(fake, fake_m))
        opt.zero_grad()
        loss.backward()
        opt.step()
    d.eval()
    with torch.no_grad():
        real, real_m = random_batch(256, 8, h, shift, gen)
        fake, fake_m = random_batch(256, 8, h, None, gen)
        acc = ((d(real, real_m) > 0).float().mean() + (d(fake, fake_m) < 0).float().mean()) / 2
    assert acc > 0.9, f"held-out accuracy {acc:.3f}"


@pytest.mark.parametrize("pooling", ["mean", "last", "attention"])
@pytest.mark.parametrize("lstm", [False, True])
def test_fully_masked_rows_are_finite(pooling, lstm):
    torch.manual_seed(0)
    d = Discriminator(8, width=16, layers=2, heads=2, dropout=0.1, pooling=pooling, lstm=lstm)
    hidden = torch.randn(4, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    d.train()
    logits = d(hidden, mask)
    assert logits.shape == (4,) and torch.isfinite(logits).all()
    logits.sum().backward()
    for name, p in d.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name
    # the empty vector learns from empty rows only
    assert d.empty.grad is not None and d.empty.grad.abs().sum() > 0
    d.eval()
    with torch.no_grad():  # eval + no_grad takes PyTorch's fused encoder fast path
        assert torch.isfinite(d(hidden, mask)).all()
        assert torch.isfinite(d(hidden[:, :0], mask[:, :0])).all()  # zero-length batch
        assert torch.isfinite(d(hidden, torch.zeros_like(mask))).all()  # every row empty
        # both empty rows get the same score, whatever their (ignored) features
        out = d(hidden, mask)
        assert out[1] == pytest.approx(out[3].item(), abs=1e-6)


@pytest.mark.parametrize("pooling", ["mean", "last", "attention"])
def test_padding_and_batch_neighbours_do_not_change_scores(pooling):
    """A row's logit depends on its own tokens only: not on extra padding nor on empty rows next to it."""
    torch.manual_seed(0)
    d = Discriminator(8, width=16, layers=2, heads=2, dropout=0.0, pooling=pooling, lstm=True).eval()
    hidden = torch.randn(1, 3, 8)
    mask = torch.ones(1, 3, dtype=torch.bool)
    padded = torch.cat([hidden, torch.randn(1, 4, 8)], dim=1)  # garbage in the padding
    padded_mask = torch.cat([mask, torch.zeros(1, 4, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        alone = d(hidden, mask)
        with_padding = d(padded, padded_mask)
        with_empty_row = d(torch.cat([padded, torch.randn(1, 7, 8)]), torch.cat([padded_mask, torch.zeros(1, 7, dtype=torch.bool)]))
    torch.testing.assert_close(with_padding, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(with_empty_row[:1], alone, atol=1e-5, rtol=1e-5)


def test_eval_fast_path_matches_training_path():
    torch.manual_seed(0)
    d = Discriminator(8, width=16, layers=2, heads=2, dropout=0.0)
    hidden = torch.randn(3, 6, 8)
    mask = torch.tensor([[1] * 6, [1, 1, 0, 0, 0, 0], [0] * 6], dtype=torch.bool)
    slow = d.train()(hidden, mask)
    with torch.no_grad():
        fast = d.eval()(hidden, mask)
    torch.testing.assert_close(fast, slow.detach(), atol=1e-5, rtol=1e-5)


def test_discriminator_rejects_bad_settings():
    with pytest.raises(LlmganError, match="divisible"):
        Discriminator(8, width=10, heads=4)
    with pytest.raises(LlmganError, match="pooling"):
        Discriminator(8, width=16, heads=2, pooling="max")


def test_as_text_accepts_strings_and_messages():
    assert as_text("hi") == "hi"
    assert as_text([{"role": "assistant", "content": "hi"}]) == "hi"
    assert as_text(None) == "" and as_text([{"role": "assistant", "content": None}]) == ""


# ---------------------------------------------------------------------------------------------
# The hidden-state encoder on the tiny Llama


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from llmgan.models import load_model, load_tokenizer

    return load_model(str(tiny_model_dir)), load_tokenizer(str(tiny_model_dir))


PROMPT_A = [{"role": "user", "content": "Write a tweet about the weather."}]
PROMPT_B = [{"role": "system", "content": "You are a news bot."}, {"role": "user", "content": "Post something."}]


def test_encoder_shapes_masks_and_truncation(tiny):
    model, tok = tiny
    enc = HiddenStateEncoder(model, tok, layer=1, max_response_tokens=5)
    responses = ["short", "", "a much longer response that certainly exceeds five tokens", "two words"]
    hidden, mask = enc.encode(None, responses)
    lengths = [min(5, len(tok(r, add_special_tokens=False)["input_ids"])) for r in responses]
    assert hidden.dtype == torch.float32 and hidden.shape == (4, max(lengths), 64)
    assert mask.sum(1).tolist() == lengths and not mask[1].any()
    assert torch.all(hidden[~mask] == 0) and torch.isfinite(hidden).all()
    assert tok.padding_side == "left"  # the shared tokenizer is left untouched
    hidden, mask = enc.encode(None, ["", ""])
    assert hidden.shape == (2, 1, 64) and not mask.any()


def test_encoder_end_mark_follows_ended_responses_only(tiny):
    """discriminator.mark_end: the EOS id follows a response that ended within max_response_tokens; one that was
    cut there (a sample at the generation cap, a long real response) gets none, so the two can differ."""
    from llmgan.adversarial.features import TokenEncoder

    model, tok = tiny
    ended, cut = "two words", "a much longer response that certainly exceeds five tokens"
    n_ended = len(tok(ended, add_special_tokens=False)["input_ids"])
    assert n_ended < 5
    plain = HiddenStateEncoder(model, tok, layer=2, max_response_tokens=5)
    marked = HiddenStateEncoder(model, tok, layer=2, max_response_tokens=5, mark_end=True)
    h0, m0 = plain.encode(None, [ended, cut, ""])
    h1, m1 = marked.encode(None, [ended, cut, ""])
    assert m0.sum(1).tolist() == [n_ended, 5, 0] and m1.sum(1).tolist() == [n_ended + 1, 5, 1]
    torch.testing.assert_close(h1[:2, :n_ended], h0[:2, :n_ended])  # causal: the text's own states do not move
    ids = torch.tensor([[marked.anchor_id] + tok(ended, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]])
    with torch.no_grad():
        expected = model(input_ids=ids, output_hidden_states=True).hidden_states[2][0, -1]
    torch.testing.assert_close(h1[0, n_ended], expected)  # the mark is the EOS token read after the text
    # exactly max_response_tokens tokens ended there; one more was cut
    five = tok.decode(tok(cut, add_special_tokens=False)["input_ids"][:5])
    assert marked.encode(None, [five])[1].sum().item() == 6 and marked.encode(None, [five + "!"])[1].sum().item() == 5
    tokens = TokenEncoder(model, tok, max_response_tokens=5, mark_end=True)
    ids, mask = tokens.encode(None, [ended, cut])
    assert ids[0, n_ended + 1].item() == tok.eos_token_id and mask.sum(1).tolist() == [n_ended + 2, 6]
    assert tok.eos_token_id not in ids[1, 1:6].tolist()


def test_end_mark_reads_the_generators_cut_flag_where_given(tiny):
    """With the generator's cut flags the end mark does not depend on the stored text's length: a sample cut at
    the cap that counts fewer tokens once stripped (RESULTS.md: 62 of 316 cut reply drafts) gets no mark; a flag
    of False or None (a real response) marks a text that fits. `cut_flags` reads TRL's completion ids."""
    from llmgan.adversarial.features import TokenEncoder, cut_flags

    model, tok = tiny
    short = "two words"
    n = len(tok(short, add_special_tokens=False)["input_ids"])
    for enc in (HiddenStateEncoder(model, tok, layer=2, max_response_tokens=5, mark_end=True),
                TokenEncoder(model, tok, max_response_tokens=5, mark_end=True)):
        _, mask = enc.encode(None, [short, short, short], cut=[True, False, None])
        base = 1 if isinstance(enc, TokenEncoder) else 0  # a token encoder's row also holds the anchor
        assert mask.sum(1).tolist() == [base + n, base + n + 1, base + n + 1]
        assert enc.encode(None, [short])[1].sum().item() == base + n + 1  # no flags: the text's length decides
        with pytest.raises(ValueError, match="one cut flag per response"):
            enc.encode(None, [short, short], cut=[True])
    plain = HiddenStateEncoder(model, tok, layer=2, max_response_tokens=5)
    assert plain.encode(None, [short], cut=[True])[1].sum().item() == n  # without mark_end the flag is not read
    assert cut_flags([[5, 2], [5, 6], [], [2], [7, 0]], [2, 0, None]) == [False, True, True, False, False]


def test_encoder_padding_does_not_change_states(tiny):
    model, tok = tiny
    for cond in (False, True):
        enc = HiddenStateEncoder(model, tok, layer=2, condition_on_prompt=cond)
        alone, m1 = enc.encode([PROMPT_A] if cond else None, ["hello world"])
        batch, m2 = enc.encode([PROMPT_A, PROMPT_B] if cond else None,
                               ["hello world", "something quite a lot longer than the first response"])
        n = int(m1.sum())
        torch.testing.assert_close(batch[0, :n], alone[0, :n], atol=1e-5, rtol=1e-5)


def test_encoder_early_exit_matches_full_forward(tiny):
    model, tok = tiny
    prompts, responses = [PROMPT_A, PROMPT_B], ["first reply", "the second, longer reply!"]
    for cond in (False, True):
        fast = HiddenStateEncoder(model, tok, layer=1, condition_on_prompt=cond, early_exit=True)
        full = HiddenStateEncoder(model, tok, layer=1, condition_on_prompt=cond, early_exit=False)
        torch.testing.assert_close(fast.encode(prompts, responses)[0], full.encode(prompts, responses)[0])
    # layer -1 is the last block after the final norm, as in HF's hidden_states[-1]
    enc = HiddenStateEncoder(model, tok, layer=-1)
    assert enc.layer == 2
    ids = torch.tensor([[enc.anchor_id] + tok("hi there", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        expected = model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, 1:]
    torch.testing.assert_close(enc.encode(None, ["hi there"])[0][0], expected)


def test_encoder_prompt_conditioning(tiny):
    model, tok = tiny
    responses = ["same reply", "same reply"]
    cond = HiddenStateEncoder(model, tok, layer=2, condition_on_prompt=True)
    hidden, mask = cond.encode([PROMPT_A, PROMPT_B], responses)
    assert mask[0].sum() == mask[1].sum()  # only the response positions come back
    assert not torch.allclose(hidden[0], hidden[1])
    plain = HiddenStateEncoder(model, tok, layer=2)
    hidden, _ = plain.encode(None, responses)
    torch.testing.assert_close(hidden[0], hidden[1])
    # string prompts are used as given
    text = tok.apply_chat_template(PROMPT_A, tokenize=False, add_generation_prompt=True)
    torch.testing.assert_close(cond.encode([text], ["same reply"])[0][0], cond.encode([PROMPT_A], ["same reply"])[0][0])
    with pytest.raises(ValueError, match="one prompt per response"):
        cond.encode(None, responses)


def test_encoder_layer_out_of_range(tiny):
    model, tok = tiny
    with pytest.raises(LlmganError, match="hidden_layer=15 is out of range"):
        HiddenStateEncoder(model, tok, layer=15)
    assert HiddenStateEncoder(model, tok, layer=-3).layer == 0  # embeddings


def test_reference_mode_disables_lora_and_restores_train_mode(tiny):
    from peft import LoraConfig, get_peft_model

    from llmgan.config import DiscriminatorSettings

    model, tok = tiny
    base = HiddenStateEncoder(model, tok, layer=2).encode(None, ["hello there"])[0]
    policy = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    try:
        with torch.no_grad():  # make the adapters do something
            for name, p in policy.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5)
        policy.train()
        settings = DiscriminatorSettings(hidden_layer=2)
        reference = HiddenStateEncoder.from_settings(settings, policy, tok)
        assert reference.disable_adapters
        torch.testing.assert_close(reference.encode(None, ["hello there"])[0], base)
        assert policy.training  # encoding put it in eval mode only for the call
        settings.encoder = "policy"
        live = HiddenStateEncoder.from_settings(settings, policy, tok).encode(None, ["hello there"])[0]
        assert not torch.allclose(live, base)
        assert policy.training
    finally:
        policy.unload()  # take the LoRA layers out of the shared module-scoped model


def test_reference_mode_full_finetune_uses_a_frozen_copy(tiny):
    from llmgan.config import DiscriminatorSettings

    model, tok = tiny
    enc = HiddenStateEncoder.from_settings(DiscriminatorSettings(hidden_layer=1), model, tok)
    assert enc.model is not model and not any(p.requires_grad for p in enc.model.parameters())
    torch.testing.assert_close(enc.encode(None, ["x y"])[0], HiddenStateEncoder(model, tok, layer=1).encode(None, ["x y"])[0])


def test_separate_encoder_model_path(tiny, tiny_model_dir):
    from llmgan.config import DiscriminatorSettings

    model, tok = tiny
    enc = HiddenStateEncoder.from_settings(DiscriminatorSettings(hidden_layer=1, encoder=str(tiny_model_dir)), model, tok)
    assert enc.model is not model and enc.hidden_size == 64
    torch.testing.assert_close(enc.encode(None, ["x y"])[0], HiddenStateEncoder(model, tok, layer=1).encode(None, ["x y"])[0])
