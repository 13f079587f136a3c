"""Generate responses for a prepared split: `llmgan generate`.

Formats each conversational prompt with the model's chat template, pads on the left, always passes
the attention mask, and samples with the given temperature / top-p / max new tokens and seed. Writes
JSONL or CSV (by the output suffix) with the columns `prompt` (the user message), `system`, `real`
(the human response), `generated` and `cut_at_cap` (true when the response reached --max-new-tokens before an end
token, so it stops mid-text), ready for `llmgan evaluate`. The command prints the share cut at the cap beside the
share of the real responses too long for it (in the model's tokens), as `generator/clipped_ratio` is read in
training.

--model takes a Hugging Face model id, a local folder, a LoRA adapter folder (a run's checkpoint or
final `generator/` folder) or nothing for the embedded SmolLM2-135M-Instruct.

--max-new-tokens defaults to the run's own cap when --model is a generator folder of a run that took its caps
from the data (`data.response_cap_quantile`: RUN/data_caps.json beside or above the folder), so a model is
sampled as it was trained; otherwise to 64.

--best-of N --teacher RUN/teacher: N draws per prompt (draw k seeded --seed + k, so draw 0 is the plain sample
of --seed), each scored by the run's discriminator at the end of its warm-up (`llmgan.adversarial.teacher`); the
one it scores most human is kept. This is reranking at sampling time, not training: N times the sampling cost,
and the generator is unchanged. On held-out TWON replies best of 4 from the SFT model under its teacher is
harder to detect than one SFT sample, for each of three teachers (RESULTS.md, "Reranking with the teacher,
shipped"). Finished draws are kept in OUTPUT.draws/ and read back by the same command run again. The draws are
sampled by default as the teacher's warm-up samples were (its config's temperature, top-p and cap), since a teacher
ranks well only such samples: a teacher warmed up at temperature 1.0 ranking drafts at 0.92 picked texts no harder
to detect than an unranked draft (RESULTS.md, "A teacher ranks only its own kind of drafts"); other sampling is
warned about before any model loads. --teacher A B C (experimental): several teachers warmed up from one SFT model
(other train.seed values) keep the draw with the highest mean logit. On reply validation that was steadier across
draw sets than one teacher, but on the reply test split it cleared the plain draws in 2 of 3 sets, as one teacher
does, at one warm-up per teacher (RESULTS.md, fortieth session).

--end-ramp auto (experimental, default off): after the training responses' 75th percentile of tokens, the end token's
log-odds rise linearly to +8 at the cap, so long texts end where the model finds an end plausible rather than
mid-text at the cap. On validation the teacher's picks then stopped at the cap on 2.8 % of posts (human 3.2 %) and
0.4 % of replies (human 4.4 %), as hard to detect as without it. On the test splits it failed: on replies the ramp
overshot (picks shorter than human replies, length W1 2.1-3.0); on posts the picks stopped at the cap as often as
human posts are that long (3.1-3.6 % against 4.8 %) but were easier to detect than the plain picks for each of three
teachers (0.710-0.723 against 0.699-0.700). So it is not part of the shipped recipe (RESULTS.md, "An end-of-text ramp
at sampling time" and "The end-of-text ramp on the post test split").

One CPU: the default batch size of 16 keeps the 135M model at a few seconds per batch. One GPU: add
`--device cuda` and raise `--batch-size`. Many GPUs: split the file with --limit/--offset per process.

Example:
  llmgan generate data/prelim-reply --split test -o out/base.jsonl --temperature 0.8 --top-p 0.95 --max-new-tokens 64
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from llmgan.errors import LlmganError
from llmgan.io import DATA_CAPS_FILE, Progress, check_output_path, last_user_message, read_data_caps, write_rows
from llmgan.models import end_token_ids

__all__ = ["generate_responses", "GenerationInterrupted", "trim_incomplete_characters", "check_device",
           "trained_caps", "trained_max_new_tokens", "read_back_samples", "write_samples", "last_user_message",
           "write_rows", "end_token_ids", "share_at_cap", "cut_summary", "end_ramp_bias", "EndRamp",
           "resolve_end_ramp", "add_arguments", "run"]

DEFAULT_MAX_NEW_TOKENS = 64  # the evaluation rows of RESULTS.md, for models that carry no cap of their own
DEFAULT_TEMPERATURE, DEFAULT_TOP_P = 0.8, 0.95  # `llmgan generate` without --teacher (with one: its samples')
END_RAMP_BIAS = 8.0  # --end-ramp's log-odds bias on the end token at the cap (fixed a priori, not tuned)
END_RAMP_QUANTILE = "75"  # --end-ramp auto: the ramp starts at this percentile of the training responses' tokens


class GenerationInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during `generate_responses`; `finished` holds the responses of the first rows (in
    input order) that were complete when it came, so a caller can keep them."""

    def __init__(self, finished: list[str], total: int, signal_name: str = "interrupted"):
        super().__init__(signal_name)
        self.finished, self.total, self.signal_name = finished, total, signal_name


def trim_incomplete_characters(text: str) -> str:
    """Drop the U+FFFD replacement characters that byte-level decoding leaves at the end of a text when
    generation stopped inside a multi-byte character (an emoji, Hebrew, ...)."""
    return text.rstrip("\ufffd").rstrip() if text.endswith("\ufffd") else text


def generate_responses(model, tokenizer, prompts: list[list[dict]], *, max_new_tokens: int = 64,
                       temperature: float = 0.8, top_p: float = 0.95, do_sample: bool = True,
                       batch_size: int = 16, max_prompt_tokens: int = 512, seed: Optional[int] = 0,
                       progress: bool = True, return_cut: bool = False, end_ramp: Optional[int] = None):
    """Sample one response per conversational prompt; returns decoded texts in the input order.

    end_ramp: after this many new tokens, raise the end tokens' logits linearly to `END_RAMP_BIAS` at the last
    allowed token (`EndRamp`), so a text that runs long ends where the model finds an end plausible instead of
    at the cap mid-text. None: plain sampling. A row is sampled from the same distribution as without it until it
    is end_ramp tokens long (the texts differ all the same where a batch's length changes the random stream).

    return_cut: return (texts, cut) instead, cut[i] True when row i reached `max_new_tokens` without an end token
    (the model's `eos_token_id`s and the tokenizer's), i.e. the text was cut mid-way.

    Prompts are taken in windows of `4 * batch_size` (at least 64) in input order, and sorted by length
    within a window so batches pad little. Prompts longer than `max_prompt_tokens` keep their last
    tokens (the end holds the post and the assistant turn). On Ctrl-C it raises GenerationInterrupted
    with the responses of the finished rows before the first unfinished one (in input order): at least
    every row before the window in progress.
    """
    import torch

    from llmgan.models import apply_chat

    texts = apply_chat(tokenizer, prompts)
    window = max(4 * batch_size, 64)
    order = [i for w in range(0, len(texts), window)
             for i in sorted(range(w, min(w + window, len(texts))), key=lambda i: len(texts[i]))]
    out: list[Optional[str]] = [None] * len(texts)
    cut: list[bool] = [False] * len(texts)
    ends = end_token_ids(model, tokenizer)
    if seed is not None:
        torch.manual_seed(seed)
    device = next(model.parameters()).device
    side, trunc = tokenizer.padding_side, tokenizer.truncation_side
    tokenizer.padding_side, tokenizer.truncation_side = "left", "left"
    bar = Progress(progress, transient=False)
    try:
        with bar:
            task = bar.add("generating", len(texts))
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                                max_length=max_prompt_tokens, add_special_tokens=False).to(device)
                ramp = None if end_ramp is None else [EndRamp(enc["input_ids"].shape[1], end_ramp, max_new_tokens, ends)]
                with torch.no_grad():
                    gen = model.generate(
                        input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=max_new_tokens,
                        do_sample=do_sample, temperature=temperature if do_sample else None,
                        top_p=top_p if do_sample else None, top_k=0 if do_sample else None,
                        pad_token_id=tokenizer.pad_token_id, logits_processor=ramp)
                new = gen[:, enc["input_ids"].shape[1]:]
                ended = torch.isin(new, torch.tensor(ends, device=new.device)).any(dim=1).tolist()
                for i, row, done in zip(idx, tokenizer.batch_decode(new, skip_special_tokens=True), ended):
                    out[i] = trim_incomplete_characters(row.strip())
                    cut[i] = new.shape[1] >= max_new_tokens and not done
                bar.advance(task, len(idx))
    except KeyboardInterrupt as exc:
        done = next((i for i, o in enumerate(out) if o is None), len(out))
        raise GenerationInterrupted([o or "" for o in out[:done]], len(out), str(exc) or "interrupted") from None
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = side, trunc
    texts = [o or "" for o in out]
    return (texts, cut) if return_cut else texts


def end_ramp_bias(new_tokens: int, start: int, max_new_tokens: int, bias: float = END_RAMP_BIAS) -> float:
    """The log-odds added to the end token when choosing new token number `new_tokens + 1`: 0 while
    new_tokens < start, then rising linearly to `bias` for the last allowed token (new_tokens = max_new_tokens - 1).

    Hugging Face's `exponential_decay_length_penalty` does a similar job, but it scales the end token's logit by
    its own size, so its strength depends on how unlikely the end already is; a bias in log-odds means the same
    at every token."""
    if new_tokens < start or max_new_tokens <= start:
        return 0.0
    return bias * min(new_tokens - start + 1, max_new_tokens - start) / (max_new_tokens - start)


class EndRamp:
    """A `transformers` logits processor adding `end_ramp_bias` to the end tokens' scores ([batch, vocab]) of a
    batch whose prompts (left-padded) are `prompt_len` tokens long."""

    def __init__(self, prompt_len: int, start: int, max_new_tokens: int, end_ids: list[int],
                 bias: Optional[float] = None):
        self.prompt_len, self.start, self.max_new_tokens = prompt_len, start, max_new_tokens
        self.bias = END_RAMP_BIAS if bias is None else bias
        self.end_ids = [i for i in end_ids if i >= 0]

    def __call__(self, input_ids, scores):
        add = end_ramp_bias(input_ids.shape[1] - self.prompt_len, self.start, self.max_new_tokens, self.bias)
        if add and self.end_ids:
            scores = scores.clone()
            scores[:, self.end_ids] += add
        return scores


def resolve_end_ramp(value: Optional[str], model: Optional[str], max_new_tokens: int) -> Optional[int]:
    """--end-ramp: None or "off" -> None; a number of new tokens; "auto" -> the training responses' 75th percentile
    in tokens, read from the run's RUN/data_caps.json (a generator folder of a run that took its caps from the
    data). Raises LlmganError naming what to pass when it cannot."""
    if value is None or value == "off":
        return None
    if value == "auto":
        found = trained_caps(model)
        pct = (found[0].get("response_tokens_percentiles") or {}).get(END_RAMP_QUANTILE) if found else None
        if pct is None:
            raise LlmganError(f"--end-ramp auto: needs --model to be a generator folder of a run that took its caps "
                              f"from the data (RUN/data_caps.json with response_tokens_percentiles); --model "
                              f"{model} has none. Pass the number of new tokens to start at instead (below "
                              f"--max-new-tokens {max_new_tokens})")
        start = int(round(float(pct)))
    else:
        try:
            start = int(value)
        except ValueError:
            raise LlmganError(f"--end-ramp {value}: give off, auto, or a number of new tokens") from None
    if not 0 <= start < max_new_tokens:
        raise LlmganError(f"--end-ramp {value}: the ramp must start before the cap (0 <= start < --max-new-tokens "
                          f"{max_new_tokens}; got {start})")
    return start


def share_at_cap(reals: list[str], tokenizer, max_new_tokens: int) -> float:
    """The share of the real responses a generator capped at `max_new_tokens` could not write whole: their own
    tokens alone reach the cap, leaving no room for the end token (one tokenizer call)."""
    lengths = [len(ids) for ids in tokenizer(list(reals), add_special_tokens=False)["input_ids"]]
    return sum(n >= max_new_tokens for n in lengths) / max(len(lengths), 1)


def cut_summary(cut: list, human: float, max_new_tokens: int) -> str:
    """One line: the share of responses cut at the cap (None entries: unknown), beside `human`, the real
    responses' share that long (`share_at_cap`)."""
    known = [c for c in cut if c is not None]
    share = f"{sum(known) / len(known):.1%}" if known else "unknown (draws kept by an older llmgan)"
    return (f"cut at the cap of {max_new_tokens} new tokens: {share} of the responses; {human:.1%} of the real "
            "responses are that long")


def check_device(device: str) -> None:
    """One clear line before any model loads when the asked-for torch device cannot be used here."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise LlmganError(f"--device {device}: not a torch device (use cpu, cuda, cuda:1, mps, ...)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
            raise LlmganError(f"--device {device}: no CUDA device is available (torch {torch.__version__}, "
                              f"{build}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise LlmganError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise LlmganError(f"--device {device}: no MPS device is available; use --device cpu")


def trained_caps(model: Optional[str]) -> Optional[tuple[dict, Path]]:
    """(the caps, the caps file) of the run that trained `model` (see `trained_max_new_tokens`), or None."""
    if not model or not Path(model).is_dir():
        return None
    folder = Path(model).resolve()
    for run_dir in (folder, *list(folder.parents)[:2]):
        caps = read_data_caps(run_dir)
        if caps and "generation.max_new_tokens" in caps:
            return caps, run_dir / DATA_CAPS_FILE
    return None


def trained_max_new_tokens(model: Optional[str]) -> Optional[tuple[int, Path]]:
    """(generation.max_new_tokens, the caps file) of the run that trained `model`, or None.

    `model` is a run's generator folder (RUN/selected/generator, RUN/checkpoint-N/generator, RUN/final/generator,
    RUN/sft/final/generator); the run's RUN/data_caps.json (written when it took its caps from the data) is
    looked for in the folder, its parent and its grandparent. None for a hub id, the embedded model, or a run
    with fixed caps.
    """
    found = trained_caps(model)
    return None if found is None else (int(found[0]["generation.max_new_tokens"]), found[1])


def read_back_samples(path: Optional[Path], prompts: list, reals: list, sampling: dict,
                      text_key: str = "generated", with_cut: bool = False):
    """The texts kept in `path` (JSONL of `write_samples`) when it holds these prompts and real responses, each
    sampled with these settings; else None (no file, unreadable, or made differently: sample again).
    with_cut: (texts, cut) instead, cut[i] the row's `cut_at_cap` (None where the file has none)."""
    import json

    if path is None or not Path(path).is_file():
        return None
    try:
        # split on "\n" only: str.splitlines also splits inside texts holding U+2028, U+0085 and friends
        kept = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").split("\n") if line.strip()]
    except (OSError, ValueError):
        return None
    if ([r.get("prompt") for r in kept] == list(prompts) and [r.get("real") for r in kept] == list(reals)
            and all(r.get("sampling") == sampling for r in kept)):
        texts = [str(r.get(text_key) or "") for r in kept]
        return (texts, [r.get("cut_at_cap") for r in kept]) if with_cut else texts
    return None


def write_samples(path: Path, prompts: list, reals: list, texts: list[str], sampling: dict,
                  text_key: str = "generated", cut: Optional[list[bool]] = None) -> Path:
    """Samples as JSONL (atomically): prompt, real, the text under `text_key`, `cut_at_cap` when `cut` is given,
    and `sampling` (the model, seed and settings that made them), for `read_back_samples`."""
    cut = [None] * len(texts) if cut is None else cut
    return write_rows([{"prompt": p, "real": r, text_key: t, **({} if c is None else {"cut_at_cap": c}),
                        "sampling": sampling} for p, r, t, c in zip(prompts, reals, texts, cut)], path)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", help="folder written by `llmgan prepare`")
    p.add_argument("-o", "--output", required=True, help="output .jsonl or .csv")
    p.add_argument("--split", default="test", help="split to generate for (default test)")
    p.add_argument("--model", default=None, help="HF model id, local folder or adapter folder (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--system-prompt", default=None, help="replace the dataset's system message")
    p.add_argument("--temperature", type=float, default=None,
                   help=f"sampling temperature (default {DEFAULT_TEMPERATURE}; with --teacher, the temperature the "
                        "teacher's warm-up samples were drawn at)")
    p.add_argument("--top-p", type=float, default=None,
                   help=f"nucleus sampling (default {DEFAULT_TOP_P}; with --teacher, as the teacher's warm-up samples)")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="maximum new tokens (default: with --teacher, the cap of the teacher's warm-up samples; "
                        "else as trained, the run's data-derived cap when --model is a generator folder of a run with "
                        f"RUN/data_caps.json; else {DEFAULT_MAX_NEW_TOKENS})")
    p.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--batch-size", type=int, default=16, help="prompts per batch (default 16)")
    p.add_argument("--limit", type=int, default=None, help="only the first N rows of the split")
    p.add_argument("--offset", type=int, default=0, help="skip the first N rows")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"], help="weights dtype")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the model repo's own code (off by default)")
    p.add_argument("--best-of", type=int, default=1, metavar="N",
                   help="sample N responses per prompt (draw k seeded --seed + k) and keep the one --teacher scores "
                        "most human (default 1: plain sampling, the same texts as draw 0)")
    p.add_argument("--teacher", default=None, nargs="+", metavar="RUN/teacher",
                   help="a run's RUN/teacher folder (the discriminator at the end of its warm-up) to rank the "
                        "--best-of draws; measured with the run's start model (RUN/sft/final/generator) as --model. "
                        "Several folders (teachers warmed up from one SFT model with other train.seed values) rank "
                        "by their mean logit: experimental, no better than one teacher on the reply test split "
                        "(RESULTS.md, fortieth session)")
    p.add_argument("--end-ramp", default="off", metavar="off|auto|N",
                   help=f"after N new tokens raise the end token's log-odds linearly to +{END_RAMP_BIAS:g} at the cap, "
                        "so a long text "
                        "ends where the model finds an end plausible rather than mid-text at the cap; auto: N = the "
                        "75th percentile of the training responses' tokens (RUN/data_caps.json of a run's generator "
                        "folder); default off (plain sampling). Experimental, not in the shipped recipe: on the test "
                        "splits the teacher's picks were no harder to detect with it, and often too short "
                        "(RESULTS.md)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def output_rows(prompts: list[list[dict]], reals, texts: list[str], cut: Optional[list] = None) -> list[dict]:
    """Rows of `llmgan generate`'s output (what `llmgan evaluate` reads): per prompt its last user message as
    `prompt`, its system message (or ""), the real response and the generated text, and with `cut` whether the
    text stopped at the token cap (`cut_at_cap`; left out where unknown)."""
    cut = [None] * len(texts) if cut is None else cut
    return [{"prompt": last_user_message(msgs),
             "system": next((m["content"] for m in msgs if m["role"] == "system"), ""),
             "real": real, "generated": gen, **({} if c is None else {"cut_at_cap": c})}
            for msgs, real, gen, c in zip(prompts, reals, texts, cut)]


def run(args: argparse.Namespace) -> int:
    import time

    from llmgan.data import load_prepared
    from llmgan.models import load_model, load_tokenizer

    if args.best_of != 1 or args.teacher:
        from llmgan.adversarial.teacher import check_best_of

        check_best_of(args.best_of, args.teacher)
    if args.best_of > 1 and args.greedy:
        raise LlmganError(f"--best-of {args.best_of} with --greedy: greedy decoding gives the same response every draw; "
                          "drop --greedy (the draws are sampled with --temperature and --top-p)")
    teachers: list = []  # per --teacher folder: (folder, its config: how its warm-up samples were drawn, its model)
    if args.teacher:
        from llmgan.adversarial.teacher import CONFIG_FILE, check_teacher, same_model, sampling_differences, start_model
        from llmgan.config import load_config

        for folder in map(check_teacher, args.teacher):  # every folder checked before any model loads
            teacher_cfg = load_config(folder / CONFIG_FILE)
            teachers.append((folder, teacher_cfg, start_model(folder, teacher_cfg)))
        flags = (("--temperature", "temperature"), ("--top-p", "top_p"), ("--max-new-tokens", "max_new_tokens"))
        for flag, key in flags:
            if getattr(args, key) is None:
                setattr(args, key, getattr(teachers[0][1].generation, key))
                print(f"{flag} {getattr(args, key):g}: as the teacher's warm-up samples ({teachers[0][0]})")
    if args.max_new_tokens is None:
        trained = trained_max_new_tokens(args.model)
        args.max_new_tokens = trained[0] if trained else DEFAULT_MAX_NEW_TOKENS
        if trained:
            print(f"--max-new-tokens {trained[0]}: as trained ({trained[1]})")
    args.temperature = DEFAULT_TEMPERATURE if args.temperature is None else args.temperature
    args.top_p = DEFAULT_TOP_P if args.top_p is None else args.top_p
    if args.temperature <= 0 or not 0 < args.top_p <= 1 or args.max_new_tokens < 1 or args.batch_size < 1:
        raise LlmganError("need --temperature > 0, 0 < --top-p <= 1, --max-new-tokens >= 1 and --batch-size >= 1")
    if args.offset < 0 or (args.limit is not None and args.limit < 1):
        raise LlmganError(f"need --offset >= 0 and --limit >= 1 (got --offset {args.offset}, --limit {args.limit})")
    args.end_ramp = resolve_end_ramp(args.end_ramp, args.model, args.max_new_tokens)
    if args.end_ramp is not None:
        print(f"--end-ramp: the end token's log-odds rise from new token {args.end_ramp} to +{END_RAMP_BIAS:g} at the "
              f"cap of {args.max_new_tokens}")
    check_output_path(args.output, kind="file", suffixes=(".jsonl", ".csv"))
    check_device(args.device)
    for folder, teacher_cfg, teacher_model in teachers:
        differs = sampling_differences(teacher_cfg, args.temperature, args.top_p, args.max_new_tokens,
                                       args.end_ramp)
        if not same_model(teacher_model, args.model):
            differs.insert(0, f"--model {args.model or 'default'} (the teacher's samples: "
                              f"{teacher_model or 'the embedded default'})")
        if differs:  # before any model loads: the user may stop here
            print(f"warning: these draws are sampled otherwise than the samples --teacher {folder} was warmed "
                  f"up on: {'; '.join(differs)}. A teacher ranks well only samples drawn as its own were (post "
                  "validation: a teacher warmed up at temperature 1.0 picked drafts at 0.92 no less detectable than "
                  "unranked ones; RESULTS.md, thirty-first session). A teacher warmed up with "
                  "discriminator.warmup_pool_temperatures takes any temperature in their range", flush=True)
    ds = load_prepared(args.dataset)
    if args.split not in ds:
        raise LlmganError(f"split '{args.split}' not in {args.dataset}; splits: {', '.join(ds)}")
    split = ds[args.split]
    start = min(args.offset, len(split))
    end = len(split) if args.limit is None else min(len(split), args.offset + args.limit)
    split = split.select(range(start, end)) if end > start else split.select([])  # empty range(n, n) trips datasets
    if len(split) == 0:
        raise LlmganError(f"split '{args.split}' of {args.dataset} has no rows to generate for")
    prompts = [list(m) for m in split["prompt"]]
    if args.system_prompt is not None:
        prompts = [([{"role": "system", "content": args.system_prompt}] if args.system_prompt else [])
                   + [m for m in msgs if m["role"] != "system"] for msgs in prompts]
    tok = load_tokenizer(args.model, trust_remote_code=args.trust_remote_code)
    model = load_model(args.model, dtype=args.dtype, trust_remote_code=args.trust_remote_code).to(args.device)
    t0 = time.perf_counter()
    reals = list(split["response"])
    if args.best_of > 1:
        texts, cut, draw_cut = _best_of(args, model, tok, prompts, reals)
        dt = time.perf_counter() - t0
        out = write_rows(output_rows(prompts, reals, texts, cut), args.output)
        human = share_at_cap(reals, tok, args.max_new_tokens)
        print("every draw, " + cut_summary(draw_cut, human, args.max_new_tokens))
        under = " + ".join(args.teacher)
        print(f"wrote {len(texts)} rows to {out}, each the best of {args.best_of} under {under} ({dt:.1f} s); "
              + cut_summary(cut, human, args.max_new_tokens))
        return 0
    try:
        texts, cut = generate_responses(model, tok, prompts, max_new_tokens=args.max_new_tokens,
                                        temperature=args.temperature, top_p=args.top_p, do_sample=not args.greedy,
                                        batch_size=args.batch_size, seed=args.seed, progress=not args.quiet,
                                        return_cut=True, end_ramp=args.end_ramp)
    except GenerationInterrupted as stop:
        kept = len(stop.finished)
        if kept:
            out = write_rows(output_rows(prompts, reals, stop.finished), args.output)
            where = f"kept the {kept} finished rows (of {stop.total}) in {out}"
        else:
            where = f"no row was finished (of {stop.total}); nothing written"
        rest = Path(args.output)
        rest = rest.with_name(f"{rest.stem}.rest{rest.suffix}")
        limit = "" if args.limit is None else f" --limit {args.limit - kept}"
        raise GenerationInterrupted(stop.finished, stop.total, f"{stop.signal_name}: {where}; continue with "
                                    f"--offset {args.offset + kept}{limit} -o {rest} (same seed and settings)") from None
    dt = time.perf_counter() - t0
    rows = output_rows(prompts, reals, texts, cut)
    out = write_rows(rows, args.output)
    print(f"wrote {len(rows)} rows to {out} ({dt:.1f} s, {len(rows) / dt:.2f} responses/s); "
          + cut_summary(cut, share_at_cap(reals, tok, args.max_new_tokens), args.max_new_tokens))
    return 0


def _best_of(args: argparse.Namespace, model, tok, prompts: list[list[dict]], reals: list) -> tuple[list, list, list]:
    """--best-of N --teacher T: N draws (draw k seeded --seed + k, each kept in OUTPUT.draws/draw-k.jsonl and read
    back by the same command run again, so an interrupted run loses at most the draw in progress), D's logit of
    every draw, the highest per prompt: (texts, cut, every draw's cut flags), cut[i] whether the kept draw stopped
    at the cap."""
    import torch

    from llmgan.adversarial.teacher import TeacherMean, best_of

    folder = Path(args.output)
    folder = folder.with_name(folder.name + ".draws")
    folder.mkdir(parents=True, exist_ok=True)
    texts: list[list[str]] = []
    cuts: list[list] = []
    for k in range(args.best_of):
        sampling = {"model": str(args.model), "seed": args.seed + k, "temperature": args.temperature,
                    "top_p": args.top_p, "max_new_tokens": args.max_new_tokens, "greedy": args.greedy,
                    "batch_size": args.batch_size, "dtype": args.dtype,
                    **({} if args.end_ramp is None else {"end_ramp": args.end_ramp, "end_ramp_bias": END_RAMP_BIAS})}
        path = folder / f"draw-{k}.jsonl"
        kept = read_back_samples(path, prompts, reals, sampling, with_cut=True)
        if kept is not None:
            texts.append(kept[0])
            cuts.append(kept[1])
            print(f"draw {k + 1}/{args.best_of}: read back from {path}")
            continue
        if not args.quiet:
            print(f"draw {k + 1}/{args.best_of} (seed {args.seed + k})")
        try:
            draw, cut = generate_responses(model, tok, prompts, max_new_tokens=args.max_new_tokens,
                                           temperature=args.temperature, top_p=args.top_p, do_sample=not args.greedy,
                                           batch_size=args.batch_size, seed=args.seed + k, progress=not args.quiet,
                                           return_cut=True, end_ramp=args.end_ramp)
        except GenerationInterrupted as stop:
            raise GenerationInterrupted(stop.finished, stop.total, f"{stop.signal_name} in draw {k + 1} of "
                                        f"{args.best_of}: the {k} finished draws are kept in {folder}; the same "
                                        f"command continues from them") from None
        write_samples(path, prompts, reals, draw, sampling, cut=cut)
        texts.append(draw)
        cuts.append(cut)
    # a teacher reads its start model's states: the generator already loaded is that model when --model is it;
    # several teachers rank by their mean logit
    teacher = TeacherMean.load(args.teacher, device=args.device, dtype=args.dtype, loaded=(args.model, model, tok))
    logits = torch.stack([teacher.logits(prompts, draw, c) for draw, c in zip(texts, cuts)])  # [N, M]
    pick = best_of(logits)
    counts = torch.bincount(pick, minlength=args.best_of).tolist()
    print(f"teacher logit: draw 0 {logits[0].mean():.3f}, best of {args.best_of} "
          f"{logits.gather(0, pick[None]).mean():.3f}; picks per draw {counts}")
    kept = pick.tolist()
    return ([texts[k][i] for i, k in enumerate(kept)], [cuts[k][i] for i, k in enumerate(kept)],
            [c for draw in cuts for c in draw])
