"""The lead table of RESULTS.md for one task, in one command: SFT, three teachers, the teachers' best of 4 on the
whole test split, the base model, and the judge (issue 14: "the shipped configs reproduce the headline in one
command each").

What it runs, each stage a command of its own, in this order (the commands the twenty-first and twenty-second
sessions ran by hand for posts):
  1. sft       llmgan sft --config CONFIG train.output_dir=WORK/sft                      (the SFT model, seed 0)
  2. teachers  llmgan train --config CONFIG model.name=WORK/sft/final/generator train.sft_warm_start=false
               train.seed=S train.steps=1 selection.enabled=false train.output_dir=WORK/teacher-S   per --seeds
               (the discriminator's warm-up on that SFT model, saved as WORK/teacher-S/teacher; one game step,
               which the ranking does not use)
  3. draws     llmgan generate DATA --split test --best-of N --teacher WORK/teacher-S0/teacher --model
               WORK/sft/final/generator --seed --draw-seed ... -o WORK/best-N.jsonl   (N plain draws per test
               prompt, draw k seeded --draw-seed + k, at the config's temperature and top-p and the run's
               data-derived token cap; kept in WORK/best-N.jsonl.draws/)
  4. rank      python bench/teacher_ensemble.py --teachers <every teacher> --draws <the N draws> -o WORK/rank
               (every teacher ranks the same draws: WORK/rank/best-N-t{j}.jsonl; with several teachers also
               their mean logit's pick, WORK/rank/best-N-mean.jsonl, what `llmgan generate --teacher A B C` keeps)
  5. judge     llmgan evaluate --compare <the N draws> <each teacher's pick> [<the mean's pick>] --pool-baseline N
               --detectors all --threads 2 -o WORK/judge   (each pick paired to the mean of the N plain draws)
  6. base      llmgan generate DATA --split test (the base model: model.name of CONFIG) --seed 0 at the same
               sampling settings, then llmgan evaluate WORK/base.jsonl --detectors all --threads 2 -o
               WORK/judge-base   (--no-base leaves it out)
Then WORK/headline.md: per system the strongest detector with its interval, the paired difference, every detector,
relevance, length, diversity and the share stopped at the cap. A stage whose output exists is skipped, so the same
command continues an interrupted run: SFT from its newest checkpoint, sampling from its finished draws, an
interrupted warm-up from its start (it keeps no checkpoint). Every
stage's command, start and end go to WORK/headline.log (with the CPU at each start: numbers reproduce to the
digit only on the same kind), its output to WORK/logs/STAGE.log.

This is the reranking recipe (SFT, the warm-up, the teacher's best of N at sampling time), the one that beats SFT
on both tasks; the config's adversarial game (`llmgan train --config CONFIG`, 30 steps and selection) ties SFT and
is not part of it. --set KEY=VALUE overrides pass to stages 1 and 2 (e.g. a smaller model.name); --limit judges
only the first rows of the test split (a smoke run, not the headline).

Examples (prepare the data first, as each config's header says):
  python bench/headline.py --config configs/twon-reply.yaml --work runs/headline-reply
  python bench/headline.py --config configs/twon-post.yaml --work runs/headline-post
Time on the 2-core CPU (BENCHMARKS.md, "The reply headline in one command" and "The post headline in one command"):
replies 1:08:29; posts about 2 h 5 min from their stages timed alone (the post test split has 745 rows, and sampling
and the judge grow with them). One GPU: add `--device cuda`, which
stages 3 and 6 pass to `llmgan generate`; stages 1 and 2 take `--set model.dtype=bfloat16`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="a shipped config, e.g. configs/twon-post.yaml")
    p.add_argument("--work", required=True, type=Path, help="folder for every stage's output")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="teacher seeds (default 0 1 2)")
    p.add_argument("--best-of", type=int, default=4, help="draws per prompt (default 4)")
    p.add_argument("--draw-seed", type=int, default=1100, help="draw k is seeded this + k (default 1100)")
    p.add_argument("--no-base", action="store_true", help="leave out the base model (stage 6)")
    p.add_argument("--limit", type=int, default=None, help="only the first N test rows (a smoke run)")
    p.add_argument("--device", default="cpu", help="torch device for sampling, stages 3 and 6 (default cpu)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides for stages 1 and 2")
    args = p.parse_args()

    from llmgan.config import load_config
    from llmgan.data import load_prepared
    from llmgan.errors import LlmganError

    cfg = load_config(args.config, list(args.set))
    data = str(cfg.data.path)
    try:  # before any stage runs: the data the config names must be prepared
        splits = load_prepared(data)
    except LlmganError as exc:
        sys.exit(f"{args.config}: data.path {data} cannot be read ({exc}); prepare it first, as the config's "
                 "header says (llmgan prepare ...)")
    if "test" not in splits:
        sys.exit(f"{data} has no test split (splits: {', '.join(splits)}); the headline is judged on it")
    if args.best_of < 2 or not args.seeds:
        sys.exit("need --best-of >= 2 and at least one teacher seed")
    work = args.work
    (work / "logs").mkdir(parents=True, exist_ok=True)
    log = open(work / "headline.log", "a", encoding="utf-8")
    from llmgan.machine import cpu_id, cpu_model, read_cpuinfo  # numbers reproduce only on the same kind of CPU

    cpu = read_cpuinfo()
    log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} machine: {cpu_model(cpu)} (id {cpu_id(cpu)}), "
              f"{os.cpu_count()} CPUs\n")
    bin_dir = Path(sys.executable).parent
    llmgan = [str(bin_dir / "llmgan")] if (bin_dir / "llmgan").exists() else [sys.executable, "-m", "llmgan"]
    n, sets = args.best_of, list(args.set)
    limit = ["--limit", str(args.limit)] if args.limit else []
    sampling = ["--temperature", str(cfg.generation.temperature), "--top-p", str(cfg.generation.top_p)]
    sft = work / "sft" / "final" / "generator"

    def stage(name: str, cmd: list[str], done: Path) -> None:
        if done.exists():
            print(f"[{name}] done before: {done}", flush=True)
            return
        line = shlex.join(cmd)
        print(f"[{name}] {line}", flush=True)
        log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} start {name}: {line}\n")
        log.flush()
        t0 = time.perf_counter()
        with open(work / "logs" / f"{name}.log", "a", encoding="utf-8") as out:
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode
        took = time.perf_counter() - t0
        log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} end {name}: rc {rc}, {took:.0f} s\n")
        log.flush()
        if rc != 0 or not done.exists():
            sys.exit(f"[{name}] failed (rc {rc}; expected {done}): see {work / 'logs' / (name + '.log')}; the same "
                     "command continues from the stages that finished")
        print(f"[{name}] {took / 60:.1f} min", flush=True)

    # 1. sft (an interrupted SFT run continues from its newest checkpoint; one with none starts again)
    again = []
    if (work / "sft").is_dir() and any((work / "sft").iterdir()) and not sft.exists():
        again = ["--resume"] if any((work / "sft").glob("checkpoint-*")) else ["--overwrite"]
    # (flags before the key=value overrides: argparse takes the overrides as one run of positionals)
    stage("sft", llmgan + ["sft", "--config", args.config, *again, f"train.output_dir={work / 'sft'}"] + sets, sft)
    # 2. teachers (an interrupted warm-up starts again: it keeps no checkpoint)
    teachers = [work / f"teacher-{s}" / "teacher" for s in args.seeds]
    for s, t in zip(args.seeds, teachers):
        run = work / f"teacher-{s}"
        again = ["--overwrite"] if run.is_dir() and any(run.iterdir()) and not (t / "teacher.json").exists() else []
        stage(f"teacher-{s}", llmgan + ["train", "--config", args.config, *again, f"model.name={sft}",
                                        "train.sft_warm_start=false", f"train.seed={s}", "train.steps=1",
                                        "selection.enabled=false", f"train.output_dir={run}"] + sets,
              t / "teacher.json")
    # 3. draws (and the first teacher's pick, which stage 4 makes again beside the others')
    picked = work / f"best-{n}.jsonl"
    stage("draws", llmgan + ["generate", data, "--split", "test", "--best-of", str(n), "--teacher", str(teachers[0]),
                             "--model", str(sft), "--seed", str(args.draw_seed), *sampling, "--device", args.device,
                             "--quiet", "-o", str(picked)] + limit, picked)
    draws = [str(picked) + f".draws/draw-{k}.jsonl" for k in range(n)]
    # 4. rank: every teacher on the same draws
    rank = work / "rank"
    stage("rank", [sys.executable, str(HERE / "teacher_ensemble.py"), "--teachers", *map(str, teachers),
                   "--draws", *draws, "-o", str(rank)], rank / "summary.json")
    picks = [str(rank / f"best-{n}-t{j}.jsonl") for j in range(len(teachers))]
    picks += [str(rank / f"best-{n}-mean.jsonl")] if len(teachers) > 1 else []
    # 5. judge
    judge = work / "judge"
    stage("judge", llmgan + ["evaluate", "--compare", *draws, *picks, "--pool-baseline", str(n), "--detectors", "all",
                             "--threads", "2", "--quiet", "-o", str(judge)], judge / "comparison.json")
    # 6. base
    if not args.no_base:
        cap = json.loads((work / "sft" / "data_caps.json").read_text())["generation.max_new_tokens"] \
            if (work / "sft" / "data_caps.json").is_file() else cfg.generation.max_new_tokens
        base_model = ["--model", str(cfg.model.name)] if cfg.model.name else []
        base = work / "base.jsonl"
        stage("base", llmgan + ["generate", data, "--split", "test", *base_model, "--seed", "0", *sampling,
                                "--max-new-tokens", str(cap), "--device", args.device, "--quiet", "-o", str(base)]
              + limit, base)
        stage("judge-base", llmgan + ["evaluate", str(base), "--detectors", "all", "--threads", "2", "--quiet",
                                      "-o", str(work / "judge-base")], work / "judge-base" / "metrics.json")
    text = headline_table(work, args.seeds, n, with_base=not args.no_base)
    (work / "headline.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


def cut_share(path: Path) -> str:
    """The share of rows whose `cut_at_cap` is true, or '' when the file does not record it."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    flags = [r.get("cut_at_cap") for r in rows]
    return f"{100 * sum(map(bool, flags)) / len(flags):.1f} %" if flags and None not in flags else ""


def headline_table(work: Path, seeds: list[int], n: int, with_base: bool) -> str:
    """WORK/headline.md: one column per system (base, the N plain draws, each teacher's pick, the teachers' mean's
    pick), from the judges' comparison.json / metrics.json and the output files."""
    comp = json.loads((work / "judge" / "comparison.json").read_text())
    systems = dict(comp["systems"])
    files = {f"draw-{k}": work / f"best-{n}.jsonl.draws" / f"draw-{k}.jsonl" for k in range(n)}
    files.update({f"best-{n}-t{j}": work / "rank" / f"best-{n}-t{j}.jsonl" for j in range(len(seeds))})
    files[f"best-{n}-mean"] = work / "rank" / f"best-{n}-mean.jsonl"
    if with_base:
        systems = {"base": json.loads((work / "judge-base" / "metrics.json").read_text()), **systems}
        files["base"] = work / "base.jsonl"
    diffs = {(d["system"], d["detector"]): d for d in comp["detector_auroc_difference_vs_first"]}
    names = list(systems)
    labels = [f"teacher {seeds[int(s.rsplit('-t', 1)[1])]}: best of {n}" if s.startswith(f"best-{n}-t") else
              f"mean of the {len(seeds)} teachers: best of {n}" if s == f"best-{n}-mean" else s for s in names]
    first = next(iter(comp["systems"].values()))

    def ci(s: dict, key: str) -> str:
        c = s.get(key + "_ci") or {}
        return f"{s[key]:.3f} ({c['low']:.3f}-{c['high']:.3f})" if c else f"{s[key]:.3f}"

    def paired(name: str, det: str) -> str:
        d = diffs.get((name, det))
        return f"{d['difference']:+.3f} ({d['low']:+.3f}, {d['high']:+.3f})" if d else ""

    rows = [("strongest (`detector_auroc_max`)", lambda s, _: ci(s, "detector_auroc_max") + f" [{s['detector_auroc_max_detector']}]",
             f"{first['human_detector_auroc_max']:.3f}"),
            (f"paired to the mean of the {n} plain draws, strongest", lambda s, nm: paired(nm, "max"), "")]
    for det in ("minilm_lr", "ngram_lr", "finetuned"):
        rows.append((f"`{det}`", lambda s, _, det=det: ci(s, f"detector_auroc_{det}"),
                     f"{first[f'human_detector_auroc_{det}']:.3f}"))
    rows += [("relevance (paired cosine to the real response)", lambda s, _: f"{s['relevance_cosine']:.3f}", ""),
             ("mean words / length W1", lambda s, _: f"{s['mean_words']:.1f} / {s['length_wasserstein']:.2f}",
              f"{first['human_mean_words']:.1f} / {first['human_length_wasserstein']:.2f}"),
             ("distinct-2 / self-BLEU", lambda s, _: f"{s['distinct_2']:.3f} / {s['self_bleu']:.3f}",
              f"{first['human_distinct_2']:.3f} / {first['human_self_bleu']:.3f}"),
             ("stopped at the token cap (`cut_at_cap`)", lambda s, nm: cut_share(files[nm]) if nm in files else "", "")]
    made = work / "sft" / "machine.jsonl"  # the SFT stage's machine (RUN/machine.jsonl, one line per start)
    lines = made.read_text().splitlines() if made.is_file() else []
    machines = [json.loads(x) for x in lines if x.strip()]
    made_on = " and ".join(sorted({m["cpu"] + (f" ({m['cpu_id']})" if m.get("cpu_id") else "") for m in machines}))
    out = [f"{first['n_pairs']} test pairs; judge: {work / 'judge'}"
           + (f" and {work / 'judge-base'}" if with_base else "") + (f"; SFT on {made_on}" if made_on else ""),
           "", "| | human floor | " + " | ".join(labels) + " |", "| --- | ---: |" + " ---: |" * len(names)]
    for label, cell, floor in rows:
        out.append(f"| {label} | {floor} | " + " | ".join(cell(systems[nm], nm) for nm in names) + " |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
