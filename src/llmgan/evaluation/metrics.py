"""The metric registry of `llmgan evaluate`: one entry per metric, with its human-floor rule.

An entry says how the metric is computed, how its human floor is computed (`floor`), whether it is in
the headline console table, how it is printed, and whether checkpoint selection may use it. Adding a
metric is one `register(Metric(...))` call (or one entry below); the judge, the reports, --compare and
`score_for_selection` pick it up. Detectors (classifiers telling generated from real) have their own
registry in `detectors.py`; their rows come first in every table.

Floor rules:
  HALVES  comparative: computed for generated vs real (all n pairs); the floor for real half B vs real
          half A (disjoint random halves); and for the generated responses to B's prompts vs real half A
          (`same_size_as_floor`: the floor's own reference and sample size)
  REAL    set-level: the same function on all real responses
  NONE    no floor (a reference line such as the chance level)
  a callable  the entry's own floor: f(real: Side, ctx) -> value or (value, {extra key: value})
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

from llmgan.evaluation import textstats as ts
from llmgan.evaluation.detectors import detector_auroc, style_model

HALVES, REAL, NONE = "halves", "real", "none"


@dataclass
class Side:
    """One set of responses with their prompts and embeddings, and per-text features computed on demand
    (cached, and carried over to a subset by `take`)."""

    texts: list
    prompts: list
    emb: Any
    prompt_emb: Any
    _cache: dict = field(default_factory=dict)

    def feature(self, name: str):
        """A per-text feature array (one row per text), from PER_TEXT."""
        if name not in self._cache:
            self._cache[name] = PER_TEXT[name](self)
        return self._cache[name]

    def take(self, idx) -> "Side":
        return Side([self.texts[i] for i in idx], [self.prompts[i] for i in idx], self.emb[idx],
                    self.prompt_emb[idx], {k: v[idx] for k, v in self._cache.items()})


def _prompt_cos(s: Side):
    import numpy as np

    return np.sum(s.prompt_emb * s.emb, axis=1)


PER_TEXT: dict[str, Callable[[Side], Any]] = {
    "style": lambda s: ts.style_features(s.texts), "words": lambda s: ts.word_counts(s.texts),
    "compound": lambda s: ts.vader_compound(s.texts), "offensive": lambda s: ts.offensive(s.texts),
    "prompt_cos": _prompt_cos,
}


@dataclass
class Context:
    """Settings of one comparison: seed, folds, and the group ids of paired rows (None for the floor)."""

    seed: int = 0
    folds: int = 5
    groups: Any = None
    samples: dict = field(default_factory=dict)  # per-sample columns a metric adds to samples.csv


Value = Union[None, float, dict]


@dataclass(frozen=True)
class Metric:
    """One registry entry. `compute(cand, ref, ctx)` for HALVES, `compute(side, ctx)` for REAL and NONE."""

    key: str
    label: str
    best: str  # what is best, for the tables ("0.5", "0 (lower)", "= human", ...)
    compute: Callable[..., Value]
    floor: Union[str, Callable[..., Any]] = HALVES
    headline: bool = True  # a row of the console table
    compare: bool = True  # a row of the --compare table (False: the single report only)
    fmt: str = "{:.3f}"  # or "percent", "shares"
    selection: bool = False  # returned by score_for_selection
    paired: bool = False  # NONE/custom metrics computed from (generated, real) together: compute(gen, real, ctx)


REGISTRY: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    """Add (or replace) a metric; it is computed, reported and compared from then on."""
    REGISTRY[metric.key] = metric
    return metric


# ------------------------------------------------------------------------------------------ entries

def _style_auroc(c: Side, r: Side, ctx: Context):
    auc, s_gen, _, _ = detector_auroc(c.feature("style"), r.feature("style"), seed=ctx.seed, folds=ctx.folds,
                                      groups=ctx.groups, model=style_model())
    ctx.samples["style_score"] = s_gen
    return auc


def _w1(feature: str):
    return lambda c, r, ctx: ts.wasserstein(c.feature(feature), r.feature(feature))


def _jsd(c: Side, r: Side, ctx: Context):
    dist = ts.sentiment_distribution
    return ts.js_divergence(dist(c.feature("compound")).values(), dist(r.feature("compound")).values())


def _same_prompt_floor(r: Side, ctx: Context):
    value, pairs = ts.same_prompt_cosine(r.prompts, r.emb, r.texts)
    return value, {"human_relevance_cosine_pairs": pairs}


for _m in (
    Metric("style_auroc", "Style detector AUROC", "0.5", _style_auroc, selection=True),
    Metric("mauve", "MAUVE", "1 (higher)", lambda c, r, ctx: ts.mauve_score(c.emb, r.emb, seed=ctx.seed)),
    Metric("frechet_distance", "Frechet distance (MiniLM)", "0 (lower)",
           lambda c, r, ctx: ts.frechet_distance(c.emb, r.emb)),
    Metric("relevance_cosine", "cos(gen, real) same prompt", "higher",
           lambda g, r, ctx: ts.mean_pair_cosine(g.emb, r.emb), floor=_same_prompt_floor, paired=True,
           selection=True),
    Metric("relevance_cosine_mismatched", "cos(gen, real) other prompts (chance)", "below the line above",
           lambda g, r, ctx: ts.mismatched_cosine(g.emb, r.emb), floor=NONE, paired=True, headline=False,
           compare=False),
    Metric("prompt_response_cosine_mean", "cos(prompt, response) mean", "= human",
           lambda s, ctx: float(s.feature("prompt_cos").mean()), floor=REAL),
    Metric("prompt_response_cosine_wasserstein", "cos(prompt, response) W1", "0 (lower)", _w1("prompt_cos"),
           headline=False),
    Metric("mean_words", "Mean words", "= human", lambda s, ctx: float(s.feature("words").mean()), floor=REAL,
           fmt="{:.1f}", selection=True),
    Metric("length_ratio", "Length ratio to real", "1",
           lambda c, r, ctx: ts.length_ratio(c.feature("words"), r.feature("words")), headline=False),
    Metric("length_wasserstein", "Word count W1", "0 (lower)", _w1("words"), fmt="{:.1f}", selection=True),
    Metric("distinct_1", "Distinct-1", "= human", lambda s, ctx: ts.distinct_n(s.texts, 1), floor=REAL,
           headline=False),
    Metric("distinct_2", "Distinct-2", "= human", lambda s, ctx: ts.distinct_n(s.texts, 2), floor=REAL,
           selection=True),
    Metric("self_bleu", "Self-BLEU", "= human", lambda s, ctx: ts.self_bleu(s.texts), floor=REAL),
    Metric("sentiment_wasserstein", "VADER compound W1", "0 (lower)", _w1("compound")),
    Metric("sentiment_jsd", "Sentiment 3-class JSD", "0 (lower)", _jsd),
    Metric("profanity_rate", "Offensive rate", "= human", lambda s, ctx: float(s.feature("offensive").mean()),
           floor=REAL, fmt="percent"),
    Metric("sentiment_distribution", "Sentiment negative / neutral / positive", "= human",
           lambda s, ctx: ts.sentiment_distribution(s.feature("compound")), floor=REAL, headline=False,
           compare=False, fmt="shares"),
):
    register(_m)


# ------------------------------------------------------------------------------------------ formatting

def format_value(v: Any, key: str = "") -> str:
    """A metric value as printed in the tables ("n/a" for a missing one), by the entry's `fmt`."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if (isinstance(v, int) and not isinstance(v, bool)) or key == "n_pairs":
        return str(int(v))
    fmt = REGISTRY[key].fmt if key in REGISTRY else "{:.3f}"
    if fmt == "percent":
        return f"{100 * v:.1f}%"
    if fmt == "shares":
        return " / ".join(f"{100 * (v or {}).get(c, 0):.0f}%" for c in ("negative", "neutral", "positive"))
    return fmt.format(v)


def clean(x: Any) -> Any:
    """JSON-friendly numbers (None for NaN and infinities), recursively through dicts."""
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items()}
    if x is None or isinstance(x, (int, str)):
        return x
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x


def compute_comparative(metrics: dict, cand: Side, ref: Side, ctx: Context) -> dict[str, Value]:
    """Every HALVES metric of `metrics` (a registry or part of it) for a candidate set against a reference set."""
    return {k: m.compute(cand, ref, ctx) for k, m in metrics.items() if m.floor == HALVES}


def compute_all(gen: Side, real: Side, half_a, half_b, ctx: Context, floor_ctx: Context,
                metrics: Optional[dict] = None, advance: Optional[Callable[[], None]] = None):
    """(system, human, same_size) dicts of every registered metric; see the module docstring for the rules."""
    metrics = REGISTRY if metrics is None else metrics
    system, human = compute_comparative(metrics, gen, real, ctx), {}
    if advance:
        advance()
    human.update(compute_comparative(metrics, real.take(half_b), real.take(half_a), floor_ctx))
    if advance:
        advance()
    same = compute_comparative(metrics, gen.take(half_b), real.take(half_a), Context(ctx.seed, ctx.folds))
    for k, m in metrics.items():
        if m.floor == HALVES:
            continue
        system[k] = m.compute(gen, real, ctx) if m.paired else m.compute(gen, ctx)
        if m.floor == REAL:
            human[k] = m.compute(real, ctx)
        elif callable(m.floor):
            value = m.floor(real, ctx)
            value, extra = value if isinstance(value, tuple) else (value, {})
            human[k] = value
            human.update(extra)
    return system, human, same
