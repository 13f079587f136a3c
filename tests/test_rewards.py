"""Rewards: shaping and normalisation on hand values, the replay buffer, the saturation watcher, and the
stateful DiscriminatorReward (TRL-style calls on the tiny Llama, state round trips, multi-process sync)."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch

from llmgan.config import DiscriminatorSettings, RewardSettings
from llmgan.errors import LlmganError
from llmgan.adversarial.saturation import SaturationStop, SaturationWatcher
from llmgan.adversarial.replay import ReplayBuffer
from llmgan.adversarial.reward import (REWARD_SHAPES, DiscriminatorReward, group_normalize, shape_reward,
                                      trl_scale_rewards)


pytestmark = pytest.mark.usefixtures("torch_one_thread")  # conftest: tiny tensors, one thread


# ---------------------------------------------------------------------------------------------
# Pure functions


def test_shape_reward_hand_values():
    logits = torch.tensor([0.0, 2.0, -20.0, float("nan"), float("inf")])
    log_sig = shape_reward(logits, "log_sigmoid", clip=10.0)
    expected = [-math.log(2), -math.log1p(math.exp(-2)), -math.log1p(math.exp(10)), -math.log(2), -math.log1p(math.exp(-10))]
    torch.testing.assert_close(log_sig, torch.tensor(expected))
    torch.testing.assert_close(shape_reward(logits, "logit", clip=10.0), torch.tensor([0.0, 2.0, -10.0, 0.0, 10.0]))
    prob = shape_reward(logits, "probability", clip=10.0)
    torch.testing.assert_close(prob, torch.tensor([0.5, 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(10)), 0.5, 1 / (1 + math.exp(-10))]))
    assert torch.isfinite(shape_reward(torch.tensor([float("-inf")]), "logit", clip=0)).all()
    assert set(REWARD_SHAPES) == {"log_sigmoid", "logit", "probability"}
    with pytest.raises(LlmganError, match="reward.kind"):
        shape_reward(logits, "tanh")


def test_group_normalize_hand_values():
    rewards = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 10.0])
    std = math.sqrt(5 / 3)  # unbiased std of 1..4
    got = group_normalize(rewards, 4, scale_by_std=True, eps=0.0)
    torch.testing.assert_close(got[:4], torch.tensor([-1.5, -0.5, 0.5, 1.5]) / std)
    assert torch.isnan(got[4:]).all()  # eps=0 and a constant group: that is what eps is for
    got = group_normalize(rewards, 4, scale_by_std=True, eps=1e-4)
    torch.testing.assert_close(got[4:], torch.zeros(4))
    torch.testing.assert_close(group_normalize(rewards, 4, scale_by_std=False),
                               torch.tensor([-1.5, -0.5, 0.5, 1.5, 0.0, 0.0, 0.0, 0.0]))
    # batch: one group of all 8 (mean 6.25)
    torch.testing.assert_close(group_normalize(rewards, 4, scale_by_std=False, mode="batch"), rewards - 6.25)
    batch = group_normalize(rewards, 4, mode="batch", eps=0.0)
    torch.testing.assert_close(batch, (rewards - 6.25) / rewards.std())
    torch.testing.assert_close(group_normalize(rewards, 4, mode="none"), rewards)
    torch.testing.assert_close(group_normalize(torch.tensor([3.0, 5.0]), 1), torch.zeros(2))  # groups of one
    with pytest.raises(ValueError, match="groups of 3"):
        group_normalize(rewards, 3)


def test_trl_scale_rewards_mapping():
    assert trl_scale_rewards(RewardSettings()) == "group"
    assert trl_scale_rewards(RewardSettings(scale_by_std=False)) == "none"
    assert trl_scale_rewards(RewardSettings(normalize="batch")) == "batch"
    assert trl_scale_rewards(RewardSettings(normalize="none")) == "none"


def test_replay_buffer_fifo_deterministic_and_round_trip():
    buf = ReplayBuffer(3, seed=7)
    buf.add({"prompt": "p", "fake": str(i), "real": "r"} for i in range(5))
    assert [it["fake"] for it in buf.items] == ["2", "3", "4"]  # oldest dropped
    state = copy.deepcopy(buf.state_dict())
    draws = [buf.sample_indices(2) for _ in range(4)]
    assert all(len(set(d)) == 2 for d in draws) and buf.sample_indices(10) != [] and len(buf.sample(10)) == 3
    again = ReplayBuffer(99, seed=0)
    again.load_state_dict(state)
    assert again.capacity == 3 and [again.sample_indices(2) for _ in range(4)] == draws
    same_seed = ReplayBuffer(3, seed=7)
    same_seed.add(buf.items)
    assert [same_seed.sample_indices(2) for _ in range(4)] == draws
    off = ReplayBuffer(0)
    off.add([{"prompt": "p", "fake": "f", "real": "r"}])
    assert len(off) == 0 and off.sample(4) == []


def test_saturation_watcher_fires_once_per_streak():
    w = SaturationWatcher(window=3, high=0.9, low=0.55)
    assert [w.update(a) for a in (0.95, 0.97)] == [None, None]
    assert w.update(0.99) == "high"
    assert w.update(0.99) is None  # still saturated, already reported
    assert w.update(0.7) is None
    assert [w.update(a) for a in (0.5, 0.5, 0.5)] == [None, None, "low"]
    state = w.state_dict()
    other = SaturationWatcher(window=3, high=0.9, low=0.55)
    other.load_state_dict(state)
    assert other.update(0.5) is None and other.update(0.95) is None


# ---------------------------------------------------------------------------------------------
# DiscriminatorReward with a stand-in encoder (fast, no LM)


class CharEncoder:
    """Stand-in for HiddenStateEncoder: one fixed random vector per character, at most 12 tokens.

    Texts that start with an upper-case letter (the 'reals' below) are easy to tell from the rest.
    """

    hidden_size = 8
    device = torch.device("cpu")
    condition_on_prompt = False

    def __init__(self):
        self.table = torch.randn(256, self.hidden_size, generator=torch.Generator().manual_seed(0))

    def encode(self, prompts, responses, cut=None):
        texts = [r if isinstance(r, str) else r[0]["content"] for r in responses]
        t = max([1, *(min(12, len(x)) for x in texts)])
        hidden = torch.zeros(len(texts), t, self.hidden_size)
        mask = torch.zeros(len(texts), t, dtype=torch.bool)
        for i, x in enumerate(texts):
            for j, ch in enumerate(x[:12]):
                hidden[i, j] = self.table[ord(ch) % 256]
                mask[i, j] = True
        return hidden, mask


def small_settings(**kw) -> DiscriminatorSettings:
    base = dict(width=16, heads=2, layers=1, dropout=0.1, replay_size=16, replay_fraction=0.5, lr=3e-3,
                hidden_layer=1, max_response_tokens=16)
    base.update(kw)
    return DiscriminatorSettings(**base)


def trl_batch(step: int, g: int = 3):
    """Two prompts x g completions, with dataset columns repeated per generation the way TRL passes them."""
    prompts = [[{"role": "user", "content": "Post about cats"}]] * g + [[{"role": "user", "content": "Post about rain"}]] * g
    completions = [[{"role": "assistant", "content": t}] for t in
                   [f"meow {step}", "", "cats are nice", f"rain {step}", "wet day", "umbrella"][: 2 * g]]
    response = ["Cats rule the internet"] * g + ["Rain again, typical"] * g
    return prompts, completions, response


def test_reward_learns_and_reports_metrics():
    rw = DiscriminatorReward(small_settings(), RewardSettings(), CharEncoder(), seed=0)
    for step in range(25):
        rewards = rw(*trl_batch(step)[:2], response=trl_batch(step)[2])
    m = rw.metrics
    assert m["discriminator/accuracy"] > 0.9 and m["discriminator/real_score"] > m["discriminator/fake_score"]
    assert len(rewards) == 6 and all(math.isfinite(r) and r <= 0 for r in rewards)  # log-sigmoid rewards
    assert rw.updates == 50 and rw.calls == 25 and len(rw.replay) == 16
    assert m["discriminator/replay_samples"] == 3.0
    for key in ("discriminator/loss", "discriminator/accuracy", "discriminator/real_score", "discriminator/fake_score",
                "generator/reward_mean", "generator/reward_std"):  # phase timings: the trainer's (test_train)
        assert math.isfinite(m[key]), key


def test_bradley_terry_with_replay():
    rw = DiscriminatorReward(small_settings(loss="bradley_terry", replay_fraction=1.0), RewardSettings(kind="logit"),
                             CharEncoder(), seed=0)
    for step in range(3):
        p, c, r = trl_batch(step)
        rewards = rw(p, c, response=r)
    assert rw.metrics["discriminator/replay_samples"] == 6.0  # all fakes from the buffer
    assert math.isfinite(rw.metrics["discriminator/loss"]) and all(math.isfinite(x) for x in rewards)


def test_no_update_steps_keeps_discriminator_fixed():
    rw = DiscriminatorReward(small_settings(steps_per_generator_step=0), RewardSettings(), CharEncoder())
    before = copy.deepcopy(rw.model.state_dict())
    p, c, r = trl_batch(0)
    assert len(rw(p, c, response=r)) == 6
    assert all(torch.equal(before[k], v) for k, v in rw.model.state_dict().items())
    assert math.isnan(rw.metrics["discriminator/loss"])


def test_train_step_is_discriminator_only():
    rw = DiscriminatorReward(small_settings(), RewardSettings(saturation_window=1, saturation_low=1.1,
                                                              stop_on_saturation=True), CharEncoder())
    p, c, r = trl_batch(0)
    metrics = rw.train_step(p, c, r, steps=3)  # the watcher ignores warm-up (it would raise here)
    assert rw.updates == 3 and rw.calls == 0 and "discriminator/accuracy" in metrics
    assert "generator/reward_mean" not in metrics


def test_saturation_warns_or_stops():
    p, c, r = trl_batch(0)
    low = dict(saturation_window=2, saturation_low=1.01)  # accuracy is always below 1.01
    rw = DiscriminatorReward(small_settings(), RewardSettings(**low), CharEncoder())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rw(p, c, response=r)  # window not full yet
    with pytest.warns(RuntimeWarning, match="no signal"):
        rw(p, c, response=r)
    stopper = DiscriminatorReward(small_settings(), RewardSettings(**low, stop_on_saturation=True), CharEncoder())
    stopper(p, c, response=r)
    with pytest.raises(SaturationStop, match="stop_on_saturation"):
        stopper(p, c, response=r)
    assert isinstance(SaturationStop("x"), LlmganError)
    high = DiscriminatorReward(small_settings(), RewardSettings(saturation_window=1, saturation_high=-0.1,
                                                                stop_on_saturation=True), CharEncoder())
    with pytest.raises(SaturationStop, match="saturated"):
        high(p, c, response=r)


def test_missing_real_column_is_a_user_error():
    rw = DiscriminatorReward(small_settings(), RewardSettings(), CharEncoder())
    p, c, _ = trl_batch(0)
    with pytest.raises(LlmganError, match="'response' column"):
        rw(p, c)
    named = DiscriminatorReward(small_settings(), RewardSettings(), CharEncoder(), real_column="text")
    assert len(named(p, c, text=trl_batch(0)[2])) == 6


def test_trl_sees_a_named_synchronous_function():
    from trl.trainer.utils import get_callable_name, is_async_callable

    rw = DiscriminatorReward(small_settings(), RewardSettings(), CharEncoder())
    assert get_callable_name(rw) == "discriminator" and not is_async_callable(rw)


def _distributed_worker(rank: int, world: int, init_file: str, out_dir: str):
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        rw = DiscriminatorReward(small_settings(), RewardSettings(), CharEncoder(), seed=0)
        for step in range(2):
            p, c, r = trl_batch(step + 10 * rank)  # every rank sees different completions
            rw(p, c, response=r)
        torch.save({"model": rw.model.state_dict(), "metrics": rw.metrics}, f"{out_dir}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_gradients_are_averaged_across_processes(tmp_path):
    """Two gloo ranks with different data end with identical discriminators and identical metrics."""
    torch.multiprocessing.spawn(_distributed_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    a, b = (torch.load(tmp_path / f"rank{i}.pt", weights_only=True) for i in range(2))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["metrics"] == b["metrics"]
    fresh = DiscriminatorReward(small_settings(), RewardSettings(), CharEncoder(), seed=0).model.state_dict()
    assert not all(torch.equal(fresh[k], a["model"][k]) for k in fresh)


# ---------------------------------------------------------------------------------------------
# DiscriminatorReward on the tiny Llama (peft policy, 'reference' encoder)


@pytest.fixture(scope="module")
def tiny_policy(tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    from llmgan.models import load_model, load_tokenizer

    policy = get_peft_model(load_model(str(tiny_model_dir)), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    policy.train()  # as inside TRL
    return policy, load_tokenizer(str(tiny_model_dir))


def make_reward(tiny_policy, seed=0, **kw):
    from llmgan.adversarial.features import HiddenStateEncoder

    policy, tok = tiny_policy
    settings = small_settings(**kw)
    return DiscriminatorReward(settings, RewardSettings(), HiddenStateEncoder.from_settings(settings, policy, tok), seed=seed)


def test_tiny_model_trl_style_call(tiny_policy):
    rw = make_reward(tiny_policy)
    assert rw.encoder.disable_adapters  # 'reference' on a peft policy
    before = {k: v.clone() for k, v in rw.model.state_dict().items()}
    logged, extra = {}, []
    p, c, r = trl_batch(0)
    rewards = rw(prompts=p, completions=c, completion_ids=[[1, 2]] * 6, response=r, id=[0] * 3 + [1] * 3,
                 trainer_state=None, log_extra=lambda col, vals: extra.append(col),
                 log_metric=lambda k, v: logged.__setitem__(k, v))
    assert len(rewards) == 6 and all(isinstance(x, float) and math.isfinite(x) for x in rewards)
    assert logged == rw.metrics and "discriminator/accuracy" in logged
    assert any(not torch.equal(before[k], v) for k, v in rw.model.state_dict().items())
    assert tiny_policy[0].training
    # every completion empty, plain-string completions and prompts
    assert all(math.isfinite(x) for x in rw(prompts=p, completions=[""] * 6, response=r))
    assert len(rw(prompts=["plain prompt"] * 2, completions=["a", "b"], response=["Real", "Real"])) == 2


def test_tiny_model_prompt_conditioned_bradley_terry(tiny_policy, tmp_path):
    rw = make_reward(tiny_policy, condition_on_prompt=True, loss="bradley_terry")
    for step in range(2):
        p, c, r = trl_batch(step)
        rewards = rw(prompts=p, completions=c, response=r)
    assert len(rewards) == 6 and all(math.isfinite(x) for x in rewards)
    assert all(f is not None and set(f) == {"fake", "real"} for f in rw.replay.features)
    rw.save(tmp_path / "d")  # a group's items share their real's cached tensor
    restored = make_reward(tiny_policy, seed=9, condition_on_prompt=True, loss="bradley_terry")
    restored.load(tmp_path / "d")
    p, c, r = trl_batch(2)
    assert restored(prompts=p, completions=c, response=r) == rw(prompts=p, completions=c, response=r)


def test_tiny_model_state_round_trip(tiny_policy, tmp_path):
    rw = make_reward(tiny_policy)
    p, c, r = trl_batch(0)
    rw(prompts=p, completions=c, response=r)
    state = copy.deepcopy(rw.state_dict())
    rw.save(tmp_path / "d")
    p, c, r = trl_batch(1)
    expected = rw(prompts=p, completions=c, response=r)
    restored = make_reward(tiny_policy, seed=123)
    restored.load_state_dict(state)
    assert restored(prompts=p, completions=c, response=r) == expected
    from_disk = make_reward(tiny_policy, seed=456)
    from_disk.load(tmp_path / "d")
    assert from_disk(prompts=p, completions=c, response=r) == expected
    assert from_disk.updates == rw.updates and len(from_disk.replay) == len(rw.replay)
    assert {f.name for f in (tmp_path / "d").iterdir()} == {
        "discriminator.safetensors", "discriminator_state.json", "discriminator_optimizer.safetensors",
        "replay_features.safetensors"}
    assert all(f is not None for f in from_disk.replay.features)
    with pytest.raises(LlmganError, match="does not fit"):
        make_reward(tiny_policy, width=32).load(tmp_path / "d")
    with pytest.raises(LlmganError, match="incomplete"):
        rw.load(tmp_path)


class CountingEncoder(CharEncoder):
    """CharEncoder that counts the rows it encodes."""

    def __init__(self):
        super().__init__()
        self.rows = 0

    def encode(self, prompts, responses, cut=None):
        self.rows += len(responses)
        return super().encode(prompts, responses, cut)


def test_frozen_encoder_replay_features_are_cached_not_reencoded():
    enc = CountingEncoder()
    rw = DiscriminatorReward(small_settings(replay_fraction=1.0, steps_per_generator_step=2), RewardSettings(), enc)
    p, c, r = trl_batch(0)
    rw(p, c, response=r)
    first = enc.rows  # 6 fakes + 2 reals, nothing to replay yet
    assert first == 8 and all(f is not None and set(f) == {"fake"} for f in rw.replay.features)  # BCE: fakes only
    rw(p, c, response=r)
    assert enc.rows - first == 8  # the replayed fakes came from the cache
    assert rw.cache_hits == 6 and rw.metrics["discriminator/replay_samples"] == 6.0
    # the cached rows are the encoder's features of those texts, unpadded
    item, feats = rw.replay.items[0], rw.replay.features[0]
    h, m = CharEncoder().encode(None, [item["fake"]])
    torch.testing.assert_close(feats["fake"], h[0, :int(m[0].sum())])


def test_policy_encoder_replay_is_reencoded_every_time():
    enc = CountingEncoder()
    rw = DiscriminatorReward(small_settings(replay_fraction=1.0, encoder="policy"), RewardSettings(), enc)
    p, c, r = trl_batch(0)
    rw(p, c, response=r)
    rw(p, c, response=r)
    assert enc.rows == 8 + 8 + 6 and rw.cache_hits == 0  # 6 replayed fakes re-encoded by today's encoder
    assert all(f is None for f in rw.replay.features)
    off = DiscriminatorReward(small_settings(cache_replay_features=False), RewardSettings(), CharEncoder())
    assert not off.cache_features


# ---------------------------------------------------------------------------------------------
# Relevance negatives: a real response read after another prompt is a fake


def test_mismatched_prompts_hand_values():
    from llmgan.adversarial.batch import mismatched_prompts

    assert mismatched_prompts(["a", "a", "b", "c"]) == [2, 2, 3, 0]
    assert mismatched_prompts(["a", "a"]) == [-1, -1] and mismatched_prompts([]) == []


class PromptCharEncoder(CharEncoder):
    """CharEncoder that reads the prompt too: each response token carries its own character's vector and
    the prompt's topic vector (concatenated), so only a D that reads both can tell a reply to the wrong post."""

    hidden_size = 16
    condition_on_prompt = True

    def __init__(self):
        super().__init__()
        self.table = torch.randn(256, 8, generator=torch.Generator().manual_seed(0))
        self.calls: list[tuple[list, list]] = []

    def encode(self, prompts, responses, cut=None):
        self.calls.append((list(prompts), [r if isinstance(r, str) else r[0]["content"] for r in responses]))
        texts = self.calls[-1][1]
        t = max([1, *(min(12, len(x)) for x in texts)])
        h, m = torch.zeros(len(texts), t, 8), torch.zeros(len(texts), t, dtype=torch.bool)
        for i, x in enumerate(texts):
            for j, ch in enumerate(x[:12]):
                h[i, j], m[i, j] = self.table[ord(ch) % 256], True
        topic = torch.stack([self.table[ord((p if isinstance(p, str) else p[0]["content"])[-1]) % 256]
                             for p in prompts])  # "...cats" vs "...rain"
        return torch.cat([h, topic[:, None, :].expand(-1, h.shape[1], -1)], dim=2), m


def topic_batch(step: int, g: int = 3):
    """Two posts (cats, rain) x g completions. Real replies start with a capital and name their post's topic,
    a new word each step; the completions are lower-case. "Capital first" alone tells real from fake, so a
    D that ignores the prompt calls a real reply read after the other post real too."""
    word = ["always", "again", "today", "maybe", "never", "sure", "fine", "wow", "ok", "yes", "no", "lol"][step % 12]
    prompts = [[{"role": "user", "content": "Post about cats"}]] * g + [[{"role": "user", "content": "Post about rain"}]] * g
    completions = [[{"role": "assistant", "content": t}] for t in
                   [f"cats {word}", "meow", f"{word} cats", f"rain {word}", "wet", f"{word} rain"]]
    response = [f"Cats {word}"] * g + [f"Rain {word}"] * g
    return prompts, completions, response


def _own_and_swapped(rw):
    """D's logits of this step's reals read after their own post, and after the other post."""
    p, c, r = topic_batch(0)
    own, _ = rw.score(rw.encode(p[::3], c[::3], r[::3]))
    swapped, _ = rw.score(rw.encode(p[::3][::-1], c[::3], r[::3]))
    return own, swapped


@pytest.mark.parametrize("loss", ["bce", "bradley_terry"])
def test_mismatched_negatives_teach_relevance(loss):
    runs = {}
    for frac in (0.0, 0.5):
        enc = PromptCharEncoder()
        settings = small_settings(condition_on_prompt=True, mismatched_negatives=frac, loss=loss, replay_size=0)
        rw = DiscriminatorReward(settings, RewardSettings(saturation_window=0), enc, seed=0)
        for step in range(60):
            p, c, r = topic_batch(step)
            rw(p, c, response=r)
        runs[frac] = (rw, enc, *_own_and_swapped(rw))
    rw, enc, own, swapped = runs[0.5]
    # each step, the batch's two reals were also read after the other post
    prompts, texts = enc.calls[3 * 59 + 2]  # per step: fakes, reals, then the reals after the other post
    assert texts == ["Cats lol", "Rain lol"] and [q[0]["content"] for q in prompts] == ["Post about rain", "Post about cats"]
    assert rw.metrics["discriminator/mismatch_accuracy"] == 1.0
    assert (own > 0).all() and (swapped < 0).all()  # a reply to the wrong post is fake
    # without them, D learnt "capital first = real" and takes the reply to the wrong post for real
    _, enc0, own0, swapped0 = runs[0.0]
    assert (own0 > 0).all() and (swapped0 > 0).any()
    assert len(enc0.calls) == 2 * 60 + 4  # off: fakes and reals only (+ the 4 calls of _own_and_swapped)
    assert swapped.mean() < swapped0.mean() - 3


def test_without_mismatched_negatives_nothing_changes():
    """Off (the default): no extra rows, no metric, and D's trajectory is the one it always was."""
    a = DiscriminatorReward(small_settings(condition_on_prompt=True), RewardSettings(), PromptCharEncoder(), seed=0)
    p, c, r = trl_batch(0)
    a(p, c, response=r)
    assert "discriminator/mismatch_accuracy" not in a.metrics and len(a.encoder.calls) == 2
    with pytest.raises(LlmganError, match="condition_on_prompt"):
        from llmgan.config import load_config

        load_config(None, ["discriminator.mismatched_negatives=0.5"])


# ---------------------------------------------------------------------------------------------
# D's held-out AUROC (issue 14: the teacher's strength, logged)


def test_heldout_auroc_measures_the_teacher_and_is_logged():
    rw = DiscriminatorReward(small_settings(heldout_every=2), RewardSettings(saturation_window=0), CharEncoder(), seed=0)
    assert math.isnan(rw.heldout_auroc())
    # held-out: texts like the batches' (never trained on): real replies start "Cats r"/"Rain a", fakes do not
    reals = ["Cats rule!", "Rain again!", "Cats rock", "Rain all day", "Cats run", "Rain again, meh"]
    fakes = ["meow 99", "cats are ok", "rain 99", "wet day 2", "umbrellas", "meow meow"]
    rw.set_heldout([""] * 6, fakes, reals)
    start = rw.heldout_auroc()
    for step in range(20):
        p, c, r = trl_batch(step)
        rw(p, c, response=r)
        assert ("discriminator/heldout_auroc" in rw.metrics) == (step % 2 == 1)  # every 2nd scored batch
    assert rw.metrics["discriminator/heldout_auroc"] == rw.heldout_auroc() > 0.9 > start
    with pytest.raises(ValueError, match="one fake and one real"):
        rw.set_heldout(["a"], ["b", "c"], ["d"])


def test_the_generators_cut_flags_reach_every_encoding_of_a_fake():
    """discriminator.mark_end reads the generator's own cut flag, not the stored text's length: the game's flags
    (from TRL's completion ids, as TRL's clipped_ratio counts them), the replayed fakes' and the held-out set's
    reach the encoder; real responses never carry one, and without an end mark no flag is derived."""
    import types

    class FlagEncoder(CharEncoder):
        end_id = 2  # the encoder's end mark (HiddenStateEncoder.end_id with mark_end)
        tokenizer = types.SimpleNamespace(pad_token_id=0, eos_token_id=2)
        # a model that declares a second end id (an end-of-turn token): a completion ending in it ended too
        model = types.SimpleNamespace(generation_config=types.SimpleNamespace(eos_token_id=[2, 7]))

        def __init__(self):
            super().__init__()
            self.seen = []

        def encode(self, prompts, responses, cut=None):
            self.seen.append(([r if isinstance(r, str) else r[0]["content"] for r in responses],
                              None if cut is None else list(cut)))
            return super().encode(prompts, responses)

    enc = FlagEncoder()
    rw = DiscriminatorReward(small_settings(encoder="policy"), RewardSettings(saturation_window=0), enc, seed=0)
    p, c, r = trl_batch(0)
    texts = [x[0]["content"] for x in c]
    flag = {t: i % 2 == 0 for i, t in enumerate(texts)}  # every other completion stopped at the cap
    ends = {1: [5, 2], 3: [5, 7], 5: [5, 0]}  # odd ones ended: the tokenizer's end id, the model's other one, pad
    ids = [[5, 6] if flag[t] else ends[i] for i, t in enumerate(texts)]
    rw(p, c, completion_ids=ids, response=r)
    assert enc.seen[0] == (texts, [flag[t] for t in texts]) and enc.seen[1][1] is None  # fakes, then reals
    assert [it["cut"] for it in rw.replay.items] == [flag[t] for t in texts]
    enc.seen.clear()
    p, c, r = trl_batch(1)
    rw(p, c, completion_ids=[[2]] * len(c), response=r)
    replayed, cut = enc.seen[2]  # after this batch's fakes and reals: the replayed fakes, re-encoded
    assert replayed and cut == [flag[t] for t in replayed]
    rw.set_heldout(["", ""], ["a", "b"], ["A", "B"], cut=[True, False])
    enc.seen.clear()
    rw.heldout_auroc()
    assert enc.seen == [(["A", "B"], None), (["a", "b"], [True, False])]
    enc.end_id, enc.seen = None, []
    rw(p, c, completion_ids=[[5, 6]] * len(c), response=r)
    assert enc.seen[0][1] is None


def test_select_rows_keeps_pairs_and_relevance_negatives_hand_values():
    """A sub-batch of an encoded pool: the chosen fakes, their reals, and the relevance negatives made of those
    reals with the real reply of the post each is read after (added when missing); indices re-mapped."""
    from llmgan.adversarial.batch import EncodedBatch, select_rows

    def states(values):  # one token per text, its value = an id we can follow
        return torch.tensor(values, dtype=torch.float)[:, None, None], torch.ones(len(values), 1, dtype=torch.bool)

    fh, fm = states([10, 11, 12, 13])   # fakes 0-3, of prompts a, a, b, c
    rh, rm = states([20, 21, 22])       # reals of a, b, c
    mh, mm = states([32, 30])           # negatives: "rc" read after post a, "ra" read after post b
    batch = EncodedBatch(["a", "a", "b", "c"], ["f0", "f1", "f2", "f3"], ["ra", "rb", "rc"],
                         torch.tensor([0, 0, 1, 2]), fh, fm, rh, rm, mh, mm,
                         mis_pair=torch.tensor([0, 1]), mis_real=torch.tensor([2, 0]))
    sub = select_rows(batch, [3, 1])
    assert sub.fakes == ["f3", "f1"] and sub.prompts == ["c", "a"]
    # reals of the fakes: rc, ra; rb joins as the post that "ra" is misread after
    assert sub.reals == ["ra", "rb", "rc"]
    assert sub.pair.tolist() == [2, 0] and sub.fake_h[:, 0, 0].tolist() == [13, 11]
    assert sub.real_h[:, 0, 0].tolist() == [20, 21, 22]
    assert sub.mis_h[:, 0, 0].tolist() == [32, 30]          # both negatives: made of rc and of ra
    assert sub.mis_real.tolist() == [2, 0] and sub.mis_pair.tolist() == [0, 1]
    only_b = select_rows(batch, [2])  # no negative is made of rb
    assert only_b.reals == ["rb"] and only_b.pair.tolist() == [0] and only_b.mis_h is None
    only_a = select_rows(batch, [0])  # "ra" after post b: rb comes along as its pair
    assert only_a.reals == ["ra", "rb"] and only_a.mis_h[:, 0, 0].tolist() == [30]
    assert only_a.mis_real.tolist() == [0] and only_a.mis_pair.tolist() == [1]
    for part in (sub, only_a):
        assert (part.mis_pair >= 0).all() and (part.mis_real >= 0).all() and (part.pair >= 0).all()
    plain = select_rows(EncodedBatch(["a"], ["f"], ["r"], torch.tensor([0]), *states([1]), *states([2])), [0, 0])
    assert plain.fakes == ["f", "f"] and plain.mis_h is None and plain.pair.tolist() == [0, 0]
