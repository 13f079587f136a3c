"""The detectors of `llmgan evaluate`: a registry, one fold assignment, and one way of scoring them all.

A detector is a classifier trained to tell generated (label 1) from real (label 0) responses. Each entry
of `REGISTRY` maps a name to a function that returns out-of-fold probabilities of "generated" for the
texts in `DetectorInput` (generated rows first, then real), trained and scored on the folds of
`fold_splits`, which every detector shares: a grouped k-fold by prompt, so a prompt's generated and
real response are always in the same fold. Whatever the detector, the judge then scores it the same
way (`judge.py`): AUROC of the out-of-fold scores, the human floor (two disjoint halves of the real
responses, at the same sample size), a bootstrap interval over prompts, and in --compare the paired
difference between systems.

Adding a detector is one `register(Detector(...))` call (or one entry below).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

from llmgan.errors import LlmganError
from llmgan.evaluation.folds import fold_splits
from llmgan.evaluation.textstats import one_thread
from llmgan.stats import rank_auroc  # noqa: F401  (part of this module's API: the judge's AUROC)

BOOTSTRAP_RESAMPLES = 1000
CI_LEVEL = 0.95


def out_of_fold(model, x, labels, splits):
    """Out-of-fold P(label 1) of a scikit-learn classifier (a fresh clone per fold)."""
    from sklearn.model_selection import cross_val_predict

    return cross_val_predict(model, x, labels, cv=splits, method="predict_proba")[:, 1]


def style_model():
    """The style detector's classifier: log1p (counts are heavy-tailed), standardise, logistic regression."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    return make_pipeline(FunctionTransformer(np.log1p), StandardScaler(), LogisticRegression(max_iter=2000))


@one_thread
def detector_auroc(x_generated, x_real, *, seed: int = 0, folds: int = 5, groups=None, model=None):
    """Out-of-fold AUROC of a classifier on feature rows telling generated (label 1) from real (label 0).

    Returns (auroc, scores_generated, scores_real, (fpr, tpr)). `groups` (one id per generated row, the
    same ids for the real rows) keeps a generated/real pair in the same fold. Folds: `fold_splits`.
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    xg, xr = np.asarray(x_generated, dtype=np.float64), np.asarray(x_real, dtype=np.float64)
    y = np.r_[np.ones(len(xg), dtype=int), np.zeros(len(xr), dtype=int)]
    g = None if groups is None else np.r_[np.asarray(groups), np.asarray(groups)]
    splits = fold_splits(y, g, folds=folds, seed=seed)
    scores = out_of_fold(model if model is not None else LogisticRegression(max_iter=2000), np.vstack([xg, xr]), y,
                         splits)
    auc, roc = auroc(scores[:len(xg)], scores[len(xg):])
    return auc, scores[:len(xg)], scores[len(xg):], roc


def auroc(scores_generated, scores_real):
    """(AUROC, (fpr, tpr)) of generated (label 1) vs real (label 0) scores."""
    import numpy as np
    from sklearn.metrics import roc_auc_score, roc_curve

    y = np.r_[np.ones(len(scores_generated), dtype=int), np.zeros(len(scores_real), dtype=int)]
    s = np.r_[np.asarray(scores_generated, dtype=np.float64), np.asarray(scores_real, dtype=np.float64)]
    fpr, tpr, _ = roc_curve(y, s)
    return float(roc_auc_score(y, s)), (fpr, tpr)


# ------------------------------------------------------------------------------------- the registry

@dataclass
class DetectorInput:
    """What a detector gets: the texts (generated rows first, then real), their MiniLM embeddings in the
    same order, the labels (1 generated, 0 real), the group ids (None: no pairing) and the folds."""

    texts: list[str]
    embeddings: Any
    labels: Any
    groups: Any
    splits: list
    seed: int = 0
    folds: int = 5
    settings: Any = None  # this detector's settings (from `settings=` of run_evaluation), or None
    progress: Any = None  # an llmgan.io.Progress, or None


@dataclass(frozen=True)
class Detector:
    """One registry entry. `scores(inp)` returns the out-of-fold P(generated) of every row of `inp`."""

    name: str
    label: str  # for tables: "Detector AUROC (<label>)"
    scores: Callable[[DetectorInput], Any]
    sees: str  # what it can and cannot see (docs, report's method section)
    key: str = ""  # metrics.json key of its AUROC (default: detector_auroc_<name>)
    linear: bool = True  # cheap enough to run with one BLAS thread inside the metrics block
    extra: dict = field(default_factory=dict)

    @property
    def metric_key(self) -> str:
        return self.key or f"detector_auroc_{self.name}"


REGISTRY: dict[str, Detector] = {}


def register(detector: Detector) -> Detector:
    """Add (or replace) a detector; `--detectors NAME` and `detectors=[NAME]` can then use it."""
    REGISTRY[detector.name] = detector
    return detector


def resolve(names: Optional[Sequence[str] | str]) -> list[Detector]:
    """Registry entries for a list or a comma-separated string of names (None: DEFAULT_DETECTORS; "all":
    every registered detector)."""
    if names is None:
        names = DEFAULT_DETECTORS
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if list(names) == ["all"]:
        names = list(REGISTRY)
    unknown = [n for n in names if n not in REGISTRY]
    if unknown or not names:
        raise LlmganError(f"unknown detector(s) {', '.join(unknown) or '(none given)'}; "
                          f"choose from {', '.join(REGISTRY)}")
    return [REGISTRY[n] for n in dict.fromkeys(names)]


def _minilm_lr(inp: DetectorInput):
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    return out_of_fold(LogisticRegression(max_iter=2000), np.asarray(inp.embeddings, dtype=np.float64), inp.labels,
                       inp.splits)


NGRAM_C = 10.0  # inverse regularisation of the n-gram logistic regression


def _with_start_mark(text: str) -> str:
    """A start-of-text mark: every text has a token and a 2-gram (no empty vocabulary on empty texts), and
    the character n-grams see how a text begins."""
    return "\x02 " + text


def ngram_model():
    """ngram_lr's classifier: TF-IDF of word 1-2-grams and character 2-5-grams, both cased, and a logistic
    regression. Words are runs of word characters, and every other non-space character is a token of its
    own (punctuation, emoji), so case, punctuation, emoji, hashtags and mentions are all features."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    words = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), lowercase=False, token_pattern=r"\w+|[^\w\s]",
                            preprocessor=_with_start_mark, sublinear_tf=True, dtype=np.float64)
    chars = TfidfVectorizer(analyzer="char", ngram_range=(2, 5), lowercase=False, preprocessor=_with_start_mark,
                            sublinear_tf=True, min_df=2, dtype=np.float64)
    return make_pipeline(make_union(words, chars), LogisticRegression(C=NGRAM_C, max_iter=2000))


def _ngram_lr(inp: DetectorInput):
    import numpy as np

    return out_of_fold(ngram_model(), np.asarray(inp.texts, dtype=object), inp.labels, inp.splits)


def _finetuned(inp: DetectorInput):
    from llmgan.evaluation.finetuned import finetuned_scores

    return finetuned_scores(inp.texts, inp.labels, inp.groups, folds=inp.folds, seed=inp.seed,
                            settings=inp.settings, progress=inp.progress)


register(Detector(
    name="minilm_lr", label="MiniLM + LR, uncased", scores=_minilm_lr,
    sees="logistic regression (sklearn defaults, C=1) on L2-normalised MiniLM sentence embeddings (all-MiniLM-L6-v2). "
         "Sees topic, wording and tone; blind to case (its tokenizer lowercases) and to which emoji (a run of emoji "
         "is one [UNK]), and texts are cut at 256 word pieces"))
register(Detector(
    name="ngram_lr", label="n-gram LR, cased", scores=_ngram_lr,
    sees=f"logistic regression (C={NGRAM_C:g}) on TF-IDF of word 1-2-grams and character 2-5-grams, cased. Sees "
         "the surface: case, punctuation, emoji, hashtags, mentions, URLs, spelling, frequent words and phrases; "
         "no meaning beyond shared strings (a paraphrase with new words looks new), no word order beyond 2 words"))
register(Detector(
    name="finetuned", label="fine-tuned transformer, cased", scores=_finetuned, linear=False,
    sees="a transformer classifier fine-tuned per fold (llmgan.evaluation.finetuned: by default the first layers of "
         "the embedded SmolLM2-135M-Instruct, byte-level BPE, cased, with a linear head; fixed epochs, learning "
         "rate and seed, no early stopping). Sees case, emoji and spacing as written, word order and meaning; only "
         "the first max_length tokens; shares the tokenizer and pretrained weights with the default generator"))

DEFAULT_DETECTORS: tuple[str, ...] = ("minilm_lr", "ngram_lr")
"""Run when none are named: the two linear detectors fit the 60-second budget for 1,000 pairs; the fine-tuned
one takes minutes (`--detectors all`)."""


# ------------------------------------------------------------------------------------- scoring

def run_detector(detector: Detector, texts_generated: Sequence[str], texts_real: Sequence[str], emb_generated,
                 emb_real, *, groups=None, seed: int = 0, folds: int = 5, settings: Any = None,
                 progress: Any = None) -> dict[str, Any]:
    """Score one detector on generated vs real rows: {"auroc", "generated" (scores), "real" (scores), "roc"}.

    `groups` as in `detector_auroc` (one id per generated row; None: ungrouped folds).
    """
    import numpy as np

    n_gen = len(texts_generated)
    y = np.r_[np.ones(n_gen, dtype=int), np.zeros(len(texts_real), dtype=int)]
    g = None if groups is None else np.r_[np.asarray(groups), np.asarray(groups)]
    splits = fold_splits(y, g, folds=folds, seed=seed)
    emb = None if emb_generated is None else np.vstack([emb_generated, emb_real])
    inp = DetectorInput(list(texts_generated) + list(texts_real), emb, y, g, splits, seed, folds, settings, progress)
    fn = one_thread(detector.scores) if detector.linear else detector.scores
    scores = np.asarray(fn(inp), dtype=np.float64)
    if scores.shape != (len(y),):
        raise LlmganError(f"detector {detector.name} returned {scores.shape} scores for {len(y)} texts")
    auc, roc = auroc(scores[:n_gen], scores[n_gen:])
    return {"auroc": auc, "generated": scores[:n_gen], "real": scores[n_gen:], "roc": roc}


# ------------------------------------------------------------------------------- bootstrap intervals

def _paired_bootstrap(data, statistic, *, n_resamples: int, level: float, seed: int):
    """scipy's percentile bootstrap, resampling pairs (index i of every array together)."""
    import numpy as np
    from scipy.stats import bootstrap

    res = bootstrap([np.asarray(a, dtype=np.float64) for a in data], statistic, paired=True, vectorized=False,
                    n_resamples=n_resamples, confidence_level=level, method="percentile", rng=seed)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _max_auroc(arrays) -> float:
    """max over detectors of AUROC(arrays[2k], arrays[2k + 1]) (generated, real scores of detector k)."""
    return max(rank_auroc(arrays[k], arrays[k + 1]) for k in range(0, len(arrays), 2))


def _flat(pairs: Sequence[tuple[Any, Any]], what: str) -> list:
    import numpy as np

    arrays = [np.asarray(a, dtype=np.float64) for p in pairs for a in p]
    if not arrays or len({len(a) for a in arrays}) != 1:
        raise LlmganError(f"{what} needs paired scores of the same length (one generated and one real per prompt)")
    return arrays


@one_thread
def max_auroc_ci(pairs: Sequence[tuple[Any, Any]], *, n_resamples: int = BOOTSTRAP_RESAMPLES,
                 level: float = CI_LEVEL, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval (low, high) of the largest AUROC over detectors.

    `pairs` holds one (scores_generated, scores_real) per detector, each of shape (n,), index i the same
    prompt everywhere: one resample of prompts applies to every detector. With one detector this is the
    interval of its AUROC. Test-set noise only: no detector is refitted, no generator retrained.
    """
    arrays = _flat(pairs, "auroc_ci")
    return _paired_bootstrap(arrays, lambda *a: _max_auroc(a), n_resamples=n_resamples, level=level, seed=seed)


def auroc_ci(scores_generated, scores_real, *, n_resamples: int = BOOTSTRAP_RESAMPLES, level: float = CI_LEVEL,
             seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval (low, high) of the AUROC of scores_generated (label 1) vs scores_real (0).

    scores_generated[i] and scores_real[i] (shape (n,) each) belong to the same prompt and are resampled
    together. This is the test-set noise of the detector's out-of-fold scores: the detector is not refitted
    and the generator not retrained, so the spread between training seeds comes on top.
    """
    if len(scores_real) != len(scores_generated):
        raise LlmganError(f"auroc_ci needs paired scores (got {len(scores_generated)} generated and "
                          f"{len(scores_real)} real)")
    return max_auroc_ci([(scores_generated, scores_real)], n_resamples=n_resamples, level=level, seed=seed)


def max_auroc_difference_ci(base: Sequence[tuple[Any, Any]], system: Sequence[tuple[Any, Any]], *,
                            n_resamples: int = BOOTSTRAP_RESAMPLES, level: float = CI_LEVEL,
                            seed: int = 0) -> tuple[float, float, float]:
    """(difference, low, high) of max-over-detectors AUROC of `system` minus that of `base`, paired by prompt.

    `base` and `system` each hold (scores_generated, scores_real) per detector, all of shape (n) with index i
    the same prompt (two systems judged on the same real responses in the same order); one resample of
    prompts applies to both systems, so the interval is that of a paired comparison. An interval that
    excludes 0 means the difference is larger than the test-set noise of n prompts.
    """
    return pooled_max_auroc_difference_ci([base], system, n_resamples=n_resamples, level=level, seed=seed)


@one_thread
def pooled_max_auroc_difference_ci(bases: Sequence[Sequence[tuple[Any, Any]]], system: Sequence[tuple[Any, Any]], *,
                                   n_resamples: int = BOOTSTRAP_RESAMPLES, level: float = CI_LEVEL,
                                   seed: int = 0) -> tuple[float, float, float]:
    """(difference, low, high): max-over-detectors AUROC of `system` minus the mean over `bases` of theirs.

    bases [B systems][D detectors] and system [D detectors] of (scores_generated, scores_real), shape (n) each,
    index i the same prompt everywhere; one resample of prompts applies to all B + 1 systems. With B samples of
    one baseline model (say SFT under B seeds) the baseline's sampling noise shrinks by about sqrt(B); with
    B = 1 this is `max_auroc_difference_ci`, to the same numbers.
    """
    if not bases or any(len(b) != len(system) for b in bases):
        raise LlmganError("pooled_max_auroc_difference_ci needs at least one baseline, each with the system's "
                          f"detectors ({len(system)})")
    arrays = _flat([p for b in bases for p in b] + list(system), "auroc_difference_ci")
    per, nb = 2 * len(system), len(bases)

    def stat(*a):
        pooled = sum(_max_auroc(a[i * per:(i + 1) * per]) for i in range(nb)) / nb
        return _max_auroc(a[nb * per:]) - pooled

    low, high = _paired_bootstrap(arrays, stat, n_resamples=n_resamples, level=level, seed=seed)
    return float(stat(*arrays)), low, high


def auroc_difference_ci(base_generated, base_real, scores_generated, scores_real, *,
                        n_resamples: int = BOOTSTRAP_RESAMPLES, level: float = CI_LEVEL,
                        seed: int = 0) -> tuple[float, float, float]:
    """(difference, low, high): AUROC(scores_generated, scores_real) - AUROC(base_generated, base_real), with
    a paired bootstrap interval over prompts (see `max_auroc_difference_ci`)."""
    return max_auroc_difference_ci([(base_generated, base_real)], [(scores_generated, scores_real)],
                                   n_resamples=n_resamples, level=level, seed=seed)


def describe(detectors: Sequence[Detector]) -> dict[str, str]:
    """name -> what it is and sees, for the settings in metrics.json."""
    return {d.name: d.sees for d in detectors}


def settings_for(detector: Detector, settings: Optional[Mapping[str, Any]]) -> Any:
    return (settings or {}).get(detector.name)
