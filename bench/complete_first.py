"""Best of n among the drafts that ended on their own: does leaving out drafts cut at the token cap help the
teacher's ranking? (issue 14)

At temperature 1.0, 16-21 % of the SFT model's post drafts run into the cap (71 tokens) and stop mid-text, where
3 % of the real posts are that long; the teacher's whole-draft pick still stops at the cap 15 % of the time
(RESULTS.md, twentieth session). This script ranks the same draws twice:
- complete-first: the teacher's highest logit among the drafts not cut at the cap (each draw row's `cut_at_cap`,
  which `llmgan generate` writes since the twenty-first session; for older draws a proxy, re-tokenized length
  below --cap - 1); if every draft of a prompt is cut, the teacher's highest overall;
- complete-first-plain (the control, no teacher): the first such draft in draw order, else draw 0.
Then judge, e.g.
  llmgan evaluate --compare W/draw-0.jsonl ... W/draw-3.jsonl W.jsonl OUT/complete-first.jsonl \\
      OUT/complete-first-plain.jsonl --pool-baseline 4 --detectors all --threads 2 -o OUT/judge

Example (the run in RESULTS.md; the shipped post teacher's draws on validation):
  python bench/complete_first.py --teacher runs/r28-post-pool512-t1/teacher --cap 71 \\
      --draws out/r28/post-val-best4-p512.jsonl.draws/draw-{0,1,2,3}.jsonl -o out/r30/post-val-complete
"""

from __future__ import annotations

import sys
import time

from surface_teacher import cut_flags, open_draws_with_teacher, text_of, write_picks


def main() -> int:
    t0 = time.perf_counter()
    args, out, draws, prompts, teacher, tok = open_draws_with_teacher(__doc__)

    import torch

    from llmgan.adversarial.teacher import best_of
    from llmgan.io import write_json

    logits = torch.stack([teacher.logits(prompts, [text_of(r) for r in d]) for d in draws])  # [N, M]
    flags, proxy_cut, recorded = cut_flags(draws, tok, args.cap)
    proxy = ~torch.tensor(proxy_cut)  # [N, M], complete by the length proxy
    complete = ~torch.tensor(flags)  # [N, M]
    any_complete = complete.any(dim=0)  # [M]
    masked = torch.where(complete | ~any_complete[None], logits, torch.full_like(logits, float("-inf")))
    picks = {"complete-first": best_of(masked),
             "complete-first-plain": torch.where(any_complete, complete.float().argmax(dim=0), 0),
             "teacher": best_of(logits)}
    summary = {"teacher": args.teacher, "draws": [str(f) for f in args.draws], "cap": args.cap,
               "cut_from": "cut_at_cap" if recorded else "length proxy",
               "proxy_agrees_with_cut_at_cap": float((proxy == complete).float().mean()) if recorded else None,
               "share_at_cap_per_draw": [float(x) for x in (~complete).float().mean(dim=1)],
               "prompts_with_every_draft_at_cap": float((~any_complete).float().mean()), "picks": {}}
    for name, chosen in picks.items():
        rows = write_picks(draws, chosen, out / f"{name}.jsonl")
        summary["picks"][name] = {
            "share_at_cap": float((~complete).gather(0, chosen[None]).float().mean()),
            "mean_teacher_logit": float(logits.gather(0, chosen[None]).mean()),
            "agree_with_teacher": float((chosen == picks["teacher"]).float().mean()),
            "mean_words": sum(len(r["generated"].split()) for r in rows) / len(rows)}
    summary["seconds"] = round(time.perf_counter() - t0)
    write_json(out / "summary.json", summary)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
