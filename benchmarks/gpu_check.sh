#!/usr/bin/env bash
# The prepared accelerator check (see benchmarks/gpu_check.py): tgg-jax's 1.5B / 3B training
# steps against HF PyTorch on the same GPU (MFU, ratio) and decode against the HBM roofline.
# About 5-8 minutes on one H100 with the machine's preinstalled JAX, PyTorch and transformers;
# runs from the repository without installing it.
#
#   benchmarks/gpu_check.sh [--dry-run] [gpu_check.py options, e.g. --layers 0]
#
# Results: $OUT/gpu_check.jsonl (OUT defaults to ./gpu_check_out), summary on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.85}"
PYTHON="${PYTHON:-python3}"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
fi
"$PYTHON" -c "import jax, flax, optax, torch, transformers, numpy; print('jax', jax.__version__, \
'flax', flax.__version__, 'optax', optax.__version__, 'torch', torch.__version__, \
'transformers', transformers.__version__, 'numpy', numpy.__version__)"
exec "$PYTHON" benchmarks/gpu_check.py all --out "${OUT:-gpu_check_out}" "$@"
