"""Per-text control codes for posts: SFT on prompts that state each real post's surface attributes, sampling with
attributes drawn from the training split (issue 14, a probe on validation; nothing in the recipe uses it).

Why: the post drafts carry @-mentions, hashtags and emoji in fewer texts than the real posts (RESULTS.md, "A unigram
correction at sampling time": on post validation an @-mention in 9.6 % of a plain SFT draw against 19.6 % of the real
posts, an emoji in 5.6 % against 10.4 %). In the samples these tokens are about as frequent as in the real posts but
cluster in fewer texts, which a per-token bias cannot undo. Conditioning each text on its attributes (CTRL-style
control codes, arXiv 1909.05858) sets the share of texts per attribute instead: the model learns to follow the codes
in SFT, and at sampling time each topic gets the codes of a random training row, so the shares follow the training
split's joint distribution. No validation or test response is read to assign codes.

  prepare   read a folder of `llmgan prepare` and write a copy whose prompts carry the codes in the system message
            (the user message, the topic, is unchanged, so `llmgan generate` writes the same `prompt` and `real`
            as for the plain data, and `llmgan evaluate --compare` pairs the two). Train rows get their own codes;
            every other split gets those of a training row drawn at random (--seed). Then run `llmgan sft` and
            `llmgan generate` on the new folder as on any prepared data.
  adherence per code, the share of drafts that have the attribute when asked with it and when asked without it
            (read from the `system` field of `llmgan generate`'s rows), beside the real posts' share.

The codes of a text: an @-mention (@ then a word character), a hashtag (# then a word character), an emoji (the
class of bench/surface_gap.py), a line break, and its length in words (whitespace split): short up to the training
split's 33.3rd percentile, long past its 66.7th, else medium.

Examples (the twenty-eighth session, RESULTS.md):
  python bench/control_codes.py prepare data/right-post -o data/right-post-cc
  llmgan sft --config configs/twon-post.yaml data.path=data/right-post-cc train.output_dir=runs/r38-post-cc-sft
  llmgan generate data/right-post-cc --split validation --limit 250 --model runs/r38-post-cc-sft/final/generator \\
      --seed 1100 --temperature 1.0 --top-p 1.0 --max-new-tokens 71 -o out/r38/post-val-cc-d0.jsonl
  python bench/control_codes.py adherence out/r38/post-val-cc-d{0,1,2,3}.jsonl
`prepare` takes seconds on one CPU; SFT and sampling run as `llmgan sft` and `llmgan generate` do (one GPU: their
--device / the config's device).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
from surface_gap import EMOJI  # the emoji class the surface shares count (a sibling script, stdlib only)
from surface_teacher import read_jsonl  # split on "\n" only: texts may hold U+2028, which splitlines() splits on

CODES = ("mention", "hashtag", "emoji", "line break")
TESTS = {"mention": lambda t: bool(re.search(r"@\w", t)), "hashtag": lambda t: bool(re.search(r"#\w", t)),
         "emoji": lambda t: bool(EMOJI.search(t)), "line break": lambda t: "\n" in t}
PHRASE = {"mention": "an @-mention", "hashtag": "a hashtag", "emoji": "emoji", "line break": "line breaks"}
STYLE = re.compile(r" Style: (.*)\.$")


def length_cuts(texts: list[str]) -> tuple[float, float]:
    """The 33.3rd and 66.7th percentiles of the texts' word counts (whitespace split)."""
    words = [len(t.split()) for t in texts]
    return float(np.percentile(words, 100 / 3)), float(np.percentile(words, 200 / 3))


def codes_of(text: str, cuts: tuple[float, float]) -> dict:
    """A text's codes: {code: bool for each of CODES, "length": "short" | "medium" | "long"}."""
    n = len(text.split())
    length = "short" if n <= cuts[0] else "long" if n > cuts[1] else "medium"
    return {**{c: TESTS[c](text) for c in CODES}, "length": length}


def style_line(codes: dict) -> str:
    """The sentence appended to the system message, e.g. " Style: with an @-mention, without a hashtag, ..., short."."""
    parts = [("with " if codes[c] else "without ") + PHRASE[c] for c in CODES]
    return " Style: " + ", ".join(parts + [codes["length"]]) + "."


def parse_style(system: str) -> dict:
    """The codes back from a system message written by `style_line`; raises ValueError when it has none."""
    m = STYLE.search(system)
    if not m:
        raise ValueError(f"no 'Style: ...' sentence at the end of the system message {system[-80:]!r}")
    parts = m.group(1).split(", ")
    return {**{c: p.startswith("with ") for c, p in zip(CODES, parts)}, "length": parts[-1]}


def with_style(messages: list[dict], codes: dict) -> list[dict]:
    """The chat messages with the codes appended to the system message (one is added when there is none)."""
    out = [dict(m) for m in messages]
    if not out or out[0]["role"] != "system":
        out.insert(0, {"role": "system", "content": ""})
    out[0]["content"] = (out[0]["content"] + style_line(codes)).lstrip()
    return out


def prepare(src: Path, out: Path, seed: int) -> dict:
    """Write the coded copy of a prepared folder; returns what was added to its card."""
    from llmgan.data import CARD_NAME, load_prepared
    from llmgan.io import atomic_dir

    ds = load_prepared(src)
    if "train" not in ds:
        raise SystemExit(f"{src} has no train split: the codes of other splits are drawn from it")
    cuts = length_cuts(list(ds["train"]["response"]))
    train_codes = [codes_of(t, cuts) for t in ds["train"]["response"]]
    rng = np.random.default_rng(seed)
    coded = {}
    for name, split in ds.items():
        if name == "train":
            codes = train_codes
        else:
            codes = [train_codes[i] for i in rng.integers(0, len(train_codes), size=len(split))]
        prompts = [with_style(m, c) for m, c in zip(split["prompt"], codes)]
        coded[name] = split.remove_columns("prompt").add_column("prompt", prompts)
    from datasets import DatasetDict

    card = json.loads((src / CARD_NAME).read_text()) if (src / CARD_NAME).is_file() else {}
    added = {"from": str(src), "length_cuts_words": list(cuts), "seed": seed, "codes": list(CODES) + ["length"],
             "train_shares": {c: float(np.mean([k[c] for k in train_codes])) for c in CODES},
             "note": "train rows carry their own codes; other splits the codes of a random training row"}
    card["control_codes"] = added
    with atomic_dir(out) as tmp:
        DatasetDict(coded).save_to_disk(str(tmp))
        (tmp / CARD_NAME).write_text(json.dumps(card, indent=2, ensure_ascii=False))
    return added


def adherence(paths: list[Path]) -> list[dict]:
    """Per file and code: share of drafts with the attribute when asked with it / without it; the real shares."""
    rows = []
    for p in paths:
        data = read_jsonl(p)
        asked = [parse_style(r["system"]) for r in data]
        gen = [r["generated"] for r in data]
        for c in CODES:
            on = [TESTS[c](g) for g, a in zip(gen, asked) if a[c]]
            off = [TESTS[c](g) for g, a in zip(gen, asked) if not a[c]]
            rows.append({"file": str(p), "code": c, "asked": len(on), "share_if_asked": float(np.mean(on)) if on else None,
                         "share_if_not": float(np.mean(off)) if off else None,
                         "share_generated": float(np.mean([TESTS[c](g) for g in gen])),
                         "share_real": float(np.mean([TESTS[c](r["real"]) for r in data]))})
        for size in ("short", "medium", "long"):
            words = [len(g.split()) for g, a in zip(gen, asked) if a["length"] == size]
            rows.append({"file": str(p), "code": f"length {size}", "asked": len(words),
                         "mean_words": float(np.mean(words)) if words else None})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("prepare", help="write a copy of a prepared folder with control codes in the system message")
    a.add_argument("data", type=Path, help="a folder written by `llmgan prepare`")
    a.add_argument("-o", "--output", type=Path, required=True, help="the new folder (must not exist or be empty)")
    a.add_argument("--seed", type=int, default=0, help="seed of the codes drawn for non-train splits (default 0)")
    b = sub.add_parser("adherence", help="how often drafts follow their codes (files of `llmgan generate`)")
    b.add_argument("files", type=Path, nargs="+")
    args = p.parse_args(argv)
    if args.cmd == "prepare":
        if args.output.exists() and any(args.output.iterdir()):
            raise SystemExit(f"{args.output} exists and is not empty; choose a new folder")
        added = prepare(args.data, args.output, args.seed)
        print(json.dumps(added, indent=2))
        return 0
    for r in adherence(args.files):
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
