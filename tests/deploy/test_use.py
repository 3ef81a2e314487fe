"""Use the winner: predict from a run folder, export to ONNX and TorchScript, and get the same numbers."""
import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from showdown import Results, RunConfig, run
from showdown.data.images import eval_transform, load_rgb
from showdown.data.preprocessing import Preprocessing
from showdown.deploy.export import export_model
from showdown.deploy.predict import (
    EAGER,
    PREDICT_BATCH,
    evaluated_precision,
    open_model,
    predict_files,
    predict_precision,
    predict_runtime,
    predict_workers,
)
from showdown.deploy.trained import METADATA_KEY
from showdown.device import CPU
from showdown.errors import ConfigError
from showdown.frozen import openvino_engine
from showdown.models.saving import load_model
from tests.conftest import PHOTOS, needs_photos, run_cli


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_dir):
    data = tmp_path_factory.mktemp("data") / "flowers"
    for cls in ("daisy", "roses", "sunflowers"):
        shutil.copytree(demo_dir / cls, data / cls)
    out = tmp_path_factory.mktemp("run") / "use"
    run(RunConfig(data=str(data), models=["efficientnet_lite0"], strategies=["head", "scratch-cnn"], image_size=128,
                  epochs=4, workers=0, out=str(out), report=False, record=False), echo=lambda *_: None)
    return out, data


def _real_images(data, n=8):
    paths = sorted(PHOTOS.glob("*.jpg"))[:4] if PHOTOS.is_dir() else []
    return paths + sorted((data / "roses").iterdir())[: n - len(paths)]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_model_matches_pytorch_and_carries_its_metadata(trained, fmt):
    run_dir, data = trained
    path = export_model(run_dir, fmt, model_name="efficientnet_lite0-head")
    model, info = load_model(run_dir / "efficientnet_lite0-head")
    transform = eval_transform(Preprocessing.from_dict(info.preprocessing))
    batch = torch.stack([transform(load_rgb(p)) for p in _real_images(data)])
    with torch.inference_mode():
        expected = model(batch).softmax(1).numpy()
    exported = open_model(path)
    assert exported.classes == ["daisy", "roses", "sunflowers"]
    assert exported.preprocessing.input_size == (3, 128, 128)
    np.testing.assert_allclose(exported(batch), expected, atol=1e-4)
    np.testing.assert_allclose(exported(batch[:1]), expected[:1], atol=1e-4)  # dynamic batch
    if fmt == "onnx":
        import onnx

        assert onnx.load(str(path)).opset_import[0].version >= 17


def test_predict_cli_writes_csv_and_json_and_scores_labelled_folders(trained, tmp_path):
    run_dir, data = trained
    result = run_cli("predict", str(run_dir), str(data), "--format", "csv", "--output", str(tmp_path / "p.csv"))
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0].startswith("path,class1,prob1,class2,prob2,class3,prob3,true")
    assert len(lines) == 1 + 150
    for row in csv.DictReader(lines):  # top 3 of 3 classes: every class once, a distribution, best first
        probs = [float(row[f"prob{i}"]) for i in (1, 2, 3)]
        assert {row[f"class{i}"] for i in (1, 2, 3)} == {"daisy", "roses", "sunflowers"}
        assert sum(probs) == pytest.approx(1, abs=1e-5) and probs == sorted(probs, reverse=True)
    assert "150 image(s) classified by efficientnet_lite0 / head" in result.stderr  # the best entry by default
    accuracy = float(result.stderr.split("accuracy on 150 labelled by folder: ")[1].split()[0])
    assert accuracy > 0.8  # mostly its own training images
    result = run_cli("predict", str(run_dir), str(data / "daisy" / "*.jpg"), "--format", "json", "--top-k", "2",
                     "--model", "scratch_cnn-scratch-cnn", "--precision", "fp32")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == 50 and len(rows[0]["predictions"]) == 2
    assert "scratch_cnn / scratch-cnn (fp32, " in result.stderr
    # The top 2 are the model's own softmax, recomputed here from the image files.
    model, info = load_model(run_dir / "scratch_cnn-scratch-cnn")
    transform = eval_transform(Preprocessing.from_dict(info.preprocessing))
    with torch.inference_mode():
        probs = model(torch.stack([transform(load_rgb(row["path"])) for row in rows[:8]])).softmax(1).numpy()
    for row, p in zip(rows, probs):
        order = np.argsort(-p)[:2]
        got = row["predictions"]
        assert [g["class"] for g in got] == [info.classes[i] for i in order] or abs(p[order[0]] - p[order[1]]) < 1e-4
        np.testing.assert_allclose([g["probability"] for g in got], p[order], atol=1e-5)


@needs_photos
def test_predict_skips_unreadable_files_and_warns_about_other_classes(trained, tmp_path):
    run_dir, _ = trained
    export_model(run_dir, "onnx", tmp_path / "m.onnx")
    other = tmp_path / "pets"
    (other / "cat").mkdir(parents=True)
    (other / "dog").mkdir()
    for i, photo in enumerate(sorted(PHOTOS.glob("*.jpg"))[:4]):
        shutil.copy(photo, other / ("cat" if i % 2 else "dog") / photo.name)
    (other / "cat" / "broken.jpg").write_bytes(b"not an image")
    result = run_cli("predict", str(tmp_path / "m.onnx"), str(other))
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert "warning: input folder(s) cat, dog are not classes of this model" in result.stderr
    assert "4 image(s) classified" in result.stderr and "1 unreadable file(s) skipped" in result.stderr
    assert "broken.jpg  (unreadable image: not an image this installation decodes)" in result.stdout


@pytest.mark.parametrize("native_bf16", [True, False])
def test_a_run_folder_predicts_in_fp32_where_its_run_did_else_as_run_picks(trained, tmp_path, monkeypatch,
                                                                           native_bf16):
    """auto on the CPU, with and without native bf16: a bf16 run predicts in what `run` picks there, an fp32 (or
    int8, or unrecorded) run in fp32; a fold's entry finds its run's record; bf16 really computes in bf16 (close to
    fp32, not equal); exported files run as exported."""
    monkeypatch.setattr("showdown.precision.bf16_supported", lambda: native_bf16)
    run_dir, data = trained
    for made_in, expected in (("bf16", "bf16" if native_bf16 else "fp32"), ("fp32", "fp32"), ("int8", "fp32"),
                              (None, "fp32")):
        copy = tmp_path / f"run-{made_in}"
        shutil.copytree(run_dir, copy, dirs_exist_ok=True)
        (copy / "environment.json").unlink()
        if made_in:
            (copy / "environment.json").write_text(json.dumps({"precision": made_in}))
        assert open_model(copy, device="cpu").precision == expected, made_in
    fold = tmp_path / "run-bf16" / "efficientnet_lite0-head" / "fold1"
    shutil.copytree(tmp_path / "run-bf16" / "efficientnet_lite0-head", fold)
    assert evaluated_precision(fold) == "bf16"
    with pytest.raises(ConfigError, match="int8 is for a run's frozen layers"):
        predict_precision("int8", CPU)
    fp32, bf16 = (open_model(run_dir, device="cpu", precision=precision) for precision in ("fp32", "bf16"))
    batch = torch.stack([fp32.transform(load_rgb(p)) for p in _real_images(data)])  # 8-bit pixels (data/pixels.py)
    assert batch.dtype == torch.uint8
    fp32, bf16 = fp32(batch), bf16(batch)
    assert np.abs(fp32 - bf16).max() > 1e-4
    np.testing.assert_allclose(bf16, fp32, atol=0.05)
    assert open_model(export_model(run_dir, "torchscript", tmp_path / "m.pt")).precision == "fp32"
    assert open_model(export_model(run_dir, "onnx", tmp_path / "m.onnx"), precision="fp32").precision == "fp32"


def test_results_predict_takes_the_precision_as_the_command_does(trained):
    """The notebook API: results.predict(...) gives the command's rows, in the precision asked for."""
    run_dir, data = trained
    results = Results(run_dir, json.loads((run_dir / "summary.json").read_text())["rows"])
    roses = sorted((data / "roses").iterdir())[:4]
    rows = {precision: results.predict(*roses, top_k=1, precision=precision) for precision in ("fp32", "bf16")}
    assert [r["path"] for r in rows["fp32"]] == [str(path) for path in roses]
    fp32, bf16 = ([r["top"][0][1] for r in rows[precision]] for precision in ("fp32", "bf16"))
    assert fp32 != bf16 and np.allclose(fp32, bf16, atol=0.05)


def test_results_export_writes_what_the_command_writes(trained, tmp_path):
    """The notebook API: results.export(...) writes the winner's file, which predicts as the run folder does;
    its errors name keywords, not flags."""
    run_dir, data = trained
    results = Results(run_dir, [])
    path = results.export("onnx", tmp_path / "winner.onnx")
    roses = sorted((data / "roses").iterdir())[:4]
    ours = [row["top"][0][0] for row in results.predict(roses, precision="fp32", runtime="torch")]
    exported = open_model(path)
    assert path == tmp_path / "winner.onnx" and exported.name == "efficientnet_lite0 / head"
    assert [row["top"][0][0] for row in predict_files(exported, roses)] == ours
    with pytest.raises(ConfigError, match=r"quantize='int8': only fmt='tflite', quantize='int8' is supported"):
        results.export("onnx", quantize="int8")
    with pytest.raises(ConfigError, match=r"output '.*winner.txt': 'onnx' writes a .onnx file"):
        results.export("onnx", tmp_path / "winner.txt")
    with pytest.raises(ConfigError, match=r"^output .* is a folder; name a file in it"):
        results.export("onnx", tmp_path)


def test_a_precision_an_exported_file_or_the_cpu_cannot_run_is_one_line(trained, tmp_path):
    run_dir, data = trained
    export_model(run_dir, "onnx", tmp_path / "m.onnx")
    onnx = str(tmp_path / "m.onnx")
    for args, message in (([onnx, "--precision", "bf16"], "m.onnx runs in fp32, as it was exported"),
                          ([onnx, "--runtime", "openvino"], "--runtime openvino is for run folders"),
                          ([str(run_dir), "--runtime", "onnxruntime", "--precision", "bf16"],
                           "--runtime onnxruntime runs fp32 only"),
                          ([str(run_dir), "--workers", "two"], "must be a whole number from 0, or auto"),
                          ([str(run_dir), "--precision", "fp16", "--device", "cpu"], "fp16 needs a GPU")):
        result = run_cli("predict", *args, str(data / "roses"))
        assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("runtime", [EAGER, "torch", "onnxruntime", "openvino"])
def test_a_run_folder_predicts_in_every_engine_as_the_eager_model_on_floats(trained, tmp_path, caplog, runtime):
    """More images than a batch, batches run ahead where the engine can, 8-bit pixels normalised in the graph: the
    eager model's probabilities on the eval transform's floats (fp32, 1e-4), in the files' order, unreadable files
    in their places (first, amid, last); the engine asked for is the one that ran."""
    if runtime == "openvino":
        pytest.importorskip("openvino", reason="openvino is not installed")
    run_dir, data = trained
    broken = [tmp_path / f"broken{i}.jpg" for i in range(3)]
    for path in broken:
        path.write_bytes(b"not an image")
    roses = sorted((data / "roses").iterdir())[:11]
    files = [broken[0], *roses[:6], broken[1], *roses[6:], broken[2]]
    predictor = open_model(run_dir, device="cpu", precision="fp32", runtime=runtime)
    rows = list(predict_files(predictor, files, top_k=2, batch_size=4, workers=2))
    assert "running it in" not in caplog.text  # no fallback
    if runtime == "openvino":
        assert isinstance(predictor.forward.forward, openvino_engine.Streams)
    model, info = load_model(next(run_dir.glob("efficientnet_lite0-head")))
    floats = torch.stack([eval_transform(Preprocessing.from_dict(info.preprocessing))(load_rgb(p)) for p in roses])
    with torch.inference_mode():
        expected = model.eval()(floats).softmax(1).numpy()
    assert [row["path"] for row in rows] == [str(path) for path in files]
    assert [row.get("error") for row in rows] == [
        "unreadable image: not an image this installation decodes" if path in broken else None for path in files]
    for row, p in zip([row for row in rows if "top" in row], expected):
        order = np.argsort(-p)[:2]
        assert [name for name, _ in row["top"]] == [info.classes[i] for i in order]
        np.testing.assert_allclose([probability for _, probability in row["top"]], p[order], atol=1e-4)


def test_predicts_summary_names_the_engine_that_ran_where_the_one_asked_for_failed(trained, monkeypatch):
    """OpenVINO failing to compile the model (fault injected): ONNX Runtime runs it, and the summary says so."""
    from showdown.frozen import engines

    run_dir, data = trained
    opened = engines._open

    def openvino_fails(engine, *args):
        if engine == "openvino":
            raise RuntimeError("compile failed")
        return opened(engine, *args)

    monkeypatch.setattr(engines, "_open", openvino_fails)
    predictor = open_model(run_dir, device="cpu", precision="fp32", runtime="openvino")
    assert predictor.engine == "OpenVINO"  # what was asked for, until it is built
    assert len(list(predict_files(predictor, sorted((data / "roses").iterdir())[:5], batch_size=4))) == 5
    assert predictor.engine == "ONNX Runtime"


def test_a_tflite_file_without_litert_is_one_line(tmp_path, monkeypatch):
    """LiteRT is an extra: without it, predicting a .tflite file was an ImportError's traceback."""
    (tmp_path / "model.tflite").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # as where the extra is not installed
    with pytest.raises(ConfigError, match=r"model.tflite: running a .tflite file needs LiteRT: pip install "):
        open_model(tmp_path / "model.tflite")


def test_predict_runs_one_batch_eagerly_without_workers_and_more_in_the_engine_with_them():
    """auto: an export, a compile, a trace and worker processes cost more than they save for one batch (32 images)."""
    assert predict_runtime("auto", PREDICT_BATCH) == EAGER and predict_runtime("openvino", 1) == "openvino"
    assert predict_runtime("auto", PREDICT_BATCH + 1) == "auto" and predict_runtime("auto", None) == "auto"
    assert predict_workers("auto", PREDICT_BATCH, PREDICT_BATCH) == 0 and predict_workers(3, 1, PREDICT_BATCH) == 3
    assert predict_workers("auto", PREDICT_BATCH + 1, PREDICT_BATCH) >= 1


def test_predict_into_a_closed_pipe_ends_quietly(trained):
    """`showdown predict RUN photos/ | head -1`: the reader gone, the command stops with no traceback."""
    run_dir, data = trained
    reader, writer = os.pipe()
    os.close(reader)  # gone before the first row: every write fails (EPIPE)
    try:
        done = subprocess.run([sys.executable, "-m", "showdown", "predict", str(run_dir), str(data / "roses")],
                              stdout=writer, stderr=subprocess.PIPE, text=True, timeout=300,
                              env={**os.environ, "SHOWDOWN_DAEMON": "off"})
    finally:
        os.close(writer)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize("damage", ["weights cut short", "weights of random bytes", "weights of another model",
                                    "model.json not JSON", "model.json a list", "summary.json not JSON",
                                    "summary.json without rows", "summary.json with no rows"])
def test_a_damaged_run_folder_is_one_line_in_predict_and_export(trained, tmp_path, damage):
    """An interrupted copy, a disk error, a hand edit: predict and export say which file, in one line, exit 2."""
    run_dir, data = trained
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    entry = copy / "efficientnet_lite0-head"
    weights, info, summary = entry / "model.safetensors", entry / "model.json", copy / "summary.json"
    if damage == "weights cut short":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "weights of random bytes":
        weights.write_bytes(np.random.default_rng(0).bytes(4096))
    elif damage == "weights of another model":
        shutil.copy(copy / "scratch_cnn-scratch-cnn" / "model.safetensors", weights)
    elif damage == "model.json not JSON":
        info.write_text("{not json")
    elif damage == "model.json a list":
        info.write_text("[1, 2]")
    else:
        summary.write_text({"summary.json not JSON": "{", "summary.json without rows": "{}",
                            "summary.json with no rows": '{"rows": []}'}[damage])
    said = "lists no trained model" if damage == "summary.json with no rows" else "is damaged"
    for command in (["predict", copy, data / "roses"], ["export", copy, "--output", tmp_path / "m.onnx"]):
        result = run_cli(*command)
        assert result.returncode == 2 and "Traceback" not in result.stderr, (command, result.stderr)
        assert said in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_weights_overwritten_mid_file_are_one_line_not_a_table_of_nan(trained, tmp_path):
    """Bytes overwritten inside model.safetensors load (its header is intact) and give NaN, or through OpenVINO
    plausible-looking scores: said, exit 2, instead of a table of them and exit 0."""
    run_dir, data = trained
    copy = shutil.copytree(run_dir, tmp_path / "run")
    weights = next(copy.glob("*-head/model.safetensors"))
    raw = bytearray(weights.read_bytes())
    raw[len(raw) // 2:len(raw) // 2 + 200_000] = b"\xff" * 200_000  # 0xffffffff is a float32 NaN
    weights.write_bytes(bytes(raw))
    result = run_cli("predict", copy, data / "roses", "--model", weights.parent.name)
    assert result.returncode == 2 and "holds NaN or infinite weights: it is damaged" in result.stderr, result.stderr


def test_predict_with_stdout_closed_by_the_shell_still_works(trained):
    """`showdown predict RUN photos/ >&-`: Python starts with no sys.stdout; the command runs, its rows go nowhere."""
    run_dir, data = trained
    done = subprocess.run([sys.executable, "-m", "showdown", "predict", str(run_dir), str(data / "roses")],
                          stderr=subprocess.PIPE, text=True, timeout=300, preexec_fn=lambda: os.close(1),
                          env={**os.environ, "SHOWDOWN_DAEMON": "off"})
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "50 image(s) classified" in done.stderr


def test_a_file_name_that_is_not_utf8_is_written_escaped(trained, tmp_path):
    """A photo named in Latin-1 on a UTF-8 system: its row in the CSV, the name escaped as on the console."""
    run_dir, data = trained
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(sorted((data / "roses").iterdir())[0], os.fsdecode(os.fsencode(folder) + b"/caf\xe9.jpg"))
    result = run_cli("predict", run_dir, folder, "--format", "csv", "--output", tmp_path / "out.csv")
    assert result.returncode == 0, result.stderr
    assert "caf\\udce9.jpg" in (tmp_path / "out.csv").read_text(encoding="utf-8")  # Python's escape, as in JSON


def test_predict_takes_each_image_once_and_never_writes_over_one(trained, tmp_path):
    """A link looping back to its folder reaches every photo again and again: each is classified once. The CSV has
    as many class columns as the model has classes. --output naming one of the photos is refused, the photo kept;
    a folder of nothing readable is an error, not a success."""
    run_dir, data = trained
    folder = tmp_path / "photos"
    shutil.copytree(data / "roses", folder / "roses")
    (folder / "roses" / "up").symlink_to(folder)
    result = run_cli("predict", run_dir, f"{folder}/**/*.jpg", "--top-k", "5", "--format", "csv",
                     "--output", tmp_path / "out.csv")
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "out.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 50 and len({row["path"] for row in rows}) == 50
    assert "class3" in rows[0] and "class4" not in rows[0]  # 3 classes
    photo = next((folder / "roses").glob("*.jpg"))
    before = photo.read_bytes()
    refused = run_cli("predict", run_dir, photo, "--output", photo)
    assert refused.returncode == 2 and "is one of the images to classify" in refused.stderr
    linked = run_cli("predict", run_dir, folder / "roses", "--output", folder / "roses" / "up" / "roses" / photo.name)
    assert linked.returncode == 2 and "is one of the images to classify" in linked.stderr  # spelt through a link
    assert photo.read_bytes() == before
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.jpg").write_bytes(b"not an image")
    nothing = run_cli("predict", run_dir, tmp_path / "junk")
    assert nothing.returncode == 2 and "none of the 1 image(s) could be read" in nothing.stderr


def test_inputs_and_flags_that_make_no_sense_are_one_line(trained, tmp_path):
    run_dir, data = trained
    onnx = export_model(run_dir, "onnx", tmp_path / "m.onnx")
    for args, said in ((["predict", run_dir, "/dev/null"], "/dev/null is neither an image file nor a folder"),
                       (["explain", onnx, data / "roses", "--model", "foo"], "--model picks an entry of a run folder"),
                       (["predict", onnx, data / "roses", "--model", "foo"], "m.onnx is one model")):  # was ignored
        result = run_cli(*args)
        assert result.returncode == 2 and said in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_an_output_path_that_cannot_be_written_is_one_line(trained, tmp_path):
    """A folder, a path under a file, an empty name: one line saying so, exit 2, before the model opens; a folder
    not there yet is made."""
    run_dir, data = trained
    (tmp_path / "afile").write_text("")
    for target, said in ((tmp_path, "is a folder; name a file in it"),
                         (tmp_path / "afile" / "out.csv", "afile is a file, not a folder"),
                         ("", "--output is empty")):
        result = run_cli("predict", run_dir, data / "roses", "--output", target)
        assert result.returncode == 2 and said in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    for target, said in ((tmp_path, "is a folder; name a file in it, e.g."), (tmp_path / "afile" / "m.onnx",
                                                                            "afile is a file, not a folder")):
        result = run_cli("export", run_dir, "--output", target)  # as predict says it
        assert result.returncode == 2 and said in result.stderr and "Traceback" not in result.stderr, result.stderr
    made = tmp_path / "new" / "folder" / "p.csv"
    assert run_cli("predict", run_dir, data / "roses", "--output", made).returncode == 0 and made.is_file()
    help_text = run_cli("predict", "--help").stdout
    assert "--top-k K" in help_text and "(default 3)" in help_text


def test_an_exported_file_with_damaged_metadata_is_one_line(trained, tmp_path):
    import onnx

    run_dir, data = trained
    path = export_model(run_dir, "onnx", tmp_path / "m.onnx")
    (kept,) = [prop.value for prop in onnx.load(str(path)).metadata_props if prop.key == METADATA_KEY]
    edited = [json.dumps({**json.loads(kept), **change}) for change in
              ({"classes": ["daisy", "roses"]}, {"classes": "daisy"}, {"preprocessing": "squash"})]
    for text, said in (("{", "metadata is damaged"), ('{"name": "x"}', "metadata lacks classes, preprocessing"),
                       (edited[0], "gives 3 class scores, and its tl-showdown metadata names 2 classes"),
                       (edited[1], "classes are not a list of names"), (edited[2], "preprocessing is damaged")):
        model = onnx.load(str(path))
        (entry,) = [prop for prop in model.metadata_props if prop.key == METADATA_KEY]
        entry.value = text
        onnx.save(model, str(tmp_path / "bad.onnx"))
        # one image: no decoding workers, whose fork another test's JAX in this process would warn about
        result = run_cli("predict", tmp_path / "bad.onnx", next((data / "roses").iterdir()))
        assert result.returncode == 2 and said in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (["predict", "/no/such/run", "x.jpg"], "/no/such/run does not exist"),
    (["export", "/no/such/run"], "/no/such/run does not exist"),
    (["export", "pyproject.toml"], "pyproject.toml is not a run folder or an entry folder"),
    (["export", ".", "--output", "model.pt"], "--format onnx writes a .onnx file"),
])
def test_use_errors_are_one_line(args, message):
    result = run_cli(*args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_file_pretending_to_be_a_model_is_refused(tmp_path):
    """One short line per kind, no library's unpacking arithmetic or advice about checkpoints."""
    for name, said in (("fake.onnx", "is not a valid ONNX model"),
                       ("fake.tflite", "is not a TFLite model (no TFL3 identifier"),
                       ("fake.pt", "is not a TorchScript model: PytorchStreamReader failed reading zip archive")):
        (tmp_path / name).write_bytes(b"\x00\x01 not a model, written over by some other program" * 40)
        result = run_cli("predict", str(tmp_path / name), str(tmp_path))
        assert result.returncode == 2 and said in result.stderr, result.stderr
        assert len(result.stderr) < 240 and "checkpoint" not in result.stderr, result.stderr


def test_predict_on_an_explicit_device_gives_the_same_probabilities(trained):
    """--device cpu everywhere; on a machine with CUDA the GPU's probabilities match the CPU's."""
    run_dir, data = trained
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results = {}
    for device in devices:
        result = run_cli("predict", str(run_dir), str(data / "roses"), "--format", "json", "--device", device)
        assert result.returncode == 0, result.stderr
        results[device] = json.loads(result.stdout)
    assert len(results["cpu"]) == 50
    for device, rows in results.items():
        for row, reference in zip(rows, results["cpu"]):
            assert row["predictions"][0]["class"] == reference["predictions"][0]["class"], device
            assert row["predictions"][0]["probability"] == pytest.approx(reference["predictions"][0]["probability"],
                                                                          abs=1e-3)


def test_int8_calibration_passes_over_unreadable_images_then_takes_validation_ones(trained, tmp_path, caplog):
    """A training image the run skipped as unreadable (still in splits.csv) or deleted since is passed over, not a
    traceback; a run with fewer training images than the calibration wants adds its validation images (never its
    test images), and says how few there were."""
    from showdown.deploy.export_tflite import calibration_images

    run_dir, data = trained
    _, info = load_model(run_dir / "efficientnet_lite0-head")
    roses = sorted((data / "roses").iterdir())
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    rows = [("train", broken), ("train", tmp_path / "gone.jpg"), *(("train", p) for p in roses[:2]),
            *(("val", p) for p in roses[2:4]), *(("test", p) for p in roses[4:9])]
    (tmp_path / "splits.csv").write_text("split,path,label\n" + "".join(f"{s},{p},roses\n" for s, p in rows))
    images = calibration_images(tmp_path / "entry", info, count=6)
    assert len(images) == 4  # two training images, then two validation ones; no test image
    assert "int8 calibrated on 4 image(s)" in caplog.text
    assert len(calibration_images(tmp_path / "entry", info, count=3)) == 3


def test_an_input_folder_named_after_a_class_labels_its_images_and_output_csv_is_csv(trained, tmp_path):
    run_dir, data = trained
    result = run_cli("predict", run_dir, data / "roses", data / "daisy", "--output", tmp_path / "p.csv")
    assert result.returncode == 0, result.stderr
    assert "accuracy on 100 labelled by folder" in result.stderr  # each folder is its class, as a user means it
    with open(tmp_path / "p.csv", newline="") as handle:  # the suffix says CSV where --format says nothing
        rows = list(csv.DictReader(handle))
    assert len(rows) == 100 and {row["true"] for row in rows} == {"roses", "daisy"}
    listed = run_cli("predict", run_dir, data / "roses", "--output", tmp_path / "p.json", "--top-k", "1")
    assert listed.returncode == 0 and len(json.loads((tmp_path / "p.json").read_text())) == 50


def test_a_hidden_image_named_by_hand_is_classified_and_one_in_a_folder_is_not(trained, tmp_path):
    run_dir, data = trained
    shutil.copy(next((data / "roses").iterdir()), tmp_path / ".rose.jpg")
    named = run_cli("predict", run_dir, tmp_path / ".rose.jpg")
    assert named.returncode == 0 and "1 image(s) classified" in named.stderr, named.stderr
    shutil.copy(next((data / "roses").iterdir()), tmp_path / "rose.jpg")
    found = run_cli("predict", run_dir, tmp_path)  # macOS's ._ files and the like are no one's photos
    assert found.returncode == 0 and "1 image(s) classified" in found.stderr, found.stderr


def test_predict_stopped_midway_stops_its_decoding_workers_though_its_traceback_is_kept(trained):
    import multiprocessing

    run_dir, data = trained
    predictor = open_model(run_dir, runtime=EAGER)
    forward, calls = predictor.forward, []

    def second_batch_interrupted(images):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return forward(images)

    predictor.forward = second_batch_interrupted
    with pytest.raises(KeyboardInterrupt) as kept:
        list(predict_files(predictor, sorted((data / "roses").iterdir()), batch_size=4, workers=2))
    assert kept.traceback and not multiprocessing.active_children()


def test_class_folders_match_the_models_classes_in_either_unicode_form(tmp_path):
    """A model trained on a Mac (folder names decomposed: "Rose" + U+0301) predicts on a copy from Linux (composed:
    "Rosé"): the folders still give the true labels, so accuracy is reported."""
    import unicodedata

    from showdown.deploy.inputs import folder_labels

    decomposed, composed = unicodedata.normalize("NFD", "Rosé"), unicodedata.normalize("NFC", "Rosé")
    assert decomposed != composed
    photo = tmp_path / "test" / composed / "a.jpg"
    photo.parent.mkdir(parents=True)
    photo.write_bytes(b"")
    assert folder_labels([photo], [str(tmp_path / "test")], [decomposed, "daisy"]) == ([decomposed], None)
    assert folder_labels([photo], [str(photo.parent)], [decomposed, "daisy"]) == ([decomposed], None)


def test_a_name_with_brackets_is_that_file_and_a_pattern_passes_over_what_is_no_image(tmp_path, demo_copy, caplog):
    """'photo[1].jpg' was read as a pattern matching photo1.jpg; `predict 'g*' --output g.json` met its own
    output the second time, and a pattern's notes.txt was said to be an unreadable image."""
    from showdown.deploy.inputs import expand_inputs

    photo = sorted((demo_copy / "daisy").iterdir())[0]
    named = tmp_path / "photo[1].jpg"
    shutil.copy(photo, named)
    assert expand_inputs([str(named)]) == [named]
    folder = tmp_path / "gl"
    folder.mkdir()
    shutil.copy(photo, folder / "a.jpg")
    (folder / "notes.txt").write_text("taken in May\n")
    (folder / "g.json").write_text("[]")
    with caplog.at_level("WARNING"):
        assert expand_inputs([str(folder / "*")]) == [folder / "a.jpg"]
    assert "2 file(s) the patterns matched have no image suffix and were passed over" in caplog.text
