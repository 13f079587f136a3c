"""The one scoring function checkpoint selection (`llmgan select`) uses: `score_for_selection`.

It runs the registered detectors (each with its bootstrap interval over prompts) and the metrics marked
`selection=True` in the metric registry, on one candidate's generated responses against the real ones.
No human floor (selection compares candidates with each other on the same prompts), no MAUVE or
self-BLEU (they cost more than they add to a choice).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from llmgan.evaluation import detectors as det
from llmgan.evaluation import metrics as reg
from llmgan.evaluation.embed import embed
from llmgan.evaluation.folds import prompt_groups


def score_for_selection(prompts: Optional[Sequence[str]], real: Sequence[str], generated: Sequence[str], *,
                        detectors: Optional[Sequence[str] | str] = None, seed: int = 0, folds: int = 5,
                        threads: Optional[int] = None,
                        settings: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """Scores of one candidate: `detector_auroc_max` (the strongest detector's AUROC, the selection criterion;
    `detector_auroc_max_detector` names it), for each detector its AUROC under its metrics.json key; each of
    these with `_low`/`_high` (95 % bootstrap interval over prompts); and each selection metric (with `human_<key>` where its floor is
    the real responses themselves). `prompts` may be None when no selection metric needs them."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    n = len(real)
    emb = embed(list(real) + list(generated) + list(prompts or []), threads=threads)
    e_prompt = emb[2 * n:] if prompts else np.zeros_like(emb[:n])
    p = list(prompts) if prompts else [""] * n
    gen, rl = reg.Side(list(generated), p, emb[n:2 * n], e_prompt), reg.Side(list(real), p, emb[:n], e_prompt)
    groups = prompt_groups(prompts, n, folds)
    out: dict[str, Any] = {}
    chosen = det.resolve(detectors)
    pairs = {}
    for d in sorted(chosen, key=lambda x: x.linear):  # the fine-tuned one with all threads, the rest with one
        with threadpool_limits(limits=1 if d.linear else None):
            r = det.run_detector(d, gen.texts, rl.texts, gen.emb, rl.emb, groups=groups, seed=seed, folds=folds,
                                 settings=det.settings_for(d, settings))
            low, high = det.auroc_ci(r["generated"], r["real"], seed=seed)
        out.update({d.metric_key: r["auroc"], f"{d.metric_key}_low": low, f"{d.metric_key}_high": high})
        pairs[d.name] = (r["generated"], r["real"])
    best = max(chosen, key=lambda x: out[x.metric_key])
    low, high = det.max_auroc_ci(list(pairs.values()), seed=seed)
    out.update({"detector_auroc_max": out[best.metric_key], "detector_auroc_max_low": low,
                "detector_auroc_max_high": high, "detector_auroc_max_detector": best.name})
    ctx = reg.Context(seed, folds, groups)
    with threadpool_limits(limits=1):
        for k, m in reg.REGISTRY.items():
            if not m.selection:
                continue
            if m.floor == reg.HALVES:
                out[k] = m.compute(gen, rl, ctx)
            else:
                out[k] = m.compute(gen, rl, ctx) if m.paired else m.compute(gen, ctx)
                if m.floor == reg.REAL:
                    out[f"human_{k}"] = m.compute(rl, ctx)
    return reg.clean(out)
