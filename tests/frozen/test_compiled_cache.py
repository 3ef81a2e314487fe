"""What a re-run no longer redoes: importing a TFLite/Keras/package weights file (kept as safetensors), exporting a
frozen model to ONNX and compiling it in OpenVINO (both kept in the cache folder); a damaged entry is recomputed
with one warning line."""
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from showdown.cache import STATS, kind_folder, lock_file, usage
from showdown.frozen import engines, openvino_engine
from showdown.models.backbones import imported, load_backbone
from showdown.models.backbones.found import FoundWeights
from showdown.models.backbones.registry import resolve_backbone
from tests.conftest import SHARED

TFLITE = SHARED / "weights" / "mobilenet-tflite"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SHOWDOWN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_imported_weights_are_read_back_until_the_source_changes_and_a_damaged_entry_is_imported_again(
        cache, tmp_path, caplog):
    source = tmp_path / "weights.tflite"
    source.write_bytes(b"a source file")
    spec = resolve_backbone("mobilenet_v2")
    imports = []

    def importer():
        imports.append(1)
        return FoundWeights({"b": torch.arange(6.0).reshape(2, 3), "a": torch.ones(2, dtype=torch.float16)},
                            {"mean": (0.5, 0.5, 0.5), "input_size": (3, 224, 224)}, {"pad_type": "same"}, None)

    first = imported.cached_import([source], spec, importer)
    again = imported.cached_import([source], spec, importer)
    assert len(imports) == 1
    assert list(again.state_dict) == ["b", "a"]  # the importer's order, which strict loading reports by
    for name, tensor in first.state_dict.items():
        assert torch.equal(again.state_dict[name], tensor) and again.state_dict[name].dtype == tensor.dtype
    assert (again.preprocessing, again.timm_kwargs, again.timm_name) == (first.preprocessing, first.timm_kwargs, None)

    (entry,) = kind_folder("weights").iterdir()
    _flip_a_byte(entry)
    recomputed = STATS["recomputed"]
    with caplog.at_level(logging.WARNING):
        healed = imported.cached_import([source], spec, importer)
    assert len(imports) == 2 and torch.equal(healed.state_dict["b"], first.state_dict["b"])
    assert STATS["recomputed"] == recomputed + 1
    (line,) = _warnings(caplog)
    assert "damaged cache entry" in line and entry.name in line
    assert [p.name for p in kind_folder("weights").iterdir()] != []  # written again, intact
    imported.cached_import([source], spec, importer)
    assert len(imports) == 2

    os.utime(source, ns=(1, 1))  # an edited or replaced weights file imports afresh
    imported.cached_import([source], spec, importer)
    assert len(imports) == 3


@pytest.mark.skipif(not TFLITE.is_dir(), reason="shared/weights/mobilenet-tflite is not here")
def test_a_tflite_backbone_from_the_cache_is_the_imported_one(cache):
    first = load_backbone("mobilenet_v2", weights_dir=TFLITE, image_size=96)
    assert len(list(kind_folder("weights").glob("*.safetensors"))) == 1
    again = load_backbone("mobilenet_v2", weights_dir=TFLITE, image_size=96)
    assert again.source == first.source and again.preprocessing == first.preprocessing
    assert again.timm_kwargs == first.timm_kwargs
    expected = first.model.state_dict()
    for name, tensor in again.model.state_dict().items():
        assert torch.equal(tensor, expected[name]), name


def test_a_rebuilt_engine_neither_exports_nor_compiles_again(cache, monkeypatch, caplog):
    pytest.importorskip("openvino", reason="openvino is not installed")
    torch.manual_seed(0)
    model = load_backbone("mobilenet_v2", pretrained=False, image_size=64).model
    images = torch.rand(3, 3, 64, 64)
    exports, compiled = [], []
    export, compile_model = engines._export, openvino_engine.compiled
    monkeypatch.setattr(engines, "_export", lambda *a: exports.append(1) or export(*a))
    monkeypatch.setattr(openvino_engine, "compiled", lambda *a: compiled.append(compile_model(*a)) or compiled[-1])

    def features():
        # a new run: frozen_forward without a run's engines builds afresh
        with torch.inference_mode():
            return engines.frozen_forward(model, images, "fp32", "openvino")(images)

    first, second = features(), features()
    assert len(exports) == 1  # the second build read the graph from the cache
    assert [c.get_property("LOADED_FROM_CACHE") for c in compiled] == [False, True]
    torch.testing.assert_close(second, first, rtol=0, atol=0)

    (graph,) = kind_folder("engines").glob("*.onnx")
    _flip_a_byte(graph)
    with caplog.at_level(logging.WARNING):
        healed = features()
    assert len(exports) == 2 and len(_warnings(caplog)) == 1 and graph.name in _warnings(caplog)[0]
    torch.testing.assert_close(healed, first, rtol=0, atol=0)

    with torch.no_grad():
        model.conv_stem.weight.mul_(0.5)  # other weights: another graph, compiled afresh
    changed = features()
    assert len(exports) == 3 and compiled[-1].get_property("LOADED_FROM_CACHE") is False
    assert not torch.allclose(changed, first)


def _graph(folder: Path) -> Path:
    torch.manual_seed(0)
    return engines._export(load_backbone("mobilenet_v2", pretrained=False, image_size=64).model,
                           torch.rand(1, 3, 64, 64), folder)


HOLD_THE_LOCK = """
import fcntl, sys, time
held = open(sys.argv[1], "ab")
fcntl.flock(held, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(300)
"""


def test_processes_sharing_the_cache_compile_one_at_a_time(cache, tmp_path):
    """OpenVINO writes a compiled blob, then makes it read-only; a process that read the blob half-written deletes
    it in between, which failed the first one's compile (seen with a Ray run and a single run side by side; the
    single run then fell back to ONNX Runtime). A compile now waits while another process compiles."""
    pytest.importorskip("openvino", reason="openvino is not installed")
    graph = _graph(tmp_path)
    kind_folder("engines").mkdir(parents=True)
    other = subprocess.Popen([sys.executable, "-c", HOLD_THE_LOCK, str(lock_file("engines"))],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline() == "held\n"
        compiled = []
        compiling = threading.Thread(target=lambda: compiled.append(openvino_engine.compiled(graph, "fp32")),
                                     daemon=True)
        compiling.start()
        compiling.join(timeout=3)
        assert compiling.is_alive() and not compiled  # waits for the other process
    finally:
        other.kill()  # a process killed while it compiles leaves no lock behind
        other.wait()
    compiling.join(timeout=120)
    assert compiled and compiled[0].get_property("LOADED_FROM_CACHE") is False
    assert len(list(kind_folder("engines").glob("*.blob"))) == 1
    assert {u.kind: u.entries for u in usage()}["engines"] == 1  # the blob: `cache info` counts no lock file


def test_a_compile_the_cache_fails_is_made_again_without_it(cache, tmp_path, monkeypatch, caplog):
    """Where the lock does not hold (a cache folder shared between machines), OpenVINO's cache can still fail a
    compile: the model is compiled again without the cache (an info line, shown with --debug), rather than left
    to another engine."""
    ov = pytest.importorskip("openvino", reason="openvino is not installed")

    class RacedCache(ov.Core):  # the error OpenVINO 2026.4 raised in that race
        def compile_model(self, model, device, config=None):
            if "CACHE_DIR" in (config or {}):
                raise RuntimeError("Exception from src/inference/src/cpp/core.cpp:117:\nfilesystem error: cannot "
                                   "set permissions: No such file or directory [/cache/compiled/1.blob]")
            return super().compile_model(model, device, config)

    monkeypatch.setattr(openvino_engine, "core", RacedCache)
    graph = _graph(tmp_path)
    with caplog.at_level(logging.INFO, logger=openvino_engine.__name__):
        forward = openvino_engine.forward(graph, "fp32")
    (line,) = [r.getMessage() for r in caplog.records if r.name == openvino_engine.__name__]
    assert "cannot set permissions" in line and "compiling once more without it" in line
    assert forward(torch.rand(2, 3, 64, 64)).shape == (2, 1280)
