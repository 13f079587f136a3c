"""Drafts cut at the token cap trimmed back to their last sentence end, then ranked: does that bring the share of
texts that stop mid-text near the human share without losing the teacher's gain? (issue 14)

The issue asks to keep the share of texts cut at the cap near the human share of texts that long: a text cut
mid-sentence teaches nothing about realism. The SFT model's post drafts reach the 71-token cap 16-21 % of the time
(human posts: 3-5 %), and the teacher's best of 4 still does on 13-15 % of topics (RESULTS.md, twentieth and
twenty-first sessions). Leaving the cut drafts out ("complete first", bench/complete_first.py) swaps them for other
drafts; this script keeps them, trimmed:
- a draft that reached the cap (its `cut_at_cap`, which `llmgan generate` writes since the twenty-first session;
  for older draws the proxy, re-tokenized length >= --cap - 1) is cut back to the end of its last sentence: the
  last '.', '!', '?' or '…' (with closing quotes or brackets right after it) followed by whitespace or the text's
  end, or its last line break, whichever is later. When that keeps fewer than half of its words, or there is
  none, the draft stays whole (and still ends mid-text). Drafts that ended on their own are untouched.
- trim-teacher.jsonl: the teacher's highest logit among the 4 trimmed drafts;
- trim-draw0.jsonl (the control, no teacher): draw 0 trimmed;
- summary.json: how many drafts reached the cap, how many were trimmed, the share of picks still ending mid-text.
Then judge, e.g.
  llmgan evaluate --compare W/draw-0.jsonl ... W/draw-3.jsonl W.jsonl OUT/trim-teacher.jsonl OUT/trim-draw0.jsonl \\
      --pool-baseline 4 --detectors all --threads 2 -o OUT/judge

Example (the shipped post teacher's draws on validation):
  python bench/trim_cut.py --teacher runs/r28-post-pool512-t1/teacher --cap 71 \\
      --draws out/r28/post-val-best4-p512.jsonl.draws/draw-{0,1,2,3}.jsonl -o out/r32/post-val-trim
"""

from __future__ import annotations

import re
import sys
import time

from surface_teacher import cut_flags, open_draws_with_teacher, text_of, write_picks

# the end of a sentence: terminal punctuation with any closing quotes/brackets, before whitespace or the end
SENTENCE_END = re.compile(r"[.!?…][\"”’')\]]*(?=\s|$)")


def trim_to_sentence(text: str, min_share: float = 0.5) -> str | None:
    """The text up to the end of its last sentence (or its last line break, whichever is later); None when there
    is none, or when the trimmed text keeps fewer than `min_share` of the words."""
    ends = [m.end() for m in SENTENCE_END.finditer(text)]
    breaks = [m.start() for m in re.finditer(r"\n", text.rstrip())]
    cut = max(ends + breaks, default=0)
    kept = text[:cut].rstrip()
    if not kept or len(kept.split()) < min_share * len(text.split()):
        return None
    return kept


def main() -> int:
    t0 = time.perf_counter()
    args, out, draws, prompts, teacher, tok = open_draws_with_teacher(__doc__)

    import torch

    from llmgan.adversarial.teacher import best_of
    from llmgan.io import write_json

    cut, _, recorded = cut_flags(draws, tok, args.cap)
    trimmed, still_cut = [], []  # per draw: rows with the trimmed text; whether the text still ends mid-text
    for d, c in zip(draws, cut):
        rows, flags = [], []
        for r, at_cap in zip(d, c):
            short = trim_to_sentence(text_of(r)) if at_cap else None
            rows.append({**r, "generated": short if short is not None else text_of(r), "cut_at_cap": bool(at_cap)})
            rows[-1].pop("fake", None)
            flags.append(bool(at_cap) and short is None)
        trimmed.append(rows)
        still_cut.append(flags)
    logits = torch.stack([teacher.logits(prompts, [r["generated"] for r in d]) for d in trimmed])  # [N, M]
    mid = torch.tensor(still_cut)  # [N, M]
    at = torch.tensor(cut)  # [N, M]
    picks = {"trim-teacher": best_of(logits), "trim-draw0": torch.zeros(len(prompts), dtype=torch.long)}
    summary = {"teacher": args.teacher, "draws": [str(f) for f in args.draws], "cap": args.cap,
               "cut_from": "cut_at_cap" if recorded else "length proxy (re-tokenized >= cap - 1)",
               "share_at_cap_per_draw": [float(x) for x in at.float().mean(dim=1)],
               "share_trimmed_of_those_at_cap": float((at & ~mid).sum() / max(1, int(at.sum()))),
               "share_still_mid_text_per_draw": [float(x) for x in mid.float().mean(dim=1)], "picks": {}}
    for name, chosen in picks.items():
        rows = write_picks(trimmed, chosen, out / f"{name}.jsonl")
        summary["picks"][name] = {
            "share_reached_cap": float(at.gather(0, chosen[None]).float().mean()),
            "share_still_mid_text": float(mid.gather(0, chosen[None]).float().mean()),
            "mean_teacher_logit": float(logits.gather(0, chosen[None]).mean()),
            "mean_words": sum(len(r["generated"].split()) for r in rows) / len(rows)}
    summary["seconds"] = round(time.perf_counter() - t0)
    write_json(out / "summary.json", summary)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
