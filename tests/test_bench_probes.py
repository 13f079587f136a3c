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
