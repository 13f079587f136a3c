"""The maths of the bench probes that RESULTS.md reads (bench/ scripts are not a package: loaded by path)."""

import importlib.util
import math
from collections import Counter
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_unigram_bias_hand_computed():
    bias = load("unigram_bias").unigram_bias
    real, gen = Counter({1: 9, 2: 1}), Counter({1: 3, 2: 7, 3: 2})
    # min count 2 keeps ids 1, 2, 3; add-one over 3 ids: p_real = (c + 1) / 13, p_gen = (c + 1) / 15
    got = bias(real, gen, min_count=2, clip=5.0)
    assert got[1] == pytest.approx(math.log(10 / 13) - math.log(4 / 15))   # +1.06: written too rarely, raised
    assert got[2] == pytest.approx(math.log(2 / 13) - math.log(8 / 15))    # -1.24: written too often, lowered
    assert got[3] == pytest.approx(math.log(1 / 13) - math.log(3 / 15))    # -0.96
    clipped = bias(real, gen, min_count=2, clip=1.0)
    assert clipped[1] == 1.0 and clipped[2] == -1.0 and clipped[3] == pytest.approx(got[3])
    # ids seen fewer than min_count times in both together get no bias at all
    assert set(bias(real, gen, min_count=10, clip=1.0)) == {1}


def test_surface_shares_read_the_last_character_and_whole_words(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # surface_gap imports its sibling surface_teacher
    gap = load("surface_gap")
    assert [gap.last_mark(t) for t in ("Done. ", "Why?", "word", "ok 🇺🇸", "(x)", "")] == \
        [".", "!?", "word", "emoji/symbol", "other", "other"]
    assert gap.SHARES["I"]("I said") and not gap.SHARES["I"]("Iowa") and not gap.SHARES["my"]("myth")
    path = tmp_path / "draw.jsonl"
    path.write_text('{"real": "@a hi.", "generated": "my day"}\n{"real": "no", "generated": "I am."}\n')
    gap.print_shares([path])
    real, gen = capsys.readouterr().out.splitlines()[1:]
    assert real.startswith("2 | 50.0 % |") and real.endswith("| real")          # one of two real texts has an @
    assert gen.split(" | ")[5:7] == ["50.0 %", "50.0 %"]                          # " I " and " my ": one text each


def test_extrapolate_hand_computed():
    import torch

    extrapolate = load("extrapolate").extrapolate
    base = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor([3])}
    tuned = {"w": torch.tensor([2.0, 1.0]), "n": torch.tensor([4])}
    # base + 1.5 * (tuned - base) = [1 + 1.5, 2 - 1.5]; integer buffers are the tuned model's
    got = extrapolate(base, tuned, 0.5)
    assert torch.equal(got["w"], torch.tensor([2.5, 0.5])) and torch.equal(got["n"], torch.tensor([4]))
    assert torch.equal(extrapolate(base, tuned, 0.0)["w"], tuned["w"])    # alpha 0: the SFT model itself
    assert torch.equal(extrapolate(base, tuned, -1.0)["w"], base["w"])    # alpha -1: the start model
    half = extrapolate({"w": base["w"].half()}, {"w": tuned["w"].half()}, 1.0)["w"]
    assert half.dtype == torch.float16 and torch.equal(half.float(), torch.tensor([3.0, 0.0]))
    with pytest.raises(ValueError, match="differ in 1 tensors, e.g. n"):
        extrapolate({"w": base["w"]}, tuned, 0.5)
    with pytest.raises(ValueError, match=r"w: shape \(2,\) in the base, \(3,\)"):
        extrapolate(base, {"w": torch.zeros(3), "n": tuned["n"]}, 0.5)


def test_extrapolate_script_writes_the_model_past_a_lora_adapter(tmp_path, tiny_model_dir):
    """The command as RESULTS.md runs it, on a tiny random adapter: the written model is base + 2 x (SFT - base)."""
    import subprocess
    import sys

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from llmgan.models import load_model

    torch.manual_seed(1)
    adapter = tmp_path / "generator"
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                   LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
                   ).save_pretrained(adapter)
    script = [sys.executable, str(BENCH / "extrapolate.py")]
    done = subprocess.run(script + ["--model", str(adapter), "--alpha", "1.0", "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    base, sft = load_model(str(tiny_model_dir)).state_dict(), load_model(str(adapter)).state_dict()
    out = load_model(str(tmp_path / "out")).state_dict()
    key = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(sft[key], base[key])  # the adapter moved it, so the check below can fail
    assert torch.allclose(out[key], base[key] + 2 * (sft[key] - base[key]), atol=1e-5)
    again = subprocess.run(script + ["--model", str(adapter), "--alpha", "1.0", "-o", str(tmp_path / "out")],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode != 0 and "is not empty" in again.stderr
    full = subprocess.run(script + ["--model", str(tiny_model_dir), "--alpha", "1.0", "-o", str(tmp_path / "o2")],
                          capture_output=True, text=True, timeout=300)
    assert full.returncode != 0 and "--base" in full.stderr
    other = subprocess.run(script + ["--model", str(adapter), "--base", str(tmp_path), "--alpha", "1.0",
                                     "-o", str(tmp_path / "o3")], capture_output=True, text=True, timeout=300)
    assert other.returncode != 0 and "is not the base the adapter" in other.stderr and not (tmp_path / "o3").exists()


def test_control_codes_hand_computed_and_round_trip(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # control_codes imports its siblings surface_gap and surface_teacher
    cc = load("control_codes")
    # word counts 1..9: the 33.3rd and 66.7th percentiles (linear) are 11/3 and 19/3
    cuts = cc.length_cuts([" ".join(["w"] * n) for n in range(1, 10)])
    assert cuts == pytest.approx((11 / 3, 19 / 3))
    got = cc.codes_of("Hi @bob #tag 🇺🇸\nok", cuts)   # 4 words: medium
    assert got == {"mention": True, "hashtag": True, "emoji": False, "line break": True, "length": "medium"}
    assert cc.codes_of("mail a@b.c 😀 # x", (1, 2))["emoji"] and cc.codes_of("a @ b", (1, 2))["mention"] is False
    assert cc.codes_of("one two three", cuts)["length"] == "short" and cc.codes_of("w " * 7, cuts)["length"] == "long"
    line = cc.style_line(got)
    assert line == " Style: with an @-mention, with a hashtag, without emoji, with line breaks, medium."
    assert cc.parse_style("You are a user." + line) == got
    with pytest.raises(ValueError, match="no 'Style"):
        cc.parse_style("You are a user.")
    msgs = [{"role": "user", "content": "topic"}]
    styled = cc.with_style(msgs, got)
    assert styled[0] == {"role": "system", "content": line.strip()} and styled[1] == msgs[0] and len(msgs) == 1


def test_control_codes_prepare_keeps_topics_and_draws_other_splits_from_train(tmp_path, monkeypatch):
    import json

    from datasets import Dataset, DatasetDict

    monkeypatch.syspath_prepend(str(BENCH))
    cc = load("control_codes")
    sys_msg = {"role": "system", "content": "Write a post."}

    def split(responses):
        return Dataset.from_dict({"prompt": [[sys_msg, {"role": "user", "content": f"t{i}"}] for i in range(len(responses))],
                                  "response": responses})

    train = ["@a hello there", "plain words only here", "#tag and more words"]
    src = tmp_path / "src"
    DatasetDict({"train": split(train), "validation": split(["x"] * 40)}).save_to_disk(str(src))
    (src / "llmgan_card.json").write_text(json.dumps({"task": "post"}))
    added = cc.prepare(src, tmp_path / "cc", seed=0)
    assert added["train_shares"]["mention"] == pytest.approx(1 / 3)
    card = json.loads((tmp_path / "cc" / "llmgan_card.json").read_text())
    assert card["task"] == "post" and card["control_codes"]["seed"] == 0
    from datasets import load_from_disk

    out = load_from_disk(str(tmp_path / "cc"))
    cuts = cc.length_cuts(train)
    for row, text in zip(out["train"], train):   # train rows: their own codes; the topic unchanged
        assert cc.parse_style(row["prompt"][0]["content"]) == cc.codes_of(text, cuts)
        assert row["prompt"][0]["content"].startswith("Write a post. Style: ") and row["response"] == text
    train_codes = [cc.codes_of(t, cuts) for t in train]
    val = [cc.parse_style(r["prompt"][0]["content"]) for r in out["validation"]]
    assert all(v in train_codes for v in val)   # not the validation response's own codes ("x": no mention, short)
    assert len({json.dumps(v, sort_keys=True) for v in val}) == 3   # 40 draws from 3 rows reach all of them
    assert [r["prompt"][1]["content"] for r in out["validation"]] == [f"t{i}" for i in range(40)]


def test_control_codes_adherence_counts_drafts_by_what_they_were_asked(tmp_path, monkeypatch):
    import json

    monkeypatch.syspath_prepend(str(BENCH))
    cc = load("control_codes")
    on = {"mention": True, "hashtag": False, "emoji": False, "line break": False, "length": "short"}
    off = dict(on, mention=False)
    rows = [("S." + cc.style_line(on), "@x hi", "real @y"), ("S." + cc.style_line(on), "hi\u2028", "real"),
            ("S." + cc.style_line(off), "@z a b c", "real")]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"system": s, "generated": g, "real": r}, ensure_ascii=False) + "\n"
                            for s, g, r in rows), encoding="utf-8")   # U+2028 written raw, as generate writes it
    got = {r["code"]: r for r in cc.adherence([path])}
    assert got["mention"]["asked"] == 2 and got["mention"]["share_if_asked"] == 0.5
    assert got["mention"]["share_if_not"] == 1.0 and got["mention"]["share_real"] == pytest.approx(1 / 3)
    assert got["length short"]["asked"] == 3 and got["length short"]["mean_words"] == pytest.approx(7 / 3)  # 2, 1 and 4 words
    assert got["length long"]["mean_words"] is None


def test_calibrated_temperature_crossing_hand_computed(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # calibrate_temperature imports its siblings
    cal = load("calibrate_temperature")
    # drafts -3.0 at 0.8, -3.4 at 0.9, -3.8 at 1.0; real -3.1: a quarter of the way from 0.8 to 0.9
    assert cal.crossing([1.0, 0.8, 0.9], [-3.8, -3.0, -3.4], -3.1) == pytest.approx(0.825)
    assert cal.crossing([0.8, 0.9], [-3.0, -3.4], -3.4) == 0.9  # met exactly at the last temperature
    assert cal.crossing([0.8, 0.9, 1.0], [-3.0, -3.4, -3.8], -2.9) is None  # not bracketed
    assert cal.parse_draw("0.9=out/a.jsonl") == (0.9, Path("out/a.jsonl"))
    with pytest.raises(Exception, match="TEMPERATURE=FILE, got 'out/a.jsonl'"):
        cal.parse_draw("out/a.jsonl")


def test_calibrate_temperature_script_scores_drafts_and_real_texts(tmp_path, tiny_model_dir, monkeypatch):
    """The command as RESULTS.md runs it, on a tiny random model and hand-written drafts: the summary's values are
    the likelihood scorer's; drafts equal to the real texts at T = 0.5 give T* = 0.5; two temperatures with the
    same drafts bracket nothing, and the script exits 1 and says so."""
    import json
    import subprocess
    import sys

    monkeypatch.syspath_prepend(str(BENCH))  # the scripts import their siblings
    lr = load("likelihood_ranker")
    from llmgan.models import load_model, load_tokenizer

    prompts = [[{"role": "user", "content": f"topic {i}"}] for i in range(3)]
    real = ["a real post", "another real post here", "ok"]
    texts = {"real": real, "odd": ["zq xv 9 ##", "}} {{ ~~ ^^", "@@ ¤ §"]}
    files = {}
    for name, gen in texts.items():
        files[name] = tmp_path / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps({"prompt": p, "real": r, "generated": g}) + "\n"
                                       for p, r, g in zip(prompts, real, gen)), encoding="utf-8")

    def run(out, *draws):
        done = subprocess.run([sys.executable, str(BENCH / "calibrate_temperature.py"), "--model", str(tiny_model_dir),
                               "--draws", *draws, "-o", str(tmp_path / out)], capture_output=True, text=True, timeout=300)
        return done, json.loads((tmp_path / out / "summary.json").read_text())

    done, summary = run("a", f"0.5={files['real']}", f"1.5={files['odd']}")
    assert done.returncode == 0, done.stderr[-2000:]
    model, tok = load_model(str(tiny_model_dir)), load_tokenizer(str(tiny_model_dir), padding_side="right")
    heads = lr.prompt_ids(tok, prompts)
    odd = sum(lr.mean_logprobs(model, tok, heads, texts["odd"])) / 3
    assert summary["real_mean_logprob"] == pytest.approx(sum(lr.mean_logprobs(model, tok, heads, real)) / 3, abs=1e-5)
    assert summary["per_temperature"]["1.5"]["mean_logprob"] == pytest.approx(odd, abs=1e-5)
    assert summary["per_temperature"]["1.5"]["cut_at_cap"] is None  # the hand-written rows do not record it
    assert summary["real_mean_logprob"] != pytest.approx(odd, abs=1e-3)  # so the run below brackets nothing
    assert summary["temperature"] == 0.5 and "calibrated temperature 0.50" in done.stdout
    done, summary = run("b", f"0.5={files['odd']}", f"1.0={files['odd']}")
    assert done.returncode == 1 and "is not between" in done.stdout and summary["temperature"] is None


def test_vocab_mask_suppresses_the_ids_no_text_uses(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # vocab_mask imports its sibling unigram_bias

    class Tok:  # encodes each character as its code point minus 97 ("a" -> 0)
        def __call__(self, texts, add_special_tokens=False):
            return {"input_ids": [[ord(c) - 97 for c in t] for t in texts]}

    suppressed = load("vocab_mask").suppressed_ids
    # the texts use ids 0, 1, 3 ("a", "b", "d"); 6 is kept (an end token); ids 0-7 exist
    assert suppressed(["ab", "da"], Tok(), keep=[6], vocab_size=8) == [2, 4, 5, 7]
    assert suppressed([], Tok(), keep=[], vocab_size=3) == [0, 1, 2]
    outside = load("vocab_mask").outside_data
    # 5 tokens, 2 of them banned ("c" = 2, "e" = 4); one text of two has a character outside {a, b, c}
    assert outside(["abc", "ae"], Tok(), banned={2, 4}, chars={"a", "b", "c"}) == (pytest.approx(2 / 5), 0.5)
    assert outside([], Tok(), banned={1}, chars=set()) == (0.0, 0.0)
    kinds = load("vocab_mask").new_characters(["aЖж\ufffd", "b?"], chars={"a", "b", "?"})
    assert kinds == {"CYRILLIC": 2, "REPLACEMENT": 1}


def test_vocab_mask_script_writes_only_what_the_training_responses_use(tmp_path, tiny_model_dir, demo_data):
    """The command as RESULTS.md runs it, on a tiny random model: every character of every draw but U+FFFD occurs in
    the train split's responses (a random model over the whole vocabulary writes foreign characters at once), the
    suppressed ids are exactly those the train responses' encoding lacks less the end and special tokens, `report`
    reads the draws back, and a run that would take its vocabulary from the split it samples is refused."""
    import json
    import subprocess
    import sys

    from llmgan.data import load_prepared
    from llmgan.generator import end_token_ids
    from llmgan.models import load_model, load_tokenizer

    def run(*extra):
        return subprocess.run([sys.executable, str(BENCH / "vocab_mask.py"), str(demo_data), "--split", "validation",
                               "--limit", "6", "--model", str(tiny_model_dir), "--n", "2", "--seed", "3",
                               "--max-new-tokens", "24", "--quiet", "-o", str(tmp_path / "out"), *extra],
                              capture_output=True, text=True, timeout=300)

    done = run()
    assert done.returncode == 0, done.stderr[-2000:]
    train = list(load_prepared(demo_data)["train"]["response"])
    chars = {c for t in train for c in t}
    vocab = json.loads((tmp_path / "out" / "vocab.json").read_text())
    tok = load_tokenizer(str(tiny_model_dir))
    used = {i for ids in tok(train, add_special_tokens=False)["input_ids"] for i in ids}
    keep = set(end_token_ids(load_model(str(tiny_model_dir)), tok)) | set(tok.all_special_ids)
    assert vocab["suppressed_ids"] == sorted(set(range(len(tok))) - used - keep)
    assert vocab["allowed"] + vocab["suppressed"] == vocab["vocab_size"] == len(tok)
    drafts = [json.loads(line)["generated"] for k in range(2)
              for line in (tmp_path / "out" / f"draw-{k}.jsonl").read_text(encoding="utf-8").split("\n") if line]
    assert len(drafts) == 12 and sum(map(len, drafts)) > 24
    # byte pieces the data uses can still join into a byte sequence no character has (U+FFFD); nothing else is new
    assert {c for d in drafts for c in d} - {"\ufffd"} <= chars
    shown = subprocess.run([sys.executable, str(BENCH / "vocab_mask.py"), "report", str(demo_data), "--model",
                            str(tiny_model_dir), str(tmp_path / "out" / "draw-0.jsonl")],
                           capture_output=True, text=True, timeout=300)
    lines = shown.stdout.split("\n")
    assert shown.returncode == 0 and lines[2].startswith(f"{tmp_path / 'out' / 'draw-0.jsonl'} | ")
    assert lines[3].startswith("    generated, characters outside the data by kind: ")
    refused = run("--vocab-split", "validation")
    assert refused.returncode != 0 and "another split" in refused.stderr


def test_headline_table_has_a_column_for_the_teachers_mean_pick(tmp_path):
    """bench/headline.py's table: one column per plain draw, per teacher's pick and for the pick of their mean
    logit, each with its paired difference and the share of its rows stopped at the cap."""
    import json

    headline = load("headline")
    work, n = tmp_path, 2
    human = {"n_pairs": 4, "human_detector_auroc_max": 0.5, "human_mean_words": 10.0, "human_length_wasserstein": 0.5,
             "human_distinct_2": 0.9, "human_self_bleu": 0.1,
             **{f"human_detector_auroc_{d}": 0.5 for d in ("minilm_lr", "ngram_lr", "finetuned")}}
    names = ["draw-0", "draw-1", "best-2-t0", "best-2-t1", "best-2-mean"]
    systems = {nm: {**human, "detector_auroc_max": 0.6 + i / 100, "detector_auroc_max_detector": "ngram_lr",
                    "relevance_cosine": 0.15, "mean_words": 10.0, "length_wasserstein": 1.0, "distinct_2": 0.9,
                    "self_bleu": 0.1, **{f"detector_auroc_{d}": 0.6 for d in ("minilm_lr", "ngram_lr", "finetuned")}}
               for i, nm in enumerate(names)}
    diffs = [{"system": nm, "detector": "max", "difference": -0.05 - i / 100, "low": -0.1, "high": -0.01}
             for i, nm in enumerate(names[2:])]
    (work / "judge").mkdir()
    (work / "judge" / "comparison.json").write_text(json.dumps({"systems": systems,
                                                                "detector_auroc_difference_vs_first": diffs}))
    (work / "rank").mkdir()
    (work / f"best-{n}.jsonl.draws").mkdir()
    for nm, cut in zip(names, ([True, False], [False, False], [True, True], [False, True], [False, False])):
        folder = work / (f"best-{n}.jsonl.draws" if nm.startswith("draw") else "rank")
        (folder / f"{nm}.jsonl").write_text("".join(json.dumps({"generated": "x", "cut_at_cap": c}) + "\n"
                                                    for c in cut))
    table = headline.headline_table(work, [0, 1], n, with_base=False)
    header = [line for line in table.splitlines() if line.startswith("| |")][0]
    assert header.endswith("| teacher 0: best of 2 | teacher 1: best of 2 | mean of the 2 teachers: best of 2 |")
    paired = [line for line in table.splitlines() if line.startswith("| paired")][0]
    assert paired.rstrip(" |").endswith("-0.070 (-0.100, -0.010)")  # the mean's pick, last column
    cut = [line for line in table.splitlines() if line.startswith("| stopped")][0]
    assert cut.split(" | ")[2:] == ["50.0 %", "0.0 %", "100.0 %", "50.0 %", "0.0 % |"]
