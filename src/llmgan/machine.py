"""What a run ran on: the CPU, the accelerators, torch's threads and kernels, the library versions.

`llmgan sft` and `llmgan train` append `machine_info()` to `RUN/machine.jsonl` at every start and resume. A run
reproduces to the digit only on the same kind of CPU: the reply SFT stage, same code, config and seed, gave samples
that the judge read at 0.630 on two Intel Xeons and at 0.622 on an AMD EPYC (RESULTS.md, thirty-third and thirty-fourth
sessions), since different CPUs take different floating-point kernels. A re-run on another machine is a new
replicate; this file says which machine made which numbers. The bench scripts report the same CPU name.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets")


def _cpuinfo() -> dict:
    """The first processor's fields of /proc/cpuinfo ({} where there is none, e.g. not Linux)."""
    fields: dict = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo's 'model name' on Linux, else `platform.processor()`), or 'unknown'."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine() or "unknown"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    """One JSON-able record of this machine: the time (UTC), CPU name, id (vendor/family/model/stepping) and count,
    torch's threads and CPU kernel level (`torch.backends.cpu.get_cpu_capability()`), the CUDA devices, Python and
    the libraries' versions."""
    import torch

    info = _cpuinfo()  # a virtual machine may name every Xeon alike; family, model and stepping tell them apart
    return {"time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_model(),
            "cpu_id": "/".join(info.get(k, "?") for k in ("vendor_id", "cpu family", "model", "stepping")) if info
            else None, "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
            "python": platform.python_version(), **{p: _version(p) for p in PACKAGES}}
