"""Choosing a run's model on a held-out split (`llmgan select`, `selection.enabled`), on a tiny random Llama."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from llmgan.errors import LlmganError
from llmgan.training.selection import choose, copy_model_files, selection_table



def test_choose_takes_the_lowest_detector_auroc_and_the_earliest_step_on_a_tie():
    scores = [{"step": 0, "detector_auroc_max": 0.70}, {"step": 10, "detector_auroc_max": 0.62},
              {"step": 20, "detector_auroc_max": 0.65}]
    assert choose(scores) == 1
    scores.append({"step": 30, "detector_auroc_max": 0.62})
    assert choose(scores) == 1
    assert choose([{"step": 0, "detector_auroc_max": 0.5}]) == 0
    with pytest.raises(LlmganError, match="no candidates"):
        choose([])


def test_copy_model_files_leaves_training_state_behind(tmp_path):
    ckpt = tmp_path / "checkpoint-10"
    (ckpt / "discriminator").mkdir(parents=True)
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "optimizer.pt",
                 "scheduler.pt", "rng_state.pth", "trainer_state.json", "COMPLETE"):
        (ckpt / name).write_text(name)
    out = copy_model_files(ckpt, tmp_path / "selected" / "generator")
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                     "tokenizer.json"]
    # a second copy replaces the first
    (ckpt / "adapter_model.safetensors").write_text("new")
    copy_model_files(ckpt, out)
    assert (out / "adapter_model.safetensors").read_text() == "new"


def test_train_with_selection_scores_start_and_checkpoints(tiny_model_dir, demo_data, tmp_path):
    """selection.enabled: after training, step 0 and every kept checkpoint are sampled on the validation split
    and scored; the lowest detector AUROC is copied to RUN/selected/generator and loads as a model."""
    from test_train import tiny_cfg

    from llmgan.models import load_model
    from llmgan.training.train import train

    cfg = tiny_cfg(tiny_model_dir, demo_data, tmp_path / "run", "train.steps=2", "train.save_every=1",
                   "train.keep_checkpoints=2", "selection.enabled=true", "selection.limit=16",
                   "selection.max_new_tokens=5")
    run = train(cfg, progress=False)
    result = json.loads((run / "selection" / "selection.json").read_text())
    cands = result["candidates"]
    assert [c["step"] for c in cands] == [0, 1, 2]
    assert [c["label"] for c in cands][0].startswith("start") and cands[-1]["label"] == "final"
    for c in cands:
        assert 0 <= c["detector_auroc_max_low"] <= c["detector_auroc_max"] <= c["detector_auroc_max_high"] <= 1
        assert c["human_mean_words"] > 0 and c["length_wasserstein"] >= 0
        assert len((run / "selection" / f"step-{c['step']}.jsonl").read_text().splitlines()) == 16
    best = min(cands, key=lambda c: (c["detector_auroc_max"], c["step"]))
    assert result["selected"]["step"] == best["step"]
    assert result["settings"]["split"] == "validation" and result["settings"]["temperature"] == 1.0
    md = (run / "selection" / "selection.md").read_text()
    assert f"| **{best['step']}** |" in md and md.count("\n| ") == 5  # header, rule, 3 candidates
    assert (run / "selection" / "selection.png").stat().st_size > 0  # drawn, not only tabled
    selected = run / "selected" / "generator"
    assert result["selected"]["copied_to"] == str(selected)
    assert not (selected / "optimizer.pt").exists()
    assert load_model(str(selected)) is not None


def test_select_cli_names_bad_input(tiny_model_dir, demo_data, tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "llmgan", "select", *args], capture_output=True, text=True,
                              timeout=600)

    res = cli(str(tmp_path / "nowhere"))
    assert res.returncode == 2 and "not a run folder" in res.stderr and "Traceback" not in res.stderr
    from test_train import tiny_cfg

    from llmgan.training.train import train

    run = train(tiny_cfg(tiny_model_dir, demo_data, tmp_path / "run", "train.steps=1"), progress=False)
    res = cli(str(run), "--split", "holdout")
    assert res.returncode == 2 and "split 'holdout'" in res.stderr and "validation" in res.stderr
    res = cli(str(run), "--split", "train")
    assert res.returncode == 2 and "training split" in res.stderr
    res = cli(str(run), "--limit", "5")
    assert res.returncode == 2 and "at least 10" in res.stderr and "limit 5" in res.stderr


def _result(steps_and_aurocs=((0, 0.7), (5, 0.6)), chosen=5):
    cands = [{"step": s, "label": f"c{s}", "detector_auroc_max": a, "detector_auroc_max_low": a - 0.1,
              "detector_auroc_max_high": a + 0.1, "style_auroc": 0.5, "mean_words": 3.0 + s,
              "human_mean_words": 4.0, "length_wasserstein": 1.0, "relevance_cosine": 0.2, "distinct_2": 0.9}
             for s, a in steps_and_aurocs]
    return {"settings": {"rows": 3, "split": "validation", "data": "d", "temperature": 1.0, "top_p": 1.0,
                         "max_new_tokens": 8, "seed": 0}, "criterion": "lowest detector_auroc_max",
            "selected": next(c for c in cands if c["step"] == chosen), "candidates": cands}


def test_selection_table_marks_the_choice():
    md = selection_table(_result())
    assert "| **5** | c5 | **0.600** (0.500-0.700, " in md and "| 0 | c0 | 0.700" in md


def test_plot_selection_draws_the_candidates(tmp_path):
    import matplotlib.image as mpimg

    from llmgan.plots import plot_selection

    out = plot_selection(_result(((0, 0.7), (10, 0.6), (20, 0.65)), chosen=10), tmp_path / "selection.png")
    assert out == tmp_path / "selection.png"
    img = mpimg.imread(out)
    assert img.ndim == 3 and img.shape[1] > img.shape[0] > 100  # three panels side by side
    assert img[..., :3].std() > 0.05  # not a blank canvas
    with pytest.raises(LlmganError, match="no candidates"):
        plot_selection({**_result(), "candidates": []}, tmp_path / "empty.png")
