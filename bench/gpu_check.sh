#!/usr/bin/env bash
# GPU check of llmgan's adversarial step on the (sometimes available) H100 machine; <= 8 minutes, offline.
#   here, once:        bash bench/gpu_wheels.sh          (trl + datasets wheels and the SmolLM2 tokenizer -> .whl/)
#   on the GPU machine: bash bench/gpu_check.sh "$OUT"   (device tool: carry [".whl"], timeout_s 540)
# Writes OUT/gpu_check.json (generation tokens/s, s/step and phases for the SmolLM2-135M and -1.7B
# architectures with random weights, the update's MFU, peak GPU memory, the constant-reward overhead, and a
# smoke run of llmgan.train.train), OUT/gpu_check.log and OUT/nvidia-smi.txt. SMOKE=1 runs the same on the
# CPU with tiny models (a check of the script itself, no GPU needed). BUDGET (seconds, default 400) bounds
# the measuring stages; the whole script is cut at 460 s.
set -uo pipefail
OUT=${1:?usage: bash bench/gpu_check.sh OUT_DIR}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
start=$(date +%s)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/llmgan-site .whl/*.whl \
    || { echo "installing .whl/*.whl failed"; exit 3; }
  export PYTHONPATH=/tmp/llmgan-site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD/src:${PYTHONPATH:-}
TOK=.whl/smollm2-tokenizer
[ -f "$TOK/tokenizer.json" ] || TOK=${LLMGAN_CACHE:-$HOME/.cache/llmgan}/models/SmolLM2-135M-Instruct
(nvidia-smi || true) > "$OUT/nvidia-smi.txt" 2>&1
"$PY" -c "import torch, transformers, peft, accelerate, datasets, trl; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, 'trl', trl.__version__, 'peft', peft.__version__, 'datasets', datasets.__version__)" \
  || { echo "missing packages: run bench/gpu_wheels.sh on a machine with PyPI and carry .whl"; exit 3; }
extra=()
[ -n "${SMOKE:-}" ] && extra+=(--smoke --steps 1)
timeout 460 "$PY" bench/gpu_check.py --out "$OUT" --tokenizer "$TOK" --budget "${BUDGET:-400}" "${extra[@]}" 2>&1 | tee "$OUT/gpu_check.log"
rc=${PIPESTATUS[0]}
echo "gpu_check: rc $rc, $(( $(date +%s) - start )) s in all; results in $OUT/gpu_check.json"
exit "$rc"
