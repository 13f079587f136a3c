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
