#!/usr/bin/env bash
# On a GPU machine like the project's lent ones (Python 3.12, torch, torchvision and timm preinstalled, no
# network), from the repository root:
#   tools/gpu_check.sh [CIFAR10_DIR]
# 1. installs tl-showdown and the few packages that machine lacks from the wheelhouse .whl/ (made here by
#    tools/gpu_wheelhouse.sh, 34 MB) into a folder of its own, leaving the preinstalled torch as it is;
# 2. runs the tests that need CUDA;
# 3. runs `showdown run --preset cifar10-lite0-head --device cuda` and a ResNet50 `finetune` on a CIFAR-10 subset
#    (CIFAR10_DIR holds cifar10-jpg.tar.gz; default shared/datasets, carried beside the checkout);
# and writes what it measured to $OUT/gpu_check.txt (OUT defaults to ./gpu-check). About 10 minutes at most.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}; mkdir -p "$OUT"
REPORT="$OUT/gpu_check.txt"
DATA=${1:-shared/datasets}
SITE=${SITE:-/tmp/showdown-site}
say() { echo "$*" | tee -a "$REPORT"; }
: > "$REPORT"

before=$(python3 -c "import torch, torchvision, numpy; print(torch.__version__, torchvision.__version__, numpy.__version__)")
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" .whl/*.whl || exit 1
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" SHOWDOWN_CACHE="$OUT/cache" SHOWDOWN_DB="$OUT/showdown.db"
after=$(python3 -c "import torch, torchvision, numpy; print(torch.__version__, torchvision.__version__, numpy.__version__)")
[ "$before" = "$after" ] || { say "error: the install changed torch/torchvision/numpy ($before -> $after)"; exit 1; }
say "python $(python3 -V 2>&1 | cut -d' ' -f2); torch, torchvision, numpy: $after (preinstalled, untouched)"
say "$(python3 -m showdown --version)"
say "gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null)"

timed() {  # timed LABEL CMD...: runs CMD, appends its output and wall time to the report
    local label=$1; shift
    local start=$(date +%s.%N)
    "$@" > "$OUT/$label.log" 2>&1; local rc=$?
    local wall=$(python3 -c "print(f'{$(date +%s.%N) - $start:.1f}')")
    say ""; say "== $label: exit $rc, wall $wall s: $*"
    tail -n 25 "$OUT/$label.log" | tee -a "$REPORT" >/dev/null
}

# The device tests: those that need CUDA skip elsewhere and run here (the rest of the suite runs on the CPU).
timed cuda-tests python3 -m pytest -q -rs -p no:cacheprovider tests/training/test_devices.py
timed preset-lite0-head python3 -m showdown run --preset cifar10-lite0-head --device cuda --data-root "$DATA" \
    --workers auto --no-record --out "$OUT/runs/lite0-head"
timed resnet50-finetune python3 -m showdown run --data cifar10 --data-root "$DATA" --models resnet50 \
    --no-pretrained --strategy finetune --unfreeze blocks:2 --max-per-class 200 --image-size 128 --epochs 3 \
    --ft-epochs 3 --device cuda --workers auto --no-record --out "$OUT/runs/resnet50-finetune"
say ""; say "report: $REPORT"
