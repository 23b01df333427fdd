#!/usr/bin/env bash
# OpenMPI for Jittor's data parallelism (train.py under mpirun): Jittor compiles its MPI operators
# with mpicc at first use under mpirun. Single-process training does not need it, so without root
# this only says what to install. Idempotent: does nothing when mpirun and mpicc are there.
set -euo pipefail

if command -v mpirun >/dev/null && command -v mpicc >/dev/null; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "note: OpenMPI is missing; for 'mpirun -np N python train.py' (and its tests) run" \
        "'sudo apt-get install openmpi-bin libopenmpi-dev'" >&2
    exit 0
fi
echo "installing Debian's openmpi-bin and libopenmpi-dev (Jittor's MPI data parallelism)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openmpi-bin libopenmpi-dev >/dev/null
echo "OpenMPI $(mpirun --version | head -n 1 | awk '{print $NF}') installed"
