"""A reply thread written by persona agents through an OpenAI-compatible endpoint (`llmgan serve`).

Takes real posts from the held-out test split of a dataset prepared by `llmgan prepare`, and lets N agents,
each with its own persona (a system message: bio, leaning, language), reply in turn for T rounds. Each agent
sees the post and the last few replies. Every reply is one row of a JSONL file in the `llmgan evaluate`
format (prompt = the post, real = a human reply to the same post, generated = the agent's reply), so the
agents' replies can be judged against the real ones:

    llmgan export runs/twon-reply -o agents/twon-reply
    llmgan serve agents/twon-reply --port 8000 &
    python examples/thread_simulation.py --data data/prelim-reply --agents 3 --turns 2 -o out/threads.jsonl
    llmgan evaluate out/threads.jsonl

Needs only the `openai` and `datasets` packages (no llmgan import): copy it into a simulation.
Sampling is left to the server (the temperature/top-p the agent was selected at).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from openai import OpenAI

DEFAULT_SYSTEM = "You are a social media user. Write a reply to the following post."
# (name, persona) pairs; each persona is appended to the training data's own system prompt, so the agent stays
# close to what it was trained on while following its persona.
PERSONAS = [
    ("anna", "You are Anna, 34, a nurse from Hamburg. You lean left, care about public health and write in English."),
    ("bob", "You are Bob, 58, a retired engineer from Ohio. You lean conservative, distrust big government and "
            "write short, blunt replies in English."),
    ("chloe", "You are Chloe, 22, a student in Lyon, politically in the centre, and you write in French."),
    ("deniz", "You are Deniz, 41, a small-business owner from Berlin. You are sceptical of every party and write "
              "in English with a dry sense of humour."),
]


def load_posts(data: str, split: str, n: int, seed: int) -> tuple[list[tuple[str, list[str]]], str]:
    """n real posts of a prepared split with all their human replies, and the data's system prompt."""
    from datasets import load_from_disk

    ds = load_from_disk(data)
    if split not in ds:
        sys.exit(f"error: split '{split}' not in {data} (splits: {', '.join(ds)})")
    card = Path(data) / "llmgan_card.json"
    system = json.loads(card.read_text()).get("system_prompt") if card.is_file() else None
    replies: dict[str, list[str]] = {}
    for row in ds[split]:
        replies.setdefault(row["prompt_text"], []).append(row["response"])
    posts = sorted(replies)
    random.Random(seed).shuffle(posts)
    return [(p, replies[p]) for p in posts[:n]], system or DEFAULT_SYSTEM


def user_message(post: str, thread: list[dict], context: int) -> str:
    """The post, then the last `context` replies of the thread (the training prompts are the post alone)."""
    if not thread or context == 0:
        return post
    shown = "\n".join(f"@{r['agent']}: {r['generated']}" for r in thread[-context:])
    return f"{post}\n\nReplies so far:\n{shown}"


def simulate(client: OpenAI, model: str, post: str, real: list[str], personas: list[tuple[str, str]], system: str,
             turns: int, context: int, max_tokens: int, thread_id: int) -> list[dict]:
    thread: list[dict] = []
    for turn in range(turns):
        for name, persona in personas:
            messages = [{"role": "system", "content": f"{system} {persona}"},
                        {"role": "user", "content": user_message(post, thread, context)}]
            reply = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)
            text = (reply.choices[0].message.content or "").strip()
            thread.append({"prompt": post, "real": real[len(thread) % len(real)] if real else "", "generated": text,
                           "thread": thread_id, "turn": turn, "agent": name, "persona": persona})
            print(f"[thread {thread_id} turn {turn}] @{name}: {text[:120]!r}", flush=True)
    return thread


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="the server's /v1 URL")
    p.add_argument("--api-key", default="none", help="API key (llmgan serve needs none)")
    p.add_argument("--model", default=None, help="model name (default: the first one the server lists)")
    p.add_argument("--data", default=None, help="folder written by `llmgan prepare` (real posts and replies)")
    p.add_argument("--split", default="test", help="split the posts come from (default: test, held out)")
    p.add_argument("--post", default=None, help="one post to start from instead of --data")
    p.add_argument("--threads", type=int, default=1, help="how many posts (threads) to simulate")
    p.add_argument("--agents", type=int, default=3, help=f"persona agents (at most {len(PERSONAS)})")
    p.add_argument("--turns", type=int, default=2, help="rounds; every agent replies once a round")
    p.add_argument("--context", type=int, default=3, help="how many of the last replies an agent sees")
    p.add_argument("--max-tokens", type=int, default=64, help="tokens per reply")
    p.add_argument("--seed", type=int, default=0, help="which posts are drawn")
    p.add_argument("-o", "--output", required=True, help="JSONL file to write (llmgan evaluate format)")
    args = p.parse_args(argv)
    if not 1 <= args.agents <= len(PERSONAS) or args.turns < 1 or args.threads < 1:
        sys.exit(f"error: need 1 <= --agents <= {len(PERSONAS)}, --turns >= 1 and --threads >= 1")
    if (args.data is None) == (args.post is None):
        sys.exit("error: give --data DIR (posts of a prepared split) or --post TEXT")
    client = OpenAI(base_url=args.base_url, api_key=args.api_key)
    model = args.model or client.models.list().data[0].id
    if args.data:
        posts, system = load_posts(args.data, args.split, args.threads, args.seed)
    else:
        posts, system = [(args.post, [])], DEFAULT_SYSTEM
    rows = []
    for i, (post, real) in enumerate(posts):
        rows += simulate(client, model, post, real, PERSONAS[:args.agents], system, args.turns, args.context,
                         args.max_tokens, i)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(out)
    print(f"wrote {len(rows)} replies in {len(posts)} thread(s) to {out}; judge them with: llmgan evaluate {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
