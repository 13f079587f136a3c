"""llmgan serve: `transformers serve` behind llmgan's request check, started as a subprocess on a free localhost
port and used through the `openai` client; the thread-simulation example end to end.

The tiny random model (exported from a run built without training) checks the API, errors, concurrency,
the default system prompt (by the prompt's token count) and a clean stop; the slow test uses the embedded
default model to check that the served model follows a persona's system message.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from test_export import SELECTED_CAP, SELECTED_P, SELECTED_T, make_fake_run

REPO = Path(__file__).resolve().parents[1]
NAME = "agent"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m llmgan serve MODEL` as a subprocess; waits for /health."""

    def __init__(self, model: str, *extra: str, cache: Path, timeout: float = 180):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = cache / f"serve-{self.port}.log"
        env = {**os.environ, "LLMGAN_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "llmgan", "serve", model, "--port", str(self.port),
                                      "--name", NAME, *extra], stdout=open(self.log, "w"), stderr=subprocess.STDOUT,
                                     env=env, cwd=REPO)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.base}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"server not healthy after {timeout} s:\n{self.log.read_text()[-3000:]}")

    def client(self):
        from openai import OpenAI

        return OpenAI(base_url=f"{self.base}/v1", api_key="none", timeout=120, max_retries=0)

    def post(self, data: bytes) -> tuple[int, dict]:
        req = urllib.request.Request(f"{self.base}/v1/chat/completions", data=data,
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGUSR1)  # llmgan serve prints every thread's stack into the log
                time.sleep(2)
                self.proc.kill()
                self.proc.wait()
                return -9
        return self.proc.returncode


@pytest.fixture(scope="module")
def run_export(tmp_path_factory, tiny_model_dir, demo_data) -> Path:
    from llmgan.serving.export import export

    base = tmp_path_factory.mktemp("serve")
    run = make_fake_run(base / "run", tiny_model_dir, demo_data)
    export(str(run), base / "agent", verbose=False, check=False)
    return base / "agent"


@pytest.fixture(scope="module")
def server(run_export, tmp_path_factory):
    srv = Server(str(run_export), cache=tmp_path_factory.mktemp("cache"))
    yield srv
    srv.stop()


USER = [{"role": "user", "content": "The new bike lanes downtown are great."}]


def test_startup_line_models_and_completion(server):
    head = server.log.read_text()
    assert "engine transformers serve" in head and f"port {server.port}" in head and "127.0.0.1" in head
    assert f"default max_tokens {SELECTED_CAP} " in head  # the cap the run was selected at, from the export
    client = server.client()
    assert [m.id for m in client.models.list().data] == [NAME]
    reply = client.chat.completions.create(model=NAME, messages=USER, max_tokens=8)
    assert reply.choices[0].message.content and reply.usage.completion_tokens == 8


def test_streamed_completion(server):
    stream = server.client().chat.completions.create(model=NAME, messages=USER, max_tokens=6, stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) >= 3 and text
    assert chunks[-1].choices[0].finish_reason == "length"


def test_bad_requests_get_json_4xx_and_the_server_keeps_serving(server):
    import openai

    bad = [b'{"messages": [{"role": ', b'{"max_tokens": 5}', b'{"messages": "hi"}', b'[1, 2]',
           json.dumps({"messages": [{"content": "no role"}]}).encode(),
           json.dumps({"messages": USER, "max_tokens": "ten"}).encode(),
           json.dumps({"messages": USER, "max_tokens": 0}).encode(),
           json.dumps({"messages": USER, "max_tokens": 10**6}).encode(),  # more than the context
           json.dumps({"messages": [{"role": "user", "content": "word " * 1100}]}).encode(),  # prompt > context
           json.dumps({"messages": USER, "temperature": 7}).encode(),
           json.dumps({"messages": USER, "n": 3}).encode()]
    for data in bad:
        status, body = server.post(data)
        assert 400 <= status < 500, (data[:80], status, body)
        assert body["error"]["message"] if "error" in body else body["detail"], body
    status, body = server.post(json.dumps({"model": "gpt-4", "messages": USER}).encode())
    assert status == 404 and body["error"]["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError, match="context"):
        server.client().chat.completions.create(model=NAME, messages=USER, max_tokens=5000)
    status, body = server.post(json.dumps({"model": NAME, "messages": USER, "max_tokens": 4}).encode())
    assert status == 200 and body["choices"][0]["message"]["content"]
    assert server.proc.poll() is None


def test_default_system_prompt_is_the_training_data_s(server, run_export):
    """Without a system message the prompt is the training prompt (system = the data card's prompt); a persona's
    system message replaces it. Checked by the engine's own token count of the prompt."""
    from transformers import AutoTokenizer

    from llmgan.data import TASKS

    client = server.client()
    tok = AutoTokenizer.from_pretrained(run_export)

    def served_prompt_tokens(messages):
        return client.chat.completions.create(model=NAME, messages=messages, max_tokens=1).usage.prompt_tokens

    def tokens(system):
        return len(tok.apply_chat_template([{"role": "system", "content": system}] + USER, add_generation_prompt=True,
                                           tokenize=True, return_dict=True)["input_ids"])

    data_system = TASKS["reply"].system_prompt
    smol_default = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    assert tokens(data_system) != tokens(smol_default)  # the check below can tell them apart
    assert served_prompt_tokens(USER) == tokens(data_system)
    persona = "You are Zorblax, a retired astronaut from Lyon who writes in French and leans left."
    assert served_prompt_tokens([{"role": "system", "content": persona}] + USER) == tokens(persona)


def test_sixteen_concurrent_requests(server):
    client = server.client()

    def ask(i):
        msgs = [{"role": "user", "content": f"Post number {i}: what do you think about the weather?"}]
        return client.chat.completions.create(model=NAME, messages=msgs, max_tokens=8).choices[0].message.content

    t0 = time.time()
    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(ask, range(16)))
    assert len(replies) == 16 and all(r for r in replies), replies
    assert time.time() - t0 < 120


def test_thread_simulation_example(server, demo_data, tmp_path):
    out = tmp_path / "threads.jsonl"
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "thread_simulation.py"), "--base-url",
                           f"{server.base}/v1", "--data", str(demo_data), "--agents", "2", "--turns", "2",
                           "--max-tokens", "8", "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and [r["agent"] for r in rows] == ["anna", "bob", "anna", "bob"]
    assert all(r["prompt"] and r["real"] and r["generated"] for r in rows)
    assert len({r["prompt"] for r in rows}) == 1 and [r["turn"] for r in rows] == [0, 0, 1, 1]
    # the real replies are the test split's replies to that post (llmgan evaluate format)
    from datasets import load_from_disk

    test = load_from_disk(str(demo_data))["test"]
    real = {r["response"] for r in test if r["prompt_text"] == rows[0]["prompt"]}
    assert {r["real"] for r in rows} <= real


def test_server_stops_cleanly(server):
    code = server.stop()
    assert code == 0, server.log.read_text()[-2000:]
    assert "llmgan serve: stopped" in server.log.read_text()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{server.base}/health", timeout=2)


@pytest.fixture(scope="module")
def best_of_server(run_export, tiny_model_dir, tmp_path_factory):
    from test_teacher import train_tiny_teacher

    _, teacher = train_tiny_teacher(tiny_model_dir, tmp_path_factory.mktemp("run") / "teacher")
    srv = Server(str(run_export), "--best-of", "3", "--teacher", str(teacher), cache=tmp_path_factory.mktemp("cache"))
    yield srv, teacher
    srv.stop()


def test_best_of_answers_with_the_teacher_s_pick(best_of_server, run_export, tiny_model_dir):
    """`serve --best-of 3 --teacher`: the answer is the draw the teacher (loaded here on its own) scores highest,
    D reading the conversation with the served default system prompt; draw k carries the request's seed + k;
    streaming is refused and the server keeps answering."""
    import torch

    from llmgan.adversarial.teacher import Teacher

    srv, folder = best_of_server
    assert "best of 3 under the teacher" in srv.log.read_text()

    def ask(**extra):
        return srv.post(json.dumps({"model": NAME, "messages": USER, "max_tokens": 6, **extra}).encode())

    status, a = ask(seed=5)
    assert status == 200, a
    x = a["llmgan"]
    assert x["best_of"] == 3 and len(set(x["draws"])) == 3  # three different samples
    # each draw's finish_reason "length" is its cut flag (read by a teacher with discriminator.mark_end)
    assert len(x["draws_cut_at_cap"]) == 3 and x["draws_cut_at_cap"][x["picked"]] == (
        a["choices"][0]["finish_reason"] == "length")
    system = json.loads((run_export / "llmgan_export.json").read_text())["system_prompt"]
    expected = Teacher.load(folder).logits([[{"role": "system", "content": system}] + USER] * 3, x["draws"])
    assert torch.allclose(torch.tensor(x["teacher_logits"]), expected, atol=1e-4)
    assert x["picked"] == int(expected.argmax()) and a["choices"][0]["message"]["content"] == x["draws"][x["picked"]]
    assert a["usage"]["completion_tokens"] == 6 and x["completion_tokens_all_draws"] == 18
    # the served defaults (temperature 0.9, top-p 0.95) are not the tiny teacher's warm-up sampling (1.0, 1.0):
    # said at start-up and in every answer sampled otherwise; a request sampled as the teacher's samples has no note
    # the served model (the run's selected generator) is not the teacher's start model either: said at start-up
    log = srv.log.read_text()
    assert "warning: what is served is sampled otherwise than the samples the teacher was warmed up on" in log
    assert f"the model {json.loads((run_export / 'llmgan_export.json').read_text())['source']} (the teacher's " \
           f"samples: {tiny_model_dir})" in log
    assert x["sampling_differs_from_teacher"] == [f"temperature {SELECTED_T:g} (the teacher's samples: 1)",
                                                  f"top-p {SELECTED_P:g} (the teacher's samples: 1)"]
    status, same = ask(seed=5, temperature=1.0, top_p=1.0)
    assert status == 200 and "sampling_differs_from_teacher" not in same["llmgan"]
    assert ask(seed=5, temperature=0.5)[1]["llmgan"]["sampling_differs_from_teacher"] == [
        "temperature 0.5 (the teacher's samples: 1)", f"top-p {SELECTED_P:g} (the teacher's samples: 1)"]
    status, b = ask(seed=6)  # its draws are seeded 6, 7, 8: the first request's draws 1 and 2 come first
    assert status == 200 and b["llmgan"]["draws"][:2] == x["draws"][1:]
    assert ask(seed=5)[1]["llmgan"] == x  # the same request, the same draws and pick
    status, err = ask(stream=True)
    assert status == 400 and err["error"]["param"] == "stream" and "--best-of" in err["error"]["message"]
    reply = srv.client().chat.completions.create(model=NAME, messages=USER, max_tokens=4)
    assert reply.choices[0].message.content and reply.usage.completion_tokens == 4
    assert srv.stop() == 0


def test_serve_refuses_bad_setup_before_loading(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        proc = subprocess.run([sys.executable, "-m", "llmgan", "serve", str(tmp_path / "nothing"), "--port",
                               str(busy.getsockname()[1])], capture_output=True, text=True, timeout=120)
    finally:
        busy.close()
    assert proc.returncode == 2 and proc.stderr.startswith("error: cannot listen") and "--port" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "llmgan", "serve", str(tmp_path / "nothing"), "--port", "0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    for extra, message in ((["--best-of", "3"], "needs --teacher"), (["--teacher", str(tmp_path)], "needs --best-of"),
                           (["--best-of", "2", "--teacher", str(tmp_path / "t")], "no such folder"),
                           (["--best-of", "2", "--teacher", str(tmp_path)], "missing config.yaml"),
                           (["--best-of", "2", "--teacher", str(tmp_path), "--engine", "vllm"], "--engine transformers"),
                           (["--best-of", "2", "--teacher", str(tmp_path), "--continuous-batching"],
                            "leave --continuous-batching out")):
        proc = subprocess.run([sys.executable, "-m", "llmgan", "serve", str(tmp_path / "nothing"), "--port", "0", *extra],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and message in proc.stderr, (extra, proc.stderr)


@pytest.mark.slow
def test_default_model_follows_a_persona(tmp_path, default_model_dir):
    """The embedded default, exported (with the reply task's system prompt) and served: greedy replies follow a
    system message's name and language, and with no system message the reply equals the one with the training
    prompt given explicitly."""
    from llmgan.data import TASKS
    from llmgan.serving.export import export

    export(None, tmp_path / "default-agent", check=False, verbose=False)
    srv = Server(str(tmp_path / "default-agent"), cache=tmp_path, timeout=300)
    try:
        client = srv.client()

        def greedy(messages):
            r = client.chat.completions.create(model=NAME, messages=messages, max_tokens=24, temperature=0)
            return r.choices[0].message.content

        ask = [{"role": "user", "content": "What is your name?"}]
        assert "Zorblax" in greedy([{"role": "system", "content": "Your name is Zorblax."}] + ask)
        assert "Zorblax" not in greedy(ask)
        french = greedy([{"role": "system", "content": "You are a social media user who always writes in French."},
                         {"role": "user", "content": "Write a reply to this post: The new bike lanes are great."}])
        assert any(w in french.lower().split() for w in ("je", "les", "est", "sont", "bien", "très"))
        assert greedy(USER) == greedy([{"role": "system", "content": TASKS["reply"].system_prompt}] + USER)
    finally:
        assert srv.stop() == 0


def test_prepare_model_exports_a_run_once_into_the_cache(tmp_path, tiny_model_dir, demo_data, monkeypatch):
    """A run (not an export) is exported once into $LLMGAN_CACHE/serve and reused; an override makes another folder;
    an export folder is served as it is."""
    from llmgan.serving import export as export_mod
    from llmgan.serving.serve import prepare_model

    monkeypatch.setenv("LLMGAN_CACHE", str(tmp_path / "cache"))
    run = make_fake_run(tmp_path / "run", tiny_model_dir, demo_data)
    folder, info = prepare_model(str(run), verbose=False)
    assert folder.parent == tmp_path / "cache" / "serve" and info["name"] == "run" and info["step"] == 2
    assert info["system_prompt"] == json.loads((demo_data / "llmgan_card.json").read_text())["system_prompt"]
    calls = []
    monkeypatch.setattr(export_mod, "export", lambda *a, **k: calls.append(a))
    assert prepare_model(str(run), verbose=False)[0] == folder and not calls  # reused, not exported again
    monkeypatch.undo()
    monkeypatch.setenv("LLMGAN_CACHE", str(tmp_path / "cache"))
    other, info2 = prepare_model(str(run), system_prompt="You are Zorblax.", name="z", verbose=False)
    assert other != folder and info2["system_prompt"] == "You are Zorblax." and info2["name"] == "z"
    assert prepare_model(str(folder), verbose=False)[0] == folder  # an export is served in place


def make_check(fixed=None):
    from llmgan.serving.requests import RequestCheck

    return RequestCheck(name=NAME, engine_model="/models/x", count_tokens=lambda msgs: 10 * len(msgs), context=100,
                        default_max_tokens=64, fixed_sampling=fixed)


@pytest.mark.parametrize("body,status,param", [
    ({"messages": USER, "model": "other"}, 404, "model"),
    ({"messages": []}, 400, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0]"),
    ({"messages": [{"role": "user", "content": {"text": "x"}}]}, 400, "messages[0].content"),
    ({"messages": USER, "max_tokens": True}, 400, "max_tokens"),
    ({"messages": USER, "max_completion_tokens": 91}, 400, "max_tokens"),  # 10 prompt tokens + 91 > 100
    ({"messages": [{"role": "user", "content": "x"}] * 10}, 400, "messages"),  # the prompt fills the context
    ({"messages": USER, "top_p": 0}, 400, "top_p"),
    ({"messages": USER, "stream": "yes"}, 400, "stream"),
    ({"messages": USER, "stop": [1]}, 400, "stop"),
])
def test_request_check_refuses(body, status, param):
    got = make_check()(body)
    assert got is not None and got[0] == status and got[1]["error"]["param"] == param, got


def test_request_check_rewrites_a_good_request():
    check = make_check()
    body = {"model": NAME, "messages": [{"role": "system", "content": "persona"},
                                        {"role": "user", "content": [{"type": "text", "text": "post"}]}]}
    assert check(body) is None
    assert body["model"] == "/models/x" and body["max_tokens"] == 64  # the served name maps to the engine's model
    body = {"messages": USER, "max_tokens": 90}
    assert check(body) is None and body["max_tokens"] == 90
    body = {"messages": [{"role": "user", "content": "x"}] * 5}
    assert check(body) is None and body["max_tokens"] == 50  # what the context leaves


def test_default_max_tokens_is_the_export_s_cap():
    from llmgan.serving.serve import FALLBACK_MAX_TOKENS, default_max_tokens

    assert default_max_tokens(None, {"max_new_tokens": 61}) == 61
    assert default_max_tokens(100, {"max_new_tokens": 61}) == 100  # --default-max-tokens wins
    assert default_max_tokens(None, {}) == default_max_tokens(None, {"max_new_tokens": None}) == FALLBACK_MAX_TOKENS


def test_a_request_sampled_otherwise_than_served_is_noted_once_per_setting(capsys):
    """A simulation that sets its own temperature hears once per setting that it samples otherwise than the served
    defaults (far more detectable posts at 0.7 than at 1.0); the request itself is served unchanged."""
    from llmgan.serving.requests import RequestCheck

    check = RequestCheck(name=NAME, engine_model="/models/x", count_tokens=lambda msgs: 10, context=100,
                         default_max_tokens=64, served_sampling={"temperature": 1.0, "top_p": 1.0})
    for body in ({"messages": USER}, {"messages": USER, "temperature": 1, "top_p": 1.0}):
        assert check(body) is None
    assert capsys.readouterr().out == ""
    body = {"messages": USER, "temperature": 0.7}
    assert check(body) is None and body["temperature"] == 0.7
    out = capsys.readouterr().out
    assert "note: a request samples at temperature 0.7, top-p 1; the served defaults are 1, 1" in out
    assert check({"messages": USER, "temperature": 0.7, "top_p": 1.0}) is None and capsys.readouterr().out == ""
    assert check({"messages": USER, "top_p": 0.9}) is None and "temperature 1, top-p 0.9" in capsys.readouterr().out
    assert make_check()({"messages": USER, "temperature": 0.2}) is None and capsys.readouterr().out == ""


def test_continuous_batching_pins_the_sampling():
    """transformers 5.24's continuous batching samples every request with the first one's settings: other sampling
    is refused (400) instead of being silently ignored; the served defaults themselves are accepted."""
    check = make_check({"temperature": 1.0, "top_p": 1.0})
    assert check({"messages": USER, "temperature": 1.0, "top_p": 1}) is None
    for extra in ({"temperature": 0.2}, {"top_p": 0.9}, {"seed": 3}, {"stop": ["\n"]}):
        got = check({"messages": USER, **extra})
        assert got[0] == 400 and got[1]["error"]["code"] == "unsupported_with_continuous_batching", extra
    assert make_check()({"messages": USER, "temperature": 0.2, "seed": 3}) is None
