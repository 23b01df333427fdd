#!/usr/bin/env bash
# make gpu-check [GPU_CHECK_OUT=logs/gpu-check]: everything that needs a GPU, on a bare CUDA
# machine, in about 8 minutes. Each step's output goes to OUT/<step>.log and one line per step to
# OUT/summary.md (status, seconds); a failed step does not stop the others; the exit status is
# that of the worst step.
#   setup        make setup (.venv with the pinned Jittor + PyTorch; Jittor compiles for CUDA)
#   parity       the model parity tests (xxt, xt: eval, train, gradients, reparam) and na2d_av,
#                PyTorch on CUDA (OVERLOCK_TEST_DEVICE=cuda) against Jittor on CUDA
#   natten       NATTEN 0.17.5's CUDA na2d_av against both frameworks' ops (.venv-natten-cuda:
#                torch 2.5.0 and NATTEN's prebuilt wheel); skipped, with the reason, when it
#                does not install
#   train-torch, train-jittor   one epoch of each training script on the generated dataset,
#                from one init
#   bench        bench.py --device cuda (one round; compile time reported apart)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${GPU_CHECK_OUT:-logs/gpu-check}
py=.venv/bin/python

if ! nvidia-smi -L >/dev/null 2>&1; then
    echo "error: make gpu-check needs a CUDA GPU and nvidia-smi finds none; run it on a GPU machine" >&2
    exit 1
fi
mkdir -p "$out" || exit 1
worst=0
{
    echo "# make gpu-check, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/GPU: /'
    echo
    echo "| step | status | seconds |"
    echo "| --- | --- | --- |"
} > "$out/summary.md"

step() {  # step NAME COMMAND...: run it, log it, add its line to the summary
    local name=$1 start status rc
    shift
    start=$(date +%s)
    echo "== $name (log: $out/$name.log)"
    "$@" > "$out/$name.log" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then status=passed; elif [ $rc -eq 77 ]; then status="skipped: $(tail -n 1 "$out/$name.log")"; else status="FAILED (exit $rc)"; fi
    [ $rc -ne 0 ] && [ $rc -ne 77 ] && worst=$rc
    echo "| $name | $status | $(( $(date +%s) - start )) |" | tee -a "$out/summary.md"
}

natten_check() {  # exit 77 (skipped) when NATTEN's CUDA wheel does not install here
    local venv=.venv-natten-cuda
    if [ ! -x $venv/bin/python ]; then
        python3 -m venv $venv || return 1
    fi
    if ! $venv/bin/pip install -q torch==2.5.0 numpy==1.26.4 pytest==8.4.2 jittor==1.3.11.0 \
        || ! $venv/bin/pip install -q natten==0.17.5+torch250cu124 -f https://shi-labs.com/natten/wheels/; then
        echo "NATTEN 0.17.5's CUDA wheel did not install (see above)"
        return 77
    fi
    OVERLOCK_TEST_DEVICE=cuda OVERLOCK_REQUIRE_NATTEN=1 $venv/bin/python -m pytest -q tests/natten_parity
}

export PYTHONHASHSEED=0 OVERLOCK_DEVICE=cuda
step setup make setup
step parity env OVERLOCK_TEST_DEVICE=cuda $py -m pytest -q tests/models/test_na2d.py \
    tests/models/test_models.py -k "parity_xxt or parity_xt or na2d"
step natten natten_check
step train-torch $py train_torch.py --epochs 1 --device cuda --out "$out/torch"
step train-jittor $py train.py --epochs 1 --device cuda --init "$out/torch/init.pth" --out "$out/jittor"
step bench $py bench.py --device cuda --rounds 1 --steps 5 --no-natten --out "$out/bench"
echo "summary: $out/summary.md"
exit $worst
