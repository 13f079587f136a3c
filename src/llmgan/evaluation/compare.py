"""`llmgan evaluate --compare`: several systems side by side, and each one's detector AUROC minus the first's.

The difference comes with a paired bootstrap interval over prompts, for the systems judged on the same
(prompt, real) pairs in the same order as the first file (the usual case: `llmgan generate` on one split).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from llmgan.evaluation import detectors as det
from llmgan.evaluation import metrics as reg
from llmgan.evaluation.judge import EvalResult, evaluate_file


def system_names(files: Sequence[str | Path]) -> list[str]:
    """Short distinct names for the systems: the file stems, else parent/stem, else the paths."""
    names = [Path(f).stem for f in files]
    if len(set(names)) < len(names):
        names = [f"{Path(f).parent.name}/{Path(f).stem}" for f in files]
    if len(set(names)) < len(names):
        names = [str(f) for f in files]
    return names


def table_entries(result: EvalResult, *, compare_only: bool = True) -> list[tuple[str, str, str]]:
    """(key, label, best) of every table row: the detectors the result has, then the registered metrics
    (with `compare_only`, those marked for the --compare table)."""
    keys = [d for d in det.REGISTRY.values() if d.metric_key in result.metrics]
    return ([(d.metric_key, f"Detector AUROC ({d.label})", "0.5") for d in keys]
            + [(k, m.label, m.best) for k, m in reg.REGISTRY.items() if m.compare or not compare_only])


def comparison_table(results: Sequence[EvalResult]):
    """Rows: metrics; columns: metric, key, the human floor (one column when all systems were judged on
    the same real responses, else one per system), each system, best."""
    import pandas as pd

    same_real = len({tuple(sorted(r.samples["real"])) for r in results}) == 1
    human_cols = (["human floor"] if same_real else [f"human floor ({r.name})" for r in results])
    human_src = results[:1] if same_real else results
    rows = []
    for key, label, best in [*table_entries(results[0]), ("n_pairs", "Pairs evaluated", "")]:
        hk = "n_pairs" if key == "n_pairs" else f"human_{key}"
        row = {"metric": label, "key": key}
        row.update({c: r.metrics.get(hk) for c, r in zip(human_cols, human_src)})
        row.update({r.name: r.metrics.get(key) for r in results})
        row["best"] = best
        rows.append(row)
    return pd.DataFrame(rows)


def detector_differences(results: Sequence[EvalResult], *, seed: int = 0) -> list[dict[str, Any]]:
    """Each later system's detector AUROC minus the first system's, with a paired bootstrap interval.

    Only for systems judged on the same (prompt, real) pairs in the same order as the first; others are
    skipped. One dict per system: system, baseline, difference, low, high, level.
    """
    if len(results) < 2 or results[0].pair_scores is None:
        return []
    base = results[0].pair_scores
    name = next(iter(base["detectors"]))
    out = []
    for r in results[1:]:
        ps = r.pair_scores
        if ps is None or ps["pairs"] != base["pairs"] or name not in ps["detectors"]:
            continue
        diff, low, high = det.auroc_difference_ci(*base["detectors"][name], *ps["detectors"][name], seed=seed)
        out.append({"system": r.name, "baseline": results[0].name, "difference": reg.clean(diff),
                    "low": reg.clean(low), "high": reg.clean(high), "level": det.CI_LEVEL})
    return out


def differences_lines(differences: Sequence[dict[str, Any]]) -> list[str]:
    """One sentence per system for reports and the console."""
    return [f"{d['system']}: {d['difference']:+.3f} ({d['level']:.0%} interval {d['low']:+.3f} to {d['high']:+.3f})"
            + (" -- within test-set noise" if d["low"] <= 0 <= d["high"] else "") for d in differences]


def compare_results(files: Sequence[str | Path], *, seed: int = 0, progress: bool = False,
                    **kwargs) -> list[EvalResult]:
    """One EvalResult per file (the encoder is loaded once; shared texts are embedded once)."""
    return [evaluate_file(f, seed=seed, progress=progress, name=name, **kwargs)
            for f, name in zip(files, system_names(files))]


def compare(files: Sequence[str | Path], *, seed: int = 0, progress: bool = False, **read_kwargs):
    """Evaluate several systems' files; returns `comparison_table`."""
    return comparison_table(compare_results(files, seed=seed, progress=progress, **read_kwargs))
