"""`llmgan evaluate`: metric values on hand-made examples, detector sanity, file input and the CLI.

MiniLM is loaded once per session (evaluate keeps it in a module-level cache). The texts come from
the demo data in the repository, so these tests do not need the TWON data.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from llmgan import evaluation as ev
from llmgan.evaluation import detectors as det
from llmgan.evaluation import textstats as ts
from llmgan.cli import main
from llmgan.errors import LlmganError

DEMO_FILE = Path(__file__).resolve().parents[1] / "data" / "demo" / "twon_demo.jsonl"


@pytest.fixture(scope="module")
def demo():
    rows = [json.loads(line) for line in DEMO_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    rnd = random.Random(0)
    rnd.shuffle(rows)
    return [r["post"] for r in rows], [r["reply"] for r in rows]


@pytest.fixture(scope="module")
def halves(demo):
    """Two disjoint samples of the same set of replies, as (prompts, real, generated)."""
    posts, replies = demo
    n = len(replies) // 2
    return posts[:n], replies[:n], replies[n:2 * n]


# ------------------------------------------------------------------------- hand-computed metrics

def test_style_features_hand_computed():
    x = ts.style_features(["AB c! #x @y\n?", "see https://t.co/abc \U0001F600\U0001F600", ""])
    assert x.shape == (3, len(ts.STYLE_FEATURES))
    # words, characters, uppercase ratio, !, ?, hashtags, mentions, URLs, emoji, newlines
    assert x[0].tolist() == [5, 13, 0.4, 1, 1, 1, 1, 0, 0, 1]
    assert x[1].tolist() == [3, 23, 0.0, 0, 0, 0, 0, 1, 2, 0]
    assert x[2].tolist() == [0] * 10


def test_distinct_n_hand_computed():
    texts = ["a b a b", "A c"]  # lowercased tokens: a b a b | a c
    assert ts.distinct_n(texts, 1) == pytest.approx(3 / 6)
    assert ts.distinct_n(texts, 2) == pytest.approx(3 / 4)  # (a b) (b a) (a b) (a c)
    assert ts.distinct_n(["x"], 2) == 0.0


def test_length_metrics_hand_computed():
    g, r = ts.word_counts(["a", "a b", "a b c"]), ts.word_counts(["a b", "a b c", "a b c d"])
    assert g.tolist() == [1, 2, 3]
    assert ts.wasserstein(g, r) == pytest.approx(1.0)
    assert ts.length_ratio(g, r) == pytest.approx(2 / 3)
    assert ts.length_ratio(g, [0, 0]) is None


def test_sentiment_hand_computed():
    # VADER: "good" has valence 1.9; compound = 1.9 / sqrt(1.9^2 + 15)
    assert ts.vader_compound(["good"])[0] == pytest.approx(1.9 / math.sqrt(1.9 ** 2 + 15), abs=1e-4)
    d = ts.sentiment_distribution([-0.5, -0.05, 0.0, 0.04, 0.05, 0.9])
    assert d == pytest.approx({"negative": 1 / 3, "neutral": 1 / 3, "positive": 1 / 3})
    assert ts.js_divergence([1, 0, 0], [0, 1, 0]) == pytest.approx(1.0)
    assert ts.js_divergence([0.5, 0.5, 0], [0.5, 0, 0.5]) == pytest.approx(0.5)
    assert ts.js_divergence([2, 1, 1], [0.5, 0.25, 0.25]) == pytest.approx(0.0)


def test_offensive():
    assert ts.offensive(["fuck you idiot", "have a nice day"]).tolist() == [1.0, 0.0]


def test_cosines_hand_computed():
    a = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert ts.mean_pair_cosine(a, np.array([[1.0, 0.0], [1.0, 0.0]])) == pytest.approx(0.5)
    assert ts.mismatched_cosine(a, np.array([[1.0, 0.0], [1.0, 0.0]])) == pytest.approx(0.5)
    assert ts.mean_pair_cosine(a, a[::-1]) == pytest.approx(0.0)
    assert ts.mismatched_cosine(a, a[::-1]) == pytest.approx(1.0)
    emb = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    # prompts p, p, q: one same-prompt pair (rows 0, 1) with cosine 0.6
    assert ts.same_prompt_cosine(["p", "p", "q"], emb, ["x", "y", "z"]) == (pytest.approx(0.6), 1)
    assert ts.same_prompt_cosine(["p", "q", "r"], emb, ["x", "y", "z"]) == (None, 0)


def test_frechet_hand_computed():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3))
    assert ts.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    assert ts.frechet_distance(x + [1.0, 2.0, 2.0], x) == pytest.approx(9.0)  # same covariance: |mean shift|^2
    # 1-D: (mu1 - mu2)^2 + (s1 - s2)^2 with sample standard deviations
    a, b = np.array([[0.0], [2.0]]), np.array([[0.0], [4.0], [8.0]])
    assert ts.frechet_distance(a, b) == pytest.approx((1 - 4) ** 2 + (math.sqrt(2) - 4) ** 2)


def test_self_bleu_matches_sacrebleu(demo):
    import sacrebleu

    texts = demo[1][:40] + ["", "the cat sat on the mat", "the cat sat on the mat", "a b", "x y z w v"]
    slow = np.mean([sacrebleu.sentence_bleu(t, texts[:i] + texts[i + 1:], smooth_method="floor", smooth_value=0.1).score
                    / 100 for i, t in enumerate(texts)])
    assert ts.self_bleu(texts) == pytest.approx(slow, abs=1e-9)
    assert ts.self_bleu(["the cat sat on the mat"] * 3) == pytest.approx(1.0)
    assert ts.self_bleu(["one"]) == 0.0


def test_detector_and_mauve_on_toy_features():
    rng = np.random.default_rng(0)
    a, b = rng.normal(3, 1, size=(60, 4)), rng.normal(-3, 1, size=(60, 4))
    auc, sg, sr, (fpr, tpr) = det.detector_auroc(a, b, seed=0)
    assert auc == pytest.approx(1.0) and sg.min() > 0.5 > sr.max()
    assert ts.mauve_score(a, a, seed=0) == pytest.approx(1.0, abs=1e-6)
    assert ts.mauve_score(a, b, seed=0) < 0.1


def test_rank_auroc_hand_computed_and_equal_to_sklearn():
    # pairs (g, r): (.9,.5) 1, (.9,.1) 1, (.5,.5) 0.5 (a tie), (.5,.1) 1 -> 3.5 / 4
    assert det.rank_auroc([0.9, 0.5], [0.5, 0.1]) == pytest.approx(0.875)
    assert det.rank_auroc([0.0], [1.0]) == 0.0 and det.rank_auroc([2.0, 2.0], [2.0]) == 0.5
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    g, r = rng.integers(0, 5, 37).astype(float), rng.integers(0, 4, 53).astype(float)  # many ties
    assert det.rank_auroc(g, r) == pytest.approx(roc_auc_score(np.r_[np.ones(37), np.zeros(53)], np.r_[g, r]),
                                                 abs=1e-12)
    with pytest.raises(LlmganError, match="both kinds"):
        det.rank_auroc([], [0.1])


def test_auroc_bootstrap_intervals():
    rng = np.random.default_rng(0)
    g, r = rng.normal(1, 1, 200), rng.normal(0, 1, 200)  # AUROC about Phi(1/sqrt 2) = 0.76
    from sklearn.metrics import roc_auc_score

    auc = roc_auc_score(np.r_[np.ones(200), np.zeros(200)], np.r_[g, r])
    low, high = det.auroc_ci(g, r, seed=0)
    assert low < auc < high and 0.03 < high - low < 0.15  # binomial-scale width for n = 200
    assert det.auroc_ci(g, r, seed=0) == (low, high)  # seeded
    # perfectly separated scores: every resample has AUROC 1
    assert det.auroc_ci(g + 100, r, seed=0) == pytest.approx((1.0, 1.0))
    # a system against itself: difference exactly 0 in every resample
    assert det.auroc_difference_ci(g, r, g, r, seed=0) == pytest.approx((0.0, 0.0, 0.0))
    # a clearly better (less detectable) system: negative difference, interval excludes 0
    diff, dl, dh = det.auroc_difference_ci(g, r, rng.normal(0, 1, 200), r, seed=0)
    assert dl <= diff <= dh < 0
    with pytest.raises(LlmganError, match="paired"):
        det.auroc_ci(g, r[:-1])
    with pytest.raises(LlmganError, match="same length"):
        det.auroc_difference_ci(g, r, g[:-1], r)


# ------------------------------------------------------------------------------ whole evaluation

def test_two_samples_of_the_same_set_are_indistinguishable(halves):
    m = ev.evaluate_pairs(*halves, seed=0)
    for key in ("detector_auroc_minilm_lr", "detector_auroc_ngram_lr", "detector_auroc_max", "style_auroc"):
        assert abs(m[key] - 0.5) < 0.15, (key, m[key])
    assert m["mauve"] > 0.9
    for key in ("detector_auroc_max", "detector_auroc_ngram_lr", "style_auroc", "mauve", "frechet_distance",
                "length_ratio", "self_bleu", "profanity_rate", "sentiment_jsd"):
        assert f"human_{key}" in m and m[f"human_{key}"] is not None
    assert abs(m["human_detector_auroc_minilm_lr"] - 0.5) < 0.2 and m["human_mauve"] > 0.8
    assert m["n_pairs"] == len(halves[0]) and m["human_floor_half_size"] == len(halves[0]) // 2
    assert set(m["same_size_as_floor"]) >= {"detector_auroc_max", "detector_auroc_ngram_lr", "mauve", "frechet_distance"}
    for key in ("detector_auroc_max", "detector_auroc_minilm_lr", "detector_auroc_ngram_lr"):
        assert m[f"{key}_ci"]["low"] <= m[key] <= m[f"{key}_ci"]["high"]
    json.dumps(m, allow_nan=False)


@pytest.mark.parametrize("change, keys", [
    (lambda t: t + " #StopTheSteal", ("detector_auroc_minilm_lr", "detector_auroc_ngram_lr", "style_auroc")),
    (str.upper, ("detector_auroc_ngram_lr", "detector_auroc_max", "style_auroc")),  # MiniLM is uncased
])
def test_visibly_changed_copy_is_detected(halves, change, keys):
    prompts, real, other = halves
    m = ev.evaluate_pairs(prompts, real, [change(t) for t in other], seed=0)
    for k in keys:
        assert m[k] > 0.95, (k, m[k])
    assert m["human_style_auroc"] < 0.7


def test_evaluate_pairs_rejects_bad_lengths(halves):
    prompts, real, gen = halves
    with pytest.raises(LlmganError, match="same length"):
        ev.evaluate_pairs(prompts, real, gen[:-1])
    with pytest.raises(LlmganError, match="at least"):
        ev.evaluate_pairs(prompts[:5], real[:5], gen[:5])


# ------------------------------------------------------------------------------------ file input

def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_read_pairs_formats_and_chat_prompts(tmp_path):
    import pandas as pd

    rows = [{"prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": f"post {i}"}],
             "real": f"r{i}", "generated": f"g{i}"} for i in range(3)]
    p, r, g = ev.read_pairs(_write_jsonl(tmp_path / "a.jsonl", rows))
    assert p == ["post 0", "post 1", "post 2"] and r == ["r0", "r1", "r2"] and g == ["g0", "g1", "g2"]
    df = pd.DataFrame({"post": ["x", "y"], "reply": ["", "2"], "model": ["a", "b"]})
    df.to_csv(tmp_path / "b.csv", index=False)
    df.to_parquet(tmp_path / "b.parquet")
    for f in ("b.csv", "b.parquet"):
        assert ev.read_pairs(tmp_path / f, prompt_column="post", real_column="reply", generated_column="model") \
            == (["x", "y"], ["", "2"], ["a", "b"])


@pytest.mark.parametrize("content, suffix, message", [
    ('{"prompt": "p", "real": "r"}\n', ".jsonl", "no column 'generated' (columns found: prompt, real); choose one with --generated-column"),
    ("", ".jsonl", "is empty"),
    ("\n\n", ".jsonl", "has no rows"),
    ("prompt,real,generated\n", ".csv", "has no rows"),
    ('{"prompt": "p", "real": "r", "generated": "g"}\n{"prompt": "p", "real": "r"}\n', ".jsonl",
     "1 of 2 rows have no 'generated' value (first: row 2)"),
    ('{"prompt": "p", "real": "r", "generated": "g"}\nnot json\n', ".jsonl", "as jsonl"),
    ("a,b\n", ".txt", "unsupported file type"),
    ('"a\nb",real,generated\nx,y,z\n', ".csv", "no column 'prompt' (columns found: a\\nb, real, generated)"),
    ("".join(f'{{"prompt": "p", "real": "r{i}", "generated": "g"}}\n' for i in range(5)), ".jsonl",
     "need at least 20"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, content, suffix, message):
    f = tmp_path / f"bad{suffix}"
    f.write_text(content, encoding="utf-8")
    assert main(["evaluate", str(f), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "bad.eval").exists()


def test_unreadable_parquet_and_output_is_a_file(tmp_path, capsys):
    bad = tmp_path / "x.parquet"
    bad.write_bytes(b"not parquet at all")
    assert main(["evaluate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: could not read {bad}") and err.count("\n") == 1
    target = tmp_path / "out.txt"
    target.write_text("x")
    assert main(["evaluate", str(bad), "-o", str(target)]) == 2
    assert "is a file; give a folder" in capsys.readouterr().err


def test_missing_file_and_no_file(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nope.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["evaluate"]) == 2
    assert capsys.readouterr().err.startswith("error: give a FILE")


# ------------------------------------------------------------------------------------------- CLI

def test_cli_writes_reports(tmp_path, halves, capsys):
    prompts, real, other = halves
    f = _write_jsonl(tmp_path / "sys.jsonl", [{"prompt": p, "real": r, "generated": g + " #StopTheSteal"}
                                               for p, r, g in zip(prompts, real, other)])
    assert main(["evaluate", str(f), "--quiet"]) == 0
    out = tmp_path / "sys.eval"
    assert {p.name for p in out.iterdir()} >= {"metrics.json", "report.md", "report.html", "samples.csv", "plots"}
    m = json.loads((out / "metrics.json").read_text())
    assert m["detector_auroc_max"] > 0.95 and m["input"] == str(f) and "human_detector_auroc_max" in m
    import torch

    from llmgan.machine import cpu_model
    machine = json.loads((out / "machine.json").read_text())  # which CPU and libraries made these scores
    assert machine["cpu"] == cpu_model() and machine["torch"] == torch.__version__ and machine["cpus"] >= 1
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4
    for needle in ("<script", "<link", 'src="http', "src='http", 'href="http', "url(", "@import"):
        assert needle not in page
    md = (out / "report.md").read_text()
    assert "| Detector AUROC, strongest detector |" in md and "| Detector AUROC (n-gram LR, cased) |" in md
    assert "plots/roc.png" in md
    import pandas as pd

    s = pd.read_csv(out / "samples.csv", keep_default_na=False)
    assert list(s.columns[:4]) == ["prompt", "real", "generated", "detector_score"]
    assert {"score_minilm_lr", "score_ngram_lr", "real_score_minilm_lr", "real_score_ngram_lr"} <= set(s.columns)
    assert len(s) == len(prompts) and s["detector_score"].is_monotonic_decreasing
    assert sorted(s["row"]) == list(range(len(prompts))) and (s.sort_values("row")["real"] == real).all()
    from llmgan.evaluation.detectors import auroc
    for name in ("minilm_lr", "ngram_lr"):  # the table alone gives back each detector's AUROC
        got, _ = auroc(s[f"score_{name}"], s[f"real_score_{name}"])
        assert got == pytest.approx(m[f"detector_auroc_{name}"], abs=1e-4)
    assert not list(out.glob(".*"))  # no temp files left
    assert "wrote" in capsys.readouterr().out


def test_cli_compare(tmp_path, halves, capsys):
    prompts, real, other = halves
    a = _write_jsonl(tmp_path / "base.jsonl", [{"prompt": p, "real": r, "generated": g + " #tag"}
                                                for p, r, g in zip(prompts, real, other)])
    b = _write_jsonl(tmp_path / "gan.jsonl", [{"prompt": p, "real": r, "generated": g}
                                               for p, r, g in zip(prompts, real, other)])
    assert main(["evaluate", "--compare", str(a), str(b), "-o", str(tmp_path / "cmp")]) == 0
    stdout = capsys.readouterr().out
    assert "base" in stdout and "gan" in stdout and "human floor" in stdout
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| metric"))
    n = len(prompts)
    assert header == f"| metric | human floor ({n // 2} vs {n // 2} real) | base | gan | best |"
    assert f"| Pairs evaluated (floor: real per half) | {n // 2} | {n} | {n} |  |" in md
    data = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert data["systems"]["base"]["detector_auroc_max"] > data["systems"]["gan"]["detector_auroc_max"]
    assert "cpu_id" in json.loads((tmp_path / "cmp" / "machine.json").read_text())
    diffs = {d["detector"]: d for d in data["detector_auroc_difference_vs_first"]}
    assert set(diffs) == {"max", "minilm_lr", "ngram_lr"}
    for name, key in (("max", "detector_auroc_max"), ("minilm_lr", "detector_auroc_minilm_lr")):
        d = diffs[name]
        assert (d["system"], d["baseline"]) == ("gan", "base")
        assert d["difference"] == pytest.approx(data["systems"]["gan"][key] - data["systems"]["base"][key], abs=1e-6)
        assert d["low"] <= d["difference"] <= d["high"] < 0  # the #tag is detectable: a real, not noise, gain
    assert "Detector AUROC minus base's" in md and "gan, strongest detector: -" in md
    assert "Detector AUROC minus base's" in stdout
    page = (tmp_path / "cmp" / "comparison.html").read_text()
    # issue 16: the per-system intervals and plots of the single report
    assert page.count("data:image/png;base64,") == 8 and page.count("95% interval") >= 6
    assert "## gan: detectors on all rows" in md


# -------------------------------------------------------------- issue 16: what a new user hit


def _pairs_file(path, n=24, generated=None):
    rows = [{"prompt": f"post {i}", "real": f"reply number {i}",
             "generated": generated(i) if generated else f"gen {i}"} for i in range(n)]
    return _write_jsonl(path, rows)


@pytest.mark.parametrize("value, kind", [(lambda i: i, "int"), (lambda i: [f"x{i}"], "list")])
def test_non_text_generated_column_is_refused_like_prepare(tmp_path, capsys, value, kind):
    f = _pairs_file(tmp_path / "ints.jsonl", generated=value)
    assert main(["evaluate", str(f), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"column 'generated' must hold text, but row 1 holds {kind}" in err, err
    assert not (tmp_path / "ints.eval").exists()


def test_a_folder_as_input_is_called_a_folder(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a folder" in err and "no such file" not in err


def test_warnings_for_copies_of_real_texts_and_few_distinct_texts(demo):
    from llmgan.evaluation.judge import input_warnings

    real = demo[1][:60]
    assert input_warnings(real, demo[1][60:120]) == []
    shuffled = real[1:] + real[:1]  # the real replies, each under another prompt
    (copy,) = input_warnings(real, shuffled)
    assert "60 of 60 generated responses (100%) are copies of real responses" in copy and "(0 of their own" in copy
    (few,) = input_warnings(real, ["same text"] * 60)
    assert "generated responses have only 1 distinct texts in 60 rows" in few
    assert len(input_warnings(real, real[:2] + demo[1][62:120])) == 0  # 2 of 60 copies: under the threshold


def test_output_folder_is_checked_before_any_work(tmp_path, capsys, monkeypatch):
    from llmgan.evaluation import judge

    def no_work(*a, **k):
        raise AssertionError("the evaluation started before the output path was checked")

    monkeypatch.setattr(judge, "embed", no_work)
    f = _pairs_file(tmp_path / "p.jsonl")
    (tmp_path / "afile").write_text("x")
    for out in (tmp_path / "afile" / "ev", tmp_path / "afile"):
        assert main(["evaluate", str(f), "-o", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: output ") and err.count("\n") == 1, err
    assert main(["evaluate", "--compare", str(f), str(f), "-o", str(tmp_path / "afile" / "c"), "--quiet"]) == 2
    assert "afile is a file" in capsys.readouterr().err


def _fake(name, n, metrics, pairs=None):
    import pandas as pd

    m = {"n_pairs": n, "human_floor_half_size": n // 2, **metrics}
    scores = {"minilm_lr": (np.zeros(n), np.zeros(n))}
    return ev.EvalResult(metrics=m, samples=pd.DataFrame({"real": [f"r{i}" for i in range(n)]}), name=name,
                         pair_scores={"pairs": pairs or tuple((f"p{i}", f"r{i}") for i in range(n)),
                                      "detectors": scores})


def test_compare_puts_systems_and_floor_at_the_same_size():
    """issue 16: 300 rows against a 150-vs-150 floor made Frechet 0.330 look better than the floor's 0.572."""
    from llmgan.evaluation.compare import comparison_table

    metrics = {"frechet_distance": 0.330, "human_frechet_distance": 0.572, "mauve": 0.983, "human_mauve": 0.972,
               "mean_words": 12.0, "human_mean_words": 11.0,
               "same_size_as_floor": {"frechet_distance": 0.571, "mauve": 0.952}}
    table = comparison_table([_fake("a", 300, metrics), _fake("b", 300, metrics)])
    floor = "human floor (150 vs 150 real)"
    assert list(table.columns) == ["metric", "key", floor, "a", "b", "best"]
    row = table.set_index("key")
    assert row.loc["frechet_distance", "a"] == 0.571 and row.loc["frechet_distance", floor] == 0.572
    assert row.loc["mauve", "b"] == 0.952
    assert row.loc["mean_words", "a"] == 12.0  # set-level: all rows, as the floor
    assert row.loc["n_pairs", floor] == 150 and row.loc["n_pairs", "a"] == 300


def test_compare_says_why_a_paired_difference_is_missing():
    from llmgan.evaluation.compare import detector_differences, differences_lines

    base = _fake("base", 30, {})
    other_prompts = _fake("other", 30, {}, pairs=tuple((f"q{i}", f"r{i}") for i in range(30)))
    shorter = _fake("short", 20, {})
    diffs = detector_differences([base, other_prompts, shorter])
    assert [d["difference"] for d in diffs] == [None, None]
    lines = differences_lines(diffs)
    assert "other: no paired difference: other and base differ in prompts or real responses (0 of 30" in lines[0]
    assert "short: no paired difference: short has 20 pairs and base 30" in lines[1]


def test_pooled_baseline_difference_on_hand_computed_aurocs():
    """System AUROC minus the mean of the baselines' AUROCs: 0.5 - (1.0 + 0.5) / 2 = -0.25; with one baseline it
    is max_auroc_difference_ci to the same numbers, interval included."""
    n = 40
    real = np.arange(n, dtype=float)
    above = real + n          # every generated score above every real one: AUROC 1.0
    same = real.copy()        # ties everywhere: AUROC 0.5
    diff, low, high = det.pooled_max_auroc_difference_ci([[(above, real)], [(same, real)]], [(same, real)], seed=0)
    assert diff == pytest.approx(-0.25) and low <= -0.25 <= high
    rng = np.random.default_rng(0)
    a, b, r = rng.normal(1, 1, n), rng.normal(0.5, 1, n), rng.normal(0, 1, n)
    assert det.pooled_max_auroc_difference_ci([[(a, r)]], [(b, r)], seed=3) == \
        det.max_auroc_difference_ci([(a, r)], [(b, r)], seed=3)
    with pytest.raises(LlmganError, match="each with the system's detectors"):
        det.pooled_max_auroc_difference_ci([[(a, r), (b, r)]], [(b, r)])


def test_compare_against_a_pooled_baseline():
    from llmgan.evaluation.compare import detector_differences, differences_lines

    n = 30
    rng = np.random.default_rng(1)
    results = []
    for name, shift in (("sft-a", 1.0), ("sft-b", 0.6), ("best", 0.2)):
        r = _fake(name, n, {})
        r.pair_scores["detectors"] = {"minilm_lr": (rng.normal(shift, 1, n), rng.normal(0, 1, n))}
        results.append(r)
    diffs = detector_differences(results, pool=2)
    assert [(d["system"], d["detector"]) for d in diffs] == [("best", "max"), ("best", "minilm_lr")]
    expected = det.pooled_max_auroc_difference_ci([[results[0].pair_scores["detectors"]["minilm_lr"]],
                                                   [results[1].pair_scores["detectors"]["minilm_lr"]]],
                                                  [results[2].pair_scores["detectors"]["minilm_lr"]])
    assert diffs[0]["baseline"] == "mean of sft-a, sft-b"
    assert diffs[0]["difference"] == pytest.approx(expected[0], abs=1e-6)
    assert differences_lines(diffs)[0].startswith("best, strongest detector: ")
    with pytest.raises(LlmganError, match="needs at least 4 systems"):
        detector_differences(results, pool=3)
    moved = _fake("sft-c", n, {}, pairs=tuple((f"q{i}", f"r{i}") for i in range(n)))
    with pytest.raises(LlmganError, match="sft-a and sft-c differ"):
        detector_differences([results[0], moved, results[2]], pool=2)


def test_word_count_histogram_bins_are_integer_aligned():
    from llmgan.evaluation.report import word_bins

    edges = word_bins(np.array([0, 3, 7]), np.array([5]))
    assert edges.tolist() == [x - 0.5 for x in range(0, 9)]  # one bin per word count 0..7
    wide = word_bins(np.array([0, 200]))
    widths = np.diff(wide)
    assert len(wide) <= 41 and (widths == widths[0]).all() and widths[0] == int(widths[0])
    assert wide[0] == -0.5 and wide[-1] >= 200.5
