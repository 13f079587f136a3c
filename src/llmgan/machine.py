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


def parse_cpuinfo(text: str) -> dict:
    """The first processor's fields of a /proc/cpuinfo text, as {field: value}."""
    fields: dict = {}
    for line in text.splitlines():
        if not line.strip():
            break
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def read_cpuinfo() -> dict:
    """This machine's /proc/cpuinfo fields ({} where there is none, e.g. not Linux)."""
    try:
        return parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        return {}


# The fields that tell alike-named CPUs apart: x86 (vendor/family/model/stepping), else ARM (implementer/architecture/
# variant/part/revision; ARM's cpuinfo names no model). A virtual machine may name every Xeon alike.
_ID_FIELDS = (("vendor_id", "cpu family", "model", "stepping"),
              ("CPU implementer", "CPU architecture", "CPU variant", "CPU part", "CPU revision"))


def cpu_id(fields: dict) -> str | None:
    """The values of the first of `_ID_FIELDS`' sets that `fields` (parse_cpuinfo's) holds in full, joined by '/';
    None where it holds none of them."""
    for keys in _ID_FIELDS:
        if all(k in fields for k in keys):
            return "/".join(fields[k] for k in keys)
    return None


def cpu_model(fields: dict | None = None) -> str:
    """The CPU's model name (/proc/cpuinfo's 'model name' on Linux, else `platform.processor()`), or 'unknown'.
    `fields`: parse_cpuinfo's result where the caller has it, so that /proc/cpuinfo is read once."""
    fields = read_cpuinfo() if fields is None else fields
    return fields.get("model name") or platform.processor() or platform.machine() or "unknown"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    """One JSON-able record of this machine: the time (UTC), CPU name, id (`cpu_id`) and count,
    torch's threads and CPU kernel level (`torch.backends.cpu.get_cpu_capability()`), the CUDA devices, Python and
    the libraries' versions."""
    import torch

    info = read_cpuinfo()
    return {"time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_model(info),
            "cpu_id": cpu_id(info), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
            "python": platform.python_version(), **{p: _version(p) for p in PACKAGES}}
