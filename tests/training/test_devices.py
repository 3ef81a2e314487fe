"""--device, --precision on accelerators and --compile: what is chosen, what is refused in one line, and what a
GPU run must produce. Tests that need CUDA skip, with their reason, on machines without it."""
import json
import logging
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from showdown.config.run_config import RunConfig
from showdown.device import device_facts, prepare, resolve_device, to_device
from showdown.errors import ConfigError
from showdown.frozen.engines import resolve_runtime
from showdown.precision import grad_scaler, resolve_precision
from showdown.training.loop import TrainSettings, fit
from tests.conftest import run_cli

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
CPU = torch.device("cpu")


def _cli(*args, cwd=None):
    """A process of its own: the CUDA settings a run makes (cuDNN's autotuner, TF32) stay in the process."""
    return subprocess.run([sys.executable, "-m", "showdown", *args], capture_output=True, text=True, timeout=600,
                          cwd=cwd)


def test_cpu_is_what_auto_and_cpu_mean_here_and_missing_devices_are_named():
    assert resolve_device("cpu") == CPU
    if not torch.cuda.is_available():
        assert resolve_device("auto").type in ("cpu", "mps")
        for requested in ("cuda", "cuda:1"):
            with pytest.raises(ConfigError, match=r"no CUDA device found \(torch .* (sees 0 CUDA|without CUDA)"):
                resolve_device(requested)
    with pytest.raises(ConfigError, match="'gpu7' is not understood"):
        resolve_device("gpu7")
    assert device_facts(CPU)["type"] == "cpu" and device_facts(CPU)["cores"] >= 1


def test_precision_and_engine_follow_the_device():
    assert resolve_precision("auto", CPU) in ("fp32", "bf16")
    assert resolve_precision("fp32", CPU) == "fp32"
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        resolve_precision("fp16", CPU)
    gpu = torch.device("cuda", 0)  # only the type is read: no GPU is touched
    assert resolve_runtime("auto", "bf16", "cuda") == "torch"  # ONNX Runtime and OpenVINO are CPU engines
    with pytest.raises(ConfigError, match="--runtime onnxruntime runs on the CPU"):
        resolve_runtime("onnxruntime", "fp32", gpu.type)
    assert grad_scaler("fp16", "cpu").is_enabled() and not grad_scaler("bf16", "cpu").is_enabled()


def _head_fit(compile: bool) -> tuple[nn.Module, list[dict]]:
    torch.manual_seed(0)
    features, labels = torch.randn(96, 16), torch.randint(0, 3, (96,))
    batches = [(features[i:i + 32], labels[i:i + 32]) for i in range(0, 96, 32)]
    head = nn.Sequential(nn.Linear(16, 3))
    history = fit(head, batches, batches, TrainSettings(epochs=3, lr=0.05, patience=10, compile=compile))
    return head, history


def test_compile_trains_what_eager_trains():
    eager_head, eager = _head_fit(compile=False)
    compiled_head, compiled = _head_fit(compile=True)
    assert [round(h["val_loss"], 4) for h in compiled] == [round(h["val_loss"], 4) for h in eager]
    torch.testing.assert_close(compiled_head[0].weight, eager_head[0].weight, atol=1e-5, rtol=1e-5)


def test_a_compile_failure_is_one_log_line_and_training_goes_on_eagerly(monkeypatch, caplog):
    def broken(net):
        def run(*_):
            raise RuntimeError("no C++ compiler found\nsecond line of a long compiler dump")
        return run
    monkeypatch.setattr(torch, "compile", broken)
    with caplog.at_level(logging.WARNING):
        _, history = _head_fit(compile=True)
        _head_fit(compile=True)  # a second model: the note is not repeated
    notes = [r.getMessage() for r in caplog.records if "--compile" in r.getMessage()]
    assert notes == ["--compile: torch.compile failed (RuntimeError: no C++ compiler found); training eagerly"]
    assert len(history) == 3 and history[-1]["train_loss"] < history[0]["train_loss"]


def test_a_backward_compile_failure_is_one_log_line_too(monkeypatch, caplog):
    """torch.compile builds the backward graph at the first backward pass (where a process that imported distutils
    before setuptools fails an assertion of setuptools'): that failure falls back to eager training too."""

    class CompilerBroke(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            raise AssertionError("/usr/lib/python3.11/distutils/core.py")

    monkeypatch.setattr(torch, "compile", lambda net: lambda x: CompilerBroke.apply(net(x)))
    with caplog.at_level(logging.WARNING):
        _, history = _head_fit(compile=True)
    notes = [r.getMessage() for r in caplog.records if "--compile" in r.getMessage()]
    assert notes == ["--compile: torch.compile failed (AssertionError: /usr/lib/python3.11/distutils/core.py); "
                     "training eagerly"]
    assert len(history) == 3 and history[-1]["train_loss"] < history[0]["train_loss"]


def test_bench_on_an_explicit_cpu_device(tmp_path):
    result = run_cli("bench", "--device", "cpu", "--models", "efficientnet_lite0", "--image-size", "64", "--repeats",
                     "2", "--no-onnx", "--precision", "fp32", "--out", str(tmp_path / "bench"))
    assert result.returncode == 0, result.stderr
    bench = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert bench["machine"]["device"]["type"] == "cpu"
    assert [(r["device"], r["runtime"], r["precision"]) for r in bench["rows"]] == [("cpu", "torch", "fp32")]
    assert bench["rows"][0]["throughput_ips"] > 0 and "device: cpu" in result.stdout


@needs_cuda
def test_a_showdown_on_the_gpu_trains_every_strategy_and_predicts_on_the_cpu(tmp_path):
    from showdown.models.saving import load_model

    result = _cli("run", "--data", "demo", "--models", "efficientnet_lite0", "--strategy", "head,finetune,scratch-cnn",
                  "--image-size", "96", "--epochs", "3", "--device", "cuda", "--no-report", "--no-record",
                  "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-3000:]
    environment = json.loads((tmp_path / "run" / "environment.json").read_text())
    assert environment["device"]["type"] == "cuda" and environment["device"]["name"]
    assert environment["precision"] == ("bf16" if torch.cuda.get_device_capability() >= (8, 0) else "fp16")
    assert environment["device"]["cudnn_benchmark"] and environment["device"]["matmul_fp32"] == "tf32"
    rows = json.loads((tmp_path / "run" / "summary.json").read_text())["rows"]
    assert {r["strategy"] for r in rows} == {"head", "finetune", "scratch-cnn"}
    assert all(r["accuracy"] > 0.3 for r in rows)  # 5 classes: chance is 0.2
    model, _ = load_model(tmp_path / "run" / "efficientnet_lite0-head")  # saved from CPU copies
    assert all(t.device.type == "cpu" for t in model.state_dict().values())


@needs_cuda
def test_bench_on_the_gpu_times_fp32_and_half_precision(tmp_path):
    result = _cli("bench", "--device", "cuda", "--models", "efficientnet_lite0", "--repeats", "5",
                  "--out", str(tmp_path / "bench"))
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "bench" / "bench.json").read_text())["rows"]
    assert {r["precision"] for r in rows} >= {"fp32", "fp16"} and all(r["device"] == "cuda" for r in rows)
    assert all(r["latency_ms"] > 0 and r["throughput_ips"] > 0 for r in rows)


class _CopyWatch(TorchDispatchMode):
    """The copies between devices that are asked for: (to device, non_blocking); the tensor stays where it is."""

    def __init__(self):
        super().__init__()
        self.copies = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._to_copy.default and "device" in kwargs:
            self.copies.append((kwargs["device"].type, kwargs.get("non_blocking", False)))
            return args[0]
        return func(*args, **kwargs)


def test_only_copies_to_cuda_are_non_blocking_and_batches_turn_channels_last_after_the_copy():
    batch = torch.randn(2, 3, 8, 8)
    with _CopyWatch() as watch:  # any device but CUDA (MPS): the copy blocks, as non-blocking MPS copies can race
        to_device((batch, torch.tensor([0, 1])), torch.device("meta"))
    assert watch.copies == [("meta", False), ("meta", False)]
    moved = to_device(batch, CPU, channels_last=True)
    assert moved.is_contiguous(memory_format=torch.channels_last) and batch.is_contiguous()
    assert to_device(torch.randn(2, 5), CPU, channels_last=True).is_contiguous()  # features stay as they are


def test_image_batches_leave_the_layout_to_the_device(demo_dir):
    """Converted on the CPU, a pinned batch would need a full copy and its copy to the GPU would block."""
    from showdown.config.run_config import RunConfig
    from showdown.models.backbones import load_backbone
    from showdown.training.batches import image_batches

    items = [(path, 0) for path in sorted((demo_dir / "daisy").iterdir())[:2]]
    preprocessing = load_backbone("efficientnet_lite0", image_size=64).preprocessing
    images, _ = next(iter(image_batches(items, preprocessing, RunConfig(workers="0"), train=False)))
    assert images.is_contiguous() and not images.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("capability, auto, bench", [((7, 5), "fp16", ("fp32", "fp16")),
                                                     ((8, 0), "bf16", ("fp32", "bf16", "fp16"))])
def test_auto_precision_on_a_cuda_gpu_follows_its_compute_capability(monkeypatch, capability, auto, bench):
    """A T4 (7.5) can emulate bf16, so torch.cuda.is_bf16_supported() says True, but cuDNN has no bf16
    convolutions below 8.0: fp16 there. The device as a T4 or an A100 presents itself to PyTorch."""
    from showdown.reporting.bench import default_precisions

    major, minor = capability
    props = SimpleNamespace(name="T4" if major < 8 else "A100", major=major, minor=minor, total_memory=16 * 2**30)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: props)
    monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True)  # emulation works
    gpu = torch.device("cuda", 0)
    assert resolve_precision("auto", gpu) == auto
    assert default_precisions(gpu) == bench


@pytest.fixture
def cuda_settings():
    """The process-wide CUDA settings as they were, restored after the test."""
    saved = torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.fp32_precision
    yield
    torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.fp32_precision = saved


def test_a_cuda_run_turns_on_cudnn_autotuning_and_tf32_matmuls(cuda_settings):
    prepare(CPU)
    assert not torch.backends.cudnn.benchmark and torch.backends.cuda.matmul.fp32_precision != "tf32"
    prepare(torch.device("cuda", 0))  # only flags: no GPU is touched
    assert torch.backends.cudnn.benchmark and torch.backends.cuda.matmul.fp32_precision == "tf32"


def test_the_gradient_scaler_is_checkpointed(tmp_path):
    """fp16's loss scale adapts while training: a resumed run starts from the scale it had reached."""
    from showdown.training.checkpoint import load_checkpoint, save_checkpoint

    def parts(scale):
        model = nn.Linear(4, 2)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
        scaler = torch.amp.GradScaler("cpu", init_scale=scale)
        scaler.scale(torch.ones(()))  # the scale exists once it is first used
        return model, optimizer, scheduler, scaler

    saved = parts(2.0**10)
    saved[3].update(new_scale=512.0)  # as after overflowing steps
    save_checkpoint(tmp_path / "checkpoint.pt", *saved, {"epoch": 3})
    resumed = parts(2.0**16)
    assert load_checkpoint(tmp_path / "checkpoint.pt", *resumed) == {"epoch": 3}
    assert resumed[3].get_scale() == 512.0


def test_the_top_trains_on_cached_activations_under_autocast_on_a_gpu_and_in_fp32_on_the_cpu():
    from showdown.experiment.context import RunContext
    from showdown.experiment.phases import top_precision
    from showdown.frozen.frozen_pass import FrozenPass

    on_gpu = RunContext(FrozenPass("bf16", "torch", torch.device("cuda", 0)))
    assert top_precision(on_gpu, on_images=False) == top_precision(on_gpu, on_images=True) == "bf16"
    on_cpu = RunContext(FrozenPass("bf16", "torch", CPU))
    assert top_precision(on_cpu, on_images=False) == "fp32" and top_precision(on_cpu, on_images=True) == "bf16"


def test_the_boundary_cache_budget_is_the_machines_shared_by_its_processes(monkeypatch):
    from showdown.experiment.phases import cache_budget

    config = RunConfig(cache_budget_gb=8)
    assert cache_budget(config) == 8 * 2**30
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # torchrun's 8 processes on this machine each hold the whole set
    assert cache_budget(config) == 2**30


@needs_cuda
def test_finetune_on_the_gpu_decodes_each_image_once_through_the_boundary_cache(tmp_path, monkeypatch):
    """The frozen bottom runs once per image on the GPU (its probe on the GPU too): 250 demo images decoded once,
    not again for every epoch of a full forward."""
    from showdown import RunConfig, run
    from showdown.data import images

    decoded, load_rgb = [], images.load_rgb
    monkeypatch.setattr(images, "load_rgb", lambda path, side=None: decoded.append(path) or load_rgb(path, side))
    lines = []
    config = RunConfig(data="demo", models=["efficientnet_lite0"], strategies=["finetune"], image_size=96, epochs=3,
                       device="cuda", workers="0", report=False, record=False, out=str(tmp_path / "run"))
    results = run(config, echo=lines.append)
    assert any(line.startswith("  boundary cache: frozen bottom") for line in lines), lines
    assert len(decoded) == 250 and results.rows[0]["accuracy"] > 0.3


@needs_cuda
def test_cifar_sized_images_on_the_gpu(tmp_path, demo_dir):
    """Small squares take the batched resize inside the frozen graph: its matrices must be on the GPU too."""
    from PIL import Image

    from showdown.data.images import load_rgb

    for name in ("daisy", "roses", "tulips"):
        (tmp_path / "small" / name).mkdir(parents=True)
        for photo in sorted((demo_dir / name).iterdir())[:20]:
            load_rgb(photo).resize((32, 32), Image.BICUBIC).save(tmp_path / "small" / name / f"{photo.stem}.png")
    result = _cli("run", "--data", str(tmp_path / "small"), "--models", "efficientnet_lite0", "--strategy",
                  "head,finetune", "--image-size", "96", "--epochs", "3", "--device", "cuda", "--no-report",
                  "--no-record", "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "small images: upscaled whole" in result.stdout and "boundary cache: frozen bottom" in result.stdout


@needs_cuda
def test_tune_on_the_gpu(tmp_path):
    """Search trials train on the GPU like the entries (a finetune trial on the CPU would crash)."""
    result = _cli("run", "--data", "demo", "--models", "efficientnet_lite0", "--strategy", "head,finetune",
                  "--image-size", "96", "--epochs", "2", "--tune", "2", "--device", "cuda", "--no-report",
                  "--no-record", "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((tmp_path / "run" / "summary.json").read_text())["rows"]
    assert {r["strategy"] for r in rows} == {"head", "finetune"} and all(r["tune_seconds"] > 0 for r in rows)


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() >= (8, 0),
                    reason="needs a CUDA GPU of compute capability below 8.0 (T4, V100)")
def test_auto_precision_on_a_pre_ampere_gpu_is_fp16_with_a_gradient_scaler(tmp_path):
    result = _cli("run", "--data", "demo", "--models", "efficientnet_lite0", "--strategy", "head,finetune,scratch-cnn",
                  "--image-size", "96", "--epochs", "3", "--device", "cuda", "--no-report", "--no-record",
                  "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "environment.json").read_text())["precision"] == "fp16"
    rows = json.loads((tmp_path / "run" / "summary.json").read_text())["rows"]
    assert all(r["accuracy"] > 0.3 for r in rows)
