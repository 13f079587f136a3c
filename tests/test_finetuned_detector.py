"""The `finetuned` detector (llmgan.evaluation.finetuned) on a tiny random Llama: shapes, determinism, the
folds of the linear detectors, that it learns an easy signal, and about 0.5 on two samples of one set.

The tiny model (2 layers, hidden 64, random weights, the real SmolLM2 tokenizer) knows no language, so
these tests check the mechanics; detector strength with the real trunk is in docs/detectors-finetuned.md.
"""

from __future__ import annotations

import numpy as np
import pytest

from llmgan.errors import LlmganError
from llmgan.evaluation.finetuned import FinetunedSettings, finetuned_scores, fold_splits

N = 60  # pairs

WORDS = ("the people vote today and this is not what we want from them at all but maybe next year it will "
         "be better for everyone who lives here so please stop lying about it now").split()


def _texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(5, 16)))).capitalize() + "." for _ in range(n)]


@pytest.fixture(scope="module")
def settings(tiny_model_dir) -> FinetunedSettings:
    # the whole tiny trunk is trained; last-token pooling reads the end of the text directly
    return FinetunedSettings(model_path=str(tiny_model_dir), layers=2, freeze_layers=0, max_length=32,
                             epochs=3, learning_rate=3e-3, batch_size=16, pooling="last", threads=1)


def _pairs(generated: list[str], real: list[str]):
    texts = list(generated) + list(real)
    y = np.r_[np.ones(len(generated), dtype=int), np.zeros(len(real), dtype=int)]
    groups = np.r_[np.arange(len(generated)), np.arange(len(real))]
    return texts, y, groups


def _auroc(y, scores) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, scores))


def test_appended_hashtag_is_caught_and_scores_are_deterministic(settings):
    real = _texts(N, 0)
    texts, y, groups = _pairs([t + " #MAGA" for t in real], real)
    scores = finetuned_scores(texts, y, groups, folds=5, seed=0, settings=settings)
    assert scores.shape == (2 * N,) and scores.dtype == np.float64
    assert np.all((scores >= 0) & (scores <= 1))
    assert _auroc(y, scores) > 0.9
    again = finetuned_scores(texts, y, groups, folds=5, seed=0, settings=settings)
    np.testing.assert_array_equal(scores, again)


def test_two_samples_of_the_same_set_give_about_one_half(settings):
    texts, y, groups = _pairs(_texts(N, 1), _texts(N, 2))
    assert abs(_auroc(y, finetuned_scores(texts, y, groups, settings=settings)) - 0.5) < 0.2


def test_frozen_prefix_cache_and_lora_run(settings):
    from dataclasses import replace

    real = _texts(20, 3)
    texts, y, groups = _pairs([t + " #MAGA" for t in real], real)
    for s in (replace(settings, freeze_layers=1, epochs=1), replace(settings, lora_rank=2, epochs=1)):
        scores = finetuned_scores(texts, y, groups, settings=s)
        assert scores.shape == (40,) and np.isfinite(scores).all()


def test_folds_are_those_of_the_linear_detectors():
    """fold_splits gives detector_auroc's folds: texts generated first, groups r_[ids, ids]."""
    from sklearn.model_selection import StratifiedGroupKFold

    n = 40
    y = np.r_[np.ones(n, dtype=int), np.zeros(n, dtype=int)]
    groups = np.r_[np.arange(n), np.arange(n)]
    ours = fold_splits(y, groups, folds=5, seed=3)
    theirs = list(StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=3).split(np.zeros((2 * n, 1)), y,
                                                                                     groups=groups))
    assert len(ours) == 5
    for (a_train, a_test), (b_train, b_test) in zip(ours, theirs):
        np.testing.assert_array_equal(a_test, b_test)
        assert set(groups[a_test]).isdisjoint(groups[a_train])  # a pair never straddles two folds


def test_bad_input_is_one_clear_error(settings):
    with pytest.raises(LlmganError, match="at least 5"):
        finetuned_scores(["a", "b", "c"], np.array([1, 0, 1]), None, settings=settings)
    with pytest.raises(LlmganError, match="same length"):
        finetuned_scores(["a"] * 10, np.array([1, 0] * 4), None, settings=settings)
