#!/usr/bin/env bash
# Lay out Debian's oneDNN where Jittor looks for its own oneDNN download
# (~/.cache/jittor/mkl/dnnl_lnx_2.2.0_cpu_gomp/{include,lib/libmkldnn.so}).
# Jittor's download host is often unreachable; without oneDNN its CPU convs fall back
# to naive kernels that are 3-45x slower. Idempotent: does nothing when the layout is there.
set -euo pipefail

arch_lib=/usr/lib/$(gcc -print-multiarch)
dest="${JITTOR_HOME:-$HOME}/.cache/jittor/mkl/dnnl_lnx_2.2.0_cpu_gomp"

if [ -f "$dest/lib/libmkldnn.so" ] && [ -f "$dest/include/dnnl.hpp" ]; then
    exit 0
fi

if ! ls "$arch_lib"/libdnnl.so.* >/dev/null 2>&1 || [ ! -f /usr/include/dnnl.hpp ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "error: oneDNN is missing; run 'sudo apt-get install libdnnl-dev' and then 'make setup' again" >&2
        exit 1
    fi
    echo "installing Debian's libdnnl-dev (oneDNN) for Jittor's CPU convolutions"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libdnnl-dev >/dev/null
fi

lib=$(ls "$arch_lib"/libdnnl.so.*.* | sort -V | tail -n 1)
tmp="$dest.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp/include" "$tmp/lib"
cp -r /usr/include/dnnl*.h /usr/include/dnnl*.hpp /usr/include/oneapi "$tmp/include/"
cp "$lib" "$tmp/lib/libmkldnn.so"
rm -rf "$dest"
mv "$tmp" "$dest"
echo "oneDNN $(basename "$lib") laid out for Jittor in $dest"
