"""The request check of `llmgan serve` on the transformers engine: what a chat completion request must be before
`transformers serve` sees it. transformers 5.24 answers some bad requests with a bare 500 (a missing or malformed
`messages`, a message without a role, a non-integer or negative `max_tokens`) and checks no `max_tokens` against the
model's context; here they get an OpenAI-style JSON error (400, or 404 for an unknown model name) instead. vLLM does
these checks itself. serve.py's CheckedApp puts a RequestCheck in front of the engine's app.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

ROLES = {"system", "developer", "user", "assistant", "tool"}


def reject(status: int, message: str, *, param: Optional[str] = None,
           code: Optional[str] = None) -> tuple[int, dict]:
    """(status, an OpenAI-style error body): invalid_request_error below 500, server_error from 500."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return status, {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def message_text(content: Any) -> Optional[str]:
    """A message's text: a string, or a list of text parts (OpenAI format); None when it is neither."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(c, dict) and c.get("type") == "text" and isinstance(c.get("text"), str)
                                         for c in content):
        return " ".join(c["text"] for c in content)
    return None


class RequestCheck:
    """Checks a chat completion request before the engine sees it; returns (status, error body) or None, and
    rewrites the request in place (the served name becomes the engine's model path; a missing max_tokens is
    filled in). `count_tokens(messages)` gives a conversation's prompt length with the served chat template."""

    def __init__(self, *, name: str, engine_model: str, count_tokens: Callable[[list], int], context: int,
                 default_max_tokens: int, fixed_sampling: Optional[dict] = None,
                 served_sampling: Optional[dict] = None):
        self.name, self.names = name, {name, engine_model}
        self.engine_model, self.count_tokens = engine_model, count_tokens
        self.context, self.default_max_tokens = context, default_max_tokens
        self.fixed_sampling = fixed_sampling
        # the served defaults (generation_config.json: a run's selection setting); a request sampled otherwise
        # is noted in the server's log once per setting (`note_sampling`)
        self.served_sampling, self.noted = served_sampling, set()

    def __call__(self, body: Any) -> Optional[tuple[int, dict]]:
        if not isinstance(body, dict):
            return reject(400, "the request body must be a JSON object")
        model = body.get("model")
        if model is not None and model not in self.names:
            return reject(404, f"model '{model}' is not served here; this server serves '{self.name}' "
                               "(GET /v1/models)", param="model", code="model_not_found")
        body["model"] = self.engine_model
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return reject(400, "'messages' must be a non-empty list of {role, content} objects", param="messages")
        plain = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ROLES:
                return reject(400, f"messages[{i}] must be an object with a role in {sorted(ROLES)}", param=f"messages[{i}]")
            text = message_text(m.get("content"))
            if text is None:
                return reject(400, f"messages[{i}].content must be a string or a list of text parts",
                              param=f"messages[{i}].content")
            plain.append({"role": m["role"], "content": text})
        for key, low, high in (("temperature", 0, 2), ("top_p", 0, 1), ("frequency_penalty", -2, 2)):
            v = body.get(key)
            if v is not None and (not _number(v) or not low <= v <= high or key == "top_p" and v == 0):
                return reject(400, f"'{key}' must be a number in {'(0, 1]' if key == 'top_p' else f'[{low}, {high}]'}",
                              param=key)
        if self.fixed_sampling is not None:
            problem = self._check_fixed_sampling(body)
            if problem:
                return problem
        if body.get("n") not in (None, 1):
            return reject(400, "'n' must be 1 (send one request per completion)", param="n")
        if body.get("stream") not in (None, True, False):
            return reject(400, "'stream' must be true or false", param="stream")
        if body.get("seed") is not None and (not isinstance(body["seed"], int) or isinstance(body["seed"], bool)):
            return reject(400, "'seed' must be an integer", param="seed")
        stop = body.get("stop")
        if stop is not None and not (isinstance(stop, str) or isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
            return reject(400, "'stop' must be a string or a list of strings", param="stop")
        asked = None
        for key in ("max_completion_tokens", "max_tokens"):
            v = body.get(key)
            if v is not None:
                if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                    return reject(400, f"'{key}' must be an integer >= 1", param=key)
                asked = v if asked is None else asked
        try:
            prompt = self.count_tokens(plain)
        except Exception as exc:  # the chat template refused the conversation (e.g. roles out of order)
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            return reject(400, f"the model's chat template cannot render these messages: {first}", param="messages")
        room = self.context - prompt
        if room < 1:
            return reject(400, f"the prompt is {prompt} tokens; the model's context is {self.context} tokens",
                          param="messages", code="context_length_exceeded")
        if asked is not None and asked > room:
            return reject(400, f"max_tokens {asked} + the prompt's {prompt} tokens exceed the model's context of "
                               f"{self.context} tokens; ask for at most {room}", param="max_tokens",
                          code="context_length_exceeded")
        if asked is None:
            body["max_tokens"] = min(self.default_max_tokens, room)
        self.note_sampling(body)
        return None

    def note_sampling(self, body: dict) -> None:
        """Say once per (temperature, top-p) in the server's log when a request samples otherwise than the served
        defaults: what a simulation that sets its own temperature should know (docs/serving.md)."""
        if self.served_sampling is None:
            return
        asked = tuple(float(body[k]) if body.get(k) is not None else float(self.served_sampling[k])
                      for k in ("temperature", "top_p"))
        served = (float(self.served_sampling["temperature"]), float(self.served_sampling["top_p"]))
        if asked == served or asked in self.noted:
            return
        self.noted.add(asked)
        print(f"note: a request samples at temperature {asked[0]:g}, top-p {asked[1]:g}; the served defaults are "
              f"{served[0]:g}, {served[1]:g} (the run's selection setting where the model comes from a run). Sampled "
              "below the trained temperature, posts were far easier to detect (post validation: SFT drafts 0.831 at "
              "0.7 against 0.630 at 1.0, strongest detector; RESULTS.md, thirty-second session). Said once per "
              "setting", flush=True)

    def _check_fixed_sampling(self, body: dict) -> Optional[tuple[int, dict]]:
        """With continuous batching, transformers 5.24 samples every request with the sampling settings of the
        first one (CBGenerateManager.init_cb; only max_tokens is per request). The server's sampling is therefore
        pinned to the served defaults, and a request asking for other sampling is refused rather than silently
        sampled differently."""
        fixed = self.fixed_sampling
        for key in ("temperature", "top_p"):
            v = body.get(key)
            if v is not None and _number(v) and abs(v - fixed[key]) > 1e-9:
                return reject(400, f"this server batches requests (continuous batching) and samples every request at "
                                   f"temperature {fixed['temperature']}, top-p {fixed['top_p']} (the model's defaults); "
                                   f"leave '{key}' out or restart llmgan serve with --no-continuous-batching",
                              param=key, code="unsupported_with_continuous_batching")
        for key in ("stop", "seed", "logit_bias", "frequency_penalty"):
            if body.get(key) not in (None, 0, [], {}):
                return reject(400, f"'{key}' is not applied per request with continuous batching; leave it out or "
                                   "restart llmgan serve with --no-continuous-batching",
                              param=key, code="unsupported_with_continuous_batching")
        return None
