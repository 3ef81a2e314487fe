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
