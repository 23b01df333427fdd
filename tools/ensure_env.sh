#!/usr/bin/env bash
# ensure_env.sh VENV REQUIREMENTS
# Create or update the virtual environment VENV from the pinned REQUIREMENTS file.
# Cached: when VENV/.pins holds the same content hash as REQUIREMENTS, nothing is done.
# Lines marked '# build: no-isolation' are installed afterwards with --no-build-isolation
# (packages like NATTEN that compile against the torch already in the environment).
set -euo pipefail

venv=$1
req=$2
python=${PYTHON:-python3}

want=$(sha256sum "$req" | cut -d' ' -f1)
if [ -f "$venv/.pins" ] && [ "$(cat "$venv/.pins")" = "$want" ] && [ -x "$venv/bin/python" ]; then
    echo "$venv is up to date with $req"
    exit 0
fi

start=$(date +%s)
echo "building $venv from $req (pip output in $venv/pip.log)"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
rm -f "$venv/.pins"
plain=$(mktemp)
trap 'rm -f "$plain"' EXIT
grep -v 'build: no-isolation' "$req" > "$plain"
late=$(grep 'build: no-isolation' "$req" | sed 's/#.*//' | xargs || true)

"$venv/bin/pip" install --disable-pip-version-check -r "$plain" >"$venv/pip.log" 2>&1 \
    || { tail -n 20 "$venv/pip.log" >&2; echo "error: pip install -r $req failed (see $venv/pip.log)" >&2; exit 1; }
if [ -n "$late" ]; then
    echo "compiling $late against the installed torch (a few minutes the first time)"
    NATTEN_N_WORKERS=${NATTEN_N_WORKERS:-$(nproc)} \
        "$venv/bin/pip" install --disable-pip-version-check --no-build-isolation $late >>"$venv/pip.log" 2>&1 \
        || { tail -n 20 "$venv/pip.log" >&2; echo "error: building $late failed (see $venv/pip.log)" >&2; exit 1; }
fi
echo "$want" > "$venv/.pins"
echo "$venv ready in $(( $(date +%s) - start ))s"
