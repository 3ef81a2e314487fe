"""Keras weight files that cannot be used fail with one line (needs only h5py, not TensorFlow)."""
import shutil

import h5py
import pytest

from showdown.errors import ModelError
from showdown.models.backbones import load_backbone
from tests.conftest import SHARED, run_cli

GENUINE = SHARED / "weights" / "keras" / "mobilenet_2_5_224_tf_no_top.h5"
needs_genuine = pytest.mark.skipif(not GENUINE.is_file(), reason=f"{GENUINE} not found (../shared absent)")


def test_not_an_hdf5_file(tmp_path):
    (tmp_path / "w.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(ModelError, match="not a readable Keras weights file"):
        load_backbone("resnet50", weights_file=tmp_path / "w.h5")


def test_keras_cache_is_named_in_the_error_listing_what_was_tried(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(ModelError, match=r"Keras cache .*resnet50_weights_tf_dim_ordering_tf_kernels_notop\.h5"):
        load_backbone("resnet50")


@needs_genuine
def test_weights_of_another_network_are_refused_with_the_fix():
    expected = "holds Keras MobileNet weights, not resnet50: use it with --models mobilenet_v1"
    with pytest.raises(ModelError, match=expected):
        load_backbone("resnet50", weights_file=GENUINE)


@needs_genuine
def test_a_layer_missing_leaves_tensors_unfilled(tmp_path):
    broken = tmp_path / "mobilenet_2_5_224_tf_no_top.h5"
    shutil.copy(GENUINE, broken)
    with h5py.File(broken, "r+") as f:
        names = [n for n in f.attrs["layer_names"] if n != b"conv_pw_7_bn"]
        f.attrs["layer_names"] = names
    with pytest.raises(ModelError, match="unfilled, e.g. 'blocks.3.1.bn2"):
        load_backbone("mobilenet_v1", weights_file=broken)


@needs_genuine
def test_cli_error_is_one_line(tmp_path):
    result = run_cli("run", "--models", "vgg16", "--weights", GENUINE, "--out", tmp_path / "r")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "holds Keras MobileNet weights" in result.stderr


@needs_genuine
def test_a_tensor_missing_from_its_layer_is_named(tmp_path):
    """The file reads, but a layer names a weight it no longer holds: said so, with the weight's name (it was
    "not a readable Keras weights file")."""
    broken = tmp_path / "mobilenet_2_5_224_tf_no_top.h5"
    shutil.copy(GENUINE, broken)
    with h5py.File(broken, "r+") as f:
        group = f["conv_pw_7_bn"]
        name = next(n for n in group.attrs["weight_names"] if b"moving_variance" in n)
        del group[name.decode()]
    with pytest.raises(ModelError, match="lacks a weight one of its layers names .*moving_variance"):
        load_backbone("mobilenet_v1", weights_file=broken)
