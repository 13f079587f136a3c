"""`llmgan generate` (llmgan.generator): batching with left padding and the attention mask, order, output files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import DEMO_FILE
from llmgan.cli import main
from llmgan.data import PrepareOptions, load_prepared, prepare
from llmgan.errors import LlmganError
from llmgan.generator import generate_responses, write_rows
from llmgan.models import load_tokenizer

SYS = "You are a social media user. Write a reply to the following post."


def conv(text: str) -> list[dict]:
    return [{"role": "system", "content": SYS}, {"role": "user", "content": text}]


SHORT = conv("Vote today!")
SHORT2 = conv("Taxes are too high.")
MEDIUM = conv("The city council voted to close two libraries on weekends. Who decided this was a good idea?")
LONG = conv("A much longer post about taxes and schools and roads and the budget of the state. " * 6)


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir))


@pytest.fixture(scope="module")
def varied_model(tok):
    """A tiny random Llama whose greedy output depends on the prompt.

    The shared `tiny_model_dir` model ties its embeddings at the default init scale, so greedy decoding
    just repeats the prompt's last token ("\\n") and decodes to "" for every prompt, which would make a
    padding comparison vacuous. Untied embeddings with a larger init give distinct, deterministic outputs.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=False, initializer_range=0.1,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


class GenerateSpy:
    """Wraps model.generate to record each batch's inputs and its new tokens."""

    def __init__(self, model, drop_mask: bool = False):
        self.model, self.orig, self.drop_mask, self.calls = model, model.generate, drop_mask, []

    def __enter__(self):
        def spy(**kw):
            if self.drop_mask:
                kw.pop("attention_mask")
            out = self.orig(**kw)
            self.calls.append({"input_ids": kw["input_ids"], "attention_mask": kw.get("attention_mask"),
                               "new": out[:, kw["input_ids"].shape[1]:]})
            return out

        self.model.generate = spy
        return self

    def __exit__(self, *exc):
        del self.model.generate  # back to the class method


def greedy(model, tok, prompts, **kw):
    kw.setdefault("max_new_tokens", 6)
    return generate_responses(model, tok, prompts, do_sample=False, progress=False, **kw)


def test_batched_with_a_longer_prompt_gives_the_same_greedy_tokens(varied_model, tok):
    """The bug of an earlier prototype: generate without the attention mask let the short prompt
    attend to the left padding, so its output changed with the batch it was in."""
    with GenerateSpy(varied_model) as alone:
        text_alone = greedy(varied_model, tok, [SHORT])
    with GenerateSpy(varied_model) as batched:
        text_batched = greedy(varied_model, tok, [LONG, SHORT], batch_size=2)
    assert len(batched.calls) == 1
    call = batched.calls[0]
    mask = call["attention_mask"]
    # sorted by length: the short prompt is row 0, padded on the left and masked there
    n_short = alone.calls[0]["input_ids"].shape[1]
    assert mask[0].sum().item() == n_short and mask[0, 0].item() == 0 and mask[0, -1].item() == 1
    assert torch.equal(call["input_ids"][0, -n_short:], alone.calls[0]["input_ids"][0])
    assert call["new"][0].tolist() == alone.calls[0]["new"][0].tolist()
    assert text_batched[1] == text_alone[0] and text_alone[0] != ""
    assert text_batched[0] != text_batched[1]


def test_the_padding_check_detects_a_missing_attention_mask(varied_model, tok):
    """The comparison above can fail: without the mask the short prompt's tokens change."""
    alone = greedy(varied_model, tok, [SHORT])
    with GenerateSpy(varied_model, drop_mask=True):
        unmasked = greedy(varied_model, tok, [LONG, SHORT], batch_size=2)
    assert unmasked[1] != alone[0]


def test_order_is_preserved_across_length_sorted_batches(varied_model, tok):
    one_by_one = [greedy(varied_model, tok, [p])[0] for p in (MEDIUM, SHORT, SHORT2)]
    batched = greedy(varied_model, tok, [MEDIUM, SHORT, SHORT2, SHORT], batch_size=2)
    assert batched == one_by_one + [one_by_one[1]]
    assert len(set(one_by_one)) == 3


def test_long_prompts_keep_their_end(varied_model, tok):
    with GenerateSpy(varied_model) as spy:
        greedy(varied_model, tok, [LONG], max_prompt_tokens=16, max_new_tokens=2)
    ids = spy.calls[0]["input_ids"][0].tolist()
    full = tok(tok.apply_chat_template(LONG, tokenize=False, add_generation_prompt=True),
               add_special_tokens=False)["input_ids"]
    assert len(ids) == 16 and ids == full[-16:]
    assert tok.padding_side == "left" and tok.truncation_side == "right"  # restored afterwards


def test_sampling_is_reproducible_with_a_seed(varied_model, tok):
    kw = dict(max_new_tokens=4, temperature=1.0, top_p=1.0, progress=False)
    a = generate_responses(varied_model, tok, [SHORT, MEDIUM], seed=1, **kw)
    b = generate_responses(varied_model, tok, [SHORT, MEDIUM], seed=1, **kw)
    c = generate_responses(varied_model, tok, [SHORT, MEDIUM], seed=2, **kw)
    assert a == b and a != c


def test_cut_at_cap_is_true_only_for_rows_that_reach_the_cap_without_an_end_token(varied_model, tok):
    """return_cut: a row that writes an end token is not cut, one that fills max_new_tokens without one is."""
    kw = dict(max_new_tokens=4, do_sample=False, progress=False)
    texts, cut = generate_responses(varied_model, tok, [SHORT, MEDIUM], return_cut=True, **kw)
    assert texts == generate_responses(varied_model, tok, [SHORT, MEDIUM], **kw) and cut == [True, True]
    enc = tok(tok.apply_chat_template(SHORT, tokenize=False, add_generation_prompt=True), return_tensors="pt",
              add_special_tokens=False)
    first = int(varied_model.generate(**enc, max_new_tokens=1, do_sample=False, pad_token_id=tok.pad_token_id)[0, -1])
    medium = tok(tok.apply_chat_template(MEDIUM, tokenize=False, add_generation_prompt=True), return_tensors="pt",
                 add_special_tokens=False)
    out = varied_model.generate(**medium, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert first not in out[0, medium["input_ids"].shape[1]:].tolist()  # else this test could not tell them apart
    config = varied_model.generation_config
    saved = config.eos_token_id
    config.eos_token_id = [first, tok.eos_token_id]  # SHORT's greedy first token now ends its response
    try:
        _, cut = generate_responses(varied_model, tok, [SHORT, MEDIUM], return_cut=True, **kw)
    finally:
        config.eos_token_id = saved
    assert cut == [False, True]


def test_cut_summary_compares_with_the_real_responses(tok):
    from llmgan.generator import cut_summary, share_at_cap

    reals = ["a", "word " * 40]  # 1 token, and about 40: only the second reaches a cap of 10
    human = share_at_cap(reals, tok, 10)
    assert human == 0.5
    line = cut_summary([True, False, False, None], human, 10)
    assert "cut at the cap of 10 new tokens: 33.3% of the responses; 50.0% of the real responses" in line
    assert "unknown" in cut_summary([None], human, 10)


def test_write_rows(tmp_path):
    rows = [{"prompt": "p, with comma", "system": "", "real": "line1\nline2", "generated": "g \"q\""}]
    assert [json.loads(l) for l in write_rows(rows, tmp_path / "a.jsonl").read_text().splitlines()] == rows
    assert pd.read_csv(write_rows(rows, tmp_path / "sub" / "a.csv"), keep_default_na=False).to_dict("records") == rows
    with pytest.raises(LlmganError, match="must end in .jsonl or .csv"):
        write_rows(rows, tmp_path / "a.txt")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.csv", "a.jsonl", "sub"]  # no temp files


# ---------------------------------------------------------------------------------------------
# The command, on the tiny model


@pytest.fixture(scope="module")
def demo_ds(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "demo"
    prepare(PrepareOptions(inputs=[str(DEMO_FILE)], output=str(out), task="reply"))
    return out


def _generate(demo_ds, model, out, *extra) -> int:
    return main(["generate", str(demo_ds), "--model", str(model), "-o", str(out), "--max-new-tokens", "4",
                 "--quiet", *extra])


def test_output_rows_take_the_last_user_message_and_the_system_message():
    """The rows `llmgan generate` writes and the bench scripts build from kept draws (one builder for both)."""
    from llmgan.generator import output_rows

    convs = [[{"role": "system", "content": SYS}, {"role": "user", "content": "first"},
              {"role": "assistant", "content": "answer"}, {"role": "user", "content": "second"}],
             [{"role": "user", "content": "no system"}]]
    rows = output_rows(convs, ["r0", "r1"], ["g0", "g1"])
    assert rows == [{"prompt": "second", "system": SYS, "real": "r0", "generated": "g0"},
                    {"prompt": "no system", "system": "", "real": "r1", "generated": "g1"}]


def test_generate_jsonl_one_row_per_input_in_order(demo_ds, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "gen.jsonl"
    assert _generate(demo_ds, tiny_model_dir, out, "--split", "test") == 0
    test = load_prepared(demo_ds)["test"]
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(rows) == len(test) > 0
    assert all(list(r) == ["prompt", "system", "real", "generated", "cut_at_cap"] for r in rows)
    assert all(r["cut_at_cap"] in (True, False) for r in rows)
    assert [r["prompt"] for r in rows] == test["prompt_text"]
    assert [r["real"] for r in rows] == test["response"]
    assert {r["system"] for r in rows} == {SYS}
    assert all(isinstance(r["generated"], str) for r in rows) and any(r["generated"] for r in rows)
    printed = capsys.readouterr().out
    assert f"wrote {len(rows)} rows to {out}" in printed
    assert f"cut at the cap of 4 new tokens: {sum(r['cut_at_cap'] for r in rows) / len(rows):.1%}" in printed


def test_generate_csv_limit_offset_and_system_prompt(demo_ds, tiny_model_dir, tmp_path):
    out = tmp_path / "gen.csv"
    assert _generate(demo_ds, tiny_model_dir, out, "--split", "validation", "--limit", "3", "--offset", "2",
                     "--system-prompt", "Be rude.") == 0
    df = pd.read_csv(out, keep_default_na=False)
    val = load_prepared(demo_ds)["validation"]
    assert list(df.columns) == ["prompt", "system", "real", "generated", "cut_at_cap"]
    assert df["prompt"].tolist() == val["prompt_text"][2:5]
    assert df["real"].tolist() == val["response"][2:5]
    assert set(df["system"]) == {"Be rude."}


def test_generate_limit_past_the_end(demo_ds, tiny_model_dir, tmp_path):
    out = tmp_path / "gen.jsonl"
    n = len(load_prepared(demo_ds)["test"])
    assert _generate(demo_ds, tiny_model_dir, out, "--limit", "1000", "--offset", str(n - 2)) == 0
    assert len(out.read_text().splitlines()) == 2


@pytest.mark.parametrize("extra, message", [
    (["--offset", "-1"], "--offset >= 0"),  # used to end in a pyarrow OverflowError traceback
    (["--offset", "100000"], "no rows to generate"),  # used to end in an IndexError traceback
    (["--limit", "0"], "--limit >= 1"),
    (["--temperature", "0"], "--temperature > 0"),
])
def test_generate_bad_ranges_are_user_errors(demo_ds, tiny_model_dir, tmp_path, capsys, extra, message):
    assert _generate(demo_ds, tiny_model_dir, tmp_path / "gen.jsonl", *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_generate_with_the_default_model(demo_ds, tmp_path):
    out = tmp_path / "default.jsonl"
    assert main(["generate", str(demo_ds), "-o", str(out), "--limit", "2", "--max-new-tokens", "6", "--greedy",
                 "--quiet"]) == 0
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(rows) == 2 and all(r["generated"].strip() for r in rows)  # the real model answers in words


def test_generate_samples_a_run_model_as_trained(demo_ds, tiny_model_dir, tmp_path, capsys):
    """Without --max-new-tokens, a generator folder of a run that took its caps from the data
    (RUN/data_caps.json) is sampled with that run's cap; anything else gets 64."""
    import shutil

    from llmgan.generator import trained_max_new_tokens

    run = tmp_path / "run"
    model = run / "selected" / "generator"
    shutil.copytree(tiny_model_dir, model)
    assert trained_max_new_tokens(str(model)) is None  # a run with fixed caps
    assert trained_max_new_tokens("HuggingFaceTB/SmolLM2-135M-Instruct") is None and trained_max_new_tokens(None) is None
    (run / "data_caps.json").write_text(json.dumps({"cap_tokens": 2, "generation.max_new_tokens": 3}))
    assert trained_max_new_tokens(str(model)) == (3, (run / "data_caps.json").resolve())
    assert trained_max_new_tokens(str(run / "selected")) == (3, (run / "data_caps.json").resolve())

    def gen(out, *extra):
        assert main(["generate", str(demo_ds), "--model", str(model), "-o", str(out), "--limit", "3", "--quiet",
                     "--seed", "1", *extra]) == 0
        return [json.loads(l)["generated"] for l in out.read_text().splitlines()]

    capsys.readouterr()
    as_trained = gen(tmp_path / "a.jsonl")
    assert f"--max-new-tokens 3: as trained ({(run / 'data_caps.json').resolve()})" in capsys.readouterr().out
    assert as_trained == gen(tmp_path / "b.jsonl", "--max-new-tokens", "3")
    (run / "data_caps.json").unlink()
    assert gen(tmp_path / "c.jsonl") == gen(tmp_path / "d.jsonl", "--max-new-tokens", "64") != as_trained


def test_kept_samples_read_back_with_line_separators_inside(tmp_path):
    """Posts hold U+2028 and U+0085, which json.dumps(ensure_ascii=False) writes raw and str.splitlines splits
    on: the kept samples (the warm-up pool, the --best-of draws) must still read back, not be sampled again."""
    from llmgan.generator import read_back_samples, write_samples

    texts = ["one\u2028two", "three\x85four", "plain"]
    prompts = [[{"role": "user", "content": f"p{i}\u2029"}] for i in range(3)]
    reals = ["r\u2028", "s", "t"]
    path = write_samples(tmp_path / "kept.jsonl", prompts, reals, texts, {"seed": 1})
    assert read_back_samples(path, prompts, reals, {"seed": 1}) == texts
    assert read_back_samples(path, prompts, reals, {"seed": 1}, with_cut=True) == (texts, [None] * 3)
    assert read_back_samples(path, prompts, reals, {"seed": 2}) is None
    path = write_samples(tmp_path / "kept.jsonl", prompts, reals, texts, {"seed": 1}, cut=[True, False, True])
    assert read_back_samples(path, prompts, reals, {"seed": 1}, with_cut=True) == (texts, [True, False, True])


# ---------------------------------------------------------------------------------------------
# --end-ramp: the end token's log-odds raised near the cap


def test_end_ramp_bias_hand_computed():
    from llmgan.generator import end_ramp_bias

    # a ramp from new token 54 to a cap of 71 new tokens: 17 steps of 8/17
    assert end_ramp_bias(0, 54, 71) == 0.0 and end_ramp_bias(53, 54, 71) == 0.0
    assert end_ramp_bias(54, 54, 71) == pytest.approx(8 / 17)
    assert end_ramp_bias(60, 54, 71) == pytest.approx(8 * 7 / 17)
    assert end_ramp_bias(70, 54, 71) == pytest.approx(8.0)  # the last allowed token
    assert end_ramp_bias(3, 2, 4, bias=2.0) == pytest.approx(2.0) and end_ramp_bias(2, 2, 4, bias=2.0) == 1.0
    assert end_ramp_bias(10, 5, 5) == 0.0  # no room for a ramp


def test_end_ramp_processor_raises_only_the_end_tokens_and_only_in_the_ramp():
    from llmgan.generator import EndRamp, end_ramp_bias

    scores = torch.zeros(2, 6)
    ramp = EndRamp(prompt_len=3, start=2, max_new_tokens=5, end_ids=[4, -1])
    before = ramp(torch.zeros(2, 3 + 1, dtype=torch.long), scores)  # 1 new token so far: before the ramp
    assert torch.equal(before, scores)
    inside = ramp(torch.zeros(2, 3 + 3, dtype=torch.long), scores)  # 3 new tokens: choosing the 4th
    expected = torch.zeros(2, 6)
    expected[:, 4] = end_ramp_bias(3, 2, 5)
    assert torch.allclose(inside, expected) and expected[0, 4] > 0
    assert torch.equal(scores, torch.zeros(2, 6))  # the caller's scores are not changed in place


def test_end_ramp_ends_texts_that_would_reach_the_cap(varied_model, tok, monkeypatch):
    """A ramp from the first new token, made steep, ends every text before a cap that all reach without it."""
    import llmgan.generator as generator

    kw = dict(max_new_tokens=6, temperature=1.0, top_p=1.0, seed=0, progress=False, return_cut=True)
    _, plain = generate_responses(varied_model, tok, [SHORT, MEDIUM, LONG], **kw)
    assert plain == [True, True, True]
    monkeypatch.setattr(generator, "END_RAMP_BIAS", 60.0)
    texts, cut = generate_responses(varied_model, tok, [SHORT, MEDIUM, LONG], end_ramp=0, **kw)
    assert cut == [False, False, False] and len(texts) == 3


def test_resolve_end_ramp(tmp_path):
    from llmgan.generator import resolve_end_ramp

    assert resolve_end_ramp("off", None, 71) is None and resolve_end_ramp(None, None, 71) is None
    assert resolve_end_ramp("12", None, 71) == 12
    with pytest.raises(LlmganError, match=r"auto: needs --model to be a generator folder.*data_caps.json"):
        resolve_end_ramp("auto", None, 71)
    with pytest.raises(LlmganError, match="before the cap"):
        resolve_end_ramp("71", None, 71)
    with pytest.raises(LlmganError, match="off, auto, or a number"):
        resolve_end_ramp("soon", None, 71)
    model = tmp_path / "run" / "sft" / "final" / "generator"
    model.mkdir(parents=True)
    (tmp_path / "run" / "sft" / "data_caps.json").write_text(json.dumps(
        {"generation.max_new_tokens": 71, "response_tokens_percentiles": {"75": 54.0, "90": 64.0}}))
    assert resolve_end_ramp("auto", str(model), 71) == 54
