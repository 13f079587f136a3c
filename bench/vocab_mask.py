"""Sampling restricted to the tokens the training responses use: do the SFT model's drafts get harder to detect when
it may write only token ids that occur in the data? (issue 14, a probe on validation; nothing in the recipe uses it)

Why: on post validation the plain SFT drafts write tokens that no training post uses at twice the real posts' rate
(3.0 % of tokens against 1.5 %), and carry a character no training post has (emoji absent from the data, Cyrillic or
Hebrew letters inside English words, U+FFFD) in 3.6-7.6 % of drafts against 0.8 % of real posts. Top-p and a lower
temperature cut the tail by the model's own probability, and take the rare marks the data does use (its emoji,
@-mentions, odd punctuation) with it: MiniLM then finds the drafts harder to detect and the cased n-gram detector
easier (RESULTS.md, seventeenth and twenty-ninth sessions). This cuts by the data instead: every id in the
tokenizer's encoding of the train split's responses stays allowed at the model's own probability, however rare;
every other id gets a logit of -inf at every step (transformers' `suppress_tokens`), except the end tokens and the
tokenizer's special tokens. No number is chosen: an id is allowed when it occurs at least once. Byte pieces of
characters the data uses stay allowed, so a draw can still join pieces of two characters into a byte sequence that is
no character (decoded as U+FFFD), more rarely than without the mask.

It is the hard limit of bench/unigram_bias.py's correction (a real-to-generated log-ratio per id): ids the real
responses never use get -inf, all others 0.

  python bench/vocab_mask.py data/right-post --split validation --limit 250 \\
      --model runs/r37-post-sft/final/generator --n 4 --seed 1100 --max-new-tokens 71 -o out/r40/post-val-mask.draws

`report` samples nothing: for each JSONL file of (real, generated) rows it prints the share of tokens outside the
allowed ids and the share of texts with a character no train response has, for the generated and the real texts, and
what kinds of characters those are in the generated texts (the figures behind the "Why" above):

  python bench/vocab_mask.py report data/right-post --model runs/r37-post-sft/final/generator \\
      out/r37/post-val-sft-d0.jsonl out/r40/post-val-mask.draws/draw-0.jsonl

Sampling writes OUT/vocab.json (the allowed and suppressed counts, the suppressed ids) and OUT/draw-k.jsonl in the
format of `llmgan generate --best-of`'s draws folder; rank them with bench/teacher_ensemble.py and judge them with
`llmgan evaluate --compare`. The vocabulary comes from --vocab-split (train) of the same prepared folder, never from
the split that is sampled. One CPU as above (about 3.8 min a draw of 250 topics on the 2-core machine, the 135M
model); one GPU: --device cuda. An interrupted run keeps the finished draws and samples only the rest when run again.
"""

from __future__ import annotations

import argparse
import sys
import unicodedata
from collections import Counter
from pathlib import Path

from surface_teacher import read_jsonl
from unigram_bias import add_sample_arguments, sample_draws


def suppressed_ids(texts: list[str], tokenizer, keep: list[int], vocab_size: int) -> list[int]:
    """Ids in [0, vocab_size) that occur in no text's encoding (no special tokens added) and are not in `keep`,
    ascending."""
    seen = set(keep)
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        seen.update(ids)
    return [i for i in range(vocab_size) if i not in seen]


def outside_data(texts: list[str], tokenizer, banned: set[int], chars: set[str]) -> tuple[float, float]:
    """(share of all tokens of the texts' encodings that are in `banned`, share of texts with a character not in
    `chars`); (0.0, 0.0) for no texts."""
    ids = [i for row in tokenizer(list(texts), add_special_tokens=False)["input_ids"] for i in row] if texts else []
    tokens = sum(i in banned for i in ids) / len(ids) if ids else 0.0
    return tokens, (sum(any(c not in chars for c in t) for t in texts) / len(texts) if texts else 0.0)


def vocabulary_texts(dataset: str, split: str) -> list[str]:
    """The responses of `split` in a prepared folder; exits naming the folder's splits when it has no such split."""
    from llmgan.data import load_prepared

    data = load_prepared(dataset)
    if split not in data:
        sys.exit(f"split '{split}' not in {dataset}; splits: {', '.join(data)}")
    return list(data[split]["response"])


def new_characters(texts: list[str], chars: set[str]) -> Counter:
    """How often each kind of character not in `chars` occurs in the texts, the kind being the first word of its
    Unicode name ("CYRILLIC", "HEBREW", "REPLACEMENT" for U+FFFD, "FACE" and others for emoji; "?" when unnamed)."""
    return Counter(unicodedata.name(c, "?").split()[0] for t in texts for c in t if c not in chars)


def report(argv: list[str]) -> int:
    from llmgan.models import load_tokenizer

    p = argparse.ArgumentParser(prog="vocab_mask.py report",
                                description="how much of (real, generated) JSONL files lies outside the training "
                                            "responses' token ids and characters; samples nothing")
    p.add_argument("dataset", help="a prepared data folder (llmgan prepare)")
    p.add_argument("--model", required=True, help="the model whose tokenizer encodes the texts")
    p.add_argument("--vocab-split", default="train", help="the split whose responses give the allowed ids")
    p.add_argument("files", nargs="+", help="JSONL files with `real` and `generated` per row")
    args = p.parse_args(argv)
    texts = vocabulary_texts(args.dataset, args.vocab_split)
    tok = load_tokenizer(args.model)
    banned = set(suppressed_ids(texts, tok, list(tok.all_special_ids), len(tok)))
    chars = {c for t in texts for c in t}
    print(f"{len(tok) - len(banned)} of {len(tok)} ids and {len(chars)} characters occur in the {len(texts)} "
          f"{args.vocab_split} responses")
    print("file | generated: tokens outside / texts with a new character | real: the same")
    for path in args.files:
        rows = read_jsonl(Path(path))
        gen = outside_data([r["generated"] for r in rows], tok, banned, chars)
        real = outside_data([r["real"] for r in rows], tok, banned, chars)
        print(f"{path} | {100 * gen[0]:.1f} % / {100 * gen[1]:.1f} % | {100 * real[0]:.1f} % / {100 * real[1]:.1f} %")
        kinds = new_characters([r["generated"] for r in rows], chars).most_common()
        listed = ", ".join(f"{k} {n}" for k, n in kinds) or "none"
        print(f"    generated, characters outside the data by kind: {listed}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["report"]:
        return report(argv[1:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_sample_arguments(p)
    p.add_argument("--vocab-split", default="train", help="the split whose responses give the allowed ids")
    args = p.parse_args(argv)
    if args.vocab_split == args.split:
        sys.exit(f"--vocab-split and --split are both '{args.split}': the allowed ids must come from another split "
                 "than the one sampled and judged")
    texts = vocabulary_texts(args.dataset, args.vocab_split)

    def prepare(model, tok, out: Path) -> None:
        from llmgan.generator import end_token_ids
        from llmgan.io import write_json

        size = model.get_output_embeddings().weight.shape[0]
        keep = end_token_ids(model, tok) + list(tok.all_special_ids)
        banned = suppressed_ids(texts, tok, keep, size)
        write_json(out / "vocab.json", {"dataset": str(args.dataset), "split": args.vocab_split,
                                        "responses": len(texts), "vocab_size": size, "allowed": size - len(banned),
                                        "suppressed": len(banned), "suppressed_ids": banned})
        print(f"{size - len(banned)} of {size} ids allowed (from {len(texts)} {args.vocab_split} responses); "
              f"{len(banned)} suppressed -> {out / 'vocab.json'}", flush=True)
        model.generation_config.suppress_tokens = banned

    return sample_draws(args, prepare, {"vocab_mask": f"{args.dataset}:{args.vocab_split}"})


if __name__ == "__main__":
    sys.exit(main())
