"""The `lm` discriminator (issue 14): the generator's own LM, read as token ids, trained end to end, on the
tiny random Llama (2 layers, hidden 64) with the real SmolLM2 tokenizer."""

from __future__ import annotations

import math

import pytest
import torch

from llmgan.adversarial.discriminators import ARCHITECTURES, LMDiscriminator, build_discriminator, reads_tokens
from llmgan.adversarial.features import TokenEncoder
from llmgan.adversarial.reward import DiscriminatorReward
from llmgan.config import DiscriminatorSettings, RewardSettings
from llmgan.errors import LlmganError


pytestmark = pytest.mark.usefixtures("torch_one_thread")  # conftest: tiny tensors, one thread


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from llmgan.models import load_model, load_tokenizer

    return load_model(str(tiny_model_dir)), load_tokenizer(str(tiny_model_dir)), str(tiny_model_dir)


def lm_settings(**kw) -> DiscriminatorSettings:
    base = dict(architecture="lm", lm_layers=1, lm_lora_rank=4, lr=3e-3, replay_size=8, replay_fraction=0.5,
                max_response_tokens=12, condition_on_prompt=True, steps_per_generator_step=2)
    base.update(kw)
    return DiscriminatorSettings(**base)


def encoder(tiny, settings) -> TokenEncoder:
    model, tok, path = tiny
    return TokenEncoder.from_settings(settings, policy=model, tokenizer=tok, model_name=path, max_prompt_tokens=256)


def batch(step: int):
    """Two posts x 3 completions (TRL's layout): real replies capitalised and ending in '!', fakes lower-case."""
    prompts = [[{"role": "user", "content": "Post about cats"}]] * 3 + [[{"role": "user", "content": "Post about rain"}]] * 3
    completions = [f"meow {step}", "cats are ok", "", f"rain {step}", "wet day", "umbrella"]
    response = [f"Cats rule {step % 5}!"] * 3 + [f"Rain again {step % 5}!"] * 3
    return prompts, completions, response


def test_registry_entry_reads_tokens():
    assert "lm" in ARCHITECTURES and reads_tokens(lm_settings()) and not reads_tokens(DiscriminatorSettings())
    with pytest.raises(LlmganError, match="TokenEncoder"):
        build_discriminator(lm_settings(), 64, encoder=None)


def test_token_encoder_rows_are_prompt_then_response(tiny):
    settings = lm_settings()
    enc = encoder(tiny, settings)
    tok = tiny[1]
    prompts, completions, _ = batch(0)
    ids, mask = enc.encode(prompts[:2], ["Hello there", ""])
    prefix = tok.apply_chat_template(prompts[0], tokenize=False, add_generation_prompt=True)
    want = tok(prefix, add_special_tokens=False)["input_ids"] + tok("Hello there", add_special_tokens=False)["input_ids"]
    assert ids.dtype == torch.long and mask.dtype == torch.bool and ids.shape == mask.shape
    assert ids[0, :len(want)].tolist() == want and int(mask[0].sum()) == len(want)
    assert int(mask[1].sum()) == len(want) - 2  # the empty reply: the prompt alone
    long_reply = " ".join(["word"] * 40)
    ids, mask = enc.encode(prompts[:1], [long_reply])
    assert int(mask[0].sum()) == len(tok(prefix, add_special_tokens=False)["input_ids"]) + 12  # cut to the cap


def test_lm_discriminator_trains_lora_and_head_only_and_ignores_padding(tiny):
    settings = lm_settings()
    d = build_discriminator(settings, 64, encoder(tiny, settings))
    assert isinstance(d, LMDiscriminator) and len(d.decoder.layers) == 1
    trainable = [n for n, p in d.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    assert any(n.startswith("head.") for n in trainable)
    ids, mask = encoder(tiny, settings).encode(batch(0)[0][:2], ["Cats rule!", "no"])
    d.eval()
    logits = d(ids, mask)
    assert logits.shape == (2,) and torch.isfinite(logits).all()
    # more right padding changes nothing: the head reads the last real token
    padded_ids = torch.nn.functional.pad(ids, (0, 5))
    padded_mask = torch.nn.functional.pad(mask, (0, 5))
    torch.testing.assert_close(d(padded_ids, padded_mask), logits)
    full = build_discriminator(lm_settings(lm_lora_rank=0, lm_layers=0), 64, encoder(tiny, settings))
    assert len(full.decoder.layers) == 2
    names = [n for n, p in full.named_parameters() if p.requires_grad]
    assert any(".layers.1." in n for n in names) and not any("embed_tokens" in n for n in names)


def test_lm_discriminator_learns_and_moves_its_encoding(tiny):
    settings = lm_settings()
    rw = DiscriminatorReward(settings, RewardSettings(saturation_window=0), encoder(tiny, settings), seed=0)
    lora = {n: p.detach().clone() for n, p in rw.model.named_parameters() if "lora_B" in n}
    frozen = {n: p.detach().clone() for n, p in rw.model.named_parameters() if not p.requires_grad}
    first = None
    for step in range(30):
        p, c, r = batch(step)
        rewards = rw(p, c, response=r)
        first = first if first is not None else rw.metrics["discriminator/accuracy_before_update"]
    assert len(rewards) == 6 and all(math.isfinite(x) for x in rewards)
    assert rw.metrics["discriminator/accuracy"] == 1.0 and first < 1.0
    assert rw.metrics["discriminator/real_score"] > rw.metrics["discriminator/fake_score"]
    # the encoding learnt (LoRA B starts at zero), the copied weights did not move
    assert any(not torch.equal(lora[n], p) for n, p in rw.model.named_parameters() if n in lora)
    assert all(torch.equal(frozen[n], p) for n, p in rw.model.named_parameters() if n in frozen)
    assert all(f is not None and f["fake"].dtype == torch.long for f in rw.replay.features)  # token ids cached


def test_lm_discriminator_checkpoint_holds_the_trainable_part_and_round_trips(tiny, tmp_path):
    from safetensors.torch import load_file

    settings = lm_settings(loss="bradley_terry")
    rw = DiscriminatorReward(settings, RewardSettings(saturation_window=0), encoder(tiny, settings), seed=0)
    for step in range(2):
        p, c, r = batch(step)
        rw(p, c, response=r)
    rw.save(tmp_path / "d")
    saved = load_file(tmp_path / "d" / "discriminator.safetensors")
    trainable = {n for n, q in rw.model.named_parameters() if q.requires_grad}
    assert set(saved) == trainable  # no copy of the LM's frozen weights
    restored = DiscriminatorReward(settings, RewardSettings(saturation_window=0), encoder(tiny, settings), seed=5)
    restored.load(tmp_path / "d")
    p, c, r = batch(2)
    assert restored(p, c, response=r) == rw(p, c, response=r)
    other = DiscriminatorReward(lm_settings(loss="bradley_terry", lm_lora_rank=2), RewardSettings(),
                                encoder(tiny, settings), seed=0)
    with pytest.raises(LlmganError, match="does not fit"):
        other.load(tmp_path / "d")


def test_train_with_the_lm_discriminator(tiny_model_dir, demo_data, tmp_path):
    """One adversarial step through build_components with discriminator.architecture=lm."""
    import json

    from llmgan.config import load_config
    from llmgan.training.train import train

    cfg = load_config(None, [
        f"model.name={tiny_model_dir}", f"data.path={demo_data}", f"train.output_dir={tmp_path / 'run'}",
        "data.max_prompt_tokens=32", "generation.num_generations=2", "generation.max_new_tokens=6",
        "discriminator.architecture=lm", "discriminator.lm_layers=1", "discriminator.lm_lora_rank=2",
        "discriminator.condition_on_prompt=true", "discriminator.mismatched_negatives=0.25",
        "discriminator.warmup_steps=1", "discriminator.max_response_tokens=16", "train.prompts_per_step=2",
        "train.steps=1", "train.lr=1e-2"])
    run = train(cfg, progress=False)
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    for key in ("discriminator/loss", "discriminator/accuracy", "discriminator/mismatch_accuracy", "generator/kl"):
        assert math.isfinite(row[key]), key
    assert (run / "final" / "discriminator" / "discriminator.safetensors").is_file()
