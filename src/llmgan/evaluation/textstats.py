"""Text and distribution measures of `llmgan evaluate`: pure functions of texts, counts and embeddings.

Style features, word counts, Wasserstein-1, distinct-n, self-BLEU, VADER sentiment, Jensen-Shannon
divergence, the offensive-text classifier, cosines, the Frechet distance and MAUVE. The metric registry
(`metrics.py`) says which of them are reported and how their human floor is computed.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from typing import Iterable, Optional, Sequence

STYLE_FEATURES = ("words", "characters", "uppercase_ratio", "exclamation_marks", "question_marks",
                  "hashtags", "mentions", "urls", "emoji", "newlines")
SELF_BLEU_SMOOTHING = ("floor", 0.1)
SENTIMENT_CLASSES = ("negative", "neutral", "positive")
# mauve-text settings, fixed so that numbers are comparable between runs (its own defaults, written out)
MAUVE_SETTINGS = dict(num_buckets="auto", pca_max_data=-1, kmeans_explained_var=0.9, kmeans_num_redo=5,
                      kmeans_max_iter=500, divergence_curve_discretization_size=25, mauve_scaling_factor=5)

_VADER = None


def one_thread(fn):
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


@one_thread
def mauve_score(p_features, q_features, *, seed: int = 0) -> float:
    """MAUVE between two feature sets (mauve-text with MAUVE_SETTINGS, features passed in: no model)."""
    import numpy as np
    import mauve

    with _quiet_stderr_fd():
        out = mauve.compute_mauve(p_features=np.asarray(p_features, dtype=np.float32),
                                  q_features=np.asarray(q_features, dtype=np.float32),
                                  seed=seed, verbose=False, **MAUVE_SETTINGS)
    return float(out.mauve)


@one_thread
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


@one_thread
def project_2d(x, *, seed: int = 0):
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


