#!/usr/bin/env bash
# The one call for a lent GPU machine: benchmarks/gpu_check.py on CUDA, its report, log and the
# device profile written into $OUT (into runs/ when OUT is unset), within ~8 minutes.
#
# Fetches and installs nothing. Two optional inputs, carried with the call (docs/gpu.md):
#   runs/wheels/*.whl           the search's and the export's packages the GPU image lacks (optuna,
#                               black, ...), unpacked into a temporary folder and put on PYTHONPATH;
#                               without them those two sections record the missing module as their line
#   runs/cifar10-jpg.tar.gz     CIFAR-10 for the search's proxy training (else the embedded digits)
# Extra arguments go to gpu_check.py (e.g. --deadline 300, --sections canonical,seed_claim).
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-runs}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
WHEELS="${GPU_CHECK_WHEELS:-runs/wheels}"
DATA="${GPU_CHECK_DATA:-runs/cifar10-jpg.tar.gz}"
# caches, the decoded dataset and the study stay out of $OUT (only a few small files come back)
export HARDNAS_RUNS="${HARDNAS_RUNS:-$(mktemp -d /tmp/hardnas-runs.XXXXXX)}"
export PYTHONUNBUFFERED=1
site=""
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    site="$(mktemp -d /tmp/gpu_check_site.XXXXXX)"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$WHEELS"/*.whl \
        || { echo "gpu_check.sh: the carried wheels in $WHEELS did not unpack; going on without them" >&2; site=""; }
fi
export PYTHONPATH="$PWD${site:+:$site}${PYTHONPATH:+:$PYTHONPATH}"
data=()
if [ -f "$DATA" ]; then data=(--data "$DATA"); fi
# the check ends itself by its deadline (420 s + grace); this only guards against a hang outside it
timeout -s TERM 540 "$PY" benchmarks/gpu_check.py --device cuda --out "$OUT" ${data[@]+"${data[@]}"} "$@" 2>&1 \
    | tee "$OUT/gpu_check.log"
rc=${PIPESTATUS[0]}
cp "$HARDNAS_RUNS/device_profiles.json" "$OUT/" 2>/dev/null || true
exit "$rc"
