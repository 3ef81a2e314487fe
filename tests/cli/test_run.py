"""The whole `showdown run` path on the embedded demo data: real images, real weights, real training."""
import json
import subprocess
import sys

import pytest
import torch

from showdown import RunConfig, run
from showdown.models.backbones import load_backbone
from showdown.models.saving import load_model
from tests.conftest import run_cli

QUICK = dict(models=["efficientnet_lite0"], image_size=160, workers=0, epochs=30)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "demo"
    # fp32, so that a recomputation from the images can match (on a CPU with native bf16 `auto` picks bf16).
    results = run(RunConfig(out=str(out), precision="fp32", **QUICK), echo=lambda *_: None)
    return results


def test_head_on_real_features_beats_chance_by_far(demo_run):
    row = demo_run.best()
    assert row["model"] == "efficientnet_lite0" and row["strategy"] == "head"
    assert row["accuracy"] >= 0.7  # chance is 0.2 on 5 classes
    assert 0 < row["macro_f1"] <= 1 and row["loss"] < 1.2
    assert row["trainable_params"] < 10_000  # only the head trained: 1280*5 + 5


def test_run_folder_holds_the_evidence(demo_run):
    folder = demo_run.run_dir
    for name in ("config.yaml", "environment.json", "dataset.json", "splits.csv", "summary.csv", "summary.md"):
        assert (folder / name).is_file(), name
    entry = folder / "efficientnet_lite0-head"
    for name in ("metrics.json", "history.csv", "confusion.png", "curves.png", "model.safetensors", "model.json",
                 "predictions.csv"):
        assert (entry / name).is_file(), name
    metrics = json.loads((entry / "metrics.json").read_text())
    assert set(metrics["per_class"]) == {"daisy", "dandelion", "roses", "sunflowers", "tulips"}
    assert sum(map(sum, metrics["confusion_matrix"])) == 40
    sidecar = json.loads((entry / "model.json").read_text())
    assert sidecar["preprocessing"]["input_size"] == [3, 160, 160]
    assert sidecar["weights_source"].startswith("package")


def test_saved_model_reproduces_the_test_predictions(demo_run):
    from showdown.data import load_dataset
    from showdown.data.images import eval_transform, load_rgb
    from showdown.data.preprocessing import Preprocessing

    model, info = load_model(demo_run.run_dir / "efficientnet_lite0-head")
    dataset = load_dataset("demo")
    transform = eval_transform(Preprocessing.from_dict(info.preprocessing))
    batch = torch.stack([transform(load_rgb(p)) for p, _ in dataset.splits["test"]])
    with torch.inference_mode():
        predicted = model(batch).argmax(1).tolist()
    accuracy = sum(p == label for p, (_, label) in zip(predicted, dataset.splits["test"])) / len(predicted)
    assert accuracy == pytest.approx(demo_run.best()["accuracy"], abs=1 / 40 + 1e-9)  # at most one near tie flips


def test_frozen_backbone_is_untouched_and_seeded_runs_repeat(tmp_path, demo_copy):
    config = dict(QUICK, data=str(demo_copy), epochs=5)
    before = load_backbone("efficientnet_lite0").model.state_dict()
    a = run(RunConfig(out=str(tmp_path / "a"), **config), echo=lambda *_: None)
    b = run(RunConfig(out=str(tmp_path / "b"), **config), echo=lambda *_: None)
    model_a, _ = load_model(a.run_dir / "efficientnet_lite0-head")
    model_b, _ = load_model(b.run_dir / "efficientnet_lite0-head")
    for key, value in model_a.backbone.state_dict().items():
        assert torch.equal(value, before[key]), key  # weights and BN running statistics alike
    for key, value in model_a.head.state_dict().items():
        assert torch.equal(value, model_b.head.state_dict()[key])


def test_feature_cache_is_hit_on_the_second_run_and_missed_after_a_change(tmp_path, demo_copy):
    config = dict(QUICK, data=str(demo_copy), epochs=2)
    def frozen_passes(out, **values):
        results = run(RunConfig(out=str(tmp_path / out), **values), echo=lambda *_: None)
        return json.loads((results.run_dir / "summary.json").read_text())["frozen_passes"]

    first = frozen_passes("1", **config)
    assert first["miss"] == 3 and first["hit"] == 0 and first["images"] > 0
    assert frozen_passes("2", **config) == {"hit": 3, "miss": 0, "images": 0, "recomputed": 0}
    changed = frozen_passes("3", **dict(config, image_size=128))
    assert changed["miss"] == 3 and changed["images"] == first["images"]
    # a finished run resumed, nothing left to do: its summary keeps the run's counts, not this process's zeros
    run(out=str(tmp_path / "1"), resume=True, echo=lambda *_: None)
    assert json.loads((tmp_path / "1" / "summary.json").read_text())["frozen_passes"] == first


def test_unreadable_images_are_skipped_counted_and_listed(tmp_path, demo_copy):
    (demo_copy / "daisy" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (demo_copy / "roses" / "empty.png").write_bytes(b"")
    lines = []
    results = run(RunConfig(out=str(tmp_path / "r"), data=str(demo_copy), **dict(QUICK, epochs=2)), echo=lines.append)
    assert len(results.skipped) == 2
    assert "broken.jpg" in (results.run_dir / "skipped.txt").read_text()
    assert any("skipped 2 unreadable" in line for line in lines)


_cli = run_cli  # what a command prints and returns, without a process's 5 s of imports


def test_cli_prints_the_comparison_table(tmp_path, demo_copy):
    result = subprocess.run([sys.executable, "-m", "showdown.cli", "run", "--data", str(demo_copy), "--models",
                             "efficientnet_lite0", "--image-size", "128", "--epochs", "3", "--out",
                             str(tmp_path / "cli")], capture_output=True, text=True, timeout=600)  # a real process
    assert result.returncode == 0, result.stderr
    assert "test acc" in result.stdout and "efficientnet_lite0" in result.stdout and "macro F1" in result.stdout
    assert (tmp_path / "cli" / "summary.csv").is_file()


@pytest.mark.parametrize("args, message", [
    (["run", "--data", "/no/such/folder"], "dataset path /no/such/folder does not exist"),
    (["run", "--models", "mobilenet_v9"], "unknown model 'mobilenet_v9'. Did you mean"),
    (["run", "--models", "resnet50"], "no ImageNet weights for resnet50"),
    (["run", "--models", "efficientnet_lite0,resnet50"], "no ImageNet weights for resnet50"),  # before lite0 trains
    (["run", "--resume", "runs/x", "--weights-dir", "w", "--no-report"], "(given: out, report, weights_dir)"),
    (["run", "--models", "efficientnet_lite0", "--weights", "mobilenet_v2=x.tflite"],
     "--weights mobilenet_v2=x.tflite: mobilenet_v2 is not one of the run's models (efficientnet_lite0)"),
    (["run", "--strategy", "magic"], "unknown strategy 'magic'"),
    (["run", "--split", "0.5,0.2"], "--split must be three fractions"),
    (["run", "--tune-storage", "study.journal"], "--tune-storage shares a search: a journal file or a database URL"),
    (["run", "--tune", "2", "--tune-storage", ""], "with --tune N (or --tune-minutes M); it is empty"),
])
def test_cli_errors_are_one_line_without_traceback(tmp_path, capsys, args, message):
    from showdown.cli import main

    assert main([*args, "--out", str(tmp_path / "err")]) == 2
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    assert stderr.strip().startswith("error: ") and message in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "err").exists()  # refused before any work


def test_cli_single_class_folder_error(tmp_path, demo_copy):
    import shutil

    one = tmp_path / "one"
    shutil.copytree(demo_copy / "daisy", one / "daisy")
    result = _cli("run", "--data", str(one), "--out", str(tmp_path / "err"))
    assert result.returncode == 2 and "at least 2" in result.stderr and "Traceback" not in result.stderr


def test_debug_after_the_command_shows_the_traceback_too(tmp_path, capsys):
    from showdown.cli import main

    # the traceback, then the one line and the exit status it has without --debug
    assert main(["run", "--data", str(tmp_path / "nowhere"), "--debug"]) == 2
    shown = capsys.readouterr().err
    assert shown.startswith("Traceback") and shown.strip().splitlines()[-1].startswith("error: ") and \
        "does not exist" in shown.strip().splitlines()[-1]
    assert main(["run", "--data", str(tmp_path / "nowhere")]) == 2 and "Traceback" not in capsys.readouterr().err



def test_a_value_argparse_takes_for_a_flag_gets_a_hint(capsys):
    from showdown.cli import main

    with pytest.raises(SystemExit) as ended:
        main(["run", "--shard", "-1/2"])
    said = capsys.readouterr().err
    assert ended.value.code == 2 and said.count("\n") == 1
    assert "argument --shard: expected one argument (a value that starts with '-' goes after '='" in said


def test_a_flag_the_command_does_not_take_points_to_the_commands_help(capsys):
    from showdown.cli import main

    for argv, command, unknown in ((["run", "--epochs-x", "3"], "run", "--epochs-x 3"),
                                   (["models", "--all"], "models", "--all"), (["--foo"], "run", "--foo")):
        with pytest.raises(SystemExit) as ended:
            main(argv)
        said = capsys.readouterr().err
        assert ended.value.code == 2 and said.count("\n") == 1
        assert f"unrecognized arguments: {unknown} (see `showdown {command} --help`)" in said


def test_models_lists_each_source_in_one_column(capsys):
    """The third column started wherever a long timm name (vit_base_patch16_clip_224) pushed it."""
    from showdown.cli import main

    assert main(["models"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if " hub " in line or " package " in line]
    assert len(rows) > 10 and len({line.index(line.split()[2]) for line in rows}) == 1


def test_under_torchrun_a_bad_flag_is_said_once(monkeypatch, capsys):
    """Every rank of a torchrun launch reads the same flags: rank 0 alone says what is wrong with them (argparse's
    errors and the config's), the others end with the same status."""
    from showdown import cli

    def status(argv):
        try:
            return cli.main(argv)
        except SystemExit as ended:
            return ended.code

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(cli, "RANK_ZERO_GRACE_S", 0)  # the others' wait for rank 0 to say it
    for argv, said in ((["run", "--models", "resnet50,resnet50", "--quiet"], "names resnet50 more than once"),
                       (["run", "--epochs", "abc"], "argument --epochs: must be a whole number"),
                       (["run", "--tune", "2"], "--tune runs in one process; start it without torchrun")):
        for rank in ("1", "0"):
            monkeypatch.setenv("RANK", rank)
            assert status(argv) == 2
            err = capsys.readouterr().err
            assert err.count(said) == (rank == "0") and err.count("\n") == (rank == "0"), err


def test_under_torchrun_an_interrupt_is_said_once_with_the_torchrun_resume(monkeypatch, capsys, tmp_path):
    """Ctrl-C reaches every rank: rank 0 alone says it, and the way on is under torchrun again."""
    from showdown import cli
    from showdown.errors import Interrupted, on_command_line, resume_call

    monkeypatch.setenv("WORLD_SIZE", "2")
    with on_command_line():
        said = f"finished entries are kept in {tmp_path}; {resume_call(tmp_path)} goes on"
    assert f"`torchrun --nproc_per_node=<as before> -m showdown run --resume {tmp_path}`" in said

    def interrupted(args):
        raise Interrupted(said)

    monkeypatch.setattr(cli, "cmd_run", interrupted)
    for rank, printed in (("1", ""), ("0", f"interrupted: {said}\n")):
        monkeypatch.setenv("RANK", rank)
        assert cli.main(["run"]) == 130 and capsys.readouterr().err == printed
    monkeypatch.setenv("WORLD_SIZE", "1")  # a RANK left in the environment, no torchrun: said all the same
    monkeypatch.setenv("RANK", "3")
    assert cli.main(["run"]) == 130 and capsys.readouterr().err == f"interrupted: {said}\n"
