"""The `llmgan` command line.

Subcommands (each one's `--help` says what it does, how it differs from the textbook method, and
how to run it on one CPU, one GPU or many):

  prepare   turn TWON-style files (parquet/CSV/JSONL) into a grouped train/validation/test dataset
  generate  sample responses from a model for a prepared split (JSONL/CSV with prompt, real, generated)
  train     adversarial training: discriminator reward + policy gradient with a KL leash
  sft       supervised fine-tuning baseline on the real responses
  select    score a run's start model and checkpoints on a held-out split; ship the hardest to detect
  evaluate  how hard generated responses are to tell from real ones (offline detectors and metrics)
  plot      overlay the training curves of several runs (seeds, ablations) on one figure

Each command lives in its own module, which exposes `add_arguments(parser)` and `run(args)`.
Problems the user can fix end in one line `error: ...` and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from llmgan.errors import EXIT_USER_ERROR, LlmganError

# command name -> (module, one-line summary); modules are imported lazily so `--help` is fast.
COMMANDS = {
    "prepare": ("llmgan.data", "build instruction datasets (grouped splits) from parquet/CSV/JSONL"),
    "generate": ("llmgan.generator", "generate responses for a prepared split with a model"),
    "train": ("llmgan.train", "adversarial training against a discriminator (policy gradient + KL)"),
    "sft": ("llmgan.sft", "supervised fine-tuning baseline on the real responses"),
    "select": ("llmgan.selection", "choose a run's model (start or checkpoint) on a held-out split"),
    "evaluate": ("llmgan.evaluate", "measure how detectable generated responses are (offline)"),
    "plot": ("llmgan.plots", "overlay the training curves of several runs on one figure"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmgan", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    from llmgan import __version__

    parser.add_argument("--version", action="version", version=f"llmgan {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, summary) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # a command whose module is not built yet
            if exc.name != module_name:
                raise
            continue
        p = sub.add_parser(name, help=summary, description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        return int(args._run(args) or 0)
    except LlmganError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
