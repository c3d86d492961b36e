#!/usr/bin/env bash
# The edge model on an NVIDIA GPU: torch CUDA, onnxruntime (CPU, CUDA, TensorRT provider)
# and a TensorRT engine from edge_export/trt.py, where each is installed, beside the CPU
# engines, on the same model and windows, in one run; prints one table.
#
#   benchmarks/edge_gpu.sh [--kind cnn] [--windows 2000] [--repeats 3]
#
# Needs: this project's environment (PYTHON, default .venv/bin/python) with torch built
# for CUDA; onnxruntime-gpu for the CUDA / TensorRT rows; the tensorrt package for the
# engine rows. Whatever is missing is skipped with the reason in the table.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
else
    echo "nvidia-smi not found: the GPU rows will say why they are skipped"
fi
"$PYTHON" - <<'PY'
import onnxruntime, torch
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}, available: {torch.cuda.is_available()})")
print(f"onnxruntime {onnxruntime.__version__}: {', '.join(onnxruntime.get_available_providers())}")
try:
    import tensorrt
    print(f"tensorrt {tensorrt.__version__}")
except ImportError:
    print("tensorrt: not installed")
PY
exec "$PYTHON" -m benchmarks.edge --gpu "$@"
