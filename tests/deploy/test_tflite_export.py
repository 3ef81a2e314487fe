"""TFLite out: float32 and full-integer int8 exports against PyTorch, and `showdown predict` on them.

Needs the `tflite` extra (litert-torch); skipped with the reason where it is not installed. The model is a
head trained on real photos (a TF-Flowers subset from ../shared, else the demo flowers).
"""
import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from showdown import RunConfig, run
from showdown.data.images import eval_transform, load_rgb
from showdown.data.preprocessing import Preprocessing
from showdown.deploy.export import export_model
from showdown.deploy.predict import open_model
from showdown.models.saving import load_model
from tests.conftest import DATASETS, PHOTOS, run_cli

pytest.importorskip("litert_torch", reason="the `tflite` extra (litert-torch) is not installed")
FLOWERS = DATASETS / "tf_flowers"
ENTRY = "efficientnet_lite0-head"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_dir):
    data = FLOWERS if FLOWERS.is_dir() else demo_dir
    out = tmp_path_factory.mktemp("run") / "tflite"
    run(RunConfig(data=str(data), models=["efficientnet_lite0"], strategies=["head"], image_size=128, epochs=10,
                  max_per_class=30, workers=0, out=str(out), report=False, record=False,
                  precision="fp32"),  # the same model whatever the CPU's bf16 or the engine installed
        echo=lambda *_: None)
    return out


def _held_out(run_dir, count):
    """Real images the model never trained on: the files of the data set outside the run's train split."""
    with (run_dir / "splits.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    train = {r["path"] for r in rows if r["split"] == "train"}
    root = FLOWERS if FLOWERS.is_dir() else None
    candidates = sorted(root.rglob("*.jpg")) if root else [Path(r["path"]) for r in rows]
    held = [p for p in candidates if str(p) not in train]
    return held[:: max(1, len(held) // count)][:count]


def _pytorch(run_dir, paths):
    model, info = load_model(run_dir / ENTRY)
    transform = eval_transform(Preprocessing.from_dict(info.preprocessing))
    batch = torch.stack([transform(load_rgb(p)) for p in paths])
    with torch.inference_mode():
        return batch, model(batch).softmax(1).numpy()


def test_float32_tflite_matches_pytorch_and_predicts(trained):
    path = export_model(trained, "tflite", model_name=ENTRY)
    assert path.name == "model.tflite"
    photos = sorted(PHOTOS.glob("*.jpg")) + _held_out(trained, 10)
    batch, expected = _pytorch(trained, photos)
    exported = open_model(path)
    assert exported.classes == load_model(trained / ENTRY)[1].classes
    assert exported.preprocessing.input_size == (3, 128, 128)
    np.testing.assert_allclose(exported(batch), expected, atol=1e-4)
    result = _own_process("predict", path, *photos[:3], "--precision", "fp32")  # what it computes in: taken
    assert result.returncode == 0, result.stderr
    # its one line, naming what computed, and not the interpreter's "INFO: Created TensorFlow Lite XNNPACK delegate"
    assert result.stderr == "3 image(s) classified by efficientnet_lite0 / head (fp32, LiteRT)\n"


def _own_process(*args) -> subprocess.CompletedProcess:
    """`showdown ARGS` in a process of its own: LiteRT's C++ code writes to the process's stderr descriptor, and
    prints some lines once per process."""
    return subprocess.run([sys.executable, "-m", "showdown", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def int8_file(trained, tmp_path_factory):
    path = tmp_path_factory.mktemp("int8") / "q.tflite"
    result = _own_process("export", trained, "--format", "tflite", "--quantize", "int8", "--output", path)
    assert result.returncode == 0, result.stderr
    # nothing but the command's line: none of the converter's, the interpreter's or torch's own
    assert result.stdout == f"exported {path}\n" and result.stderr == "", result.stderr
    return path


def test_int8_tflite_is_integer_and_predicts(trained, int8_file):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(int8_file))
    assert interpreter.get_input_details()[0]["dtype"] == np.int8  # what phones and Edge TPUs are fed
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    floats = [d["name"] for d in interpreter.get_tensor_details() if d["dtype"] == np.float32]
    assert not floats, f"float tensors left (not full-integer): {floats[:3]}"
    assert int8_file.stat().st_size < 0.4 * (trained / ENTRY / "model.safetensors").stat().st_size
    held = _held_out(trained, 4)
    result = run_cli("predict", str(int8_file), *map(str, held), "--format", "json")
    assert result.returncode == 0 and "4 image(s) classified by efficientnet_lite0 / head (int8, LiteRT)" in \
        result.stderr, result.stderr


def test_int8_tflite_agrees_with_pytorch_top1(trained, int8_file):
    held = _held_out(trained, 200)
    batch, expected = _pytorch(trained, held)
    ours = open_model(int8_file)(batch)
    agreement = float((ours.argmax(1) == expected.argmax(1)).mean())
    # near ties flip under int8 rounding: 98.0 % and 96.0 % for heads trained with different dropout draws
    assert agreement >= 0.95, f"int8 top-1 agrees with PyTorch on {agreement:.1%} of {len(held)} held-out images"


def test_quantize_needs_tflite(trained):
    result = run_cli("export", str(trained), "--format", "onnx", "--quantize", "int8")
    assert result.returncode == 2 and "only --format tflite --quantize int8" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
