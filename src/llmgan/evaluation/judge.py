"""The judge: read -> check -> detectors and metrics (with the human floor) -> an EvalResult.

System metrics compare all n generated with all n real responses. The human floor compares real half B
with real half A (disjoint random halves, `seed`). `same_size_as_floor` compares the generated
responses to the prompts of half B with real half A: the floor's own reference and sample size, for
the metrics whose value depends on sample size (Frechet, Wasserstein, JSD, MAUVE).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from llmgan.errors import LlmganError
from llmgan.evaluation import detectors as det
from llmgan.evaluation import metrics as reg
from llmgan.evaluation.embed import ENCODER_NAME, embed
from llmgan.evaluation.folds import prompt_groups
from llmgan.evaluation.reading import read_pairs
from llmgan.evaluation.textstats import MAUVE_SETTINGS, STYLE_FEATURES, one_thread, project_2d

MIN_PAIRS = 20  # two halves of >= 10 real responses for the human floor's 5-fold cross-validation


@dataclass
class EvalResult:
    """Everything one evaluation produced: the metrics dict, the per-sample table and plot data."""

    metrics: dict[str, Any]
    samples: Any  # pandas DataFrame, most detectable first
    plots: dict[str, Any] = field(default_factory=dict)
    name: str = "generated"
    # per detector name: out-of-fold scores of the generated and of the real responses in input order, and
    # the (prompt, real) pairs they belong to: for the paired bootstrap of differences between systems
    pair_scores: Any = None


def check_pairs(prompts, real, generated) -> None:
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


COPY_WARN_SHARE = 0.05  # warn when more than this share of generated responses are copies of real ones
DISTINCT_WARN_SHARE = 0.5  # warn when a side has fewer distinct texts than this share of its rows


def input_warnings(real: Sequence[str], generated: Sequence[str]) -> list[str]:
    """What makes the numbers mean something else than realism: generated responses that are copies of real
    ones (a detector cannot tell a copy; shuffled real replies give an AUROC far below 0.5), and a side with
    very few distinct texts. One sentence each; empty when the input looks like generations."""
    n = len(generated)
    out = []
    real_set = set(real)
    copies = sum(g in real_set for g in generated)
    if n and copies / n > COPY_WARN_SHARE:
        same_row = sum(g == r for g, r in zip(generated, real))
        out.append(f"{copies} of {n} generated responses ({copies / n:.0%}) are copies of real responses in the file "
                   f"({same_row} of their own prompt's); the detectors cannot tell a copy, so the numbers say little "
                   "about realism: check that the generated column holds generations")
    for side, texts in (("generated", generated), ("real", real)):
        distinct = len(set(texts))
        if texts and distinct < DISTINCT_WARN_SHARE * len(texts):
            out.append(f"the {side} responses have only {distinct} distinct texts in {len(texts)} rows; "
                       "diversity and detector numbers on so few texts mean little")
    return out


def _sides(prompts, real, generated, *, batch_size, bar, threads):
    n = len(real)
    emb = embed(list(prompts) + list(real) + list(generated), batch_size=batch_size, progress=bar, threads=threads)
    e_prompt = emb[:n]
    return (reg.Side(list(generated), list(prompts), emb[2 * n:], e_prompt),
            reg.Side(list(real), list(prompts), emb[n:2 * n], e_prompt))


def _detect(detectors, gen: reg.Side, real: reg.Side, half_a, half_b, *, seed, folds, settings, bar):
    """{name: {"system", "human", "same"}} with each run_detector result."""
    out = {}
    for d in detectors:
        kw = dict(seed=seed, folds=folds, settings=det.settings_for(d, settings), progress=bar)
        ra, rb, gb = real.take(half_a), real.take(half_b), gen.take(half_b)
        out[d.name] = {
            "system": det.run_detector(d, gen.texts, real.texts, gen.emb, real.emb, groups=prompt_groups(gen.prompts, len(real.texts), folds),
                                       **kw),
            "human": det.run_detector(d, rb.texts, ra.texts, rb.emb, ra.emb, **kw),
            "same": det.run_detector(d, gb.texts, ra.texts, gb.emb, ra.emb, **kw)}
    return out


def run_evaluation(prompts: Sequence[str], real: Sequence[str], generated: Sequence[str], *, seed: int = 0,
                   folds: int = 5, batch_size: int = 64, progress: bool = False, name: str = "generated",
                   threads: Optional[int] = None, detectors: Optional[Sequence[str] | str] = None,
                   settings: Optional[Mapping[str, Any]] = None) -> EvalResult:
    """Evaluate generated against real responses (and the human floor); see the module docstring.

    `detectors`: registry names (None: detectors.DEFAULT_DETECTORS); `settings`: {detector name: its
    settings} (e.g. {"finetuned": FinetunedSettings(...)}).
    """
    import numpy as np
    from threadpoolctl import threadpool_limits

    from llmgan.io import Progress

    prompts, real, generated = list(prompts), list(real), list(generated)
    check_pairs(prompts, real, generated)
    chosen = det.resolve(detectors)
    n = len(real)
    perm = np.random.default_rng(seed).permutation(n)
    half_a, half_b = np.sort(perm[:n // 2]), np.sort(perm[n // 2:2 * (n // 2)])
    with Progress(progress) as bar:
        gen, rl = _sides(prompts, real, generated, batch_size=batch_size, bar=bar, threads=threads)
        steps = bar.add("metrics", 5)
        d = _detect([x for x in chosen if not x.linear], gen, rl, half_a, half_b, seed=seed, folds=folds,
                    settings=settings, bar=bar)
        # the metrics are many small BLAS/OpenMP calls: one thread (see textstats.one_thread)
        with threadpool_limits(limits=1):
            for side in (gen, rl):
                for feature in reg.PER_TEXT:
                    side.feature(feature)
            bar.advance(steps)
            d.update(_detect([x for x in chosen if x.linear], gen, rl, half_a, half_b, seed=seed, folds=folds,
                             settings=settings, bar=bar))
            ctx, floor_ctx = reg.Context(seed, folds, prompt_groups(prompts, n, folds)), reg.Context(seed, folds)
            system, human, same = reg.compute_all(gen, rl, half_a, half_b, ctx, floor_ctx,
                                                  advance=lambda: bar.advance(steps))
            bar.advance(steps)
            d = {x.name: d[x.name] for x in chosen}
            m = _metrics_dict(n, len(half_a), chosen, d, system, human, same, seed=seed)
            bar.advance(steps)
    m["warnings"] = input_warnings(real, generated)
    m["settings"] = _settings(seed, folds, len(half_a), chosen)
    best = m["detector_auroc_max_detector"]
    samples = _samples_table(prompts, real, generated, gen, rl, best, d, ctx.samples)
    xy = one_thread(project_2d)(np.vstack([gen.emb, rl.emb]), seed=seed)
    plots = {"words_generated": gen.feature("words"), "words_real": rl.feature("words"),
             "compound_generated": gen.feature("compound"), "compound_real": rl.feature("compound"),
             "pca_generated": xy[:n], "pca_real": xy[n:],
             "rocs": {k: (v["system"]["roc"], v["system"]["auroc"]) for k, v in d.items()},
             "human_roc": d[best]["human"]["roc"], "human_auroc": d[best]["human"]["auroc"], "best": best}
    pair_scores = {"pairs": tuple(zip(prompts, real)),
                   "detectors": {k: (v["system"]["generated"], v["system"]["real"]) for k, v in d.items()}}
    return EvalResult(metrics=m, samples=samples, plots=plots, name=name, pair_scores=pair_scores)


def _metrics_dict(n, half, chosen, d, system, human, same, *, seed) -> dict[str, Any]:
    """metrics.json: the strongest detector (detector_auroc_max) and each detector, then the metric registry."""
    m: dict[str, Any] = {"n_pairs": n, "human_floor_half_size": half}
    keys = {x.name: x.metric_key for x in chosen}
    best = max(chosen, key=lambda x: d[x.name]["system"]["auroc"]).name
    pairs = [(d[x.name]["system"]["generated"], d[x.name]["system"]["real"]) for x in chosen]
    low, high = det.max_auroc_ci(pairs, seed=seed)
    m.update({"detector_auroc_max": d[best]["system"]["auroc"], "detector_auroc_max_detector": best,
              "human_detector_auroc_max": max(d[x]["human"]["auroc"] for x in keys),
              "detector_auroc_max_ci": {"low": low, "high": high, "level": det.CI_LEVEL}})
    for x in chosen:
        k, r = keys[x.name], d[x.name]
        m[k], m[f"human_{k}"] = r["system"]["auroc"], r["human"]["auroc"]
        low, high = det.auroc_ci(r["system"]["generated"], r["system"]["real"], seed=seed)
        m[f"{k}_ci"] = {"low": low, "high": high, "level": det.CI_LEVEL}
    if "minilm_lr" in d:  # the key of the MiniLM detector before there were several (llmgan export reads it)
        m["detector_auroc"] = d["minilm_lr"]["system"]["auroc"]
    for k, v in system.items():
        m[k] = v
        if k in human:
            m[f"human_{k}"] = human[k]
    m.update({k: v for k, v in human.items() if k.startswith("human_")})
    m["same_size_as_floor"] = {"detector_auroc_max": max(d[x]["same"]["auroc"] for x in keys),
                               **{keys[x]: d[x]["same"]["auroc"] for x in keys}, **same}
    return reg.clean(m)


def _settings(seed, folds, half, chosen) -> dict[str, Any]:
    return {
        "seed": seed, "folds": folds, "encoder": ENCODER_NAME,
        "detectors": {x.name: x.sees for x in chosen},
        "detector_auroc_max": "the largest AUROC of the detectors run (detector_auroc_max_detector names it); its "
                              "human floor is the largest of theirs",
        "detector_folds": (f"{folds}-fold cross-validation, the same folds for every detector; a prompt's generated "
                           "and real response always in the same fold; out-of-fold scores"),
        "style_detector": "log1p, standardise, logistic regression on " + ", ".join(STYLE_FEATURES),
        "mauve": {**MAUVE_SETTINGS, "seed": seed, "features": "the MiniLM embeddings"},
        "human_floor": (f"real responses split at random (seed {seed}) into two disjoint halves A and B of "
                        f"{half}; comparative metrics (AUROCs, MAUVE, Frechet, Wasserstein, JSD, length "
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
        "detector_auroc_ci": (f"{det.CI_LEVEL:.0%} percentile bootstrap ({det.BOOTSTRAP_RESAMPLES} resamples of the "
                              "prompts, generated and real response together) of each detector's out-of-fold scores "
                              "(for the max: of the largest AUROC, every detector on the same resample): test-set "
                              "noise only (detectors not refitted, generator not retrained)"),
    }


def _samples_table(prompts, real, generated, gen, rl, best, d, extra):
    """One row per prompt, most detectable first (by the strongest detector): the strongest detector's
    out-of-fold scores of both responses (detector_score, real_detector_score), each detector's of the generated
    response (score_<name>) and of the real one (real_score_<name>), and the pair's row in the input (row), so
    that a paired comparison on any subset of the rows can be recomputed from this table alone."""
    import numpy as np
    import pandas as pd

    top = d[best]["system"]
    order = np.argsort(-top["generated"], kind="stable")
    return pd.DataFrame({
        "prompt": prompts, "real": real, "generated": generated,
        "detector_score": top["generated"], "real_detector_score": top["real"],
        **{f"score_{k}": v["system"]["generated"] for k, v in d.items()},
        **{f"real_score_{k}": v["system"]["real"] for k, v in d.items()}, **extra,
        "generated_words": gen.feature("words").astype(int), "real_words": rl.feature("words").astype(int),
        "row": np.arange(len(prompts)),
    }).iloc[order].reset_index(drop=True)


def evaluate_pairs(prompts: Sequence[str], real: Sequence[str], generated: Sequence[str], seed: int = 0, *,
                   folds: int = 5, batch_size: int = 64, progress: bool = False, threads: Optional[int] = None,
                   detectors: Optional[Sequence[str] | str] = None,
                   settings: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """All metrics for generated vs real responses to the same prompts, with the human floor.

    Returns a JSON-serialisable dict: `detector_auroc_max` (the strongest detector), `detector_auroc_<name>` per
    detector, `style_auroc`, `mauve`, `frechet_distance`, `relevance_cosine`, ..., each with its human floor under
    `human_<key>`, plus `n_pairs` and `settings`.
    """
    return run_evaluation(prompts, real, generated, seed=seed, folds=folds, batch_size=batch_size,
                          progress=progress, threads=threads, detectors=detectors, settings=settings).metrics


def evaluate_file(path: str | Path, *, prompt_column: str = "prompt", real_column: str = "real",
                  generated_column: str = "generated", seed: int = 0, folds: int = 5, batch_size: int = 64,
                  progress: bool = False, name: Optional[str] = None, threads: Optional[int] = None,
                  detectors: Optional[Sequence[str] | str] = None,
                  settings: Optional[Mapping[str, Any]] = None) -> EvalResult:
    prompts, real, generated = read_pairs(path, prompt_column=prompt_column, real_column=real_column,
                                          generated_column=generated_column)
    if len(real) < MIN_PAIRS:
        raise LlmganError(f"{path} has {len(real)} rows; need at least {MIN_PAIRS} to evaluate")
    result = run_evaluation(prompts, real, generated, seed=seed, folds=folds, batch_size=batch_size,
                            progress=progress, name=name or Path(path).stem, threads=threads, detectors=detectors,
                            settings=settings)
    result.metrics["input"] = str(path)
    return result
