"""Whatever a user's folder holds: every kind of bad file gets a clear message and loses nothing."""
import io
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from showdown.data import load_dataset
from showdown.data.images import load_rgb
from showdown.data.leakage import check_leakage
from showdown.errors import DataError
from tests.conftest import SHARED, run_cli


def _process(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "showdown.cli", *args], capture_output=True, text=True, timeout=600,
                          cwd=cwd)



def _one_line_error(result, *words):
    """Exit status 2 and exactly one stderr line, `error: ...`, holding every one of `words`; no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


# The run would have gone to runs/<timestamp>-demo-flowers under the working folder, or to --out.
@pytest.mark.parametrize("args, words", [
    (["--head-dropout", "1.5"], ["--head-dropout must be between 0 and 1 (got 1.5)"]),
    (["--weight-decay", "-1"], ["--weight-decay must be at least 0 (got -1)"]),
    (["--label-smoothing", "2"], ["--label-smoothing must be between 0 and 1 (got 2)"]),
    (["--image-size", "100000"], ["--image-size must be between 32 and 1024 (got 100000)"]),
    (["--momentum", "5"], ["--momentum must be between 0 and 1 (got 5)"]),
    (["--workers", "-3"], ["--workers must be a whole number from 0, or auto (got '-3')"]),
    pytest.param(["--device", "cuda"], ["--device cuda: no CUDA device found", "use --device cpu or auto"],
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
    (["--device", "tpu"], ["--device 'tpu' is not understood"]),
    (["--precision", "fp16", "--device", "cpu"], ["--precision fp16 needs a GPU"]),
    (["--patience", "-1"], ["--patience must be at least 1 (got -1)"]),
    (["--optimizer", "nadam"], ["--optimizer must be one of adamw, adam, sgd (got 'nadam')"]),
    (["--lr", "fast"], ["--lr", "must be a number (got 'fast')"]),
    (["--unfreeze", "top:3"], ["--unfreeze 'top:3' is not understood", "layers:N, blocks:K or all"]),
])
def test_an_out_of_range_option_is_one_line_and_loses_nothing(tmp_path, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    result = run_cli("run", "--out", "run", *args)
    _one_line_error(result, *words)
    assert list(tmp_path.iterdir()) == []  # no run folder, neither --out nor runs/


# predict and bench take their own flags: the same one-line checks, found by trying them as a new user would
# (each of these was a DataLoader or statistics traceback, a silent empty result, or a mislabelled bench row).
@pytest.mark.parametrize("args, words", [
    (["predict", "--top-k", "0", "model", "x.jpg"], ["--top-k", "must be at least 1 (got 0)"]),
    (["predict", "--batch-size", "0", "model", "x.jpg"], ["--batch-size", "must be at least 1 (got 0)"]),
    (["predict", "--workers", "-1", "model", "x.jpg"], ["--workers", "a whole number from 0, or auto (got '-1')"]),
    (["bench", "--device", "cpu", "--precision", "fp16"], ["--precision fp16 needs a GPU"]),
    pytest.param(["bench", "--device", "cuda"], ["--device cuda: no CUDA device found"],
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
    (["bench", "--repeats", "0"], ["--repeats", "must be at least 1 (got 0)"]),
    (["bench", "--precision", "fp8"], ["--precision", "must be one of fp32, bf16, fp16 (got 'fp8')"]),
    (["bench", "--models", "efficientnet_lite0", "--image-size", "100000"],
     ["--image-size must be between 32 and 1024 (got 100000)"]),
])
def test_predict_and_bench_flags_are_checked_in_one_line(tmp_path, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    _one_line_error(run_cli(*args), *words)
    assert list(tmp_path.iterdir()) == []  # no bench run folder


@pytest.mark.parametrize("text, words", [
    ("- lr\n- epochs\n", ["config file", "must be a mapping of option names to values", "got list"]),
    ("just some words\n", ["config file", "must be a mapping of option names to values", "got str"]),
    ("lr: [0.1\nepochs: 3\n", ["config file", "is not valid YAML at line"]),
    ("lr: fast\n", ["config key 'lr'", "must be a number (got 'fast')"]),
    ("epochs: 3\nlrr: 0.1\n", ["unknown config key(s) lrr", "did you mean lr?"]),
    ("strategy: head\nstrategies: [finetune]\n", ["config keys strategy and strategies", "set the same option"]),
    ("head_dropout: 1.5\n", ["--head-dropout must be between 0 and 1 (got 1.5)"]),
])
def test_a_config_file_that_is_not_a_mapping_of_good_values_is_one_line(tmp_path, monkeypatch, text, words):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text(text)
    result = run_cli("run", "--config", "config.yaml", "--out", "run")
    _one_line_error(result, *words)
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_out_naming_an_existing_file_is_one_line_and_leaves_the_file(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me\n")
    result = _process("run", "--out", "notes.txt", cwd=tmp_path)  # a real process: its stderr, its exit status
    _one_line_error(result, "--out notes.txt is an existing file", "name a folder")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    assert (tmp_path / "notes.txt").read_text() == "keep me\n"


def test_out_naming_a_finished_run_is_refused_and_the_run_kept(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("data: demo\n")
    (run / "summary.json").write_text("[]\n")
    result = run_cli("run", "--data", "demo", "--models", "efficientnet_lite0", "--out", str(run), "--no-record")
    _one_line_error(result, f"--out {run} holds a run already", f"showdown run --resume {run}")
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "summary.json"]
    assert (run / "config.yaml").read_text() == "data: demo\n"


def test_unfreezing_more_blocks_than_the_model_has_names_how_many_it_has(tmp_path):
    """Only the loaded model knows its depth, so this one fails after the head phase, still in one line."""
    result = run_cli("run", "--data", "demo", "--models", "efficientnet_lite0", "--max-per-class", "2", "--epochs", "1",
                  "--image-size", "64", "--no-report", "--no-record", "--precision", "fp32", "--workers", "0",
                  "--strategy", "finetune", "--unfreeze", "blocks:999", "--out", str(tmp_path / "run"),
                  "--quiet")  # without it the entry's progress line precedes the error on stderr
    _one_line_error(result, "--unfreeze blocks:999", "has only 8 layer groups", "blocks:1 to blocks:8")
    # The folder it began holds nothing trained: the corrected command may use it (it was refused as a run's)
    fixed = run_cli("run", "--data", "demo", "--models", "efficientnet_lite0", "--max-per-class", "2", "--epochs", "1",
                    "--image-size", "64", "--no-report", "--no-record", "--precision", "fp32", "--workers", "0",
                    "--strategy", "finetune", "--unfreeze", "blocks:2", "--out", str(tmp_path / "run"), "--quiet")
    assert fixed.returncode == 0 and (tmp_path / "run" / "efficientnet_lite0-finetune" / "metrics.json").is_file()


def test_a_missing_weights_file_fails_before_the_run_folder_is_written(tmp_path):
    result = run_cli("run", "--data", "demo", "--models", "efficientnet_lite0", "--weights",
                     str(tmp_path / "nofile.safetensors"), "--out", str(tmp_path / "run"), "--no-record")
    _one_line_error(result, f"weights file {tmp_path / 'nofile.safetensors'} does not exist")
    assert not (tmp_path / "run").exists()
    # a TFLite download that is something else (an HTML error page): found before any backbone trains
    (tmp_path / "mobilenet_v2.tflite").write_text("<html><body>404 Not Found</body></html>\n" * 50)
    result = run_cli("run", "--data", "demo", "--models", "efficientnet_lite0,mobilenet_v2", "--weights",
                     f"mobilenet_v2={tmp_path / 'mobilenet_v2.tflite'}", "--out", str(tmp_path / "run"), "--no-record")
    _one_line_error(result, "mobilenet_v2.tflite is not a TFLite model (no TFL3 identifier")
    assert not (tmp_path / "run").exists()
    weights = tmp_path / "weights"  # the same page found in --weights-dir under the file's own name
    weights.mkdir()
    (tmp_path / "mobilenet_v2.tflite").rename(weights / "mobilenet_v2_1.0_224_quant.tflite")
    result = run_cli("run", "--data", "demo", "--models", "efficientnet_lite0,mobilenet_v2", "--weights-dir", weights,
                     "--out", str(tmp_path / "run"), "--no-record")
    _one_line_error(result, "mobilenet_v2_1.0_224_quant.tflite is not a TFLite model (no TFL3 identifier")
    assert not (tmp_path / "run").exists()
    # a real file cut short (an interrupted download): read through before the work, one line, no traceback
    real = next((SHARED / "weights" / "mobilenet-tflite").glob("mobilenet_v2_1.0*.tflite"), None)
    if real is not None:
        (weights / real.name).write_bytes(real.read_bytes()[:100_000])
        result = run_cli("run", "--data", "demo", "--models", "efficientnet_lite0,mobilenet_v2", "--weights-dir",
                         weights, "--out", str(tmp_path / "run"), "--no-record")
        _one_line_error(result, "is a damaged TFLite file (cut short or overwritten); fetch it again")
        assert not (tmp_path / "run").exists()


def test_image_modes_are_converted_to_rgb_correctly(tmp_path):
    Image.new("L", (8, 8), 77).save(tmp_path / "gray.png")
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")  # pure red in CMYK
    Image.new("RGBA", (8, 8), (0, 0, 255, 0)).save(tmp_path / "clear.png")  # fully transparent blue
    Image.new("RGBA", (8, 8), (0, 0, 255, 255)).save(tmp_path / "blue.png")
    Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16)).save(tmp_path / "white16.png")
    Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16)).save(tmp_path / "mid16.png")
    Image.fromarray(np.full((8, 8), 200, dtype=np.uint16)).save(tmp_path / "dark16.png")  # was made 8-bit's 200
    Image.fromarray(np.full((8, 8), 100_000, dtype=np.int32)).save(tmp_path / "int32.tif")  # wrapped round to 133
    (tmp_path / "dark16.pgm").write_bytes(b"P5 8 8 65535\n" + np.full((8, 8), 200, ">u2").tobytes())  # mode I
    pixel = {name: load_rgb(tmp_path / name).getpixel((4, 4)) for name in
             ("gray.png", "cmyk.jpg", "clear.png", "blue.png", "white16.png", "mid16.png", "dark16.png", "int32.tif",
              "dark16.pgm")}
    assert pixel["gray.png"] == (77, 77, 77)
    assert pixel["cmyk.jpg"][0] > 200 and max(pixel["cmyk.jpg"][1:]) < 60
    assert pixel["clear.png"] == (255, 255, 255)  # transparency composited on white, not black
    assert pixel["blue.png"] == (0, 0, 255)
    assert pixel["white16.png"] == (255, 255, 255)  # 16-bit scaled, not clipped
    assert pixel["mid16.png"] == (128, 128, 128)
    assert pixel["dark16.png"] == pixel["dark16.pgm"] == (1, 1, 1) and pixel["int32.tif"] == (255, 255, 255)
    assert all(load_rgb(tmp_path / name).mode == "RGB" for name in pixel)


@pytest.mark.parametrize("suffix", [".jpg", ".heic", ".avif"])  # phones: JPEG, iPhone HEIC, Android AVIF
def test_exif_rotation_is_honoured(tmp_path, suffix):
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 20))  # red on the left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    # HEIF: pillow-heif writes the tag as the container's rotation (as iPhones do), which libheif applies on
    # reading, resetting the tag to 1, so the photo is turned once, as a JPEG is
    image.save(tmp_path / f"rotated{suffix}", exif=exif.tobytes(), quality=95)
    shown = load_rgb(tmp_path / f"rotated{suffix}")
    assert shown.size == (20, 40)
    assert shown.getpixel((10, 5))[0] > 200  # the stored left edge is now the top


def _bad_files(folder, good):
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not an image\n")
    data = good.read_bytes()
    (folder / "corrupt.jpg").write_bytes(data[:200] + bytes(4000) + b"\xff\xd9")  # header, then zeros
    png = io.BytesIO()
    Image.open(good).save(png, format="PNG")
    (folder / "truncated.png").write_bytes(png.getvalue()[: len(png.getvalue()) // 3])


def test_a_folder_full_of_trouble_runs_and_reports_it(tmp_path, demo_copy):
    good = next((demo_copy / "daisy").iterdir())
    _bad_files(demo_copy / "daisy", good)
    shutil.copy(good, os.path.join(os.fsencode(demo_copy / "roses"), b"caf\xe9-non-utf8.jpg"))  # latin-1 name
    (demo_copy / "roses" / ".DS_Store").write_bytes(b"\x00junk")
    (demo_copy / "__MACOSX" / "daisy").mkdir(parents=True)
    (demo_copy / "__MACOSX" / "daisy" / "._x.jpg").write_bytes(b"resource fork")
    (demo_copy / "empty_class").mkdir()
    (demo_copy / "lonely").mkdir()
    shutil.copy(good, demo_copy / "lonely" / "only.jpg")  # a class with a single image
    out = tmp_path / "run"
    result = run_cli("run", "--data", str(demo_copy), "--models", "efficientnet_lite0", "--image-size", "96",
                  "--epochs", "2", "--out", str(out), "--workers", "0")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "class folder 'empty_class' has no images and was ignored" in result.stdout
    assert "has no images of class lonely (too few images to split)" in result.stdout
    # A class of one image in the label-issue search: one clause of its line, not scikit-learn's and cleanlab's
    # warnings with their source lines
    assert "; classes of a single image, not judged: lonely" in result.stdout
    assert "Warning" not in result.stderr, result.stderr
    assert "skipped 4 unreadable image file(s)" in result.stdout
    listed = dict(line.split("\t") for line in (out / "skipped.txt").read_text().splitlines())  # path, why
    reasons = {os.path.basename(path): why for path, why in listed.items()}
    assert sorted(reasons) == ["corrupt.jpg", "text.jpg", "truncated.png", "zero.jpg"]
    assert reasons["zero.jpg"] == "empty file" and reasons["text.jpg"] == "not an image this installation decodes"
    assert reasons["truncated.png"] == "OSError: image file is truncated"
    assert "4 unreadable image file(s) were left out of every entry" in (out / "report.md").read_text()
    classes = load_dataset(str(demo_copy)).classes
    assert classes == ["daisy", "lonely", "roses", "sunflowers"]  # no __MACOSX, no empty class
    assert "caf\\udce9-non-utf8.jpg" in (out / "splits.csv").read_text()  # escaped, not lost


def test_one_class_or_one_without_training_images_is_an_error_and_one_missing_in_test_a_warning(tmp_path, demo_copy):
    one = tmp_path / "one"
    shutil.copytree(demo_copy / "daisy", one / "daisy")
    result = run_cli("run", "--data", str(one), "--out", str(tmp_path / "x"))
    assert result.returncode == 2 and "at least 2" in result.stderr and "Traceback" not in result.stderr
    split = tmp_path / "split"
    for cls in ("daisy", "roses"):
        shutil.copytree(demo_copy / cls, split / "train" / cls)
    shutil.copytree(demo_copy / "daisy", split / "test" / "daisy")
    spec = load_dataset(str(split))
    assert "split 'test' has no images of class roses" in spec.warnings
    shutil.copytree(demo_copy / "sunflowers", split / "test" / "sunflowers")  # in test only: nothing can learn it
    with pytest.raises(DataError, match="class sunflowers: no training images in .*train, only in another split"):
        load_dataset(str(split))
    shutil.rmtree(split / "test" / "sunflowers")
    (split / "test" / "daisy").rename(split / "test" / "Daisy")  # one letter's case apart from train's
    with pytest.raises(DataError, match="case-sensitive: 'Daisy' is 'daisy' in train/"):
        load_dataset(str(split))


def test_a_folder_around_the_class_folders_is_named_and_images_beside_them_are_said(tmp_path, demo_copy):
    """A download unpacked as photos/flowers/<class>/: the error says which folder holds the classes. Images
    lying beside the class folders are of no class: a warning says they were left out."""
    wrapped = tmp_path / "photos"
    shutil.copytree(demo_copy, wrapped / "flowers")
    with pytest.raises(DataError, match=f"did you mean --data {wrapped / 'flowers'}"):
        load_dataset(str(wrapped))
    loose = sorted((demo_copy / "daisy").iterdir())[0]
    shutil.copy(loose, wrapped / "flowers" / "stray.jpg")
    assert "1 image(s) directly in" in " ".join(load_dataset(str(wrapped / "flowers")).warnings)



def test_batch_folders_over_the_classes_and_a_class_link_to_nothing_are_said(tmp_path, demo_copy):
    """batch1/daisy, batch1/roses, batch2/daisy, batch2/roses trains "batch1 vs batch2": a warning names the
    sub-folders that are likely the classes. A class folder that is a link to a moved folder is named too."""
    data = tmp_path / "photos"
    for batch, files in (("batch1", slice(0, 3)), ("batch2", slice(3, 6))):
        for cls in ("daisy", "roses"):
            (data / batch / cls).mkdir(parents=True)
            for photo in sorted((demo_copy / cls).iterdir())[files]:
                shutil.copy(photo, data / batch / cls / photo.name)
    spec = load_dataset(str(data))
    assert spec.classes == ["batch1", "batch2"]
    (warned,) = [w for w in spec.warnings if "sub-folders" in w]
    assert "(daisy, roses)" in warned and "gather each one's images into one folder" in warned
    shutil.copytree(demo_copy, tmp_path / "linked")
    (tmp_path / "linked" / "tulips").symlink_to(tmp_path / "moved-away")
    (warned,) = [w for w in load_dataset(str(tmp_path / "linked")).warnings if "symbolic link" in w]
    assert "'tulips' -> " in warned and "moved-away" in warned
    assert not [w for w in load_dataset(str(tmp_path / "linked")).warnings if "sub-folders" in w]

def test_duplicates_across_splits_are_reported_and_can_be_dropped(leaky_folder):
    root, _ = leaky_folder
    spec = load_dataset(str(root))
    reported = check_leakage(spec, drop=False)
    assert len(reported.leaks) == 1 and reported.leaks[0]["path"].endswith("renamed-copy.jpg")
    assert any("exact copies" in w and "--drop-duplicates" in w for w in reported.warnings)
    assert reported.counts() == spec.counts()
    dropped = check_leakage(spec, drop=True)
    assert dropped.counts()["test"] == spec.counts()["test"] - 1
    assert all(not str(p).endswith("renamed-copy.jpg") for p, _ in dropped.splits["test"])


def test_a_class_of_files_that_are_no_images_fails_in_one_line_before_the_work(tmp_path, demo_copy):
    """Five text files named .jpg in a class folder: the class would be an output of the model that no image
    teaches, so the run stops, naming the class; identical text files are no duplicates to report."""
    data = tmp_path / "photos"
    shutil.copytree(demo_copy, data)
    (data / "broken").mkdir()
    for i in range(5):
        (data / "broken" / f"b{i}.jpg").write_text("not a photo\n")
    spec = load_dataset(str(data))
    assert not check_leakage(spec, drop=False).leaks
    result = run_cli("run", "--data", str(data), "--models", "efficientnet_lite0", "--epochs", "1", "--no-record",
                     "--out", str(tmp_path / "run"))
    _one_line_error(result, "class broken (", "file(s), e.g.", "): none of its training files is an image")
    assert not (tmp_path / "run").exists()


def test_one_photo_filed_under_two_classes_is_a_warning(tmp_path, demo_copy):
    data = tmp_path / "photos"
    shutil.copytree(demo_copy, data)
    photo = sorted((data / "daisy").iterdir())[0]
    shutil.copy(photo, data / "roses" / "also-a-rose.jpg")
    (warned,) = [w for w in check_leakage(load_dataset(str(data)), drop=False).warnings if "two or more" in w]
    assert f"'{photo.name}' (daisy)" in warned and "'also-a-rose.jpg' (roses)" in warned, warned


def test_more_workers_than_cores_is_one_line_once(demo_dir, caplog):
    """PyTorch notes it in several lines at every pass (filtered where showdown.data.images loads); showdown says it
    once, in one line."""
    import os

    from showdown.data.images import eval_transform, image_loader
    from showdown.data.preprocessing import Preprocessing

    cores = len(os.sched_getaffinity(0))
    items = [(path, 0) for path in sorted((demo_dir / "daisy").iterdir())[:4]]
    transform = eval_transform(Preprocessing(input_size=(3, 32, 32)))
    for _ in range(2):
        assert sum(len(batch[0]) for batch in image_loader(items, transform, batch_size=2, workers=cores + 1)) == 4
    notes = [r.getMessage() for r in caplog.records if "image-decoding workers" in r.getMessage()]
    assert notes == [f"{cores + 1} image-decoding workers on {cores} CPU cores: they take turns, which can make "
                     "decoding slower"]


def test_a_200_megapixel_phone_photo_is_read_and_a_larger_png_is_skipped_with_its_reason(tmp_path):
    """Pillow refuses over 179 megapixels as a possible decompression bomb. A JPEG decoded in draft mode at 1/8
    scale costs what a 3-megapixel one does, so a 200-megapixel phone photo is read; a PNG as large keeps Pillow's
    limit, and the reason is given."""
    from showdown.data.images import load_rgb, why_unreadable

    photo, png = tmp_path / "200mp.jpg", tmp_path / "200mp.png"
    Image.new("RGB", (16320, 12240), (120, 60, 30)).save(photo, quality=80)  # a Galaxy S23 Ultra's 200 MP mode
    Image.new("RGB", (16320, 12240)).save(png, compress_level=1)
    limit = Image.MAX_IMAGE_PIXELS
    assert load_rgb(photo, min_side=256).size == (2040, 1530)
    assert Image.MAX_IMAGE_PIXELS == limit  # Pillow's limit is restored for everyone else
    with pytest.raises(Image.DecompressionBombError):
        load_rgb(png, min_side=256)
    with pytest.raises(Image.DecompressionBombError):
        load_rgb(photo)  # decoded in full, it would be 600 MB: Pillow's limit holds
    assert why_unreadable(png).startswith("DecompressionBombError: Image size (199756800 pixels) exceeds limit")


def test_a_config_files_keys_are_the_flags_names_as_the_docs_say(tmp_path):
    """`strategy:` as --strategy (and as the Python API's keyword), beside the field's own `strategies:` that a
    run's config.yaml holds."""
    from showdown.config.run_config import read_config_file

    (tmp_path / "c.yaml").write_text("strategy: [scratch-cnn]\nimage_size: 64\n")
    assert read_config_file(tmp_path / "c.yaml") == {"strategies": ["scratch-cnn"], "image_size": 64}


def test_loader_workers_start_from_a_fork_server_where_jax_runs_threads(monkeypatch):
    """litert-torch imports JAX for a TFLite export, and JAX's threads make a plain fork unsafe: a notebook that
    exported and then predicts with workers gets them from a fork server, as under torchrun."""
    import multiprocessing
    import sys
    import types

    from showdown.data.images import _worker_start

    monkeypatch.delitem(sys.modules, "jax", raising=False)  # a TFLite export's test may have loaded it here
    assert _worker_start(2, pin_memory=False) is None  # a plain fork: instant
    monkeypatch.setitem(sys.modules, "jax", types.ModuleType("jax"))
    started = _worker_start(2, pin_memory=False)
    assert started is not None and started.get_start_method() == "forkserver"
    assert multiprocessing.get_start_method() == "fork"  # the process's own default is left alone


SMALL_RUN = ["run", "--models", "efficientnet_lite0", "--image-size", "64", "--epochs", "1", "--max-per-class", "4",
             "--workers", "0", "--no-record", "--no-report"]


def test_a_file_where_the_feature_cache_folder_goes_is_one_warning_and_the_run_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("SHOWDOWN_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "features").write_text("junk\n")
    result = run_cli(*SMALL_RUN, "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    assert "features is a file, not a folder; the run goes on without a feature cache" in result.stderr


def test_an_emptied_config_yaml_is_said_damaged_not_blamed_on_the_data(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("")
    _one_line_error(run_cli("run", "--resume", str(run)), f"{run / 'config.yaml'} is damaged (empty or cut short)")


def test_a_file_size_limit_is_one_line_and_resume_goes_on(tmp_path):
    """`ulimit -f` (EFBIG, as on some clusters): the write that meets it is one line naming the file, not a
    traceback."""
    out = tmp_path / "run"
    limited = subprocess.run(["bash", "-c", 'ulimit -f 2000; exec "$0" -m showdown.cli "$@"', sys.executable,
                              *SMALL_RUN, "--out", str(out), "--cache-dir", str(tmp_path / "cache")],
                             capture_output=True, text=True, env={**os.environ, "SHOWDOWN_DAEMON": "off"})
    assert limited.returncode == 1 and "Traceback" not in limited.stderr, limited.stderr[-2000:]
    assert limited.stderr.splitlines()[-1].startswith("error: file too large for the file size limit (ulimit -f): "
                                                      "could not write"), limited.stderr[-2000:]
    assert run_cli("run", "--resume", str(out)).returncode == 0


def test_shared_memory_that_cannot_grow_is_one_line_not_a_hang(tmp_path):
    """The loader's workers hand batches over in shared memory: where it cannot grow (a full /dev/shm, Docker's
    64 MB; here a file size limit), the run waited forever on a worker whose sending thread had died. Now the
    batch fails in the worker, the loader raises it, and the command says what to do."""
    limited = subprocess.run(["bash", "-c", 'ulimit -f 300; exec "$0" -m showdown.cli "$@"', sys.executable,
                              *SMALL_RUN, "--image-size", "96", "--max-per-class", "10", "--workers", "2",
                              "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")],
                             capture_output=True, text=True, timeout=300,
                             env={**os.environ, "SHOWDOWN_DAEMON": "off"})
    assert limited.returncode == 1, limited.stderr[-2000:]
    assert limited.stderr.splitlines()[-1].startswith("error: the image loader's shared memory cannot grow")


def test_a_folder_where_a_feature_cache_entry_goes_is_deleted_and_recomputed(tmp_path):
    """No write could replace it (the atomic rename onto a folder fails), so it failed every later run."""
    cache = tmp_path / "cache"
    assert run_cli(*SMALL_RUN, "--out", str(tmp_path / "a"), "--cache-dir", str(cache)).returncode == 0
    entries = sorted(cache.glob("*.safetensors"))
    for entry in entries:
        entry.unlink()
        entry.mkdir()
    again = run_cli(*SMALL_RUN, "--out", str(tmp_path / "b"), "--cache-dir", str(cache))
    assert again.returncode == 0, again.stderr
    assert entries and all(entry.is_file() for entry in entries) and "a folder, not a cache entry" in again.stderr


def test_a_broken_symbolic_link_is_said_not_passed_over(tmp_path, demo_copy, caplog):
    """A link whose photo moved (an unmounted drive): a warning in a folder, and named by itself, one line that
    says it is a broken link, not that it "does not exist"."""
    from showdown.deploy.inputs import expand_inputs

    dead = demo_copy / "roses" / "moved.jpg"
    dead.symlink_to(tmp_path / "on-a-drive-not-mounted.jpg")
    load_dataset(str(demo_copy))
    assert any("1 broken symbolic link(s)" in r.getMessage() and str(dead) in r.getMessage() for r in caplog.records)
    with pytest.raises(DataError, match="moved.jpg is a broken symbolic link"):
        expand_inputs([str(dead)])
    assert dead not in expand_inputs([str(demo_copy / "roses" / "*.jpg")])  # a glob's match: passed over


def test_python_312s_fork_warning_is_not_shown_while_decoding():
    """Python 3.12+ warns on every fork of a process with threads; the loader's workers fork on purpose, and a
    user with warnings on (pytest, -W default) got three DeprecationWarnings per run on 3.13."""
    import warnings

    from showdown.data.images import decoding_quietly

    said = "This process (pid=4242) is multi-threaded, use of fork() may lead to deadlocks in the child."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with decoding_quietly():
            warnings.warn(said, DeprecationWarning, stacklevel=1)
        warnings.warn("another DeprecationWarning", DeprecationWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["another DeprecationWarning"]
