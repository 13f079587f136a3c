"""Length taken out of the discriminator and taught exactly (`llmgan.adversarial.length`): the maths on hand
values, a length-matched D that cannot learn length but still learns content, the length term of the reward,
and its history through a checkpoint."""

from __future__ import annotations

import math

import pytest
import torch

from llmgan.adversarial.length import (LengthHistory, length_log_ratio, log_density, matched_prefix_masks,
                                       silverman_bandwidth)
from llmgan.adversarial.reward import DiscriminatorReward
from llmgan.config import RewardSettings, load_config
from llmgan.errors import LlmganError
from tests.test_rewards import CharEncoder, small_settings

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _mask(lengths, t):
    return torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]


def test_matched_prefix_masks_hand_values():
    fake, real = matched_prefix_masks(_mask([5, 2, 0], 6), _mask([3, 4, 2], 4))
    assert fake.sum(1).tolist() == [3, 2, 0] and real.sum(1).tolist() == [3, 2, 0]
    assert fake.shape == (3, 6) and real.shape == (3, 4)
    assert fake[0].tolist() == [True, True, True, False, False, False]  # the leading tokens are kept
    with pytest.raises(ValueError, match="not pairs"):
        matched_prefix_masks(_mask([1], 2), _mask([1, 2], 2))


def test_kernel_density_and_bandwidth_hand_values():
    # one sample point, bandwidth 1: the standard normal's log density
    assert float(log_density(torch.tensor([0.0]), torch.tensor([0.0]), 1.0)) == pytest.approx(-0.5 * math.log(2 * math.pi))
    assert float(log_density(torch.tensor([2.0]), torch.tensor([0.0]), 2.0)) == pytest.approx(
        -0.5 - math.log(2 * math.sqrt(2 * math.pi)))
    # 0,1,2,3,4: sd 1.581, IQR/1.34 = 1.4925 -> 0.9 x 1.4925 x 5^-0.2 = 0.9736
    assert silverman_bandwidth(torch.arange(5.0)) == pytest.approx(0.9 * 2 / 1.34 * 5 ** -0.2)
    assert silverman_bandwidth(torch.full((8,), 3.0)) == 0.05  # one repeated value still has a density


def test_length_log_ratio_rewards_human_lengths_and_is_zero_once_they_match():
    human = torch.tensor([8, 9, 10, 10, 11, 12] * 5)
    long = torch.tensor([28, 30, 30, 31, 33, 35] * 5)
    ratio = length_log_ratio(torch.tensor([10, 30]), human, long)
    assert ratio[0] > 2 and ratio[1] < -2  # human length rewarded, the generator's usual length penalised
    assert torch.equal(length_log_ratio(torch.tensor([10, 30]), human, human), torch.zeros(2))  # nothing to teach
    assert torch.equal(length_log_ratio(torch.tensor([10]), human, torch.tensor([], dtype=torch.long)), torch.zeros(1))
    far = length_log_ratio(torch.tensor([1000]), human, long, bound=3.0)
    assert float(far) == 3.0 or float(far) == -3.0  # clamped, never infinite


def test_length_history_window_and_round_trip():
    h = LengthHistory(window=3, human_size=4)
    h.add(human=[1, 2, 3, 4, 5], generated=[7, 8, 9, 10])
    assert list(h.human) == [2, 3, 4, 5] and list(h.generated) == [8, 9, 10]
    other = LengthHistory(window=3)
    other.load_state_dict(h.state_dict())
    assert other.state_dict() == h.state_dict()
    assert torch.equal(other.ratio(torch.tensor([3, 9])), h.ratio(torch.tensor([3, 9])))


def _batch(step, real, fake):
    """Two prompts x 3 completions, TRL-style; every real reply is `real`, every completion `fake`."""
    prompts = [[{"role": "user", "content": f"Post {k}"}] for k in (0, 0, 0, 1, 1, 1)]
    return prompts, [fake] * 6, [real] * 6


@pytest.mark.parametrize("matched", [False, True])
def test_a_length_matched_discriminator_cannot_learn_length(matched):
    """Real 'xyy', fake 'xyyyyyyy': the same text but longer. An ordinary D learns it (length through its mean
    pooling); cut to the shorter one, both read 'xyy', so a length-matched D has nothing to learn."""
    rw = DiscriminatorReward(small_settings(length_matched=matched, dropout=0.0), RewardSettings(saturation_window=0),
                             CharEncoder(), seed=0)
    for step in range(40):
        rw(*_batch(step, "xyy", "xyyyyyyy")[:2], response=["xyy"] * 6)
    loss = rw.metrics["discriminator/loss"]
    if matched:
        assert loss == pytest.approx(math.log(2), abs=0.02)  # chance: identical inputs under both labels
    else:
        assert loss < 0.2 and rw.metrics["discriminator/accuracy"] == 1.0


@pytest.mark.parametrize("loss", ["bce", "bradley_terry"])
def test_a_length_matched_discriminator_still_learns_content(loss):
    """Real 'Xyy' (a capital), fake 'xyyyyyyy': on the matched prefixes the capital is left, and D learns it."""
    rw = DiscriminatorReward(small_settings(length_matched=True, loss=loss), RewardSettings(saturation_window=0),
                             CharEncoder(), seed=0)
    for step in range(40):
        rw(*_batch(step, "Xyy", "xyyyyyyy")[:2], response=["Xyy"] * 6)
    real, fake = rw.score(rw.encode(*_batch(0, "Xyy", "xyy")))
    assert (real > fake.max()).all()  # the same length: only the capital separates them


def test_the_length_term_moves_rewards_towards_human_lengths():
    """Real replies of 3 characters; completions of 3 and of 12. With reward.length_weight = 1 the reward of
    each completion moves by exactly log p_human(L) / p_generated(L): up for 3, down for 12."""
    settings = small_settings(steps_per_generator_step=0, max_response_tokens=12)
    prompts = [[{"role": "user", "content": "Post"}]] * 4
    completions, reals = ["abc", "abcdefghijkl", "xyz", "mnopqrstuvwx"], ["Abc"] * 4
    plain = DiscriminatorReward(settings, RewardSettings(), CharEncoder(), seed=0)
    weighted = DiscriminatorReward(settings, RewardSettings(length_weight=1.0), CharEncoder(), seed=0)
    base = torch.tensor(plain(prompts, completions, response=reals))
    shifted = torch.tensor(weighted(prompts, completions, response=reals))
    expected = length_log_ratio(torch.tensor([3, 12, 3, 12]), torch.tensor([3] * 4), torch.tensor([3, 12, 3, 12]))
    assert torch.allclose(shifted - base, expected, atol=1e-5)
    assert expected[0] > 0 > expected[1]
    m = weighted.metrics
    assert m["generator/response_tokens"] == 7.5 and m["generator/human_response_tokens"] == 3.0
    assert m["generator/length_log_ratio"] == pytest.approx(float(expected.mean()), abs=1e-6)
    assert "generator/length_log_ratio" not in plain.metrics  # off: no term, no metric


def test_lengths_survive_a_checkpoint(tmp_path):
    rw = DiscriminatorReward(small_settings(length_matched=True), RewardSettings(length_weight=1.0), CharEncoder())
    for step in range(3):
        rw(*_batch(step, "Xyy", f"xy{'y' * step}")[:2], response=["Xyy"] * 6)
    rw.save(tmp_path / "d")
    back = DiscriminatorReward(small_settings(length_matched=True), RewardSettings(length_weight=1.0), CharEncoder())
    back.load(tmp_path / "d")
    assert back.lengths.state_dict() == rw.lengths.state_dict() and len(back.lengths.generated) == 18
    nxt = _batch(3, "Xyy", "xyyyy")
    assert back(*nxt[:2], response=nxt[2]) == rw(*nxt[:2], response=nxt[2])


def test_length_settings_are_checked():
    with pytest.raises(LlmganError, match="length_weight"):
        load_config(None, ["reward.length_weight=-1"])
    cfg = load_config(None, ["reward.length_weight=1", "discriminator.length_matched=true"])
    assert cfg.reward.length_weight == 1.0 and cfg.discriminator.length_matched
