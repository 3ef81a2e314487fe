"""What a cached re-run no longer pays for, with the outputs unchanged: figures drawn twice, every image read
for the leakage check, the garbage collector walking the imported libraries, and fresh pages for every batch."""
import base64
import gc
import platform
import subprocess
import sys
from pathlib import Path

import matplotlib
import pytest
import torch

from showdown.data import leakage, load_dataset
from showdown.fileio import write_csv
from showdown.frozen import engines
from showdown.frozen.feature_cache import FrozenPass, forward_frozen
from showdown.models.backbones import load_backbone
from showdown.reporting import plots
from showdown.run_schema import HistoryRow, read_rows
from showdown.startup import heavy_imports, keep_freed_memory

HISTORY = [{"phase": "head", "epoch": e, "lr": 1e-3, "train_loss": 1 / e, "train_acc": 0.5 + e / 10,
            "val_loss": 1.1 / e, "val_acc": 0.4 + e / 10, "seconds": 0.1 * e} for e in range(1, 4)]
HISTORY += [{**HISTORY[-1], "phase": "finetune", "epoch": 4, "lr": 1e-4}]


def _saved(fig, tmp_path, name: str) -> bytes:
    """What savefig writes: the entry figures are laid out with fixed margins, without a tight bounding box."""
    assert getattr(fig, plots.FIXED_MARGINS)
    path = tmp_path / name
    with matplotlib.rc_context({**plots.STYLE, "savefig.bbox": "standard"}):  # ticks are made as it draws
        fig.savefig(path)
    return path.read_bytes()


def test_figures_are_the_bytes_savefig_writes_and_drawn_once(tmp_path, monkeypatch):
    plots._DRAWN.clear()
    matrix, classes = [[5, 1], [0, 7]], ["cat", "dog"]
    plots.plot_confusion(matrix, classes, tmp_path / "confusion.png", "m / head")
    plots.plot_curves(HISTORY, tmp_path / "curves.png", "m / head")
    assert (tmp_path / "confusion.png").read_bytes() == _saved(plots.confusion_figure(matrix, classes, "m / head"),
                                                               tmp_path, "c.png")
    assert (tmp_path / "curves.png").read_bytes() == _saved(plots.curves_figure(HISTORY, "m / head"), tmp_path,
                                                            "h.png")
    write_csv(tmp_path / "history.csv", HISTORY)
    read_back = read_rows(tmp_path / "history.csv", HistoryRow)  # what the report reads
    drawn = []
    monkeypatch.setattr(plots, "confusion_figure", lambda *a: drawn.append(a))
    monkeypatch.setattr(plots, "curves_figure", lambda *a: drawn.append(a))
    assert plots.curves_png(read_back, "m / head") == (tmp_path / "curves.png").read_bytes()
    assert plots.confusion_png(matrix, classes, "m / head") == (tmp_path / "confusion.png").read_bytes()
    assert drawn == []  # the report's figures of a run's entries come from the memo


def test_a_figure_of_other_values_is_drawn_again(monkeypatch):
    plots._DRAWN.clear()
    first = plots.curves_png(HISTORY, "t")
    changed = [dict(step) for step in HISTORY]
    changed[1]["val_loss"] += 0.01
    assert plots.curves_png(changed, "t") != first
    assert plots.curves_png(HISTORY, "u") != first  # the title is drawn too
    assert plots.confusion_png([[1, 0], [0, 1]], ["a", "b"], "t") != plots.confusion_png([[1, 0], [1, 1]],
                                                                                      ["a", "b"], "t")
    monkeypatch.setattr(plots, "DRAWN_KEPT", 2)
    for title in ("v", "w", "x"):
        plots.curves_png(HISTORY, title)
    assert len(plots._DRAWN) == 2


def test_report_embeds_the_entry_figures_as_written(tmp_path, demo_copy):
    from showdown import RunConfig, run

    config = RunConfig(data=str(demo_copy), models=["efficientnet_lite0"], strategies=["head"], image_size=96,
                       epochs=2, workers=0, out=str(tmp_path / "run"), record=False)
    results = run(config, echo=lambda *_: None)
    html = (results.run_dir / "report.html").read_text()
    entry = results.run_dir / results.rows[0]["folder"]
    for name in ("confusion.png", "curves.png"):
        assert base64.b64encode((entry / name).read_bytes()).decode() in html
    # one configuration: no trade-off figures of a single point (the other sections' tests run several)
    assert html.count("data:image/png") == 2 and "nothing to trade its accuracy off against" in html


def test_leakage_reads_only_files_whose_size_another_file_has(leaky_folder, monkeypatch):
    root, copied = leaky_folder
    same_size = bytearray(copied.read_bytes())
    same_size[-3] ^= 0xFF  # same size, other bytes: not a copy
    (root / "test" / "roses" / "same-size.jpg").write_bytes(bytes(same_size))
    read = []
    content_hash = leakage.content_hash
    monkeypatch.setattr(leakage, "content_hash", lambda path: read.append(path.name) or content_hash(path))
    leaks = leakage.find_leaks(load_dataset(str(root)))
    assert [leak["path"].rsplit("/", 1)[-1] for leak in leaks] == ["renamed-copy.jpg"]
    assert sorted(read) == sorted([copied.name, "renamed-copy.jpg", "same-size.jpg"])


@pytest.mark.parametrize("enabled", [True, False])
def test_heavy_imports_leave_the_collector_as_they_found_it(enabled):
    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        with heavy_imports():
            assert not gc.isenabled()
            import showdown.reporting.tables  # noqa: F401
        assert gc.isenabled() == enabled
        with pytest.raises(ImportError), heavy_imports():
            import showdown.no_such_module  # noqa: F401
        assert gc.isenabled() == enabled
    finally:
        gc.enable() if was else gc.disable()


def test_heavy_imports_freeze_what_they_imported_once_per_process():
    """In a fresh process: this one's conftest froze its imports already (tests/conftest.py)."""
    code = ("import gc; from showdown.startup import heavy_imports\n"
            "with heavy_imports(): import showdown.reporting.tables\n"
            "first = gc.get_freeze_count(); object()\n"
            "with heavy_imports(): import showdown.run_schema\n"
            "print(first, gc.get_freeze_count())")
    first, second = map(int, subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                            check=True).stdout.split())
    assert first > 1000 and second == first  # frozen once: the second command in a process freezes nothing more


FORWARDS = """
import ctypes, resource, sys, torch
from showdown.startup import give_back_freed_memory, heavy_imports
if sys.argv[1] == "kept":
    with heavy_imports():  # as every command's
        pass
nn = torch.nn
net = nn.Sequential(nn.Conv2d(3, 96, 3, padding=1), nn.ReLU6(), nn.Conv2d(96, 96, 3, padding=1, groups=96), nn.ReLU6(),
                    nn.Conv2d(96, 24, 1))
images = torch.randn(16, 3, 112, 112)  # activations of 77 MB, as in a MobileNet: over glibc's largest mmap threshold
with torch.inference_mode():
    net(images)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        net(images)
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 4


class MallInfo2(ctypes.Structure):  # glibc 2.33 and later
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
mapped = libc.mallinfo2().hblks  # blocks glibc mapped apart from the heap (some while torch was imported)
big = torch.ones(64 << 20, dtype=torch.uint8)
mapped = libc.mallinfo2().hblks - mapped
heap = libc.mallinfo2().arena
del big
give_back_freed_memory()
print(faults, mapped, heap - libc.mallinfo2().arena)
"""


def _huge_pages_always() -> bool:
    """With transparent huge pages always on, the kernel faults 2 MB at a time: fewer faults to count."""
    try:
        return "[always]" in Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_kept_memory_spares_the_kernel_zeroing_activations_at_every_batch():
    """In a process as it starts and after a command's imports (startup.keep_freed_memory): a 64 MB block comes
    from the heap, not a mapping of its own; the batches after the first reuse the memory the first freed (page
    faults per forward: fresh pages the kernel zeroes); give_back_freed_memory returns the freed block's pages."""
    assert keep_freed_memory()
    measured = {}
    for mode in ("default", "kept"):
        faults, mapped, returned = subprocess.run([sys.executable, "-c", FORWARDS, mode], capture_output=True,
                                                  text=True, check=True).stdout.split()
        measured[mode] = float(faults), int(mapped), int(returned)
    assert measured["default"][1] == 1 and measured["kept"][1] == 0, measured
    assert measured["kept"][2] >= 64 << 20, measured  # the heap shrank by the freed block, at least
    if not _huge_pages_always():
        assert measured["kept"][0] < measured["default"][0] / 8, measured  # measured: 153,000 against 5,000-9,000


def test_figures_are_drawn_without_pyplot():
    """A notebook's pyplot (its inline backend, its open figures) never sees the run's figures."""
    import matplotlib.pyplot as plt

    open_before = plt.get_fignums()
    fig = plots.curves_figure(HISTORY, "t")
    png = plots.png_bytes(fig)
    assert png.startswith(b"\x89PNG") and plt.get_fignums() == open_before
    assert plots.png_uri(png) == "data:image/png;base64," + base64.b64encode(png).decode()


def test_splits_share_one_engine_build_until_the_weights_change(demo_dir, monkeypatch, tmp_path):
    """Every split of a run used to export and compile the frozen backbone again (~1 s each). Now the build is
    reused while the weights stay as they were, and rebuilt, with new outputs, once they change in place."""
    monkeypatch.setenv("SHOWDOWN_CACHE", str(tmp_path))  # no graph cached by another test (test_compiled_cache.py)
    backbone = load_backbone("mobilenet_v2", pretrained=False, image_size=64)
    exports = []
    export = engines._export
    monkeypatch.setattr(engines, "_export", lambda *a: exports.append(1) or export(*a))
    items = [(p, 0) for p in sorted((demo_dir / "daisy").iterdir())[:6]]

    def features(part, runtime="onnxruntime"):
        return forward_frozen(FrozenPass(precision="fp32", batch_size=4, workers=0, runtime=runtime), backbone.model,
                              backbone.preprocessing, part).features

    first, second = features(items[:3]), features(items[3:])
    assert len(exports) == 1 and first.shape == second.shape == (3, backbone.num_features)
    with torch.no_grad():
        backbone.model.conv_stem.weight.mul_(0.5)  # what an optimizer step or load_state_dict does
    changed = features(items[:3])
    assert len(exports) == 2
    assert not torch.allclose(changed, first, atol=1e-3)
    torch.testing.assert_close(changed, features(items[:3], runtime="torch"), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("classes", [["cat", "dog"], ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                                      "horse", "ship", "truck"],
                                     [f"a rather long flower name {i}" for i in range(30)]])
def test_the_confusion_matrix_margins_hold_every_class_name(classes):
    n = len(classes)
    fig = plots.confusion_figure([[int(i == j) * 9 + 1 for j in range(n)] for i in range(n)], classes, "m / head")
    assert getattr(fig, plots.FIXED_MARGINS)  # laid out without the tight box's second drawing
    fig.canvas.draw()
    drawn = fig.get_tightbbox(fig.canvas.get_renderer())  # in inches, like the figure's size
    width, height = fig.get_size_inches()
    assert drawn.x0 >= 0 and drawn.y0 >= 0 and drawn.x1 <= width and drawn.y1 <= height, drawn  # nothing clipped


def test_names_too_long_for_margins_leave_the_figure_to_the_tight_box():
    names = ["a class name far longer than any margin should be made to hold, " * 2 + str(i) for i in range(2)]
    fig = plots.confusion_figure([[3, 1], [0, 4]], names, "m / head")
    assert not getattr(fig, plots.FIXED_MARGINS, False)
    assert plots.png_bytes(fig).startswith(b"\x89PNG")


def test_a_pass_that_fails_stops_its_decoding_workers_though_its_traceback_is_kept(demo_dir, monkeypatch):
    """Ctrl-C or an error in the frozen pass: the loader's workers end with it, even while the traceback (and so the
    loader) is kept, as a notebook keeps sys.last_traceback."""
    import multiprocessing

    from showdown.frozen import feature_cache

    moved = []

    def second_batch_interrupted(images, device):
        moved.append(1)
        if len(moved) == 2:
            raise KeyboardInterrupt
        return images

    monkeypatch.setattr(feature_cache, "to_device", second_batch_interrupted)
    backbone = load_backbone("mobilenet_v2", pretrained=False, image_size=64)
    items = [(p, 0) for p in sorted((demo_dir / "daisy").iterdir())[:40]]
    with pytest.raises(KeyboardInterrupt) as kept:
        feature_cache.forward_frozen(feature_cache.FrozenPass(precision="fp32", batch_size=4, workers=2,
                                                              runtime="torch"), backbone.model,
                                     backbone.preprocessing, items)
    assert kept.traceback and len(moved) == 2 and not multiprocessing.active_children()


def test_an_emoji_class_name_is_drawn_without_a_warning():
    """A class folder named "Daisy 🌼": its glyph is not in matplotlib's font; no warning quoting showdown's code
    for it on every run."""
    import warnings

    with warnings.catch_warnings(record=True) as said:
        plots.png_bytes(plots.confusion_figure([[3, 1], [0, 4]], ["Daisy 🌼", "Rosé"], "m / head"))
    assert not [w for w in said if "Glyph" in str(w.message)], [str(w.message) for w in said]
