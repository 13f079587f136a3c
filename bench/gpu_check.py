"""GPU check of llmgan's adversarial step (run by bench/gpu_check.sh; see docs/scaling.md).

Randomly initialised models with the real architectures (SmolLM2-135M and SmolLM2-1.7B configs, bf16;
speed does not depend on the weights) and the real SmolLM2 tokenizer, the trainer built through
llmgan.training.components.build_components (as `llmgan train` builds the trainer) on the
demo prompts. Measures, per model:

  - generation tokens/s: HF `generate` (the default backend; vLLM is not installed there), batch of
    16 and 128 sequences, completions forced to their full length;
  - seconds per adversarial step (4 prompts x 4 generations x 48 tokens, the CPU benchmark's shape, and
    8 x 8 x 128, a GPU-sized batch), its phases, and the same step with a constant reward (overhead);
  - the update's model-FLOPs utilisation: FLOPs of the policy forward + backward (bench/model_math.py)
    over timing/update, against the H100's 989 TFLOP/s dense bf16 peak and the measured matmul rate;
  - peak GPU memory per stage (torch.cuda.max_memory_allocated);
  - a smoke run of `llmgan.training.train.train()` itself (1 step of the 135M model) with the error if it fails.

Writes OUT/gpu_check.json after every stage (a stage over the time budget is skipped and says so).
`--smoke` runs the same code on the CPU with tiny models (used to check the script without a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import traceback
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import model_math  # noqa: E402

H100_PEAK_BF16 = 989e12  # dense bf16 TFLOP/s, datasheet

SMOKE_ARCH = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=49152, tie_word_embeddings=True, rope_theta=10000.0)


class Budget:
    def __init__(self, seconds: float):
        self.t0, self.seconds = time.perf_counter(), seconds

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.t0)


def sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def gpu_mem() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {}
    return {"max_allocated_gb": torch.cuda.max_memory_allocated() / 2**30,
            "max_reserved_gb": torch.cuda.max_memory_reserved() / 2**30}


def reset_mem():
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def env_info() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for mod in ("transformers", "trl", "peft", "accelerate", "datasets"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception as exc:  # noqa: BLE001
            info[mod] = f"missing: {exc}"
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_memory_gb=p.total_memory / 2**30, sm_count=p.multi_processor_count)
    return info


def matmul_rate(device: str) -> float:
    """bf16 8192^3 matrix product rate (FLOP/s), median of 10 after 3 warm-ups, random data."""
    import torch

    if device != "cuda":
        return float("nan")
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        a @ b
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e) / 1e3)
    return 2 * 8192**3 / statistics.median(times)


# ---------------------------------------------------------------------------------------------
# Models: random weights, real architecture, llmgan's loading path patched to return them


def make_model(arch: dict, tok, device: str, dtype):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**arch, max_position_embeddings=8192, rms_norm_eps=1e-5, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(dtype)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.eval()
    return model


def patch_loading(model, tok):
    """llmgan.models.build_policy loads through llmgan.models.load_model/load_tokenizer: hand it ours."""
    import llmgan.models as models

    models.load_model = lambda name, dtype="auto", trust_remote_code=False: model
    models.load_tokenizer = lambda name, trust_remote_code=False, padding_side="left": tok


def load_tok(path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def demo_prompts(tok, n: int) -> list[str]:
    rows = [json.loads(line) for line in (REPO / "data" / "demo" / "twon_demo.jsonl").read_text().splitlines() if line.strip()]
    posts = [r.get("post") or next(iter(r.values())) for r in rows]
    msgs = [[{"role": "user", "content": f"Write a reply to this post:\n\n{p}"}] for p in posts]
    texts = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in msgs]
    return [texts[i % len(texts)] for i in range(n)]


# ---------------------------------------------------------------------------------------------
# Stages


def stage_generate(model, tok, device: str, n_seq: int, new_tokens: int, reps: int = 2) -> dict:
    import torch

    prompts = demo_prompts(tok, n_seq)
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
              pad_token_id=tok.pad_token_id)
    with torch.no_grad():
        model.generate(**enc, **{**kw, "max_new_tokens": 4, "min_new_tokens": 4})  # warm-up
        sync()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            out = model.generate(**enc, **kw)
            sync()
            times.append(time.perf_counter() - t0)
    made = (out.shape[1] - enc["input_ids"].shape[1]) * n_seq
    t = statistics.median(times)
    return {"sequences": n_seq, "prompt_tokens_padded": int(enc["input_ids"].shape[1]), "new_tokens": new_tokens,
            "seconds": t, "runs": times, "tokens_per_s": made / t}


def build_trainer(args, model, tok, data_dir: Path, prompts: int, gens: int, tokens: int, reward: str):
    from llmgan.config import load_config
    from llmgan.training.components import build_components

    cfg = load_config(str(REPO / "configs" / "twon-reply.yaml"), [
        f"data.path={data_dir}", "model.name=null", f"model.dtype={'bfloat16' if args.device == 'cuda' else 'float32'}",
        f"train.output_dir={args.tmp}/run-{reward}", "discriminator.warmup_steps=0", "train.sample_every=0",
        "train.save_every=1000000", "train.steps=1", "train.sft_warm_start=false", f"train.prompts_per_step={prompts}",
        f"generation.num_generations={gens}", f"generation.max_new_tokens={tokens}"]
        + (["discriminator.hidden_layer=2"] if args.smoke else []))
    patch_loading(model, tok)  # build_policy adds fresh LoRA adapters to our base model (unloaded after each trainer)

    def constant(prompts, completions, **kw):
        return [0.0] * len(completions)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        parts = build_components(cfg, Path(cfg.train.output_dir), reward_funcs=None if reward == "adversarial" else [constant],
                                 args_overrides={"save_strategy": "no", "generation_kwargs": {"min_new_tokens": tokens}},
                                 quiet=True)
    trainer, policy = parts.trainer, parts.policy
    texts = [tok.apply_chat_template(list(m), tokenize=False, add_generation_prompt=True) for m in parts.train_rows["prompt"][:64]]
    cfg.prompt_tokens_mean = statistics.fmean(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
    # make the phase timers see finished GPU work: synchronise after backward (timing/update)
    backward = trainer.accelerator.backward

    def backward_sync(loss, **kw):
        out = backward(loss, **kw)
        sync()
        return out

    trainer.accelerator.backward = backward_sync
    return cfg, trainer, policy


def unload_lora(policy):
    """Give the base model back without adapters (the next trainer adds fresh ones)."""
    try:
        return policy.unload()
    except Exception:  # noqa: BLE001
        return policy.get_base_model()


def run_steps(trainer, steps: int, seed0: int) -> list[dict]:
    from transformers import TrainerCallback

    rec: dict = {}

    class R(TrainerCallback):
        def on_step_begin(self, a, s, c, **kw):
            sync()
            rec["t0"] = time.perf_counter()

        def on_step_end(self, a, s, c, **kw):
            sync()
            rec["t1"] = time.perf_counter()

        def on_log(self, a, s, c, logs=None, **kw):
            if logs and "train_runtime" not in logs:
                rec["logs"] = dict(logs)

    cb = R()
    trainer.add_callback(cb)
    out = []
    try:
        for i in range(steps):
            trainer.args.seed = trainer.args.data_seed = seed0 + i
            rec.clear()
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore")
                trainer.train()
            logs = rec.get("logs", {})
            row = {"step_s": rec["t1"] - rec["t0"], "completion_length": logs.get("completions/mean_length")}
            row.update({k: float(v) for k, v in logs.items() if k.startswith("timing/")})
            out.append(row)
    finally:
        trainer.remove_callback(cb)
    return out


def stage_step(args, name: str, arch: dict, model, tok, data_dir: Path, shape: tuple, budget: Budget, steps: int,
               peak: float) -> tuple[dict, object]:
    p, g, n = shape
    reset_mem()
    cfg, adv, policy = build_trainer(args, model, tok, data_dir, p, g, n, "adversarial")
    rows = run_steps(adv, 1 + steps, 500)[1:]
    mem = gpu_mem()
    model = unload_lora(policy)
    med = lambda k: statistics.median(r[k] for r in rows if r.get(k) is not None)  # noqa: E731
    prompt_tokens = cfg.prompt_tokens_mean  # mean unpadded prompt length of the training prompts
    fl = model_math.update_flops(arch, p * g, int(round(prompt_tokens)), n, lora=True)
    upd = med("timing/update")
    res = {"shape": {"prompts": p, "generations": g, "max_new_tokens": n}, "steps": rows, "step_s": med("step_s"),
           "samples_per_s": p * g / med("step_s"), "phases": {k: med(k) for k in rows[0] if k.startswith("timing/")},
           "memory": mem, "update_flops_needed": fl["needed"], "update_flops_6n": fl["six_n"],
           "prompt_tokens_mean": prompt_tokens,
           "mfu_update_vs_989": fl["needed"] / upd / H100_PEAK_BF16, "mfu_update_vs_measured_matmul": fl["needed"] / upd / peak,
           "mfu_update_6n_vs_989": fl["six_n"] / upd / H100_PEAK_BF16}
    if budget.left() > 60 and not args.no_constant:
        cfg, const, policy = build_trainer(args, model, tok, data_dir, p, g, n, "constant")
        crow = run_steps(const, 1 + steps, 500)[1:]
        model = unload_lora(policy)
        cmed = statistics.median(r["step_s"] for r in crow)
        res["constant_reward"] = {"steps": crow, "step_s": cmed}
        res["overhead_ratio"] = res["step_s"] / cmed
    return res, model


def stage_train_smoke(args, tok, data_dir: Path) -> dict:
    """`llmgan.training.train.train()` itself, 1 step, 135M architecture saved to disk (finds device bugs)."""
    import torch

    from llmgan.config import load_config
    from llmgan.training.train import train

    arch = SMOKE_ARCH if args.smoke else model_math.ARCH["smollm2-135m"]
    folder = Path(args.tmp) / "smoke-model"
    model = make_model(arch, tok, "cpu", torch.bfloat16 if args.device == "cuda" else torch.float32)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    import importlib

    import llmgan.models

    importlib.reload(llmgan.models)  # undo patch_loading
    cfg = load_config(str(REPO / "configs" / "twon-reply.yaml"), [
        f"model.name={folder}", f"data.path={data_dir}", f"train.output_dir={args.tmp}/smoke-run", "train.steps=1", "train.sft_warm_start=false",
        "discriminator.warmup_steps=1", "train.sample_every=1", "train.save_every=1"]
        + (["discriminator.hidden_layer=2"] if args.smoke else []))
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore")
            run = train(cfg, progress=False)
        return {"ok": True, "seconds": time.perf_counter() - t0, "files": sorted(p.name for p in Path(run).iterdir())}
    except Exception as exc:  # noqa: BLE001
        return {"ok": False, "seconds": time.perf_counter() - t0, "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()[-4000:]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--tokenizer", default=str(REPO / ".whl" / "smollm2-tokenizer"))
    p.add_argument("--budget", type=float, default=420, help="seconds for all stages (each checks what is left)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per trainer (after 1 warm-up)")
    p.add_argument("--models", default="smollm2-135m,smollm2-1.7b")
    p.add_argument("--no-constant", action="store_true", help="skip the constant-reward comparison")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny models: check the script itself")
    args = p.parse_args()
    import tempfile

    import torch

    budget = Budget(args.budget)
    args.device = "cpu" if args.smoke or not torch.cuda.is_available() else "cuda"
    args.tmp = tempfile.mkdtemp(prefix="llmgan-gpu-")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"env": env_info(), "device": args.device, "smoke": args.smoke, "budget_s": args.budget,
                    "command": " ".join(sys.argv), "stages": {}, "skipped": []}

    def save():
        result["elapsed_s"] = budget.seconds - budget.left()
        (out / "gpu_check.json").write_text(json.dumps(result, indent=1, default=str))

    save()
    result["matmul_bf16_flops"] = peak = matmul_rate(args.device)
    print(f"bf16 matmul: {peak / 1e12:.0f} TFLOP/s", flush=True)
    save()
    tok = load_tok(args.tokenizer)
    from llmgan.data import PrepareOptions, prepare

    data_dir = Path(args.tmp) / "data"
    prepare(PrepareOptions(inputs=[str(REPO / "data" / "demo" / "twon_demo.jsonl")], output=str(data_dir), task="reply"))
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    shapes = [(4, 4, 48), (8, 8, 128)] if not args.smoke else [(2, 2, 8)]
    for name in args.models.split(","):
        arch = SMOKE_ARCH if args.smoke else model_math.ARCH[name]
        if budget.left() < 45:
            result["skipped"].append(f"{name}: out of time")
            continue
        stage = result["stages"][name] = {"params": model_math.params(arch)["total"],
                                          "lora_params": model_math.lora_params(arch)}
        try:
            reset_mem()
            model = make_model(arch, tok, args.device, dtype)
            stage["weights_memory"] = gpu_mem()
            for n_seq in ((16, 128) if not args.smoke else (4,)):
                new = 128 if not args.smoke else 8
                stage[f"generate_{n_seq}x{new}"] = stage_generate(model, tok, args.device, n_seq, new)
                print(f"{name}: generate {n_seq} x {new}: {stage[f'generate_{n_seq}x{new}']['tokens_per_s']:.0f} tokens/s",
                      flush=True)
                save()
            for shape in shapes:
                key = "step_{}x{}x{}".format(*shape)
                if budget.left() < 60:
                    result["skipped"].append(f"{name} {key}: out of time")
                    continue
                try:
                    stage[key], model = stage_step(args, name, arch, model, tok, data_dir, shape, budget, args.steps,
                                                   peak if peak == peak else H100_PEAK_BF16)
                except Exception as exc:  # noqa: BLE001  (e.g. out of memory: record it, go on with the next shape)
                    stage[key] = {"error": f"{type(exc).__name__}: {str(exc)[:500]}", "traceback": traceback.format_exc()[-3000:]}
                    print(f"{name}: step {key} failed: {stage[key]['error']}", flush=True)
                    reset_mem()
                    model = make_model(arch, tok, args.device, dtype)  # adapters may be left on the old one
                    save()
                    continue
                s = stage[key]
                print(f"{name}: step {key}: {s['step_s']:.2f} s/step, update MFU {100 * s['mfu_update_vs_989']:.1f}% of 989, "
                      f"overhead {s.get('overhead_ratio', float('nan')):.3f}", flush=True)
                save()
            del model
        except Exception as exc:  # noqa: BLE001
            stage["error"] = f"{type(exc).__name__}: {exc}"
            stage["traceback"] = traceback.format_exc()[-4000:]
            print(stage["traceback"], flush=True)
        save()
    if budget.left() > 40:
        result["stages"]["llmgan_train_smoke"] = stage_train_smoke(args, tok, data_dir)
        print(f"llmgan train smoke: {result['stages']['llmgan_train_smoke'].get('ok')} "
              f"{result['stages']['llmgan_train_smoke'].get('error', '')}", flush=True)
    else:
        result["skipped"].append("llmgan_train_smoke: out of time")
    save()
    print(json.dumps({k: v for k, v in result.items() if k != "stages"}, default=str)[:2000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
