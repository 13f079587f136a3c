"""`llmgan serve MODEL --best-of N --teacher RUN/teacher`: each chat completion is the best of N engine samples
under a run's warmed-up discriminator, the same ranking as `llmgan generate --best-of N --teacher` (RESULTS.md,
"Reranking with the teacher, shipped"), so that a simulation calling the agent over HTTP gets the reranked
responses and not plain samples.

How a request is answered (transformers engine only; the request has passed serve's RequestCheck):
  1. draw     the engine answers the request N times, one after another, non-streamed; draw k carries
              seed + k when the request has a seed (so draw 0 is the plain answer to the same request; the
              engine seeds torch globally per request, so draws sent together would not be reproducible).
  2. score    the teacher reads the conversation (with the served default system prompt when the request has
              none, as the chat template renders it) and each draw's text: D's logit, higher = more human.
  3. answer   the draw with the highest logit (the first on ties) is the response, as the engine wrote it, plus
              an `llmgan` field: best_of, picked, teacher_logits, draws (every draw's text) and
              completion_tokens_all_draws (what the N draws cost; `usage` is the picked draw's), and, when the
              request samples at another temperature or top-p than the teacher's warm-up samples were drawn
              at, sampling_differs_from_teacher (a teacher ranks well only samples drawn as its own were:
              RESULTS.md, thirty-first session).
An engine error on any draw is the answer. A streamed request is refused (400): nothing can be sent before
all N draws are scored. --continuous-batching is refused with --best-of: in transformers 5.24 four identical
requests sent together made its batching loop fail (IndexError in the embedding; BENCHMARKS.md), and one at
a time it would batch nothing.

What is different from OpenAI's `best_of` (legacy completions, ranked by log-probability): the ranking is the
discriminator's, trained to tell the start model's samples from human text; it is measured with D's own start
model as the served model, and with the training data's system prompt (a persona in the request is read by D,
which never saw one in training).
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any, Callable, Optional, Sequence

from llmgan.errors import LlmganError


def teacher_conversation(messages: list, default_system: Optional[str],
                         text_of: Callable[[Any], Optional[str]]) -> list[dict]:
    """The conversation D reads: the request's messages as plain text (`text_of(content)`, serve's message_text),
    with the served default system prompt first when the request has no system message (as the served chat
    template renders it)."""
    conv = [{"role": m["role"], "content": text_of(m.get("content")) or ""} for m in messages]
    if default_system and not any(m["role"] in ("system", "developer") for m in conv):
        conv.insert(0, {"role": "system", "content": default_system})
    return conv


async def call_engine(app, scope: dict, body: dict) -> tuple[int, Any]:
    """One non-streamed chat completion from the engine's ASGI app, in process: (status, JSON body)."""
    data = json.dumps(body).encode()
    headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() not in (b"content-length", b"x-request-id")]
    scope = {**scope, "headers": headers + [(b"content-length", str(len(data)).encode())]}
    delivered = False

    async def receive():
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": data, "more_body": False}
        await asyncio.Event().wait()  # a JSON answer reads nothing more; cancelled with the request

    status, chunks = 500, []

    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    raw = b"".join(chunks)
    try:
        return status, json.loads(raw or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return status, {"error": {"message": raw.decode("utf-8", "replace")[:500], "type": "server_error"}}


class BestOf:
    """Answers a checked chat completion request with the best of `n` engine draws under `teacher`
    (an llmgan.adversarial.teacher.Teacher, or a TeacherMean of several); `text_of` turns a message's content into
    text (serve's message_text, passed in because serve imports this module)."""

    def __init__(self, teacher: Any, n: int, default_system: Optional[str], text_of: Callable[[Any], Optional[str]],
                 default_sampling: Optional[dict] = None):
        if n < 2:
            raise LlmganError(f"--best-of {n}: needs N >= 2")
        self.teacher, self.n, self.default_system, self.text_of = teacher, n, default_system, text_of
        # the served temperature and top-p, for a request that sets neither (generation_config.json)
        self.default_sampling = default_sampling or {"temperature": 1.0, "top_p": 1.0}
        # one scoring at a time: the encoder stops its forward pass at D's layer with a hook on the shared model,
        # which a second request scoring in another thread at the same moment would trip
        self.lock = threading.Lock()

    def _score(self, conv: list, texts: list[str], cut: list):
        with self.lock:
            return self.teacher.logits([conv] * self.n, texts, cut)

    def refuse(self, body: dict) -> Optional[tuple[int, dict]]:
        if body.get("stream"):
            return 400, {"error": {"message": f"this server answers with the best of {self.n} draws (--best-of), "
                                              "which cannot be streamed: send 'stream': false, or restart llmgan "
                                              "serve without --best-of", "type": "invalid_request_error",
                                   "param": "stream", "code": "unsupported_with_best_of"}}
        return None

    async def __call__(self, app, scope: dict, body: dict) -> tuple[int, Any]:
        try:
            return await self._answer(app, scope, body)
        except Exception as exc:  # the server keeps serving; the client gets a JSON error
            first = (str(exc).splitlines() or [""])[0]
            return 500, {"error": {"message": f"best of {self.n} failed on this request: {type(exc).__name__}: {first}",
                                   "type": "server_error", "param": None, "code": None}}

    async def _answer(self, app, scope: dict, body: dict) -> tuple[int, Any]:
        # 1. draw
        seed = body.get("seed")
        bodies = [{**body, "stream": False, **({"seed": seed + k} if seed is not None else {})} for k in range(self.n)]
        answers = [await call_engine(app, scope, b) for b in bodies]
        for status, answer in answers:
            if status != 200:
                return status, answer
        texts = [a["choices"][0]["message"].get("content") or "" for _, a in answers]
        # which draws stopped at the token limit (finish_reason "length"), for a teacher with discriminator.mark_end
        cut = [{"length": True, "stop": False}.get(a["choices"][0].get("finish_reason")) for _, a in answers]
        # 2. score (off the event loop: the engine keeps serving other requests meanwhile)
        conv = teacher_conversation(body["messages"], self.default_system, self.text_of)
        logits = await asyncio.to_thread(self._score, conv, texts, cut)
        # 3. answer
        from llmgan.adversarial.teacher import best_of

        picked = int(best_of(logits.reshape(self.n, 1))[0])
        answer = dict(answers[picked][1])
        answer["llmgan"] = {"best_of": self.n, "picked": picked, "teacher_logits": [round(float(x), 6) for x in logits],
                            "draws": texts, "draws_cut_at_cap": cut, "completion_tokens_all_draws":
                                sum(int((a.get("usage") or {}).get("completion_tokens") or 0) for _, a in answers)}
        differs = self.sampling_differences(body)
        if differs:
            answer["llmgan"]["sampling_differs_from_teacher"] = differs
        return 200, answer

    def sampling_differences(self, body: dict) -> list[str]:
        """How this request's draws are sampled otherwise than each teacher's warm-up samples (temperature, top-p;
        the served defaults where the request sets none; a frequency_penalty, which transformers serve applies as a
        repetition penalty that no warm-up sample had); [] when they are not. With several teachers (a
        TeacherMean), each teacher is read, and a difference names its teacher's folder."""
        from llmgan.adversarial.teacher import sampling_differences

        got = {k: body[k] if body.get(k) is not None else self.default_sampling[k] for k in ("temperature", "top_p")}
        teachers = getattr(self.teacher, "teachers", [self.teacher])
        differs = [d if len(teachers) == 1 else f"{d} for the teacher in {one.folder}" for one in teachers
                   for d in sampling_differences(one.cfg, got["temperature"], got["top_p"])]
        if body.get("frequency_penalty"):
            differs.append(f"frequency_penalty {body['frequency_penalty']:g} (the teacher's samples: 0)")
        return differs


def check_arguments(n: int, teacher: Optional[Sequence[str]], engine: str, continuous_batching: bool = False) -> None:
    """--best-of/--teacher before any model loads: N > 1 with a teacher folder, not on vLLM (--engine auto then
    means transformers), not with --continuous-batching."""
    from llmgan.adversarial.teacher import check_best_of, check_teacher

    check_best_of(n, teacher)
    if engine == "vllm":
        raise LlmganError("--best-of runs in llmgan's request check in front of transformers serve, so it is not "
                          "available with --engine vllm: pass --engine transformers (or auto, which picks it)")
    if continuous_batching:
        raise LlmganError("--best-of with --continuous-batching: transformers 5.24's batching failed on the identical "
                          "requests the draws are (IndexError in its generation loop); leave --continuous-batching out")
    for folder in teacher or []:
        check_teacher(folder)


def load_best_of(folders: Sequence[str], n: int, *, device: str, default_system: Optional[str],
                 text_of: Callable[[Any], Optional[str]], default_sampling: Optional[dict] = None,
                 served_model: Optional[str] = None) -> BestOf:
    """Load each RUN/teacher (its start model and D's weights; several rank by their mean logit) for serving;
    prints what it loaded, and a warning when the served sampling defaults, or the served model (`served_model`: the
    served export's source, None for the embedded default), differ from those of the teacher's warm-up samples."""
    from llmgan.adversarial.teacher import SUMMARY_FILE, TeacherMean, same_model

    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    teacher = TeacherMean.load(folders, device=device)
    for one in teacher.teachers:
        summary = {}
        if (one.folder / SUMMARY_FILE).is_file():
            summary = json.loads((one.folder / SUMMARY_FILE).read_text())
        auroc = summary.get("discriminator/heldout_auroc")
        print(f"  best of {n} under the teacher in {one.folder} (D on {one.cfg.model.name or 'the embedded default'}"
              + (f", held-out AUROC {auroc:.3f}" if isinstance(auroc, (int, float)) else "") + ")", flush=True)
    if len(teacher.teachers) > 1:
        print(f"  the {len(teacher.teachers)} teachers rank by their mean logit", flush=True)
    print("  streaming is refused", flush=True)
    best = BestOf(teacher, n, default_system, text_of, default_sampling)
    # a teacher ranks other models' samples no better; teachers warmed up on one start model share one line
    by_model: dict[str, list[str]] = {}
    for one in teacher.teachers:
        if not same_model(served_model, one.cfg.model.name):
            by_model.setdefault(one.cfg.model.name or "the embedded default", []).append(str(one.folder))
    differs = [f"the model {served_model or 'the embedded default'} (the teacher's samples: {name})"
               + ("" if len(teacher.teachers) == 1 else
                  f" for the teacher{'s' if len(where) > 1 else ''} in {', '.join(where)}")
               for name, where in by_model.items()]
    differs += best.sampling_differences({})
    if differs:
        print(f"  warning: what is served is sampled otherwise than the samples the teacher was warmed up on: "
              f"{'; '.join(differs)}. A teacher ranks well only samples drawn as its own were (RESULTS.md, "
              "thirty-first session); a request that differs gets the list in llmgan.sampling_differs_from_teacher. "
              "A teacher warmed up with discriminator.warmup_pool_temperatures takes any temperature in their range",
              flush=True)
    return best
