"""The judge's registries: a toy detector and a toy metric, each added by one entry, run through
`llmgan evaluate`, `--compare` and the selection scores; and the detectors on hand-made alterations."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from llmgan.cli import main
from llmgan.evaluation import detectors as det
from llmgan.evaluation import metrics as reg

DEMO_FILE = Path(__file__).resolve().parents[1] / "data" / "demo" / "twon_demo.jsonl"


@pytest.fixture(scope="module")
def halves():
    """(prompts, real, generated): two disjoint samples of the demo replies."""
    rows = [json.loads(line) for line in DEMO_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    random.Random(0).shuffle(rows)
    n = 40
    return [r["post"] for r in rows[:n]], [r["reply"] for r in rows[:n]], [r["reply"] for r in rows[n:2 * n]]


def _toy_scores(inp: det.DetectorInput):
    """A detector that only counts question marks (+ a hair of length to break ties)."""
    return np.array([t.count("?") + len(t) * 1e-6 for t in inp.texts]) / 10.0


@pytest.fixture
def toy_registered():
    """One entry in each registry (removed again afterwards)."""
    d = det.register(det.Detector(name="toy_qmarks", label="toy: question marks", scores=_toy_scores,
                                  sees="question marks only"))
    m = reg.register(reg.Metric("toy_exclamations", "Toy: exclamation marks per response", "= human",
                                lambda s, ctx: float(np.mean([t.count("!") for t in s.texts])), floor=reg.REAL,
                                selection=True))
    yield d, m
    det.REGISTRY.pop(d.name)
    reg.REGISTRY.pop(m.key)


def _jsonl(path, prompts, real, generated):
    path.write_text("".join(json.dumps({"prompt": p, "real": r, "generated": g}) + "\n"
                            for p, r, g in zip(prompts, real, generated)), encoding="utf-8")
    return path


def test_toy_detector_and_metric_run_through_evaluate_compare_and_selection(toy_registered, halves, tmp_path):
    from llmgan.evaluation import compare_results, run_evaluation, score_for_selection, write_comparison, write_outputs

    prompts, real, other = halves
    marked = [t + " ??" for t in other]
    result = run_evaluation(prompts, real, marked, detectors=["minilm_lr", "toy_qmarks"])
    m = result.metrics
    assert m["detector_auroc_toy_qmarks"] == pytest.approx(1.0)
    assert 0.3 < m["human_detector_auroc_toy_qmarks"] < 0.8
    assert "detector_auroc_toy_qmarks" in m["same_size_as_floor"]
    assert m["toy_exclamations"] == pytest.approx(np.mean([t.count("!") for t in marked]))
    assert m["human_toy_exclamations"] == pytest.approx(np.mean([t.count("!") for t in real]))
    paths = write_outputs(result, tmp_path / "one")
    md = Path(paths["markdown"]).read_text()
    assert "| Detector AUROC (toy: question marks) | 1.000 |" in md and "Toy: exclamation marks" in md

    a, b = _jsonl(tmp_path / "a.jsonl", prompts, real, marked), _jsonl(tmp_path / "b.jsonl", prompts, real, other)
    results = compare_results([a, b], detectors="minilm_lr,toy_qmarks")
    write_comparison(results, tmp_path / "cmp")
    data = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert data["systems"]["a"]["detector_auroc_toy_qmarks"] > 0.99 > data["systems"]["b"]["detector_auroc_toy_qmarks"]
    assert any(r["key"] == "toy_exclamations" for r in data["table"])

    s = score_for_selection(prompts, real, marked, detectors=["toy_qmarks"])
    assert s["detector_auroc_toy_qmarks"] == pytest.approx(1.0) and s["detector_auroc_toy_qmarks_low"] <= 1.0
    assert s["toy_exclamations"] == pytest.approx(m["toy_exclamations"])


def test_unknown_detector_is_refused_with_the_list():
    from llmgan.errors import LlmganError

    with pytest.raises(LlmganError, match="unknown detector.*nope.*minilm_lr"):
        det.resolve("minilm_lr,nope")
