"""Device mismatches caught without a GPU. On the CPU every tensor sits on the one device, so a tensor created on
the wrong one goes unnoticed until the first GPU run; here the GPU path runs on a stand-in device (`meta` made
strict, tests/training/fake_gpu.py), which refuses to mix with the CPU as a GPU does, until the code's first read of a
value from it. A static check finds tensors created without `device=` where one is needed."""
import ast
from pathlib import Path

import pytest
import torch
from PIL import Image

from showdown.config.run_config import RunConfig
from showdown.config.strategy import Strategy
from showdown.data import load_dataset
from showdown.data.folder import subset_per_class
from showdown.data.images import load_rgb
from showdown.experiment.context import RunContext
from showdown.experiment.entry import build_model, train_entry
from showdown.frozen.boundary import TopOfNetwork, first_trainable, sequential_layers
from showdown.frozen.feature_cache import FrozenPass, forward_views
from showdown.models.backbones import load_backbone
from showdown.training.freezing import unfreeze
from tests.training.fake_gpu import FAKE_READS, fake_gpu

SRC = Path(__file__).resolve().parents[2] / "src" / "showdown"
STRATEGIES = ("head", "finetune", "scratch", "scratch-cnn")


def _tensors_on(module: torch.nn.Module, device: torch.device) -> bool:
    return all(t.device == device for t in [*module.parameters(), *module.buffers()])


@pytest.fixture(scope="module")
def dataset(demo_dir):
    return subset_per_class(load_dataset(str(demo_dir)), 3)


def test_the_boundary_probe_runs_on_the_backbones_device():
    backbone = load_backbone("efficientnet_lite0", image_size=64)
    with fake_gpu() as gpu:
        backbone.model.to(gpu)
        # The probe and the chained layers ran on the GPU; only comparing their values needs values.
        with pytest.raises(FAKE_READS, match="allclose"):
            sequential_layers(backbone.model, backbone.preprocessing.input_size)


def test_small_square_images_are_resized_on_the_device(demo_dir, tmp_path):
    items = []
    for label, name in enumerate(("daisy", "roses")):
        for path in sorted((demo_dir / name).iterdir())[:2]:
            small = tmp_path / f"{name}-{path.stem}.png"
            load_rgb(path).resize((32, 32), Image.BICUBIC).save(small)
            items.append((small, label))
    backbone = load_backbone("efficientnet_lite0", image_size=64)
    with fake_gpu() as gpu:
        frozen = FrozenPass(precision="fp32", batch_size=2, workers=0, runtime="torch", device=gpu)
        plain, mirrored = forward_views(frozen, backbone.model, backbone.preprocessing, items, (False, True),
                                        desc="small", store_dtype=torch.float32, name="efficientnet_lite0")
        assert _tensors_on(backbone.model, gpu)
        assert plain.features.shape == mirrored.features.shape == (4, backbone.num_features)
    assert plain.labels.tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_builds_its_model_on_the_device_and_trains_there(strategy, dataset):
    backbone = load_backbone("efficientnet_lite0", image_size=64)
    layers = sequential_layers(backbone.model, backbone.preprocessing.input_size)  # on the CPU, with values
    config = RunConfig(image_size=64, head_hidden=[32], head_dropout=0.2, head_bn=True, tta="flip")
    with fake_gpu() as gpu:
        built, model = build_model(Strategy.parse(strategy), backbone, dataset, config, gpu)
        assert _tensors_on(model, gpu)
        side = built.preprocessing.input_size[-1]
        images, labels = torch.randn(4, 3, side, side, device=gpu), torch.tensor([0, 1, 2, 3], device=gpu)
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        model.eval()
        assert model(images).shape == (4, len(dataset.classes))  # with flip TTA
        if strategy == "head":  # the finetune phase's top on boundary activations, from the same layers
            unfreeze(model, "blocks:2")
            cut = first_trainable(layers)
            top = TopOfNetwork(layers[cut:], backbone.model, model.head).train()
            bottom = torch.nn.Sequential(*layers[:cut])
            with torch.inference_mode():
                activations = bottom(images).to(torch.bfloat16)  # stored in bf16, as the cache keeps them
            torch.nn.functional.cross_entropy(top(activations), labels).backward()


def test_search_trials_train_on_the_device(dataset, tmp_path):
    backbone = load_backbone("efficientnet_lite0", image_size=64)
    config = RunConfig(image_size=64, epochs=1, tune=1, workers="0", batch_size=8)
    with fake_gpu() as gpu:
        run = RunContext(FrozenPass("fp32", "torch", gpu, cache_dir=tmp_path / "cache"))
        with pytest.raises(FAKE_READS) as read:
            train_entry(Strategy.parse("scratch-cnn"), backbone, dataset, config, run, tmp_path / "entry")
    # The first value read from the GPU is the first trial's loss: the trial trained there (one that trained on
    # the CPU would finish, and the first read would come later, in the entry's own training).
    assert "train_trial" in [entry.name for entry in read.traceback]


# Tensors created without device= (on the CPU) where that is intended, each with the reason: the check below fails
# on any other, so a tensor made inside a forward or a data path takes its device from the model or the data.
CPU_ON_PURPOSE = {
    ("data/images.py", "collate_readable"): "batches are collated on the CPU (DataLoader workers), moved by to_device",
    ("data/pixels.py", "Normalized.__init__"): "buffers of a module, moved with it by .to(device)",
    ("training/batches.py", "TensorBatches.__iter__"): "order and coins index cached tensors held on the CPU",
    ("experiment/context.py", "Entry.class_weights"): "the loss's weight, moved with the loss by .to(device)",
    ("experiment/folds.py", "FeaturePool.subset"): "indexes cached features held on the CPU",
    ("experiment/phases.py", "frozen_top_features"): "an empty result on the CPU, where the features are kept",
    ("frozen/feature_cache.py", "_forward_shard"): "empty results on the CPU, where frozen outputs are kept",
    ("frozen/feature_cache.py", "_inputs"): "an example batch, which _forward_shard moves (.to(device))",
    ("frozen/engines.py", "photo_inputs"): "an example batch, which its callers move (.to(device))",
    ("frozen/feature_cache.py", "InMemory.tensor"): "an empty result on the CPU, where frozen outputs are kept",
    ("frozen/disk_activations.py", "_mapped"): "rows of a file mapped into host memory, moved per batch by to_device",
    ("frozen/disk_activations.py", "_read"): "labels and indices of a file on the CPU, as the in-RAM path keeps them",
    ("distributed.py", "all_true"): "reduced over the gloo group, which works on CPU tensors",
    ("distributed.py", "all_sum"): "reduced over the gloo group, which works on CPU tensors",
    ("models/backbones/tflite.py", "import_tflite"): "weights read from a file into a CPU state dict",
    ("models/onnx_graph.py", "pooling_matrix"): "a constant of an exported ONNX graph (export runs on the CPU)",
    ("deploy/export.py", "export_model"): "export runs on the CPU",
    ("deploy/export_tflite.py", "export_tflite"): "export runs on the CPU",
    ("reporting/bench.py", "gmacs"): "FLOPs are counted on the CPU copy (bench_backbone moves the model there)",
    ("reporting/bench.py", "time_graph"): "ONNX Runtime and OpenVINO are CPU engines",
}
FACTORIES = {"zeros", "ones", "empty", "full", "randn", "rand", "randint", "tensor", "arange", "linspace", "eye"}


def _created_without_device(root: Path = SRC) -> dict[tuple[str, str], list[int]]:
    """(file, enclosing function) -> lines of torch.<factory>(...) calls without device= under `root`."""
    found: dict[tuple[str, str], list[int]] = {}
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"
                    and node.func.attr in FACTORIES and "device" not in {k.arg for k in node.keywords}):
                continue
            names, up = [], parents.get(node)
            while up is not None:
                if isinstance(up, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    names.append(up.name)
                up = parents.get(up)
            where = (path.relative_to(root).as_posix(), ".".join(reversed(names)))
            found.setdefault(where, []).append(node.lineno)
    return found


def test_tensors_are_created_on_the_device_of_their_model_or_data_except_where_the_cpu_is_meant():
    found = _created_without_device()
    unexplained = {f"{file}:{lines[0]} in {function or 'the module'}" for (file, function), lines in found.items()
                   if (file, function) not in CPU_ON_PURPOSE}
    assert not unexplained, ("tensors created without device= (give them the device of the model or the data, or "
                             f"add the place to CPU_ON_PURPOSE with the reason): {sorted(unexplained)}")
    stale = set(CPU_ON_PURPOSE) - set(found)
    assert not stale, f"CPU_ON_PURPOSE names places that create no such tensor any more: {sorted(stale)}"


def test_the_static_check_finds_a_tensor_created_without_a_device(tmp_path):
    (tmp_path / "layer.py").write_text("import torch\n\nclass Shift:\n    def forward(self, x):\n"
                                       "        return x + torch.zeros(3) + torch.ones(3, device=x.device)\n")
    assert _created_without_device(tmp_path) == {("layer.py", "Shift.forward"): [5]}
