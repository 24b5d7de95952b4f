#!/usr/bin/env bash
# The GPU check, as one script that ends within CHECK_BUDGET_S (default 540 s, under 10 minutes): the
# aggregate throughput of 1, 2, 4 and 5 NB201 seeds sharing one GPU, then the three paper presets' step with
# one seed alone vs 5 seeds batched in one seed group (plus the bf16-vs-fp32 strength ranking), one step of the
# PC-DARTS direct ImageNet search at batch 256 (its peak memory beside the memory guard's estimate), the retraining
# networks' throughput (ImageNet first), the supernet search step of the three paper presets (fp32 vs bf16
# autocast, channels_last off/on), and last the NB201 step under torch.compile. Each stage gets the time left
# and writes its JSON as it goes, so a stage cut short keeps what it measured. Run from the repository root:
#
#   OUT=gpu_results benchmarks/gpu_check.sh
#
# Needs torch with CUDA plus the project's light dependencies (typer, rich, pyyaml, filelock, numpy). With
# Ray installed the packing runs through `ostr-ray launch --gpus-per-trial 1/N`; without it, as N plain
# `ostr-ray search` processes on the card (see benchmarks/gpu_pack.py for why that is the same thing).
set -uo pipefail
OUT=${OUT:-gpu_results}
BUDGET=${CHECK_BUDGET_S:-540}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
DEADLINE=$(( $(date +%s) + BUDGET ))

# stage NAME MAX_S CMD...: run CMD with at most MAX_S seconds and never past the deadline
stage() {
  local name=$1 max=$2 left
  shift 2
  left=$(( DEADLINE - $(date +%s) ))
  (( left < max )) && max=$left
  if (( max < 20 )); then echo "== $name: skipped, under 20 s of the check budget left"; return; fi
  echo "== $name (at most ${max} s)"
  timeout --signal=INT --kill-after=10 "$max" "$@" || echo "== $name: ended with status $? (time limit or failure)"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
"$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
stage "NB201 seeds packed on one GPU" 210 \
  "$PY" benchmarks/gpu_pack.py --steps 30 --json "$OUT/pack.json"
stage "seed groups: 1 seed alone vs 5 seeds batched in one group, and bf16 strength ranking" 200 \
  "$PY" benchmarks/bench_supernet.py --device cuda --groups 1,5 --bf16-tau --iters 5 --warmup 2 \
  --json "$OUT/batched.json"
stage "PC-DARTS direct ImageNet search: one step at batch 256, 224x224 (peak memory vs the memory guard)" 120 \
  "$PY" benchmarks/bench_supernet.py --device cuda --presets pcdarts-imagenet --set batch_size=256 \
  --iters 3 --warmup 1 --json "$OUT/imagenet.json"
stage "retraining networks" 180 \
  "$PY" benchmarks/gpu_retrain.py "$OUT/retrain.json" --networks imagenet,cifar --budget-s 150
stage "supernet search step (train_step: arch + weight step)" 400 \
  "$PY" benchmarks/bench_supernet.py --device cuda --grid --iters 10 --warmup 3 --json "$OUT/supernet.json"
stage "NB201 step under torch.compile (1 seed alone, 5 seeds in a group; compile time in the warm-up)" 150 \
  "$PY" benchmarks/bench_supernet.py --device cuda --presets nb201-cifar10 --groups 1,5 --compile default \
  --iters 10 --warmup 3 --json "$OUT/compiled.json"
echo "== done in $(( $(date +%s) - DEADLINE + BUDGET )) s; results in $OUT"
