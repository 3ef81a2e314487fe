"""The notebook API on a real Jupyter kernel: examples/quickstart.ipynb executed by nbclient, its outputs read."""
from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient", reason="the notebook test needs the test extra (nbclient, ipykernel)")
nbformat = pytest.importorskip("nbformat", reason="the notebook test needs the test extra (nbformat)")
pytest.importorskip("ipykernel", reason="the notebook test needs the test extra (ipykernel)")

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "quickstart.ipynb"


def test_quickstart_notebook_runs_and_shows_the_leaderboard(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # The kernel inherits this process's environment (offline hub, the tests' cache and database).
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = [o.data["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    leaderboard = next(h for h in html if "Winner: <b>" in h)
    assert "efficientnet_lite0 / head" in leaderboard and "<table" in leaderboard
    assert any("<iframe srcdoc=" in h and "Confusion matrices" in h for h in html)  # the report, inline
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream" and o.name == "stdout")
    assert "winner: efficientnet_lite0 / head" in printed
    warned = "".join(o.get("text", "") for o in outputs if o.output_type == "stream" and o.name == "stderr")
    assert "efficientnet_lite0/head [head]" in warned  # the epoch bar
    assert "efficientnet_lite0 train+val+test" in warned  # the frozen pass's bar (tqdm's own test said no terminal)
    run_dirs = list((tmp_path / "runs").iterdir())
    assert len(run_dirs) == 1 and (run_dirs[0] / "report.html").is_file()


def test_results_as_a_dataframe_or_one_line_without_pandas(tmp_path):
    from showdown import Results, ShowdownError

    results = Results(tmp_path, [{"model": "a", "strategy": "head", "accuracy": 0.5},
                                 {"model": "b", "strategy": "head", "accuracy": 0.75}])
    assert results.best()["model"] == "b"
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ShowdownError, match="needs pandas: pip install pandas"):
            results.to_pandas()
    else:
        assert list(results.to_pandas()["model"]) == ["b", "a"]  # best first


SETUP = """%matplotlib inline
import random, warnings
import matplotlib, numpy as np, torch
import matplotlib.pyplot as plt
def state():
    return dict(backend=matplotlib.get_backend(), font=matplotlib.rcParams["font.size"],
                grid=matplotlib.rcParams["axes.grid"], dpi=matplotlib.rcParams["figure.dpi"],
                filters=list(warnings.filters), dtype=torch.get_default_dtype(),
                levels=[logging.getLogger(name).level for name in ("showdown", "timm")])
torch.set_default_dtype(torch.float64)  # as scientific notebooks do: the run's models still take its inputs
import logging
logging.basicConfig(level=logging.INFO)  # quiet=True still prints only the table
before = state()"""
RUN = """import showdown
random.seed(5); np.random.seed(5); torch.manual_seed(5)
results = showdown.run(data="demo", models=["efficientnet_lite0"], image_size=64, epochs=1, max_per_class=6,
                       workers=0, out="runs/x", record=False, quiet=True, gradcam=0)
print("same:", state() == before)
print("draws:", repr(random.random()), repr(float(np.random.rand())), repr(float(torch.rand(1))))
plt.plot([1, 2, 3]); plt.show()
print(repr(results))
from pathlib import Path
photos = sorted(str(p) for p in (Path(showdown.__file__).parent / "demo" / "flowers" / "roses").iterdir())[:3]
print("predicted:", [row["path"] for row in results.predict(photos[:2], Path(photos[2]))] == photos)
try:
    results.predict(np.zeros((8, 8, 3)))
except showdown.ShowdownError as exc:
    print("refused:", exc)
explained = results.explain(photos[:2], out="explained")
print("explained:", [Path(item.path).name for item in explained] == [Path(p).name for p in photos[:2]])
display(explained)"""


def test_a_run_leaves_the_notebooks_plots_random_draws_and_warnings_as_they_were(tmp_path):
    """The run draws its figures, seeds the global generators, sets warning filters and float32 tensors for its own
    work: the notebook's inline plots, its rcParams, its random draws, its warning filters and its float64 default
    dtype are the same afterwards, and no warning asks for ipywidgets."""
    import random

    import numpy as np
    import torch

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(SETUP), nbformat.v4.new_code_cell(RUN)])
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = notebook.cells[1].outputs
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream" and o.name == "stdout")
    assert "same: True" in printed, [o for o in outputs if o.output_type == "error"] or printed
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    drawn = f"{random.random()!r} {float(np.random.rand())!r} {float(torch.rand(1, dtype=torch.float64))!r}"
    assert f"draws: {drawn}" in printed, printed[-600:]  # the notebook's default dtype: float64
    assert any("image/png" in o.get("data", {}) for o in outputs)  # plt.show() still draws inline
    assert "Results of " in printed and "efficientnet_lite0" in printed  # the repr: the table, not every field
    assert "predicted: True" in printed  # a list of paths and a Path, in the order given
    assert "explained: True" in printed and len(list((tmp_path / "explained").glob("*.png"))) == 2
    gallery = [o.data["text/html"] for o in outputs if "Grad-CAM, in" in o.get("data", {}).get("text/html", "")]
    assert len(gallery) == 1 and gallery[0].count('<img style="width:100%" src="data:image/png;base64,') == 2
    assert "refused: images are given as files, folders or glob patterns (paths or strings), not a numpy.ndarray" \
        in printed
    warned = "".join(o.get("text", "") for o in notebook.cells[0].outputs + outputs if o.get("name") == "stderr")
    assert "IProgress" not in warned and "Warning" not in warned, warned
    assert "INFO:showdown" not in warned and "INFO:timm" not in warned, warned  # quiet=True, logging at INFO
    assert "batch/s" not in warned, warned  # nor a frozen pass's bar


def test_predict_takes_paths_in_any_collection_and_refuses_images_in_memory():
    import numpy as np

    from showdown import ShowdownError
    from showdown.experiment.results import _paths

    assert _paths((["a.jpg"], ("b.jpg",), (p for p in ["c.jpg"]), np.array(["d.jpg"]), Path("e.jpg"))) == \
        ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"]  # a DataFrame's column is one more such
    for image in (np.zeros((8, 8, 3), dtype=np.uint8), b"\xff\xd8 a JPEG's bytes"):
        with pytest.raises(ShowdownError, match=f"not a .*{type(image).__name__}; save the image to a file"):
            _paths((image,))
    with pytest.raises(ShowdownError, match="no images given"):
        _paths(())
