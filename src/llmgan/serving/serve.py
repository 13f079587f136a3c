"""Serve an agent behind an OpenAI-compatible API on an existing engine: `llmgan serve`.

    llmgan serve [MODEL] [--host 127.0.0.1] [--port 8000]

MODEL is an `llmgan export` folder, a run folder (its selected/ or final/ generator), a LoRA adapter
folder, any model folder or Hugging Face id, or nothing for the embedded SmolLM2-135M-Instruct.
Clients talk to http://HOST:PORT/v1 (POST /v1/chat/completions, streamed or not; GET /v1/models;
GET /health) with any OpenAI client, under the model name printed on start (--name).

llmgan does not implement a server. It resolves the model and its defaults, then starts an engine:
  transformers  `transformers serve` (FastAPI/uvicorn), in this process, on the CPU (or a GPU without
                vLLM). Requests are generated one after another; --continuous-batching batches them with
                paged attention instead (on this loaded 2-core CPU: no clear gain at concurrency 4, more
                throughput at 16; BENCHMARKS.md) but, in transformers 5.24, samples every request with the
                first request's settings, so llmgan then refuses requests that ask for other sampling
  vllm          vLLM's OpenAI server (`python -m vllm.entrypoints.openai.api_server`), chosen by
                --engine auto when CUDA and the vllm package are present. Not tested here: no GPU.
The defaults travel the engines' own way, so they hold with either engine and with no llmgan at all:
  - sampling: generation_config.json in the folder (the temperature/top-p the run was selected at;
    the recipe's realism holds at 1.0/1.0 only, RESULTS.md). vLLM reads it with --generation-config auto.
  - persona: the chat template renders the training data's system prompt ("You are a social media
    user. Write a reply to the following post.") when a request has no system message; a request's
    own system message (a persona: bio, leaning, language) replaces it.
A model that is not already an llmgan export (a run, an adapter, the default, or a given
--system-prompt/--temperature/--top-p) is exported once into $LLMGAN_CACHE/serve/ and served from
there (reused on the next start).

What llmgan adds to `transformers serve` (a request check in front of its FastAPI app; vLLM does these
checks itself): transformers 5.24 answers some bad requests with a bare 500 (a missing or malformed
`messages`, a message without a role, a non-integer or negative `max_tokens`) and checks no
`max_tokens` against the model's context. Those get an OpenAI-style JSON error with status 400 (404 for an unknown model
name) before the engine sees them, and the server keeps serving. A request without max_tokens gets
min(--default-max-tokens, what the context leaves); that default is the export's max_new_tokens (the cap the
run trained and was selected at, from the data), else 512. A request that samples otherwise than the served
defaults (a simulation's own temperature) is noted in the server's log, once per setting (serving/requests.py).

Where it runs:
  one CPU    llmgan serve agents/twon-reply                     (transformers serve)
  one GPU    llmgan serve agents/twon-reply                     (vLLM when installed, else transformers on
             cuda, where --continuous-batching may pay off: not measured)
  many GPUs  llmgan serve agents/twon-reply --engine vllm --engine-args "--tensor-parallel-size 4"
             or one server per GPU (CUDA_VISIBLE_DEVICES=i llmgan serve ... --port 800i) behind any
             load balancer. vLLM batches concurrent requests; transformers serve answers them in turn.
It listens on 127.0.0.1 unless --host says otherwise; there is no authentication.

Examples:
  llmgan serve agents/twon-reply --port 8000
  llmgan serve runs/twon-reply --name twon-agent        # exported to the cache first
  llmgan serve                                          # the embedded default, the reply task's persona
  llmgan serve runs/twon-reply/sft/final/generator --best-of 4 --teacher runs/twon-reply/teacher
        # each answer the teacher's pick of 4 samples, as `llmgan generate --best-of` (serving/rerank.py)
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import ipaddress
import json
import os
import shlex
import signal
import socket
import sys
from pathlib import Path
from typing import Any, Optional

from llmgan.errors import LlmganError
from llmgan.serving.requests import RequestCheck, message_text, reject

DEFAULT_PORT = 8000
FALLBACK_MAX_TOKENS = 512  # default max_tokens of a request that gives none, when the export carries no cap


# ----------------------------------------------------------------------------------- the model


def prepare_model(source: Optional[str], *, system_prompt: Optional[str] = None, temperature: Optional[float] = None,
                  top_p: Optional[float] = None, name: Optional[str] = None, verbose: bool = True) -> tuple[Path, dict]:
    """The folder to serve and its llmgan_export.json: `source` itself when it is an llmgan export and nothing is
    overridden, else an export of it in $LLMGAN_CACHE/serve/ (made once, reused while the source is unchanged)."""
    from llmgan.models import cache_dir
    from llmgan.serving.export import EXPORT_MARKER, export, resolve_source

    overrides = {"system_prompt": system_prompt, "temperature": temperature, "top_p": top_p}
    p = Path(source).expanduser() if source else None
    if p is not None and (p / EXPORT_MARKER).is_file() and all(v is None for v in overrides.values()):
        info = json.loads((p / EXPORT_MARKER).read_text())
        return p, {**info, "name": name or info.get("name") or p.name}
    src = resolve_source(source)  # checks the source (LlmganError for a bad one) before anything is written
    key = hashlib.sha256(json.dumps({"model": _fingerprint(src.model), "overrides": overrides}, sort_keys=True)
                         .encode()).hexdigest()[:16]
    folder = cache_dir() / "serve" / key
    default_name = src.run.name if src.run else (Path(src.model).name if src.model else "SmolLM2-135M-Instruct")
    if not (folder / EXPORT_MARKER).is_file():
        if verbose:
            print(f"preparing {src.label} for serving in {folder} (once)", flush=True)
        export(source, folder, check=False, verbose=False, name=default_name, **overrides)
    info = json.loads((folder / EXPORT_MARKER).read_text())
    return folder, {**info, "name": name or default_name}


def _fingerprint(model: Optional[str]) -> Any:
    """What identifies a model source: its path with every file's size and mtime (a retrained run changes it)."""
    if not model or not Path(model).exists():
        from llmgan.models import default_gguf_path

        if model:
            return model
        g = default_gguf_path()
        return [str(g), g.stat().st_size]
    p = Path(model).resolve()
    files = sorted(f for f in p.rglob("*") if f.is_file())
    return [str(p)] + [[str(f.relative_to(p)), f.stat().st_size, int(f.stat().st_mtime)] for f in files]


# --------------------------------------------------------------------------------- the engines


def pick_engine(engine: str) -> str:
    """'auto' -> vllm when CUDA and vllm are both present, else transformers."""
    if engine != "auto":
        if engine == "vllm" and importlib.util.find_spec("vllm") is None:
            raise LlmganError("--engine vllm needs the vllm package on a CUDA machine (pip install vllm); "
                              "use --engine transformers on a CPU")
        return engine
    if importlib.util.find_spec("vllm") is not None:
        import torch

        if torch.cuda.is_available():
            return "vllm"
    return "transformers"


def check_serving_installed() -> None:
    missing = [m for m in ("fastapi", "uvicorn", "openai", "pydantic") if importlib.util.find_spec(m) is None]
    if missing:
        raise LlmganError(f"transformers serve needs {', '.join(missing)}: pip install 'transformers[serving]' "
                          "(or make setup)")


def check_port(host: str, port: int) -> int:
    """Fail early (before loading a model) when the port is taken; port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if port == 0:
                raise LlmganError(f"cannot listen on {host}: {exc.strerror}; pass another --host") from None
            raise LlmganError(f"cannot listen on {host}:{port} ({exc.strerror}); pass another --port "
                              "(--port 0 picks a free one)") from None
        return s.getsockname()[1]


def vllm_command(folder: Path, info: dict, args: argparse.Namespace, port: int) -> list[str]:
    """vLLM's OpenAI server on the folder. --generation-config auto makes it sample with generation_config.json;
    the chat template (with the default system prompt) comes from the folder's tokenizer."""
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
           "--served-model-name", info["name"], "--host", args.host, "--port", str(port),
           "--generation-config", "auto"]
    if args.max_model_len:
        cmd += ["--max-model-len", str(args.max_model_len)]
    if args.seed is not None:
        cmd += ["--seed", str(args.seed)]
    return cmd + shlex.split(args.engine_args or "")


# ---------------------------------------------------------- the request check in front of transformers serve


class CheckedApp:
    """ASGI wrapper around the engine's FastAPI app: POST /v1/chat/completions goes through a RequestCheck;
    GET /v1/models lists the served name; an exception before the engine answered becomes a JSON 500 (the
    server keeps serving either way). Everything else goes to the engine unchanged."""

    def __init__(self, app, check: RequestCheck, name: str, best_of: Any = None):
        self.app, self.check, self.name = app, check, name
        self.best_of = best_of  # a serving.rerank.BestOf: answer with the best of N draws (--best-of)

    async def _send_json(self, send, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method, path = scope.get("method"), scope.get("path", "").rstrip("/")
        downstream = receive
        if method == "GET" and path == "/v1/models":
            return await self._send_json(send, 200, {"object": "list", "data": [
                {"id": self.name, "object": "model", "created": 0, "owned_by": "llmgan"}]})
        if method == "POST" and path == "/v1/chat/completions":
            chunks, more = [], True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunks.append(message.get("body", b""))
                more = message.get("more_body", False)
            try:
                body = json.loads(b"".join(chunks) or b"null")
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                return await self._send_json(send, *reject(400, f"the request body is not valid JSON: {exc}"))
            problem = self.check(body) or (self.best_of.refuse(body) if self.best_of else None)
            if problem is not None:
                return await self._send_json(send, *problem)
            if self.best_of is not None:  # its own errors become a JSON 500 (BestOf.__call__)
                return await self._send_json(send, *await self.best_of(self.app, scope, body))
            data = json.dumps(body).encode()
            replayed = False

            async def replay():  # the engine reads the rewritten body
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": data, "more_body": False}
                return await receive()  # after the body: wait for the client to disconnect

            downstream = replay
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
                     + [(b"content-length", str(len(data)).encode())]}
        started = False

        async def tracked_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, downstream, tracked_send)
        except Exception as exc:
            if started:
                raise
            await self._send_json(send, *reject(500, f"the engine failed on this request: {type(exc).__name__}: "
                                                     f"{(str(exc).splitlines() or [''])[0]}"))


def _context_length(folder: Path) -> int:
    cfg = json.loads((folder / "config.json").read_text())
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        if isinstance(cfg.get(key), int):
            return cfg[key]
    return 2048


def run_transformers(folder: Path, info: dict, args: argparse.Namespace, port: int) -> int:
    """`transformers serve` in this process, pinned to `folder`, with the request check in front of its app.

    transformers builds its FastAPI app inside `Serve.__init__` and hands it straight to uvicorn, with no hook
    for middleware; its own app factory (transformers.cli.serving.server.build_server, looked up when Serve
    starts) is therefore wrapped for the lifetime of this call. Everything else (model loading, the chat
    template, generation, streaming, continuous batching) is the engine's."""
    check_serving_installed()
    from transformers import AutoTokenizer
    from transformers.cli import serve as hf_serve
    from transformers.cli.serving import server as hf_server

    tokenizer = AutoTokenizer.from_pretrained(str(folder))

    def count_tokens(messages: list) -> int:
        return len(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                 return_dict=True)["input_ids"])

    context = args.max_model_len or _context_length(folder)
    fixed = {"temperature": float(info.get("temperature") or 1.0), "top_p": float(info.get("top_p") or 1.0)}
    check = RequestCheck(name=info["name"], engine_model=str(folder), count_tokens=count_tokens, context=context,
                         default_max_tokens=args.default_max_tokens,
                         fixed_sampling=fixed if args.continuous_batching else None, served_sampling=fixed)
    reranker = None
    if args.best_of > 1:
        from llmgan.serving.rerank import load_best_of

        reranker = load_best_of(args.teacher, args.best_of, device=args.device, default_system=info.get("system_prompt"),
                                text_of=message_text, default_sampling=fixed,
                                served_model=None if info.get("source") == "embedded default" else info.get("source"))
    original = hf_server.build_server
    engine: dict = {}

    def build_server(*a, **kw):
        engine["generation_state"] = kw.get("generation_state")
        return CheckedApp(original(*a, **kw), check, info["name"], best_of=reranker)

    def terminate(signum, frame):  # SIGTERM ends the server as Ctrl-C does (graceful shutdown, then exit 0)
        raise KeyboardInterrupt

    hf_server.build_server = build_server
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        hf_serve.Serve(force_model=str(folder), continuous_batching=args.continuous_batching, device=args.device,
                       host=args.host, port=port, default_seed=args.seed, log_level=args.log_level)
    except KeyboardInterrupt:  # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again
        pass
    finally:
        hf_server.build_server = original
        signal.signal(signal.SIGTERM, previous)
    _stop_engine_workers(engine.get("generation_state"))
    print("llmgan serve: stopped", flush=True)
    return 0


def _stop_engine_workers(generation_state, timeout: float = 10.0) -> None:
    """After uvicorn's graceful shutdown (no request in flight), stop the engine's continuous-batching worker.

    The app's shutdown leaves that worker (a non-daemon thread) running, so the process would not exit, and its
    own blocking stop can wait for it indefinitely (seen with transformers 5.24 after a few dozen requests). It is
    stopped with a bounded wait; if it is still alive then, the process ends here with status 0."""
    import threading

    if generation_state is None:
        return
    stopper = threading.Thread(target=generation_state.shutdown, daemon=True)
    stopper.start()
    stopper.join(timeout)
    main = threading.main_thread()
    if stopper.is_alive() or any(t.is_alive() and not t.daemon and t is not main for t in threading.enumerate()):
        print("llmgan serve: stopped (the engine's batching worker did not stop within "
              f"{timeout:.0f} s; exiting without it)", flush=True)
        sys.stderr.flush()
        os._exit(0)


# ------------------------------------------------------------------------------------------ CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default=None, metavar="MODEL",
                   help="llmgan export folder, run folder, adapter, model folder or HF id (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = a free one)")
    p.add_argument("--name", default=None, help="model name clients send (default: the export's name, or the run's folder name)")
    p.add_argument("--engine", choices=["auto", "transformers", "vllm"], default="auto",
                   help="auto: vLLM when CUDA and vllm are present (untested here), else transformers serve")
    p.add_argument("--continuous-batching", action=argparse.BooleanOptionalAction, default=False,
                   help="transformers: batch concurrent requests with paged attention (default off; with it, every "
                        "request samples at the served defaults; BENCHMARKS.md)")
    p.add_argument("--device", default="auto", help="transformers: device (auto, cpu, cuda:0)")
    p.add_argument("--system-prompt", default=None, help="default system message (default: the training data's)")
    p.add_argument("--temperature", type=float, default=None, help="default temperature (default: as selected, 1.0)")
    p.add_argument("--top-p", type=float, default=None, help="default top-p (default: as selected, 1.0)")
    p.add_argument("--max-model-len", type=int, default=None, help="context length (default: the model's)")
    p.add_argument("--default-max-tokens", type=int, default=None,
                   help="max_tokens of a request that gives none (default: the export's max_new_tokens, the cap the "
                        "run trained at; else 512; cut to what the context leaves)")
    p.add_argument("--seed", type=int, default=None, help="engine seed (default: none)")
    p.add_argument("--log-level", default="warning", help="transformers: engine log level (default warning)")
    p.add_argument("--best-of", type=int, default=1, metavar="N",
                   help="answer each request with the best of N samples under --teacher (transformers engine, not "
                        "streamed; the response's `llmgan` field lists the draws and D's logits)")
    p.add_argument("--teacher", default=None, nargs="+", metavar="RUN/teacher",
                   help="the run's warmed-up discriminator that ranks the --best-of draws (written by llmgan train); "
                        "several folders rank by their mean logit, as `llmgan generate --teacher A B C` (experimental)")
    p.add_argument("--engine-args", default=None, help="vllm: extra arguments, e.g. \"--tensor-parallel-size 4\"")


def default_max_tokens(asked: Optional[int], info: dict) -> int:
    """max_tokens of a request that gives none: --default-max-tokens when given, else the export's
    max_new_tokens (the cap its run trained and was selected at), else FALLBACK_MAX_TOKENS."""
    return int(asked or info.get("max_new_tokens") or FALLBACK_MAX_TOKENS)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def run(args: argparse.Namespace) -> int:
    import faulthandler

    if hasattr(signal, "SIGUSR1"):  # `kill -USR1 PID` prints every thread's stack (a server that seems stuck)
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    if args.default_max_tokens is not None and args.default_max_tokens < 1 or \
            (args.max_model_len is not None and args.max_model_len < 1):
        raise LlmganError("--default-max-tokens and --max-model-len must be >= 1")
    if args.best_of != 1 or args.teacher:  # --best-of runs in front of transformers serve (serving/rerank.py)
        from llmgan.serving.rerank import check_arguments

        check_arguments(args.best_of, args.teacher, args.engine, args.continuous_batching)
    engine = "transformers" if args.best_of > 1 else pick_engine(args.engine)
    if engine == "transformers":
        check_serving_installed()
    port = check_port(args.host, args.port)
    folder, info = prepare_model(args.model, system_prompt=args.system_prompt, temperature=args.temperature,
                                 top_p=args.top_p, name=args.name)
    args.default_max_tokens = default_max_tokens(args.default_max_tokens, info)
    shown = {"transformers": "transformers serve" + (" (continuous batching)" if args.continuous_batching else ""),
             "vllm": "vLLM OpenAI server (untested by llmgan: no GPU was available)"}[engine]
    print(f"llmgan serve: engine {shown}\n"
          f"  model   '{info['name']}' from {folder}\n"
          f"  sampling temperature {info.get('temperature')}, top-p {info.get('top_p')} (generation_config.json)\n"
          f"  default system prompt {json.dumps(info.get('system_prompt'), ensure_ascii=False)}\n"
          f"  default max_tokens {args.default_max_tokens} (a request without max_tokens)\n"
          f"  listening on http://{args.host}:{port}/v1 (port {port}); health: http://{args.host}:{port}/health",
          flush=True)
    if not _loopback(args.host):
        print(f"warning: listening on {args.host}: anyone who can reach this machine can use the model "
              "(no authentication)", file=sys.stderr, flush=True)
    if engine == "vllm":
        cmd = vllm_command(folder, info, args, port)
        print("  command " + shlex.join(cmd), flush=True)
        os.execv(cmd[0], cmd)
    return run_transformers(folder, info, args, port)
