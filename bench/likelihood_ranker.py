"""Is the teacher more than a fluency filter? Rank the same draws by the start model's own likelihood (issue 14).

On posts the teacher's best of 4 gains about -0.035 under the judge at temperature 1.0 (validation), and nothing
once the draws are sampled at top-p 0.95 (RESULTS.md, seventeenth session). Top-p removes the tail tokens that
make a draft incoherent, so part of what the teacher ranks on at 1.0 may be just that: how likely the draft is
under the model that wrote it. This script is the control that separates the two. For each prompt it keeps the
draw with the highest mean log-probability per token under the start model (response tokens and the end-of-turn
token, the chat-formatted prompt as context; no teacher, no training), and reports how that ranking relates to
the teacher's:
- best-N-loglik.jsonl: the likelihood's pick among the N draws given;
- best-N-d.jsonl: the teacher's pick (the same as `llmgan generate --best-of N --teacher` on these draws);
- summary.json: how often the two picks agree, the mean within-prompt Spearman correlation of the two scores,
  and the mean log-probability of each pick, of all draws and of the real responses to the same prompts.
Then judge, e.g.
  llmgan evaluate --compare DRAW-0 ... DRAW-3 OUT/best-4-d.jsonl OUT/best-4-loglik.jsonl \\
      --pool-baseline 4 --detectors all --threads 2 -o OUT/judge

If the likelihood's pick gains about as much as the teacher's and the two agree, the teacher's gain is mostly
fluency, which any truncation of the sampler also buys; if it gains less, the teacher reads more than that.
A draft cut at the token cap is scored with the end-of-turn token it never wrote, an unlikely token there, so
the likelihood leans towards drafts that ended on their own.

Example (post teacher 1's validation draws at temperature 1.0):
  python bench/likelihood_ranker.py --model runs/r23-post-s0/sft/final/generator \\
      --teacher out/bon-post-s1/run/teacher --draws out/r25/post-val-best4-t1.jsonl.draws/draw-{0,1,2,3}.jsonl \\
      -o out/r27/post-val-loglik
"""

from __future__ import annotations

import argparse
import sys
import time

# surface_teacher (beside this file: Python puts the script's folder on sys.path) also puts src/ on sys.path and
# sets the offline environment variables, so llmgan imports below and no hub is reached.
from surface_teacher import add_draw_arguments, open_draws, text_of, write_picks


def prompt_ids(tok, prompts: list) -> list[list[int]]:
    """prompts [M] (conversations) -> the token ids of each chat-formatted prompt, ending with the assistant turn;
    computed once and shared by every draw of the same prompts."""
    from llmgan.models import apply_chat

    return tok(apply_chat(tok, list(prompts)), add_special_tokens=False)["input_ids"]


def mean_logprobs(model, tok, head_ids: list[list[int]], texts: list[str], batch: int = 16) -> list[float]:
    """head_ids [M] (`prompt_ids`), texts [M] -> mean log-probability per token of each text and its end-of-turn
    token, given the chat-formatted prompt, under `model` [M]. `labelled_logps` (the SFT loss's scorer) runs the
    decoder once per batch and the LM head on the text's tokens only."""
    import torch

    from llmgan.training.logprobs import labelled_logps, plain_lm_head

    if not plain_lm_head(model):
        raise SystemExit(f"{type(model).__name__}: its LM head scales or caps logits; labelled_logps does not apply")
    end = tok.eos_token or ""
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    out: list[float] = []
    for s in range(0, len(texts), batch):
        heads = head_ids[s:s + batch]
        tails = tok([t + end for t in texts[s:s + batch]], add_special_tokens=False)["input_ids"]
        seqs = [h + t for h, t in zip(heads, tails)]
        width = max(len(x) for x in seqs)
        ids = torch.tensor([x + [pad] * (width - len(x)) for x in seqs])
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in seqs])
        labels = torch.tensor([[-100] * len(h) + t + [-100] * (width - len(h) - len(t)) for h, t in zip(heads, tails)])
        with torch.no_grad():
            logp, _, _ = labelled_logps(model, ids, mask, labels)  # [sum of text lengths], row-major
        for chunk in torch.split(logp, [len(t) for t in tails]):
            out.append(float(chunk.mean()))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the start model that wrote the draws (RUN/sft/final/generator)")
    p.add_argument("--teacher", required=True, help="RUN/teacher warmed up from that model, for its own picks")
    add_draw_arguments(p)
    args = p.parse_args()

    import numpy as np
    from scipy.stats import spearmanr

    from llmgan.adversarial.teacher import Teacher, same_model
    from llmgan.io import write_json
    from llmgan.models import load_model, load_tokenizer

    _, draws, prompts = open_draws(args)
    t0 = time.perf_counter()
    model, tok = load_model(args.model), load_tokenizer(args.model, padding_side="right")
    heads = prompt_ids(tok, prompts)
    loglik = np.array([mean_logprobs(model, tok, heads, [text_of(r) for r in d]) for d in draws])  # [N, M]
    # the teacher reads its own start model's states; only when that is --model is the loaded copy reused
    teacher = Teacher.load(args.teacher, loaded=(args.model, model, load_tokenizer(args.model)))
    if not same_model(args.model, str(teacher.cfg.model.name)):
        print(f"note: the teacher's start model is {teacher.cfg.model.name}, not --model {args.model}: D and the "
              "likelihood read different models", flush=True)
    d_logit = np.array([teacher.logits(prompts, [text_of(r) for r in d]).numpy() for d in draws])  # [N, M]
    n, m = loglik.shape
    summary = {"model": args.model, "teacher": args.teacher, "draws": [str(f) for f in args.draws], "picks": {}}
    for name, score in (("d", d_logit), ("loglik", loglik)):
        chosen = score.argmax(axis=0)
        rows = write_picks(draws, chosen, args.output / f"best-{n}-{name}.jsonl")
        summary["picks"][name] = {"chosen": chosen.tolist(),
                                  "mean_loglik": float(loglik[chosen, np.arange(m)].mean()),
                                  "mean_d_logit": float(d_logit[chosen, np.arange(m)].mean()),
                                  "mean_words": float(np.mean([len(r["generated"].split()) for r in rows]))}
    rho = [spearmanr(loglik[:, i], d_logit[:, i])[0] for i in range(m)]
    summary["picks_agree"] = float(np.mean(np.array(summary["picks"]["d"]["chosen"])
                                           == np.array(summary["picks"]["loglik"]["chosen"])))
    summary["within_prompt_spearman_mean"] = float(np.nanmean(rho))
    summary["all_draws"] = {"mean_loglik": float(loglik.mean()), "mean_d_logit": float(d_logit.mean())}
    summary["real"] = {"mean_loglik": float(np.mean(mean_logprobs(model, tok, heads, [r["real"] for r in draws[0]])))}
    summary["seconds"] = round(time.perf_counter() - t0)
    write_json(args.output / "summary.json", summary)
    print(f"{m} prompts x {n} draws: picks agree on {summary['picks_agree']:.0%}, within-prompt Spearman "
          f"(log-likelihood, D) {summary['within_prompt_spearman_mean']:.2f}; mean log-prob per token: all draws "
          f"{loglik.mean():.3f}, D's pick {summary['picks']['d']['mean_loglik']:.3f}, the likelihood's pick "
          f"{summary['picks']['loglik']['mean_loglik']:.3f}, the real responses {summary['real']['mean_loglik']:.3f}; "
          f"{summary['seconds']} s; wrote {args.output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
