"""The run folder: its layout, checkpoints (complete or not), resume, log truncation, the final models.

A run folder holds config.yaml (resolved), metrics.jsonl, faults.jsonl, tensorboard/, samples/, plots/,
checkpoint-N/ folders (each with a COMPLETE marker once whole), final/ and, for some runs, sft/,
selection/ + selected/, data_caps.json, and the warm-up's warmup.jsonl, heldout.jsonl and warmup_pool.jsonl.
Checkpoints are written under .staging/ and renamed into place, so a run killed at any moment has only
complete checkpoints. Every file a run writes has a fixed name inside the folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Iterator, Optional

from llmgan.config import RunConfig, config_to_dict
from llmgan.errors import LlmganError
from llmgan.io import append_jsonl, check_output_path, is_write_error, write_atomic, write_error
from llmgan.machine import machine_info

COMPLETE_MARKER = "COMPLETE"
STAGING_DIR = ".staging"  # checkpoints are written here, then renamed into the run folder
LLMGAN_STATE_FILE = "llmgan_state.json"  # fault counters saved with each checkpoint
SFT_DIR = "sft"  # the warm start's own run folder inside the adversarial run folder


# ---------------------------------------------------------------------------------------------
# Checkpoints


def checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    run = Path(run_dir)
    found = [p for p in run.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    found.sort(key=lambda p: int(p.name.split("-")[-1]))
    return [p for p in found if (p / COMPLETE_MARKER).is_file()]


def latest_checkpoint(run_dir: str | Path) -> Optional[Path]:
    c = checkpoints(run_dir)
    return c[-1] if c else None


def checkpoint_step(path: str | Path) -> int:
    return int(Path(path).name.split("-")[-1])


def clean_incomplete_checkpoints(run_dir: str | Path) -> list[str]:
    """Remove what an interrupted save left: the staging folder and checkpoint folders without COMPLETE
    (written by older versions, which saved in place). Returns the names removed."""
    run = Path(run_dir)
    removed = []
    staging = run / STAGING_DIR
    if staging.exists():
        shutil.rmtree(staging, ignore_errors=True)
        removed.append(STAGING_DIR)
    for p in run.glob("checkpoint-*"):
        if p.is_dir() and not (p / COMPLETE_MARKER).is_file():
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    return removed


def rotate_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Keep the newest `keep` complete checkpoints; delete older ones (and incomplete leftovers)."""
    clean_incomplete_checkpoints(run_dir)
    for old in checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def _check_safetensors(path: Path) -> None:
    """The header parses and the file is as long as the header says (a truncated file is not)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError("shorter than a safetensors header")
        n = int.from_bytes(head, "little")
        if n > size - 8:
            raise ValueError("truncated header")
        header = json.loads(f.read(n))
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != size:
        raise ValueError(f"{size} bytes, the header needs {8 + n + end} (truncated)")


def _check_torch_zip(path: Path) -> None:
    """A torch.save file (zip format): its index is readable and every entry lies inside the file."""
    import zipfile

    size = path.stat().st_size
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if info.header_offset + info.compress_size > size:
                raise ValueError(f"entry {info.filename} runs past the end of the file (truncated)")


def check_checkpoint(path: str | Path) -> None:
    """Raise LlmganError naming the first file of checkpoint `path` that cannot be read.

    Checks without loading tensors: safetensors headers and lengths, torch zip indexes, JSON syntax;
    catches truncated and corrupted files (a disk that filled up, a copy cut short).
    """
    import zipfile

    path = Path(path)
    for f in sorted(q for q in path.rglob("*") if q.is_file()):
        try:
            if f.suffix == ".safetensors":
                _check_safetensors(f)
            elif f.suffix in (".pt", ".pth", ".bin"):
                _check_torch_zip(f)
            elif f.suffix == ".json":
                json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError, KeyError, TypeError, IndexError, zipfile.BadZipFile) as exc:
            why = "not a complete zip archive" if isinstance(exc, zipfile.BadZipFile) else (str(exc).splitlines() or [type(exc).__name__])[0]
            raise LlmganError(f"checkpoint {path.name} cannot be loaded: {f.relative_to(path)} is damaged ({why})") from None


def resume_checkpoint(run_dir: str | Path, name: Optional[str] = None) -> Optional[Path]:
    """The checkpoint `--resume` continues from: `name` (e.g. checkpoint-3) or the newest complete one.

    It is checked first (`check_checkpoint`); a damaged one is reported by name, with the previous
    complete checkpoint offered. None when the run has no complete checkpoint (and no name was given).
    """
    run = Path(run_dir)
    found = checkpoints(run)
    if name:
        if Path(name).name != name:
            raise LlmganError(f"--checkpoint takes a checkpoint name such as checkpoint-3, not a path (got {name})")
        chosen = run / name
        if chosen not in found:
            raise LlmganError(f"{name} is not a complete checkpoint of {run}; complete checkpoints: "
                              f"{', '.join(p.name for p in found) or '(none)'}")
    elif not found:
        return None
    else:
        chosen = found[-1]
    try:
        check_checkpoint(chosen)
    except LlmganError as exc:
        earlier = [p for p in found if checkpoint_step(p) < checkpoint_step(chosen)]
        offer = (f"; resume from the previous checkpoint with: llmgan train --resume {run} --checkpoint {earlier[-1].name}"
                 if earlier else "; there is no earlier complete checkpoint: start again with --overwrite")
        raise LlmganError(f"{exc}{offer}") from None
    return chosen
def truncate_run_logs(run_dir: str | Path, step: int) -> None:
    """Make the run folder read as one clean run up to `step` (the checkpoint resumed from): rows of
    metrics.jsonl and faults.jsonl past it (written before an interruption) and a half-written last
    line are dropped (atomically), samples past it are removed."""
    run = Path(run_dir)
    for name in ("metrics.jsonl", "faults.jsonl"):
        path = run / name
        if not path.is_file():
            continue
        keep = []
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut short by the interruption
            if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
                keep.append(line + "\n")
        write_atomic(path, "".join(keep))
    for sample in (run / "samples").glob("step_*.jsonl"):
        digits = sample.stem.split("_")[-1]
        if digits.isdigit() and int(digits) > step:
            sample.unlink()



class AtomicCheckpoints:
    """Mixin for a transformers Trainer (`class T(AtomicCheckpoints, SFTTrainer)`): each checkpoint is written
    under RUN/.staging/, completed with `_save_extra(folder)` and a COMPLETE marker, renamed into place, and
    the older ones beyond `keep_checkpoints` are removed. A run killed at any moment keeps only complete
    checkpoints; a write error names the folder and says the previous checkpoint is intact. A run resumed from
    the checkpoint of its last step trains nothing more (`train`)."""

    keep_checkpoints: int = 2
    _staging: Optional[str] = None
    _card_written: bool = False

    def _save_extra(self, folder: Path) -> None:
        """What this trainer adds to a checkpoint besides the transformers state (nothing by default)."""

    def create_model_card(self, *args: Any, **kwargs: Any) -> None:
        """RUN/README.md, written with each checkpoint. TRL's own card calls a start model given as a local folder
        (every teacher and SFT-started run) 'None' and links to huggingface.co/None; this one says what the run is.
        Its content is fixed for the run, so it is written once per start or resume, not at every checkpoint."""
        if self.args.should_save and not self._card_written:
            self._card_written = True
            engine = next((c.__name__ for c in type(self).__mro__ if c.__module__.startswith("trl.")), "Trainer")
            write_atomic(Path(self.args.output_dir) / "README.md", run_card(Path(self.args.output_dir), engine))

    def _load_extra(self, folder: Path) -> None:
        """Read back what `_save_extra` wrote (nothing by default)."""

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            self._load_extra(Path(checkpoint))

    def train(self, resume_from_checkpoint=None, **kwargs):
        """transformers' loop compares global_step with max_steps only after a step, so a run resumed from the
        checkpoint of its last step (killed while saving its final model) would train one step more and write
        checkpoint-{max_steps + 1}. Such a run is finished: its weights, `_load_extra`'s state and the trainer
        state are read from the checkpoint instead, and nothing trains (a checkpoint past max_steps, resumed with
        fewer steps, is said so). Under DeepSpeed or FSDP, whose weights load only inside the loop, and for
        anything but a checkpoint folder, transformers' own path runs."""
        ckpt = Path(resume_from_checkpoint) if isinstance(resume_from_checkpoint, (str, os.PathLike)) else None
        state_file = ckpt / "trainer_state.json" if ckpt is not None else None
        if (state_file is None or not state_file.is_file() or self.args.max_steps <= 0
                or getattr(self, "is_deepspeed_enabled", False) or getattr(self, "is_fsdp_enabled", False)):
            return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        from transformers import PreTrainedTokenizerBase, TrainerState
        from transformers.trainer_utils import TrainOutput, align_special_tokens

        state = TrainerState.load_from_json(str(state_file))
        if state.global_step < self.args.max_steps:
            return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        if state.global_step > self.args.max_steps and self.args.should_save:
            print(f"{ckpt.name} is past the {self.args.max_steps} steps asked for: its weights are the final model")
        if isinstance(self.processing_class, PreTrainedTokenizerBase) and hasattr(self.model, "config"):
            align_special_tokens(self.model, self.processing_class)  # as transformers' train() does first
        self._load_from_checkpoint(str(ckpt))
        self._load_extra(ckpt)
        self.state = state
        return TrainOutput(state.global_step, 0.0, {})

    def _get_output_dir(self, trial):
        return self._staging if self._staging is not None else super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial):
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        run_dir = Path(super()._get_output_dir(trial=trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging, target = run_dir / STAGING_DIR, run_dir / name
        main = self.args.should_save
        try:
            if main:
                shutil.rmtree(staging, ignore_errors=True)
                staging.mkdir(parents=True)
            self.accelerator.wait_for_everyone()
            self._staging = str(staging)
            try:
                super()._save_checkpoint(model, trial)
            finally:
                self._staging = None
            self.accelerator.wait_for_everyone()  # every rank's files (RNG states) are in place
            if main:
                folder = staging / name
                self._save_extra(folder)
                (folder / COMPLETE_MARKER).write_text(str(self.state.global_step))
                if target.exists():  # a checkpoint of the same step from before a resume: replace it
                    os.replace(target, staging / f"replaced-{name}")
                os.replace(folder, target)
                shutil.rmtree(staging, ignore_errors=True)
                rotate_checkpoints(run_dir, self.keep_checkpoints)
        except Exception as exc:
            if not is_write_error(exc):
                raise
            shutil.rmtree(staging, ignore_errors=True)
            prev = latest_checkpoint(run_dir)
            raise LlmganError(f"could not write checkpoint {target.name} in {run_dir}: {write_error(exc, run_dir)}; "
                              f"the previous checkpoint {prev.name if prev else '(none)'} is intact") from None
        self.accelerator.wait_for_everyone()


# ---------------------------------------------------------------------------------------------
# The folder


RUN_FOLDER_ENTRIES = ("config.yaml", "metrics.jsonl", "faults.jsonl", "tensorboard", "plots", "samples", "final", "sft",
                      "selection", "selected",
                      "samples_before_after.json", "README.md", "completions", STAGING_DIR, ".final.tmp",
                      "data_caps.json", "warmup.jsonl", "heldout.jsonl", "warmup_pool.jsonl",
                      "teacher", "machine.jsonl")  # warmup..teacher: stages.py
"""What `llmgan train` (README.md: AtomicCheckpoints.create_model_card) writes at the top of a run folder, besides
checkpoint-N."""


def run_card(run_dir: Path, engine: str) -> str:
    """The run folder's README.md: what wrote it, from which start model, and where its files are."""
    import yaml

    try:
        start = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("model", {}).get("name")
    except (OSError, yaml.YAMLError, AttributeError):
        start = "(see config.yaml)"
    start = start or "the embedded default (SmolLM2-135M-Instruct)"
    return (f"# llmgan run `{run_dir.name}`\n\nWritten by llmgan with TRL's `{engine}`, starting from {start} "
            "(`model.name` in `config.yaml`).\n\n| file | content |\n| --- | --- |\n"
            "| `config.yaml` | the resolved config |\n| `machine.jsonl` | the machine of every start and resume |\n"
            "| `metrics.jsonl`, `plots/` | metrics per step and their figures |\n"
            "| `checkpoint-N/` | checkpoints to continue from (`--resume`) |\n"
            "| `final/generator` | the trained model, written at the end |\n\n"
            f"Serve it with `llmgan serve {run_dir}`; a folder to share, with its own model card and evaluation: "
            f"`llmgan export {run_dir} OUT`.\n")


def _is_run_entry(name: str) -> bool:
    return (name in RUN_FOLDER_ENTRIES or name.startswith("checkpoint-")
            or (name.startswith(".") and name.endswith(".tmp")))  # atomic-write temporaries


def prepare_run_dir(cfg: RunConfig, resume: bool, overwrite: bool = False) -> Path:
    """Create (or reuse with `resume`) the run folder `train.output_dir`, write the resolved config and append
    the machine to machine.jsonl.

    Every file a run writes has a fixed name inside this folder: no other config value becomes part of
    a path that is written. `overwrite` deletes the folder only when everything in it is something a
    run writes (so a mistyped train.output_dir=. or a data folder is never deleted).
    """
    run_dir = check_output_path(cfg.train.output_dir, kind="dir", what="train.output_dir")
    if run_dir.exists() and any(run_dir.iterdir()) and not resume:
        if not overwrite:
            raise LlmganError(f"run folder {run_dir} exists; resume it with --resume {run_dir}, or pass --overwrite")
        foreign = sorted(p.name for p in run_dir.iterdir() if not _is_run_entry(p.name))
        if foreign or not (run_dir / "config.yaml").is_file():
            raise LlmganError(f"refusing to --overwrite {run_dir}: it is not an llmgan run folder "
                              f"({'it holds ' + ', '.join(foreign[:5]) if foreign else 'no config.yaml'}); "
                              "delete it yourself or choose another train.output_dir")
        shutil.rmtree(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        import yaml

        write_atomic(run_dir / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        # what ran it, one line per start and resume: results reproduce to the digit only on the same kind of CPU
        append_jsonl(run_dir / "machine.jsonl", {"resume": bool(resume), **machine_info()})
    except OSError as exc:
        raise LlmganError(f"cannot write to run folder {run_dir}: {write_error(exc, run_dir.parent)}") from None
    return run_dir



def kept_anything(run_dir: str | Path) -> bool:
    """Whether a run folder holds results worth keeping: a metrics row, a checkpoint, final models, or an SFT
    stage (finished, or with a checkpoint to resume from) (config.yaml and empty logs alone are not)."""
    run = Path(run_dir)
    metrics = run / "metrics.jsonl"
    return ((metrics.is_file() and metrics.stat().st_size > 0) or bool(checkpoints(run)) or (run / "final").exists()
            or (run / SFT_DIR / "final").exists() or bool(checkpoints(run / SFT_DIR)))


@contextlib.contextmanager
def removed_if_nothing_kept(run_dir: str | Path, fresh: bool, main: bool = True) -> Iterator[None]:
    """Around a run: if a `fresh` run (not a resume) fails or is interrupted before it kept anything
    (`kept_anything`), its folder is removed (by the `main` process), so the retry is not refused with
    'run folder exists'."""
    try:
        yield
    except BaseException:
        if fresh and main and not kept_anything(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def resume_point(run_dir: Path, checkpoint: Optional[str]) -> Optional[Path]:
    """Clean up after an interruption and pick the checkpoint to continue from (None: from step 0)."""
    removed = clean_incomplete_checkpoints(run_dir)
    if removed:
        print(f"removed incomplete checkpoint data: {', '.join(removed)}")
    ckpt = resume_checkpoint(run_dir, checkpoint)
    step = checkpoint_step(ckpt) if ckpt is not None else 0
    later = [p for p in checkpoints(run_dir) if checkpoint_step(p) > step]
    for p in later:  # resuming from an earlier checkpoint replaces the history after it
        shutil.rmtree(p)
    if later:
        print(f"removed checkpoints after {ckpt.name if ckpt else 'step 0'}: {', '.join(p.name for p in later)}")
    truncate_run_logs(run_dir, step)
    return ckpt



def prepare_on_main(state: Any, cfg: RunConfig, resume: bool, overwrite: bool,
                     checkpoint: Optional[str]) -> tuple[Path, Optional[Path]]:
    """Run-folder preparation and the resume point, on the main process only; the others wait for its
    outcome (the folder, the checkpoint, or its error, raised on every process so none hangs)."""
    if state.num_processes == 1:
        run_dir = prepare_run_dir(cfg, resume, overwrite)
        return run_dir, (resume_point(run_dir, checkpoint) if resume else None)
    from accelerate.utils import broadcast_object_list

    outcome: list[Any] = [None]
    if state.is_main_process:
        try:
            run_dir = prepare_run_dir(cfg, resume, overwrite)
            ckpt = resume_point(run_dir, checkpoint) if resume else None
            outcome = [{"run_dir": str(run_dir), "ckpt": str(ckpt) if ckpt else None}]
        except LlmganError as exc:
            outcome = [{"error": str(exc)}]
    broadcast_object_list(outcome, from_process=0)
    result = outcome[0]
    if "error" in result:
        raise LlmganError(result["error"])
    return Path(result["run_dir"]), (Path(result["ckpt"]) if result["ckpt"] else None)



def save_final(run_dir: Path, model, tok, disc, trainer: Any = None) -> Path:
    """Write final/generator (adapter or full model) and, with a `disc` (a DiscriminatorTrainer; None for
    SFT), final/discriminator, atomically (temp folder, rename). One copy for train, sft and the baseline.

    With a `trainer` running several processes, every process takes part in gathering the generator's
    weights (transformers' `Trainer.save_model` handles DDP, DeepSpeed ZeRO-3 and FSDP); the main process
    writes them with the tokenizer and the discriminator (identical on every rank) and renames the folder.
    """
    final, tmp = run_dir / "final", run_dir / ".final.tmp"
    accelerator = trainer.accelerator if trainer is not None and trainer.accelerator.num_processes > 1 else None
    main = accelerator is None or accelerator.is_main_process
    try:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        if accelerator is not None:
            accelerator.wait_for_everyone()
            trainer.save_model(str(tmp / "generator"))
            if main:  # transformers also pickles its TrainingArguments there; config.yaml holds the settings
                (tmp / "generator" / "training_args.bin").unlink(missing_ok=True)
        else:
            model.save_pretrained(tmp / "generator", safe_serialization=True)
        if main:
            tok.save_pretrained(tmp / "generator")
            if disc is not None:
                disc.save(tmp / "discriminator")
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
    except Exception as exc:
        if not is_write_error(exc):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        raise LlmganError(f"could not write the final models to {final}: {write_error(exc, run_dir)}; the newest "
                          f"checkpoint {latest_checkpoint(run_dir) or '(none)'} is intact") from None
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return final



# ---------------------------------------------------------------------------------------------
# Faults


class FaultLog:
    """Steps skipped for NaN/Inf values: counted, printed, appended to RUN/faults.jsonl (by the process
    that `writes`); `check` stops the run after `limit` in a row. One copy for both objectives."""

    def __init__(self, run_dir: str | Path, limit: int, writes: bool = True):
        self.run_dir, self.limit, self.writes = Path(run_dir), limit, writes
        self.skipped = 0      # steps skipped so far
        self.consecutive = 0  # ... in a row, up to the latest step
        self.last: list[str] = []

    def ok(self) -> None:
        self.consecutive = 0

    def record(self, step: int, causes: list[str]) -> None:
        self.last = list(dict.fromkeys(causes))
        self.skipped += 1
        self.consecutive += 1
        if not self.writes:
            return
        print(f"step {step} skipped (weights not updated): {'; '.join(self.last)}", file=sys.stderr, flush=True)
        try:
            append_jsonl(self.run_dir / "faults.jsonl", {"step": step, "causes": self.last, "consecutive": self.consecutive})
        except OSError as exc:
            raise LlmganError(f"cannot write to run folder {self.run_dir}: {write_error(exc, self.run_dir)}") from None

    def check(self, step: int) -> None:
        """Raise LlmganError when `limit` steps in a row were skipped."""
        if self.consecutive < self.limit:
            return
        last = latest_checkpoint(self.run_dir)
        raise LlmganError(
            f"stopped at step {step}: {self.consecutive} consecutive steps had NaN/Inf values "
            f"(train.max_consecutive_faults={self.limit}; last cause: {'; '.join(self.last)}; "
            f"all causes in {self.run_dir / 'faults.jsonl'}). The weights were not updated by those steps; "
            f"{f'the newest checkpoint is {last}' if last else 'no checkpoint was written yet'}. Try a lower "
            f"train.lr or discriminator.lr, train.max_grad_norm, or check the data")

    def state_dict(self) -> dict:
        return {"skipped_steps": self.skipped, "consecutive_faults": self.consecutive}

    def load_state_dict(self, state: dict) -> None:
        self.skipped = int(state.get("skipped_steps", 0))
        self.consecutive = int(state.get("consecutive_faults", 0))
