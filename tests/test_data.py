"""`llmgan prepare` (llmgan.data): readers, cleaning, grouped splits, templates, ready-made splits, the card."""

from __future__ import annotations

import hashlib
import html
import json
import warnings
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import DEMO_FILE
from llmgan.cli import main
from llmgan.data import (CARD_NAME, PrepareOptions, clean_text, clean_pairs, grouped_split, load_prepared, prepare,
                         read_table)
from llmgan.errors import LlmganError

REPLY_SYSTEM = "You are a social media user. Write a reply to the following post."


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def run_prepare(tmp_path: Path, inputs, name="out", **kw):
    out = tmp_path / name
    card = prepare(PrepareOptions(inputs=[str(p) for p in inputs], output=str(out), **kw))
    return card, load_prepared(out), out


def user_text(messages) -> str:
    return next(m["content"] for m in messages if m["role"] == "user")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo file prepared once with the reply task and default fractions (seed 0)."""
    out = tmp_path_factory.mktemp("demo") / "reply"
    card = prepare(PrepareOptions(inputs=[str(DEMO_FILE)], output=str(out), task="reply"))
    return card, load_prepared(out), out


# ---------------------------------------------------------------------------------------------
# Readers

ROWS = [{"post": "Hello &amp; welcome", "reply": "hi there"}, {"post": "Second post", "reply": ""},
        {"post": "Third, with a comma", "reply": "line one\nline two"}]


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".tsv", ".jsonl"])
def test_read_table_formats_give_the_same_table(tmp_path, suffix):
    df = pd.DataFrame(ROWS)
    p = tmp_path / f"t{suffix}"
    if suffix == ".parquet":
        df.to_parquet(p)
    elif suffix == ".csv":
        df.to_csv(p, index=False)
    elif suffix == ".tsv":
        df.to_csv(p, index=False, sep="\t")
    else:
        write_jsonl(p, ROWS)
    got = read_table(p)
    assert list(got.columns) == ["post", "reply"]
    assert got["post"].tolist() == [r["post"] for r in ROWS]
    # an empty CSV field stays an empty string (not NaN), a newline inside a quoted field survives
    assert got["reply"].tolist() == [r["reply"] for r in ROWS]


def test_read_table_errors(tmp_path):
    with pytest.raises(LlmganError, match="not found"):
        read_table(tmp_path / "missing.jsonl")
    with pytest.raises(LlmganError, match="is a folder"):
        read_table(tmp_path)
    (tmp_path / "t.xlsx").write_text("x")
    with pytest.raises(LlmganError, match=r"unknown format.*\.xlsx"):
        read_table(tmp_path / "t.xlsx")
    (tmp_path / "bad.parquet").write_bytes(b"this is not parquet \x00\x01\x02")
    with pytest.raises(LlmganError, match="could not read .*bad.parquet as parquet"):
        read_table(tmp_path / "bad.parquet")
    (tmp_path / "bad.jsonl").write_text('{"post": "a", "reply": \n')
    with pytest.raises(LlmganError, match="could not read .*bad.jsonl as jsonl"):
        read_table(tmp_path / "bad.jsonl")


# ---------------------------------------------------------------------------------------------
# Cleaning


def test_clean_text_strips_and_unescapes():
    assert clean_text("  Tom &amp; Jerry &lt;3 &#39;x&#39;\n\t") == "Tom & Jerry <3 'x'"
    assert clean_text(None) == ""
    assert clean_text(float("nan")) == ""


def test_clean_pairs_counts_per_reason():
    prompts = ["a", "a", "b", "", "c", "a", "d"]
    responses = ["x", "x", "", "y", "z", "w", "long reply here"]
    kept, rep = clean_pairs(prompts, responses, max_response_tokens=2, count_tokens=lambda ts: [len(t.split()) for t in ts])
    assert kept == [0, 4, 5]
    assert rep.rows_read == 7 and rep.kept == 3
    assert rep.dropped == {"empty response": 1, "empty prompt": 1, "duplicate pair": 1, "response too long": 1}


def test_clean_pairs_duplicates_only_within_scope():
    kept, rep = clean_pairs(["a", "a", "a"], ["x", "x", "x"], scopes=[None, "test", "test"])
    assert kept == [0, 1] and rep.dropped["duplicate pair"] == 1


def test_prepare_cleans_whitespace_entities_empty_and_duplicates(tmp_path):
    rows = [{"post": "  Cats &amp; dogs  ", "reply": "  Agreed &gt; all\n"},
            {"post": "Cats & dogs", "reply": "Agreed > all"},  # the same pair once cleaned: a duplicate
            {"post": "Cats & dogs", "reply": "   "},  # empty after stripping
            {"post": "Taxes", "reply": None},  # null reply
            {"post": "Taxes", "reply": "too high"},
            {"post": "", "reply": "orphan reply"}]
    card, ds, _ = run_prepare(tmp_path, [write_jsonl(tmp_path / "in.jsonl", rows)], task="reply",
                              validation_fraction=0, test_fraction=0)
    assert card["rows_read"] == 6 and card["rows_kept"] == 2
    assert card["dropped"] == {"empty response": 2, "empty prompt": 1, "duplicate pair": 1, "response too long": 0}
    train = ds["train"]
    assert sorted(zip(train["prompt_text"], train["response"])) == [("Cats & dogs", "Agreed > all"), ("Taxes", "too high")]


def test_prepare_demo_counts(demo):
    card, ds, _ = demo
    assert card["rows_read"] == 196
    assert card["dropped"]["empty response"] == 2 and card["dropped"]["duplicate pair"] == 2
    assert card["rows_kept"] == 192 == sum(len(ds[s]) for s in ds)
    pairs = [(p, r) for s in ds for p, r in zip(ds[s]["prompt_text"], ds[s]["response"])]
    assert len(set(pairs)) == len(pairs)
    assert all(r and r == r.strip() for _, r in pairs)
    assert not any("&amp;" in p for p, _ in pairs) and any(" & " in p for p, _ in pairs)


def test_max_response_tokens_with_default_tokenizer(tmp_path, demo):
    from llmgan.models import load_tokenizer

    limit = 12
    card, ds, _ = run_prepare(tmp_path, [DEMO_FILE], task="reply", max_response_tokens=limit)
    tok = load_tokenizer(None)
    n_tokens = lambda texts: [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]  # noqa: E731
    all_responses = [r for s in demo[1] for r in demo[1][s]["response"]]  # the 192 cleaned rows, no limit
    expected_drop = sum(n > limit for n in n_tokens(all_responses))
    assert 0 < expected_drop < len(all_responses)
    assert card["dropped"]["response too long"] == expected_drop
    assert card["rows_kept"] == len(all_responses) - expected_drop
    assert f"max response tokens {limit}" in card["filters"]
    kept = [r for s in ds for r in ds[s]["response"]]
    assert len(kept) == card["rows_kept"] and max(n_tokens(kept)) <= limit


# ---------------------------------------------------------------------------------------------
# Grouped splitting


FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}


def _groups(n_groups=60, seed=1):
    import random

    rnd = random.Random(seed)
    return [f"post {g}" for g in range(n_groups) for _ in range(rnd.randint(1, 5))]


def test_grouped_split_keeps_groups_together_and_matches_fractions():
    groups = _groups()
    split = grouped_split(groups, FRACTIONS, seed=0)
    assert sorted(i for idx in split.values() for i in idx) == list(range(len(groups)))
    where = {}
    for name, idx in split.items():
        for i in idx:
            assert where.setdefault(groups[i], name) == name, f"group {groups[i]} in two splits"
    for name, frac in FRACTIONS.items():
        assert abs(len(split[name]) - frac * len(groups)) <= 5  # one group holds at most 5 rows


def test_grouped_split_is_deterministic_for_a_seed():
    groups = _groups()
    assert grouped_split(groups, FRACTIONS, seed=3) == grouped_split(groups, FRACTIONS, seed=3)
    assert grouped_split(groups, FRACTIONS, seed=3) != grouped_split(groups, FRACTIONS, seed=4)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 15), min_size=1, max_size=80), st.integers(0, 2**16),
       st.sampled_from([(0.8, 0.1, 0.1), (1.0, 0.0, 0.0), (0.5, 0.5, 0.0), (0.0, 0.5, 0.5)]))
def test_grouped_split_property(groups, seed, fr):
    fractions = dict(zip(("train", "validation", "test"), fr))
    split = grouped_split([str(g) for g in groups], fractions, seed)
    assert sorted(i for idx in split.values() for i in idx) == list(range(len(groups)))
    owners = {}
    for name, idx in split.items():
        if fractions[name] == 0:
            assert idx == []
        for i in idx:
            owners.setdefault(groups[i], set()).add(name)
    assert all(len(v) == 1 for v in owners.values())


def test_prepare_demo_split_has_no_prompt_in_two_splits(demo):
    card, ds, _ = demo
    prompts = {s: set(ds[s]["prompt_text"]) for s in ("train", "validation", "test")}
    assert not prompts["train"] & prompts["validation"]
    assert not prompts["train"] & prompts["test"]
    assert not prompts["validation"] & prompts["test"]
    n = card["rows_kept"]
    assert abs(len(ds["validation"]) - 0.1 * n) <= 5 and abs(len(ds["test"]) - 0.1 * n) <= 5
    assert len(ds["train"]) == n - len(ds["validation"]) - len(ds["test"])


def test_prepare_split_is_deterministic(tmp_path, demo):
    _, again, _ = run_prepare(tmp_path, [DEMO_FILE], "same", task="reply")
    _, other, _ = run_prepare(tmp_path, [DEMO_FILE], "other", task="reply", seed=1)
    for s in ("train", "validation", "test"):
        assert again[s]["prompt_text"] == demo[1][s]["prompt_text"]
        assert again[s]["response"] == demo[1][s]["response"]
    assert set(other["test"]["prompt_text"]) != set(demo[1]["test"]["prompt_text"])


# ---------------------------------------------------------------------------------------------
# Prompts and templates


def test_prompt_messages_and_default_chat_template(demo):
    from llmgan.models import apply_chat, load_tokenizer

    card, ds, _ = demo
    row = ds["test"][0]
    assert row["prompt"] == [{"role": "system", "content": REPLY_SYSTEM}, {"role": "user", "content": row["prompt_text"]}]
    assert html.unescape(row["post"]).strip() == row["prompt_text"]  # the source column is kept beside
    text = apply_chat(load_tokenizer(None), [row["prompt"]])[0]
    assert text.startswith(f"<|im_start|>system\n{REPLY_SYSTEM}<|im_end|>")
    assert f"<|im_start|>user\n{row['prompt_text']}<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert card["system_prompt"] == REPLY_SYSTEM and card["template"] == "{prompt}"


def test_custom_template_file(tmp_path):
    rows = [{"post": f"post {i} &amp; more", "reply": f"reply {i}", "author": f"user{i}", "topic": "tax"}
            for i in range(6)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    tpl = tmp_path / "tpl.txt"
    tpl.write_text("Topic: {topic}\n{author} wrote: {post}\n")
    card, ds, _ = run_prepare(tmp_path, [src], task="reply", template_file=str(tpl),
                              validation_fraction=0, test_fraction=0)
    texts = dict(zip(ds["train"]["response"], ds["train"]["prompt_text"]))
    assert texts["reply 3"] == "Topic: tax\nuser3 wrote: post 3 & more"
    assert card["template"] == "Topic: {topic}\n{author} wrote: {post}"
    assert ds["train"][0]["prompt"][0] == {"role": "system", "content": REPLY_SYSTEM}

    # a placeholder naming a column that is not there
    tpl.write_text("{nonexistent}: {post}")
    with pytest.raises(LlmganError, match="missing column.*nonexistent.*found columns: post, reply, author, topic"):
        run_prepare(tmp_path, [src], "bad", task="reply", template_file=str(tpl))
    assert not (tmp_path / "bad").exists()


def test_generic_columns_and_system_prompt(tmp_path):
    rows = [{"question": f"q{i % 4}", "answer": f"a{i}"} for i in range(12)]
    src = write_jsonl(tmp_path / "qa.jsonl", rows)
    card, ds, _ = run_prepare(tmp_path, [src], prompt_column="question", response_column="answer",
                              system_prompt="Be brief.", validation_fraction=0.25, test_fraction=0.25)
    assert card["task"] == "custom" and card["prompt_column"] == "question" and card["response_column"] == "answer"
    row = ds["train"][0]
    assert row["prompt"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": row["question"]}]
    assert row["response"] == row["answer"]
    # an empty system prompt means no system message at all
    _, ds2, _ = run_prepare(tmp_path, [src], "nosys", prompt_column="question", response_column="answer",
                            system_prompt="", validation_fraction=0, test_fraction=0)
    assert all(len(m) == 1 and m[0]["role"] == "user" for m in ds2["train"]["prompt"])
    # neither a task nor both columns
    with pytest.raises(LlmganError, match="--prompt-column"):
        run_prepare(tmp_path, [src], "none", prompt_column="question")


def test_post_task_columns(tmp_path):
    rows = [{"annotation": f"topic {i}", "full_text": f"post text {i}"} for i in range(10)]
    card, ds, _ = run_prepare(tmp_path, [write_jsonl(tmp_path / "p.jsonl", rows)], task="post")
    got = {p: r for s in ds for p, r in zip(ds[s]["prompt_text"], ds[s]["response"])}
    assert got == {f"topic {i}": f"post text {i}" for i in range(10)}
    assert "topic" in ds["train"][0]["prompt"][0]["content"]


def test_inputs_with_different_columns_are_concatenated(tmp_path):
    """Regression: a second input lacking an extra column of the first raised KeyError."""
    a = write_jsonl(tmp_path / "a.jsonl", [{"post": f"p{i}", "reply": f"r{i}", "id": str(i)} for i in range(10)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"post": f"q{i}", "reply": f"s{i}"} for i in range(10)])
    card, ds, _ = run_prepare(tmp_path, [a, b], task="reply")
    assert card["rows_kept"] == 20
    ids = {p: i for s in ds for p, i in zip(ds[s]["prompt_text"], ds[s]["id"])}
    assert ids["p3"] == "3" and ids["q3"] == ""


def test_source_column_names_colliding_with_ours_are_renamed(tmp_path):
    rows = [{"post": f"p{i}", "reply": f"r{i}", "prompt": "orig", "split": "x"} for i in range(5)]
    _, ds, _ = run_prepare(tmp_path, [write_jsonl(tmp_path / "c.jsonl", rows)], task="reply",
                           validation_fraction=0, test_fraction=0)
    assert {"source_prompt", "source_split"} <= set(ds["train"].column_names)
    assert ds["train"][0]["source_prompt"] == "orig" and isinstance(ds["train"][0]["prompt"], list)


# ---------------------------------------------------------------------------------------------
# Ready-made splits


def _ready_made_files(tmp_path):
    train = [{"post": f"post {i}", "reply": f"reply {i}.{j}"} for i in range(20) for j in range(2)]
    # 3 of the 5 test prompts also occur in train (one of them with an identical pair)
    test = [{"post": "post 1", "reply": "reply 1.0"}, {"post": "post 2", "reply": "new"},
            {"post": "post 3", "reply": "new"}, {"post": "fresh A", "reply": "x"}, {"post": "fresh B", "reply": "y"},
            {"post": "fresh B", "reply": "z"}]
    return write_jsonl(tmp_path / "train.jsonl", train), write_jsonl(tmp_path / "test.jsonl", test)


def test_test_file_overlap_warning_states_the_count(tmp_path):
    tr, te = _ready_made_files(tmp_path)
    with pytest.warns(UserWarning, match=r"3 of 5 prompts in the ready-made test split .* \(1 of its 6 rows are identical"):
        card, ds, _ = run_prepare(tmp_path, [tr], task="reply", test_file=str(te))
    assert card["ready_made_overlap"] == {"test": {"prompts": 3, "identical_pairs": 1}}
    assert len(ds["test"]) == 6  # kept without --drop-overlap
    assert card["split_fractions"]["test"] == 0.0
    assert card["sources"][str(te)]["split"] == "test" and card["sources"][str(tr)]["split"] == "grouped"


def test_test_file_overlap_warning_through_the_cli(tmp_path, capsys):
    tr, te = _ready_made_files(tmp_path)
    assert main(["prepare", "--task", "reply", str(tr), "--test-file", str(te), "-o", str(tmp_path / "o")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "warning: 3 of 5 prompts in the ready-made test split" in out
    assert "--drop-overlap" in out


def test_drop_overlap_removes_test_prompts_seen_elsewhere(tmp_path):
    tr, te = _ready_made_files(tmp_path)
    with pytest.warns(UserWarning, match="dropped 3 test rows"):
        card, ds, _ = run_prepare(tmp_path, [tr], task="reply", test_file=str(te), drop_overlap=True)
    others = set(ds["train"]["prompt_text"]) | set(ds["validation"]["prompt_text"])
    assert sorted(ds["test"]["prompt_text"]) == ["fresh A", "fresh B", "fresh B"]
    assert not set(ds["test"]["prompt_text"]) & others
    assert card["splits"]["test"] == {"rows": 3, "prompts": 2}


def test_validation_file_is_used_as_is(tmp_path):
    tr, te = _ready_made_files(tmp_path)
    val = write_jsonl(tmp_path / "val.jsonl", [{"post": "val only", "reply": "v"}])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        card, ds, _ = run_prepare(tmp_path, [tr], task="reply", test_file=str(te), validation_file=str(val))
    assert ds["validation"]["prompt_text"] == ["val only"]
    assert len(ds["train"]) == 40  # everything from the input goes to train
    assert card["split_fractions"] == {"train": 1.0, "validation": 0.0, "test": 0.0}


# ---------------------------------------------------------------------------------------------
# The card


def test_card_contents(demo):
    card, ds, out = demo
    on_disk = json.loads((out / CARD_NAME).read_text())
    assert on_disk == card
    src = card["sources"][str(DEMO_FILE)]
    assert src == {"sha256": hashlib.sha256(DEMO_FILE.read_bytes()).hexdigest(), "rows": 196, "split": "grouped"}
    assert card["task"] == "reply" and card["prompt_column"] == "post" and card["response_column"] == "reply"
    assert card["template"] == "{prompt}" and card["system_prompt"] == REPLY_SYSTEM
    assert card["split_seed"] == 0
    assert card["split_fractions"] == pytest.approx({"train": 0.8, "validation": 0.1, "test": 0.1})
    assert {"strip whitespace", "unescape HTML entities", "drop empty responses",
            "drop exact duplicate pairs"} <= set(card["filters"])
    for s in ("train", "validation", "test"):
        assert card["splits"][s] == {"rows": len(ds[s]), "prompts": len(set(ds[s]["prompt_text"]))}
    assert sum(v["rows"] for v in card["splits"].values()) == card["rows_kept"]
    assert card["response_chars_percentiles"]["100"] == 254  # the demo README's max reply length
    assert card["response_chars_percentiles"]["50"] == 62


def test_existing_output_needs_overwrite(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"post": f"p{i}", "reply": "r"} for i in range(5)])
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(LlmganError, match="exists; pass --overwrite"):
        run_prepare(tmp_path, [src], task="reply")
    assert (out / "keep.txt").is_file()
    card, ds, _ = run_prepare(tmp_path, [src], task="reply", overwrite=True, validation_fraction=0, test_fraction=0)
    assert not (out / "keep.txt").exists() and len(ds["train"]) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out"]  # no temp folder left


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    from datasets import DatasetDict

    def full_disk(self, path, **kw):
        (Path(path) / "half-written.arrow").write_text("x")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(DatasetDict, "save_to_disk", full_disk)
    src = write_jsonl(tmp_path / "in.jsonl", [{"post": f"p{i}", "reply": "r"} for i in range(5)])
    with pytest.raises(LlmganError, match="could not write .*No space left on device"):
        run_prepare(tmp_path, [src], task="reply")
    assert [p.name for p in tmp_path.iterdir()] == ["in.jsonl"]


# ---------------------------------------------------------------------------------------------
# The real TWON data (skipped when ../shared/data/twon is absent)


def test_twon_prelim_test_file_overlap(twon_dir, tmp_path, capsys):
    train, test = twon_dir / "prelim.train.parquet", twon_dir / "prelim.test.parquet"
    out = tmp_path / "prelim"
    rc = main(["prepare", "--task", "reply", str(train), "--test-file", str(test), "--validation-fraction", "0",
               "-o", str(out)])
    assert rc == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "warning: 211 of 238 prompts in the ready-made test split" in text
    card = json.loads((out / CARD_NAME).read_text())
    assert card["ready_made_overlap"]["test"]["prompts"] == 211
    assert card["rows_read"] == 2750 and card["dropped"]["empty response"] == 2
    assert card["splits"]["test"] == {"rows": 249, "prompts": 238}
    # the data README says "212 of its 239 posts": that counts the raw posts, including one whose only
    # reply (in both files) is empty and is dropped in cleaning
    tr, te = pd.read_parquet(train), pd.read_parquet(test)
    assert te["post"].nunique() == 239
    assert len(set(te["post"]) & set(tr["post"])) == 212

    # --drop-overlap: no test prompt left in train
    with pytest.warns(UserWarning, match="211 of 238"):
        card2, ds, _ = run_prepare(tmp_path, [train], "dropped", task="reply", test_file=str(test),
                                   validation_fraction=0, drop_overlap=True)
    assert card2["splits"]["test"]["prompts"] == 238 - 211
    assert not set(ds["test"]["prompt_text"]) & set(ds["train"]["prompt_text"])


def test_twon_grouped_split_has_no_overlap(twon_dir, tmp_path):
    card, ds, _ = run_prepare(tmp_path, [twon_dir / "prelim.train.parquet"], task="reply")
    sets = {s: set(ds[s]["prompt_text"]) for s in ("train", "validation", "test")}
    assert not sets["train"] & sets["validation"] and not sets["train"] & sets["test"]
    assert not sets["validation"] & sets["test"]
    assert card["rows_kept"] == 2499
    for s, frac in (("validation", 0.1), ("test", 0.1)):
        assert abs(len(ds[s]) - frac * 2499) < 30
