"""llmgan: train an instruction-tuned LLM against a discriminator so that its posts and replies
cannot be told from real human ones, and judge the result with offline detectors.

Each command's `--help` says what it does, how it differs from the textbook method, and how to run
it on one CPU, one GPU or many. Problems you can fix end in one line `error: ...` and exit code 2;
Ctrl-C exits 130 and SIGTERM 143, each with one line saying what was kept.
"""

from __future__ import annotations

import argparse
import signal
import sys

from llmgan import __version__, data, generator, plots
from llmgan.errors import EXIT_USER_ERROR, LlmganError
from llmgan.evaluation import command as evaluate_command
from llmgan.serving import export, serve
from llmgan.training import selection, sft, train

# command name -> (module, one-line summary). Imported statically so that tools (and readers) see what
# calls what; each command module keeps its heavy imports (torch, transformers) inside its functions, so
# `llmgan --help` stays fast.
COMMANDS = {
    "prepare": (data, "build instruction datasets (grouped splits) from parquet/CSV/JSONL"),
    "generate": (generator, "generate responses for a prepared split with a model"),
    "train": (train, "adversarial training against a discriminator (policy gradient + KL)"),
    "sft": (sft, "supervised fine-tuning baseline on the real responses"),
    "select": (selection, "choose a run's model (start or checkpoint) on a held-out split"),
    "evaluate": (evaluate_command, "measure how detectable generated responses are (offline)"),
    "plot": (plots, "overlay the training curves of several runs on one figure"),
    "export": (export, "write a run's model as a self-contained Hugging Face folder with a model card"),
    "serve": (serve, "serve a model behind an OpenAI-compatible API (transformers serve, or vLLM on CUDA)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmgan", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"llmgan {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, summary) in COMMANDS.items():
        p = sub.add_parser(name, help=summary, description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into the same clean stop as Ctrl-C (commands that keep partial work catch
    KeyboardInterrupt, so both signals keep it)."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated("terminated")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_USER_ERROR
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if _main_thread() else None
    try:
        return int(args._run(args) or 0)
    except LlmganError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated) or str(exc).startswith("terminated")
        message = str(exc) or "interrupted"
        if not message.startswith(("interrupted", "terminated")):
            message = f"{'terminated' if terminated else 'interrupted'}: {message}"
        print(message, file=sys.stderr)
        return 143 if terminated else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
