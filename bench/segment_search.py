"""Segment-level best of n under the teacher: does choosing among n continuations every K tokens remove more of
what all of a prompt's drafts share than choosing among n whole drafts? (issue 14)

The shipped reranking (`llmgan generate --best-of 4 --teacher RUN/teacher`) keeps, of 4 whole drafts, the one the
teacher scores most human. It removes what differs between the drafts of a prompt; what they share stays (on posts,
sessions 15-19 of RESULTS.md). Here the same teacher chooses along the way: from the prompt and the text kept so
far, the start model samples n continuations of K tokens; the teacher scores each as prompt + text so far +
continuation; the highest is kept and the next segment starts from it, until EOS or --max-new-tokens. The number
of sampled tokens is that of best of n; the teacher scores n texts a segment instead of n a prompt. This is
reward-guided segment search (as in guided decoding with a discriminator), with no training. Whole-draft ranking
in src/ is unchanged; this is a probe, not a shipped option.

Partial texts are scored by a teacher warmed up on whole ones; the teacher's partial-text scores are not
calibrated against its whole-text ones, so a candidate that ends (EOS) competes with ones that go on.

Writes OUTPUT (rows as `llmgan generate` writes them, for `llmgan evaluate`) and OUTPUT.summary.json (seconds,
segments a prompt, the teacher's mean logit of the kept texts).

Example (the run in RESULTS.md, twentieth session; posts, validation, 250 topics):
  python bench/segment_search.py data/right-post --split validation --limit 250 \\
      --model runs/r23-post-s0/sft/final/generator --teacher runs/r28-post-pool512-t1/teacher \\
      --n 4 --segment 16 --max-new-tokens 71 --seed 1100 -o out/r30/post-val-seg4.jsonl
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def cut_at_eos(ids: list[int], eos: set[int]) -> tuple[list[int], bool]:
    """Token ids of one continuation -> (the ids before the first EOS, whether an EOS was met)."""
    for j, t in enumerate(ids):
        if t in eos:
            return ids[:j], True
    return ids, False


def search_batch(model, tok, teacher, prompts: list, texts: list[str], *, n: int, segment: int,
                 max_new_tokens: int, temperature: float, top_p: float, eos: set[int]) -> tuple[list[str], int]:
    """One batch of prompts -> (the kept texts, the number of segments run). texts: the chat-formatted prompts."""
    import torch

    from llmgan.generator import trim_incomplete_characters

    kept: list[list[int]] = [[] for _ in prompts]
    done = [False] * len(prompts)
    heads = tok(texts, add_special_tokens=False)["input_ids"]
    segments = 0
    while not all(done):
        live = [i for i in range(len(prompts)) if not done[i]]
        room = min(segment, max_new_tokens - min(len(kept[i]) for i in live))
        seqs = [heads[i] + kept[i] for i in live]
        width = max(len(s) for s in seqs)
        pad = tok.pad_token_id
        ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs])
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs])
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=room, do_sample=True,
                                 temperature=temperature, top_p=top_p, top_k=0, num_return_sequences=n,
                                 pad_token_id=pad)
        new = out[:, width:].tolist()  # [len(live) * n, <= room], the n candidates of a prompt adjacent
        cands, ended, cand_prompts, cand_texts = [], [], [], []
        for a, i in enumerate(live):
            for b in range(n):
                c, stop = cut_at_eos(new[a * n + b], eos)
                c = c[:max_new_tokens - len(kept[i])]
                cands.append(c)
                ended.append(stop or len(kept[i]) + len(c) >= max_new_tokens)
                cand_prompts.append(prompts[i])
                cand_texts.append(trim_incomplete_characters(
                    tok.decode(kept[i] + c, skip_special_tokens=True).strip()))
        logits = teacher.logits(cand_prompts, cand_texts).reshape(len(live), n)  # [live, n]
        for a, i in enumerate(live):
            b = int(logits[a].argmax())
            kept[i] = kept[i] + cands[a * n + b]
            done[i] = ended[a * n + b]
        segments += 1
    return [trim_incomplete_characters(tok.decode(k, skip_special_tokens=True).strip()) for k in kept], segments


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="a prepared data folder (llmgan prepare)")
    p.add_argument("--split", default="validation", help="which split's prompts (default validation)")
    p.add_argument("--limit", type=int, default=250, help="the first N prompts of the split")
    p.add_argument("--model", required=True, help="the start model (the teacher's, RUN/sft/final/generator)")
    p.add_argument("--teacher", required=True, help="RUN/teacher warmed up on that model's samples")
    p.add_argument("--n", type=int, default=4, help="continuations sampled a segment")
    p.add_argument("--segment", type=int, default=16, help="tokens a segment")
    p.add_argument("--max-new-tokens", type=int, required=True, help="the cap of the whole text (the data's cap)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--batch", type=int, default=16, help="prompts a batch (n continuations each)")
    p.add_argument("--seed", type=int, default=1100)
    p.add_argument("-o", "--output", required=True, type=Path, help="output JSONL, as llmgan generate writes")
    args = p.parse_args()

    import torch

    from llmgan.adversarial.teacher import Teacher
    from llmgan.data import load_prepared
    from llmgan.generator import end_token_ids, output_rows
    from llmgan.io import write_json, write_rows
    from llmgan.models import apply_chat, load_model, load_tokenizer

    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    split = load_prepared(args.data)[args.split]
    split = split.select(range(min(args.limit, len(split))))
    prompts, reals = [list(m) for m in split["prompt"]], list(split["response"])
    model, tok = load_model(args.model).eval(), load_tokenizer(args.model)
    teacher = Teacher.load(args.teacher, loaded=(args.model, model, tok))
    eos = set(end_token_ids(model, tok))
    texts = apply_chat(tok, prompts)
    out, segments, t0 = [], [], time.perf_counter()
    for s in range(0, len(prompts), args.batch):
        kept, k = search_batch(model, tok, teacher, prompts[s:s + args.batch], texts[s:s + args.batch], n=args.n,
                               segment=args.segment, max_new_tokens=args.max_new_tokens,
                               temperature=args.temperature, top_p=args.top_p, eos=eos)
        out += kept
        segments.append(k)
        print(f"{len(out)}/{len(prompts)} prompts, {k} segments, {time.perf_counter() - t0:.0f} s", flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_rows(output_rows(prompts, reals, out), args.output)
    final = teacher.logits(prompts, out)
    write_json(args.output.with_name(args.output.stem + ".summary.json"), {
        "model": args.model, "teacher": args.teacher, "n": args.n, "segment": args.segment,
        "max_new_tokens": args.max_new_tokens, "seed": args.seed, "seconds": round(time.perf_counter() - t0),
        "segments_per_batch": segments, "teacher_logit_of_kept_mean": float(final.mean()),
        "mean_words": sum(len(t.split()) for t in out) / len(out)})
    print(f"wrote {args.output}; teacher logit of the kept texts {float(final.mean()):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
