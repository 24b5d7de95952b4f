#!/usr/bin/env bash
# The GPU check, as one script (about 6 minutes on an H100): supernet step throughput for the three
# paper presets (fp32 vs bf16 autocast, channels_last off/on), the retraining networks' throughput, and the
# aggregate throughput of 1, 2, 4 and 5 NB201 seeds sharing one GPU. Run from the repository root:
#
#   OUT=gpu_results benchmarks/gpu_check.sh
#
# Needs torch with CUDA plus the project's light dependencies (typer, rich, pyyaml, filelock, numpy);
# Ray and MLflow are not needed (see benchmarks/gpu_pack.py for why packing runs as plain processes).
set -uo pipefail
OUT=${OUT:-gpu_results}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
"$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
echo "== supernet search step (train_step: arch + weight step)"
"$PY" benchmarks/bench_supernet.py --device cuda --grid --iters 20 --warmup 5 --json "$OUT/supernet.json" \
  | tee "$OUT/supernet.md"
echo "== retraining networks"
"$PY" benchmarks/gpu_retrain.py "$OUT/retrain.json" | tee "$OUT/retrain.md"
echo "== NB201 seeds packed on one GPU"
"$PY" benchmarks/gpu_pack.py --json "$OUT/pack.json" | tee "$OUT/pack.md"
