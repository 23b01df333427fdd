#!/usr/bin/env bash
# warm_kernels.sh PYTHON: compile Jittor's kernels for the demo once, during `make setup`, so that
# the first epoch of `make demo` runs at full speed. It trains one epoch of train.py on the
# generated dataset (the demo's model and shapes) into a temporary folder. Measured on the 2-core
# machine: that epoch took 174 s cold, 166 s of it compiling 169 kernels, and 7.8 s warm. Done
# once per environment (stamp: VENV/.kernels-warm); kernels that a change to the models needs
# are compiled when first used, as always.
set -euo pipefail

py=$1
stamp=$(dirname "$(dirname "$py")")/.kernels-warm
[ -f "$stamp" ] && exit 0
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "compiling Jittor's kernels for the demo: one epoch of train.py on the generated data (first time only, about 3 minutes)"
start=$(date +%s)
if ! "$py" train.py --epochs 1 --workers 0 --out "$out/run" >"$out/warm.log" 2>&1; then
    tail -n 20 "$out/warm.log" >&2
    echo "error: compiling Jittor's kernels failed (train.py's output above)" >&2
    exit 1
fi
touch "$stamp"
echo "Jittor's kernels compiled in $(( $(date +%s) - start ))s"
