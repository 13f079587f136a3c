"""`llmgan evaluate --compare`: several systems side by side, and each one's detector AUROC minus the first's.

The difference comes with a paired bootstrap interval over prompts, for the systems judged on the same
(prompt, real) pairs in the same order as the first file (the usual case: `llmgan generate` on one split).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from llmgan.errors import LlmganError
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
    """(key, label, best) of every table row: the strongest detector, each detector the result has, then the
    registered metrics (with `compare_only`, those marked for the --compare table)."""
    m = result.metrics
    rows = [("detector_auroc_max", "Detector AUROC, strongest detector", "0.5")] if "detector_auroc_max" in m else []
    rows += [(d.metric_key, f"Detector AUROC ({d.label})", "0.5") for d in det.REGISTRY.values() if d.metric_key in m]
    return rows + [(k, x.label, x.best) for k, x in reg.REGISTRY.items() if x.compare or not compare_only]


def floor_label(result: EvalResult, name: str = "") -> str:
    """The floor column's name with its real size: two halves of the real responses."""
    h = result.metrics.get("human_floor_half_size")
    return f"human floor ({name + ', ' if name else ''}{h} vs {h} real)"


def comparison_table(results: Sequence[EvalResult]):
    """Rows: metrics; columns: metric, key, the human floor (one column when all systems were judged on
    the same real responses, else one per system; labelled with its size), each system, best.

    Every system is compared with the floor at the floor's size: the comparative metrics (detectors, MAUVE,
    Frechet, Wasserstein, JSD, length ratio: values that depend on sample size) are the system's
    `same_size_as_floor` values (its generated responses to half B's prompts against real half A, n/2 vs n/2,
    like the floor's B vs A); set-level metrics use all rows, as the floor does. The all-rows values are in
    each system's metrics (comparison.json, its own report)."""
    import pandas as pd

    same_real = len({tuple(sorted(r.samples["real"])) for r in results}) == 1
    human_cols = [floor_label(results[0])] if same_real else [floor_label(r, r.name) for r in results]
    human_src = results[:1] if same_real else results
    rows = []
    for key, label, best in [*table_entries(results[0]), ("n_pairs", "Pairs evaluated (floor: real per half)", "")]:
        row = {"metric": label, "key": key}
        for c, r in zip(human_cols, human_src):
            row[c] = r.metrics.get("human_floor_half_size" if key == "n_pairs" else f"human_{key}")
        for r in results:
            same = r.metrics.get("same_size_as_floor") or {}
            row[r.name] = same[key] if key in same else r.metrics.get(key)
        row["best"] = best
        rows.append(row)
    return pd.DataFrame(rows)


def detector_differences(results: Sequence[EvalResult], *, seed: int = 0, pool: int = 1) -> list[dict[str, Any]]:
    """Each later system's detector AUROC minus the first system's, with a paired bootstrap interval over
    prompts: for the strongest detector (detector "max": the largest AUROC of each system, every detector on
    the same resample) and for each detector both systems ran.

    pool > 1: the first `pool` systems are samples of one baseline model (say SFT under `pool` seeds) and each
    later system is compared to the mean of their AUROCs (baseline "mean of A, B, ..."), a baseline with less
    sampling noise than any one sample; they must be judged on the same pairs.

    Only systems judged on the same (prompt, real) pairs in the same order as the first have a paired
    difference; for the others the dict has `difference` None and a `reason`. Keys: system, baseline,
    detector, difference, low, high, level (or reason).
    """
    if not 1 <= pool < max(len(results), 2):
        raise LlmganError(f"a pooled baseline of {pool} systems needs at least {pool + 1} systems to compare "
                          f"(got {len(results)})")
    if len(results) < 2:
        return []
    first, bases = results[0], [r.pair_scores for r in results[:pool]]
    for r in results[1:pool]:
        if r.pair_scores["pairs"] != first.pair_scores["pairs"]:
            raise LlmganError(f"the pooled baseline's systems {first.name} and {r.name} differ in prompts or real "
                              "responses; samples of one model on one split are needed")
    label = first.name if pool == 1 else "mean of " + ", ".join(r.name for r in results[:pool])
    base = bases[0]
    out = []
    for r in results[pool:]:
        ps = r.pair_scores
        names = [k for k in base["detectors"] if k in ps["detectors"] and all(k in b["detectors"] for b in bases)]
        reason = None
        if len(ps["pairs"]) != len(base["pairs"]):
            reason = f"{r.name} has {len(ps['pairs'])} pairs and {first.name} {len(base['pairs'])}"
        elif ps["pairs"] != base["pairs"]:
            same = sum(a == b for a, b in zip(ps["pairs"], base["pairs"]))
            reason = (f"{r.name} and {first.name} differ in prompts or real responses ({same} of {len(base['pairs'])} "
                      "rows match in order)")
        elif not names:
            reason = f"{r.name} and {first.name} have no detector in common"
        if reason:
            out.append({"system": r.name, "baseline": label, "detector": "max", "difference": None,
                        "reason": f"no paired difference: {reason}; a paired comparison needs the same prompts and "
                                  "real responses in the same order (generate both from one split)"})
            continue
        tests = [("max", names)] + [(k, [k]) for k in names]
        for detector, keys in tests:
            diff, low, high = det.pooled_max_auroc_difference_ci([[b["detectors"][k] for k in keys] for b in bases],
                                                                 [ps["detectors"][k] for k in keys], seed=seed)
            out.append({"system": r.name, "baseline": label, "detector": detector, "difference": reg.clean(diff),
                        "low": reg.clean(low), "high": reg.clean(high), "level": det.CI_LEVEL})
    return out


def differences_lines(differences: Sequence[dict[str, Any]]) -> list[str]:
    """One sentence per system and detector for reports and the console."""
    lines = []
    for d in differences:
        if d.get("difference") is None:
            lines.append(f"{d['system']}: {d['reason']}")
            continue
        which = "strongest detector" if d.get("detector", "max") == "max" else d["detector"]
        lines.append(f"{d['system']}, {which}: {d['difference']:+.3f} ({d['level']:.0%} interval {d['low']:+.3f} to "
                     f"{d['high']:+.3f})" + (" -- within test-set noise" if d["low"] <= 0 <= d["high"] else ""))
    return lines


def compare_results(files: Sequence[str | Path], *, seed: int = 0, progress: bool = False,
                    **kwargs) -> list[EvalResult]:
    """One EvalResult per file (the encoder is loaded once; shared texts are embedded once)."""
    return [evaluate_file(f, seed=seed, progress=progress, name=name, **kwargs)
            for f, name in zip(files, system_names(files))]


def compare(files: Sequence[str | Path], *, seed: int = 0, progress: bool = False, **read_kwargs):
    """Evaluate several systems' files; returns `comparison_table`."""
    return comparison_table(compare_results(files, seed=seed, progress=progress, **read_kwargs))
