"""Two CPU processes (torchrun, gloo DDP through accelerate): the discriminator and the generator end
identical on both ranks.

TRL computes rewards per rank on the rank's own slice of the batch, so each rank's discriminator sees
different samples; llmgan keeps the discriminators identical by all-reducing (averaging) their
gradients before every optimizer step (`DiscriminatorReward._sync_gradients`), while DDP does the same
for the generator. The worker (tests/dist_worker.py) builds the trainer with llmgan.train's own
functions, trains 2 generator steps (after 1 discriminator warm-up step) on a tiny random Llama, and
writes bit-exact fingerprints per rank.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def two_rank_run(tiny_model_dir, tmp_path_factory):
    from llmgan.data import PrepareOptions, prepare

    root = tmp_path_factory.mktemp("dist")
    data = root / "data"
    prepare(PrepareOptions(inputs=[str(REPO / "data" / "demo" / "twon_demo.jsonl")], output=str(data), task="reply"))
    out = root / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "tests" / "dist_worker.py"), "--model", str(tiny_model_dir), "--data", str(data),
           "--out", str(out), "--steps", "2"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=str(root))
    assert res.returncode == 0, f"torchrun failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-6000:]}"
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    return ranks


def test_two_processes_use_gloo_ddp(two_rank_run):
    r0, r1 = two_rank_run
    assert [r0["rank"], r1["rank"]] == [0, 1]
    for r in (r0, r1):
        assert r["world_size"] == 2 and r["backend"] == "gloo"
        assert r["distributed_type"].endswith("MULTI_CPU")
        assert r["steps"] == 2 and len(r["seen"]) == 2


def test_ranks_train_on_different_samples(two_rank_run):
    """Otherwise identical end states would prove nothing."""
    r0, r1 = two_rank_run
    for a, b in zip(r0["seen"], r1["seen"]):
        assert a["n"] == b["n"] == 4  # 2 prompts x 2 generations per rank
        assert a["prompts"] != b["prompts"]
    assert r0["local_samples"] != r1["local_samples"]


def test_discriminator_identical_on_both_ranks(two_rank_run):
    r0, r1 = two_rank_run
    assert r0["d_final"] != r0["d_init"], "the discriminator must have trained"
    assert r0["d_init"] == r1["d_init"], "same seed, same initial discriminator"
    assert r0["d_after_warmup"] == r1["d_after_warmup"]
    assert r0["d_final"] == r1["d_final"], "discriminator weights differ between ranks"
    assert r0["d_optimizer"] == r1["d_optimizer"], "discriminator optimizer state differs between ranks"
    assert r0["d_updates"] == r1["d_updates"] == 1 * 2 + 2 * 2  # warm-up (k=2) + 2 generator steps x k=2
    assert r0["d_metrics"] == r1["d_metrics"], "metrics are averaged over ranks"


def test_generator_identical_on_both_ranks(two_rank_run):
    r0, r1 = two_rank_run
    assert r0["n_trainable"] > 0 and r0["lora_b_abs_sum"] > 0, "LoRA B starts at zero; the steps must move it"
    assert r0["generator_trainable"] == r1["generator_trainable"]
    assert r0["generator_all"] == r1["generator_all"]
    assert r0["generator_optimizer"] == r1["generator_optimizer"]


def test_reference_encoder_through_the_ddp_wrapper(two_rank_run):
    for r in two_rank_run:
        check = r["encoder_check"]
        assert check["wrapper"] == "DistributedDataParallel" and check["unwrapped"] == "PeftModelForCausalLM"
        assert check["equal"]


def test_without_the_all_reduce_the_discriminators_drift(two_rank_run):
    """Control: the same update on each rank's own samples keeps D identical only with the all-reduce."""
    r0, r1 = two_rank_run
    assert r0["control"]["synced"] == r1["control"]["synced"]
    assert r0["control"]["unsynced"] != r1["control"]["unsynced"]
