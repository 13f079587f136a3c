"""Rank by several teachers at once: does the mean logit of independently warmed-up teachers pick better than one?
(issue 14)

Best of n under one teacher stops gaining between n = 4 and n = 8 on both tasks (validation), while the teacher's
logit of the kept draw keeps rising: past the top few draws, what one D prefers is its own, not the judge's.
Reward-model ensembles are the usual remedy for that over-optimisation (Coste et al., arXiv 2310.02743;
Eisenstein et al., arXiv 2312.09244): teachers warmed up from the same start model on their own seeds, pools and
held-out sets disagree where each is idiosyncratic and agree where the texts differ. This script scores the same
draws with every teacher given and keeps, per prompt, the draw with the highest mean logit (no weights, no
tuning), beside each teacher's own pick:
- best-N-mean.jsonl: the ensemble's pick among all N draws given;
- best-N-t{j}.jsonl: teacher j's own pick (for the teacher that chose these draws, the shipped ranking);
- summary.json: how often the picks agree, the mean logit of each pick under every teacher, its mean words and
  the share stopped at the cap (where the draws record `cut_at_cap`);
- with --soft-seeds S ...: soft-N-t{j}-s{S}.jsonl, teacher j's importance-resampled pick (`soft_best_of`: draw i
  kept with probability softmax(logit_i / --soft-temperature)), one file per resampling seed; with --calibrate,
  each teacher's Platt slope on its own held-out set (RUN/heldout.jsonl: real and SFT samples), in summary.json:
  1 where its logit is the log density ratio it is trained to be, 1/slope the temperature that would make it so.
Then judge, e.g.
  llmgan evaluate --compare W/plain-0.jsonl ... W/plain-3.jsonl OUT/best-4-t0.jsonl OUT/best-4-mean.jsonl \\
      --pool-baseline 4 --detectors all --threads 2 -o OUT/judge

Example (the draws of post teacher 1 on validation, ranked by the three post teachers):
  python bench/teacher_ensemble.py --teachers out/bon-post-s1/run/teacher runs/r23-post-s0/teacher \\
      out/bon-post-s2/run/teacher --draws out/r25/post-val-best4-t1.jsonl.draws/draw-{0,1,2,3}.jsonl \\
      -o out/r25/post-val-ensemble
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from headline import cut_share
from surface_teacher import add_draw_arguments, open_draws, text_of, write_picks


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teachers", nargs="+", required=True,
                   help="RUN/teacher folders; those warmed up from the first one's start model share one loaded copy "
                        "of it, any other loads its own")
    p.add_argument("--soft-seeds", nargs="*", type=int, default=[],
                   help="also write each teacher's importance-resampled pick, once per resampling seed given")
    p.add_argument("--soft-temperature", type=float, nargs="+", default=[1.0],
                   help="softmax temperature of --soft-seeds: one for every teacher, or one per teacher")
    p.add_argument("--calibrate", action="store_true",
                   help="fit each teacher's Platt slope on its own held-out set (reported, not used)")
    add_draw_arguments(p)
    args = p.parse_args()
    missing = [str(f) for f in (Path(t).parent / "heldout.jsonl" for t in args.teachers) if not f.is_file()]
    if args.calibrate and missing:
        p.error(f"--calibrate reads each teacher's held-out set, RUN/heldout.jsonl beside RUN/teacher; missing: "
                f"{', '.join(missing)} (a run with discriminator.heldout_size=0 keeps none)")
    temps = args.soft_temperature * len(args.teachers) if len(args.soft_temperature) == 1 else args.soft_temperature
    if len(temps) != len(args.teachers) or min(temps) <= 0:
        p.error(f"--soft-temperature: give one value above 0, or one per teacher ({len(args.teachers)}); got "
                f"{args.soft_temperature}")

    import torch

    from llmgan.adversarial.teacher import CONFIG_FILE, Teacher, best_of, soft_best_of, start_model
    from llmgan.io import write_json

    out, draws, prompts = open_draws(args)
    t0 = time.perf_counter()
    teachers = []
    loaded = None  # the start model, loaded once for every teacher that reads it
    for folder in args.teachers:
        if loaded is None:
            from llmgan.config import load_config
            from llmgan.models import load_model, load_tokenizer

            name = start_model(Path(folder), load_config(Path(folder) / CONFIG_FILE))
            loaded = (name, load_model(name), load_tokenizer(name))
        teachers.append(Teacher.load(folder, loaded=loaded))
    # teachers on the shared start model read the same hidden states: each draw is encoded once for all of them
    logits = []  # per draw [T, M]
    for k, d in enumerate(draws):
        # cut_at_cap: the generator's own flag, read by a teacher with discriminator.mark_end (None where missing)
        logits.append(Teacher.logits_of(teachers, prompts, [text_of(r) for r in d], [r.get("cut_at_cap") for r in d]))
        print(f"draw {k}: scored {len(prompts)} by {len(teachers)} teachers ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    stacked = torch.stack(logits, dim=1)  # [T, N, M]
    n, m = stacked.shape[1], stacked.shape[2]
    picks = {f"t{j}": best_of(stacked[j]) for j in range(len(args.teachers))}
    picks["mean"] = best_of(stacked.mean(dim=0))
    summary = {"teachers": args.teachers, "draws": [str(f) for f in args.draws], "picks": {}}
    for name, chosen in picks.items():
        rows = write_picks(draws, chosen, out / f"best-{n}-{name}.jsonl")
        summary["picks"][name] = {
            "agree_with_mean": float((chosen == picks["mean"]).float().mean()),
            "mean_logit_under_each_teacher": [float(stacked[j].gather(0, chosen[None]).mean())
                                              for j in range(len(args.teachers))],
            "mean_words": sum(len(r["generated"].split()) for r in rows) / m,
            "cut_at_cap": cut_share(out / f"best-{n}-{name}.jsonl") or None}  # '' -> None: the draws lack the flag
    for j in range(len(args.teachers)):
        for seed in args.soft_seeds:
            chosen = soft_best_of(stacked[j], temps[j], torch.Generator().manual_seed(seed))
            rows = write_picks(draws, chosen, out / f"soft-{n}-t{j}-s{seed}.jsonl")
            summary["picks"][f"soft-t{j}-s{seed}"] = {
                "agree_with_own_argmax": float((chosen == picks[f"t{j}"]).float().mean()),
                "mean_logit": float(stacked[j].gather(0, chosen[None]).mean()),
                "mean_words": sum(len(r["generated"].split()) for r in rows) / m,
                "cut_at_cap": cut_share(out / f"soft-{n}-t{j}-s{seed}.jsonl") or None}
    if args.soft_seeds:
        summary["soft_temperature"] = temps
    if args.calibrate:
        summary["platt_slope"] = [platt_slope(t) for t in teachers]
    summary["seconds"] = round(time.perf_counter() - t0)
    write_json(out / "summary.json", summary)
    for name, s in summary["picks"].items():
        agree = (f"agrees with the mean's pick {s['agree_with_mean']:.0%}; logit under each teacher "
                 f"{[round(x, 2) for x in s['mean_logit_under_each_teacher']]}" if "agree_with_mean" in s else
                 f"agrees with its teacher's argmax {s['agree_with_own_argmax']:.0%}; logit {s['mean_logit']:.2f}")
        print(f"{name}: {agree}; {s['mean_words']:.1f} words"
              + (f"; {s['cut_at_cap']} stopped at the cap" if s["cut_at_cap"] else ""))
    if args.calibrate:
        print("Platt slope on each teacher's held-out set:", [round(a, 3) for a in summary["platt_slope"]])
    return 0


def platt_slope(teacher) -> float:
    """The slope a of P(real) = sigmoid(a * logit + b), fitted (sklearn, unregularised) on the teacher's own
    held-out set RUN/heldout.jsonl: its real responses (1) and SFT samples (0), each with its prompt (and, for a
    teacher with discriminator.mark_end, each sample's cut flag)."""
    import json

    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from llmgan.adversarial.teacher import Teacher

    rows = [json.loads(line) for line in (teacher.folder.parent / "heldout.jsonl").open()]
    prompts = [r["prompt"] for r in rows]
    x = np.concatenate([Teacher.logits_of([teacher], prompts, [r["real"] for r in rows])[0].numpy(),
                        Teacher.logits_of([teacher], prompts, [r["fake"] for r in rows],
                                          [r.get("cut_at_cap") for r in rows])[0].numpy()])
    y = np.r_[np.ones(len(rows)), np.zeros(len(rows))]
    return float(LogisticRegression(C=1e6).fit(x[:, None], y).coef_[0, 0])


if __name__ == "__main__":
    sys.exit(main())
