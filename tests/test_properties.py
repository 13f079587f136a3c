"""Property-based tests (hypothesis) for bad input: data preparation, evaluation input, configs, prompt cutting.

Every generated case is either handled (a complete output) or ends in one `error: ...` line with exit
code 2: never a traceback (any other exception fails the test) and never a half-written output folder.
Inputs: random unicode (no lone surrogates: JSON/UTF-8 files cannot hold them; a separate test covers
escaped ones), empty and whitespace-only strings, very long texts, missing and extra columns, wrong
types (numbers, NaN/Inf, booleans, null, lists, objects), rows of different lengths, raw garbage.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, reject, settings
from hypothesis import strategies as st

from llmgan.cli import main
from llmgan.errors import LlmganError

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SCALE = int(os.environ.get("LLMGAN_PROPERTY_SCALE", "1"))  # e.g. 20 for a deeper search than CI's

# ------------------------------------------------------------------------------------------ values

texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "\n\t ", "&amp;&lt;b&gt;", "\u202e\u200b", "🇩🇪👩‍👩‍👧", "NaN", "null", "[]", "0"]),
    st.text(min_size=1, max_size=3).map(lambda t: t * 3000),  # very long
)
wrong = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1),
                  st.floats(allow_nan=True, allow_infinity=True),
                  st.lists(st.integers(0, 9), max_size=3), st.dictionaries(st.sampled_from("ab"), st.integers(0, 9),
                                                                           max_size=2))
values = st.one_of(texts, texts, texts, wrong)  # text most of the time


def rows_with(columns: list[str]):
    """Half the time well-formed rows (every column, text values, optional extra columns of any type), half
    the time wild ones (any of `columns` missing, extra ones, any value type)."""
    extras = {"extra": values, "prompt": values, "response": values, "split": values}
    good = st.lists(st.fixed_dictionaries({c: texts for c in columns},
                                          optional={k: v for k, v in extras.items() if k not in columns}), max_size=12)
    keys = st.sampled_from(columns + ["extra", "prompt", "response", "split", ""])
    wild = st.lists(st.dictionaries(keys, values, max_size=len(columns) + 2), max_size=12)
    return st.one_of(good, wild)


def write_table(rows: list[dict], path: Path) -> Path:
    """Write rows as JSONL, CSV or parquet by the suffix (rejects the example when pyarrow cannot hold it)."""
    import pandas as pd

    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif path.suffix == ".csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    else:
        try:
            pd.DataFrame(rows).to_parquet(path)
        except Exception:  # mixed types in one column: not a parquet file anyone could have
            reject()
    return path


def garbage_with(csv_alphabet: str):
    return st.one_of(st.binary(max_size=300), st.text(max_size=300).map(lambda t: t.encode("utf-8")),
                     st.lists(st.lists(st.text(alphabet=csv_alphabet, max_size=5), max_size=4), max_size=5).map(
                         lambda lines: "\n".join(",".join(x) for x in lines).encode("utf-8")))  # ragged CSV


garbage = garbage_with("ab,\"\n")  # quotes let a CSV field (a header name too) hold a line break


def note(what: str) -> None:
    """Count outcomes (shown by pytest --hypothesis-show-statistics); a no-op outside a hypothesis test."""
    from hypothesis.errors import InvalidArgument

    try:
        event(what)
    except InvalidArgument:
        pass


def run_cli(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, err.getvalue()


def assert_one_error_line(rc: int, err: str) -> None:
    assert rc == 2, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("properties")


def fresh(work: Path) -> Path:
    d = work / uuid.uuid4().hex[:10]
    d.mkdir()
    return d


# ------------------------------------------------------------------------------------- prepare


def check_prepare(work: Path, source: Path) -> None:
    from llmgan.data import CARD_NAME, load_prepared

    out = source.parent / "out"
    rc, err = run_cli(["prepare", "--task", "reply", str(source), "-o", str(out)])
    note("prepared" if rc == 0 else "refused")
    leftovers = [p.name for p in source.parent.iterdir() if p.name.startswith(".")]
    assert not leftovers, leftovers  # no temporary folder survives, whatever happened
    if rc == 0:
        assert (out / CARD_NAME).is_file()
        ds = load_prepared(out)
        assert "train" in ds and set(ds) <= {"train", "validation", "test"}  # empty splits are left out
        for split in ds.values():
            for row in split:
                assert row["response"] and isinstance(row["response"], str)
                assert row["prompt"][-1]["role"] == "user" and row["prompt"][-1]["content"]
    else:
        assert_one_error_line(rc, err)
        assert not out.exists()


@settings(max_examples=60 * SCALE, **SETTINGS)
@given(rows=rows_with(["post", "reply"]), suffix=st.sampled_from([".jsonl", ".csv", ".parquet"]))
@example(rows=[{"post": "a", "reply": "b"}] * 3, suffix=".jsonl")
@example(rows=[{"post": "a" * 100_000, "reply": "b\x00c"}], suffix=".csv")
@example(rows=[{"post": 1, "reply": 2.5}], suffix=".parquet")
@example(rows=[{"post": "a"}, {"reply": "b"}, {"post": "c", "reply": "d", "extra": [1]}], suffix=".jsonl")
@example(rows=[], suffix=".jsonl")
def test_prepare_handles_any_table_or_fails_in_one_line(work, rows, suffix):
    d = fresh(work)
    check_prepare(work, write_table(rows, d / f"in{suffix}"))
    shutil.rmtree(d)


@settings(max_examples=30 * SCALE, **SETTINGS)
@given(data=garbage, suffix=st.sampled_from([".jsonl", ".csv", ".parquet", ".tsv", ".json", ".txt"]))
def test_prepare_on_garbage_files(work, data, suffix):
    d = fresh(work)
    f = d / f"in{suffix}"
    f.write_bytes(data)
    check_prepare(work, f)
    shutil.rmtree(d)


def test_prepare_with_escaped_lone_surrogates(work):
    """JSON can carry lone surrogates as escapes ("\\ud800"); they are not valid text for the Arrow files."""
    d = fresh(work)
    f = d / "in.jsonl"
    f.write_text('{"post": "a \\ud800 b", "reply": "c"}\n{"post": "x", "reply": "y \\udfff"}\n'
                 '{"post": "ok", "reply": "fine"}\n', encoding="utf-8")
    check_prepare(work, f)


# ------------------------------------------------------------------------------------- evaluate


def check_read_pairs(path: Path) -> int:
    """read_pairs gives equal-length lists of strings or one clear line; returns the number of rows read."""
    from llmgan.evaluation import read_pairs

    try:
        prompts, real, generated = read_pairs(path)
    except LlmganError as exc:
        assert "\n" not in str(exc)
        note("refused")
        return 0
    note("read")
    assert len(prompts) == len(real) == len(generated) > 0
    assert all(isinstance(x, str) for x in prompts + real + generated)
    return len(real)


@settings(max_examples=60 * SCALE, **SETTINGS)
@given(rows=rows_with(["prompt", "real", "generated"]), suffix=st.sampled_from([".jsonl", ".csv", ".parquet"]))
@example(rows=[{"prompt": [{"role": "user", "content": "hi"}], "real": "a", "generated": "b"}], suffix=".jsonl")
@example(rows=[{"prompt": "p", "real": float("nan"), "generated": "b"}], suffix=".jsonl")
@example(rows=[{"prompt": "p", "real": "a"}], suffix=".csv")
def test_evaluate_input_is_read_or_refused_in_one_line(work, rows, suffix):
    d = fresh(work)
    f = write_table(rows, d / f"in{suffix}")
    # through the CLI: fewer than 20 rows never get as far as loading a model (a CSV field holding a bare \r
    # is written unquoted by pandas and so really is several rows)
    if check_read_pairs(f) < 20:
        out = d / "report"
        rc, err = run_cli(["evaluate", str(f), "-o", str(out), "--quiet"])
        assert_one_error_line(rc, err)
        assert not out.exists()
    shutil.rmtree(d)


@settings(max_examples=30 * SCALE, **SETTINGS)
@given(data=garbage, suffix=st.sampled_from([".jsonl", ".csv", ".parquet", ".json", ".txt"]))
def test_evaluate_on_garbage_files(work, data, suffix):
    d = fresh(work)
    f = d / f"in{suffix}"
    f.write_bytes(data)
    if check_read_pairs(f) >= 20:
        reject()  # a full evaluation is the slow test's job
    out = d / "report"
    rc, err = run_cli(["evaluate", str(f), "-o", str(out), "--quiet"])
    assert_one_error_line(rc, err)
    assert not out.exists()
    shutil.rmtree(d)


def test_evaluate_missing_column_message_is_one_line_when_a_header_holds_a_line_break(work):
    from llmgan.evaluation import read_pairs

    f = fresh(work) / "in.csv"
    f.write_text('"a\nb",real,generated\nx,y,z\n')
    with pytest.raises(LlmganError) as info:
        read_pairs(f)
    assert "\n" not in str(info.value)


def test_prepare_missing_column_message_is_one_line_when_a_header_holds_a_line_break(work):
    from llmgan.data import PrepareOptions, prepare

    d = fresh(work)
    f = d / "in.csv"
    f.write_text('"a\nb",reply\nx,y\n')
    with pytest.raises(LlmganError) as info:
        prepare(PrepareOptions(inputs=[str(f)], output=str(d / "out"), task="reply"))
    assert "\n" not in str(info.value) and "'a\\nb'" in str(info.value)


@settings(max_examples=100 * SCALE, **SETTINGS)
@given(st.lists(texts, max_size=8))
def test_text_metrics_accept_any_text(xs):
    from llmgan.evaluation import textstats as ts

    assert 0.0 <= ts.distinct_n(xs, 1) <= 1.0 and 0.0 <= ts.distinct_n(xs, 2) <= 1.0
    assert 0.0 <= ts.self_bleu(xs) <= 1.0 + 1e-12  # sacrebleu gives 100.00000000000004 for identical texts
    feats = ts.style_features(xs)
    assert feats.shape == (len(xs), len(ts.STYLE_FEATURES)) and (feats >= 0).all()
    compound = ts.vader_compound(xs)
    assert ((compound >= -1) & (compound <= 1)).all()
    if xs:
        shares = ts.sentiment_distribution(compound)
        assert math.isclose(sum(shares.values()), 1.0)
        assert 0.0 <= ts.js_divergence(shares.values(), [1 / 3] * 3) <= 1.0
        words = ts.word_counts(xs)
        assert math.isfinite(ts.wasserstein(words, words + 1))
        ratio = ts.length_ratio(words, words)
        assert ratio is None or ratio == pytest.approx(1.0)


@pytest.mark.parametrize("lengths", [(20, 20, 19), (21, 20, 20), (20, 0, 20), (19, 19, 19)])
def test_evaluate_pairs_with_mismatched_or_too_few_rows(lengths):
    from llmgan.evaluation import evaluate_pairs

    a, b, c = (["x"] * n for n in lengths)
    with pytest.raises(LlmganError) as info:
        evaluate_pairs(a, b, c)
    assert "\n" not in str(info.value)


@settings(max_examples=2, **SETTINGS)
@given(st.lists(st.tuples(texts, texts, texts), min_size=20, max_size=22))
@example([("", "😀" * 40, "a" * 20000), ("\x00", "", " "), ("#x @y http://z", "مرحبا", "\u202e")] * 7)
def test_full_evaluation_of_strange_texts_gives_a_complete_strict_json_report(work, triples):
    """Empty, emoji-only, control-character, right-to-left and very long responses: the evaluation runs,
    every number in metrics.json is finite or null (strict JSON), and every report file is written."""
    from llmgan.evaluation import run_evaluation, write_outputs

    prompts, real, generated = (list(x) for x in zip(*triples))
    result = run_evaluation(prompts, real, generated, seed=0)
    out = fresh(work)
    paths = write_outputs(result, out)

    def refuse(token):
        raise ValueError(f"non-finite number {token} in metrics.json")

    json.loads((out / "metrics.json").read_text(), parse_constant=refuse)
    assert all(Path(p).is_file() and Path(p).stat().st_size for p in paths.values())


# --------------------------------------------------------------------------------------- configs


def _field_paths() -> list[str]:
    import dataclasses

    from llmgan.config import RunConfig

    out = []

    def walk(cls, prefix):
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if dataclasses.is_dataclass(default):
                walk(type(default), f"{prefix}{f.name}.")
            else:
                out.append(f"{prefix}{f.name}")

    walk(RunConfig, "")
    return out


config_values = st.one_of(st.integers(-10, 10**6), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                          st.none(), st.text(max_size=12), st.sampled_from(["bce", "group", "mean", "hf", "auto"]),
                          st.lists(st.integers(0, 3), max_size=2))


@settings(max_examples=300 * SCALE, **SETTINGS)
@given(st.lists(st.tuples(st.one_of(st.sampled_from(_field_paths()), st.text(max_size=15)), config_values),
                max_size=4))
def test_any_config_is_valid_or_one_clear_error(items):
    from llmgan.config import RunConfig, config_from_dict

    data: dict = {}
    for key, value in items:
        node, parts = data, key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else {}
        node[parts[-1]] = value
    try:
        cfg = config_from_dict(data)
    except LlmganError as exc:
        msg = str(exc)
        assert "\n" not in msg
        if msg.startswith("unknown config key"):
            assert "valid keys here:" in msg
        return
    assert isinstance(cfg, RunConfig)
    for path, value in ((p, v) for p, v in _floats(cfg)):
        assert math.isfinite(value) or path in ("train.max_grad_norm", "reward.clip"), path


def _floats(cfg):
    from llmgan.config import float_fields

    return float_fields(cfg)


@settings(max_examples=100 * SCALE, **SETTINGS)
@given(st.lists(st.text(max_size=20), max_size=3))
def test_any_override_string_is_parsed_or_refused_in_one_line(overrides):
    from llmgan.config import load_config

    try:
        load_config(None, overrides)
    except LlmganError as exc:
        assert "\n" not in str(exc)


# ------------------------------------------------------------------------------------ long prompts


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from llmgan.models import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))


@settings(max_examples=80 * SCALE, **SETTINGS)
@given(content=texts, limit=st.integers(1, 64))
@example(content="é" * 200, limit=3)
@example(content="👩‍👩‍👧 " * 100, limit=5)
def test_cut_prompt_never_exceeds_the_limit(tok, content, limit):
    """data.max_prompt_tokens: the user message, as the trainer will tokenize it again, has at most `limit`
    tokens and is a beginning of the original (the system message is untouched)."""
    from llmgan.training.dataset import truncate_prompt

    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": content}]
    cut = truncate_prompt(msgs, tok, limit)
    assert cut[0] == msgs[0]
    assert len(tok(cut[1]["content"], add_special_tokens=False)["input_ids"]) <= limit
    # a beginning of the text as the tokenizer sees it (it drops some control characters)
    seen = tok.decode(tok(content, add_special_tokens=False)["input_ids"])
    assert seen.startswith(cut[1]["content"]) or cut[1]["content"] == content


class _RecordingModel:
    """Stands in for a causal LM in generate_responses: records the prompt ids, 'generates' one token."""

    def __init__(self):
        import torch

        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen = []

    def parameters(self):
        return iter([self.weight])

    def generate(self, input_ids, attention_mask, **kw):
        import torch

        self.seen.append((input_ids.clone(), attention_mask.clone()))
        return torch.cat([input_ids, torch.ones_like(input_ids[:, :1])], dim=1)


@settings(max_examples=25 * SCALE, **SETTINGS)
@given(contents=st.lists(texts, min_size=1, max_size=3), limit=st.integers(4, 40))
def test_generation_prompts_longer_than_the_limit_keep_their_end(tok, contents, limit):
    """`llmgan generate`: a prompt longer than max_prompt_tokens keeps its last tokens (the post's end and the
    assistant turn), padding is on the left and masked, and the tokenizer's settings are restored."""
    from llmgan.generator import generate_responses
    from llmgan.models import apply_chat

    prompts = [[{"role": "user", "content": c}] for c in contents]
    model = _RecordingModel()
    side, trunc = tok.padding_side, tok.truncation_side
    out = generate_responses(model, tok, prompts, max_prompt_tokens=limit, progress=False, batch_size=8)
    assert len(out) == len(prompts) and (tok.padding_side, tok.truncation_side) == (side, trunc)
    (ids, mask), = model.seen
    by_length = sorted(apply_chat(tok, prompts), key=len)
    for row, m, text in zip(ids.tolist(), mask.tolist(), by_length):
        full = tok(text, add_special_tokens=False)["input_ids"]
        kept = [t for t, keep in zip(row, m) if keep]
        assert kept == full[-limit:]
        assert m == sorted(m)  # left padding: zeros first
