"""Grad-CAM on a model whose evidence is known: one class always carries a bright square in one corner."""
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from showdown import RunConfig, run
from showdown.data.preprocessing import Preprocessing
from showdown.deploy.explain import available, explain
from showdown.models.saving import load_model

pytestmark = pytest.mark.skipif(not available(), reason="pytorch-grad-cam is not installed (the explain extra)")
SIDE, SQUARE = 192, (14, 70)  # the square spans 14..70 px of both axes: inside the centre crop, in the top left


@pytest.fixture(scope="module")
def square_run(tmp_path_factory, demo_dir):
    """Demo photos shuffled into two classes: 'marked' ones carry a white square in the top-left corner, 'plain'
    ones do not, so the square is the only evidence that tells them apart."""
    root = tmp_path_factory.mktemp("square") / "data"
    photos = sorted(p for p in demo_dir.rglob("*.jpg"))[::3][:72]
    for i, photo in enumerate(photos):
        image = Image.open(photo).convert("RGB").resize((SIDE, SIDE))
        cls = "marked" if i % 2 == 0 else "plain"
        if cls == "marked":
            image.paste((255, 255, 255), (SQUARE[0], SQUARE[0], SQUARE[1], SQUARE[1]))
        (root / cls).mkdir(parents=True, exist_ok=True)
        image.save(root / cls / f"{i:03d}.png")
    config = RunConfig(data=str(root), models=["efficientnet_lite0"], image_size=160, epochs=20, lr=3e-3,
                       workers=0, record=False, report=False, label_issues="off", gradcam=4,
                       out=str(tmp_path_factory.mktemp("run") / "square"))
    return run(config, echo=lambda *_: None), root


def test_heat_map_mass_sits_on_the_square(square_run, tmp_path):
    results, root = square_run
    folder = results.run_dir / results.rows[0]["folder"]
    assert results.rows[0]["accuracy"] >= 0.8  # the square is learnable from frozen features
    model, info = load_model(folder)
    marked = sorted(str(p) for p in (root / "marked").iterdir())[:12]
    done = [d for d in explain(model, info["classes"], Preprocessing.from_dict(info["preprocessing"]), marked,
                               tmp_path) if d.label == "marked"]
    assert len(done) >= 8
    shares = [d.heat[:d.heat.shape[0] // 2, :d.heat.shape[1] // 2].sum() / d.heat.sum() for d in done]
    print(f"heat-map mass in the top-left quadrant: mean {np.mean(shares):.2f}, min {min(shares):.2f}")
    assert np.mean(shares) > 0.5  # a quarter of the image holds most of the evidence
    assert (folder / "gradcam" / "gradcam.csv").is_file() and len(list((folder / "gradcam").glob("*.png"))) == 4


def test_explain_command_writes_overlays(square_run, tmp_path):
    results, root = square_run
    out = tmp_path / "overlays"
    done = subprocess.run([sys.executable, "-m", "showdown.cli", "explain", str(results.run_dir),
                           str(root / "marked" / "000.png"), str(root / "plain"), "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "overlay(s) in" in done.stdout and len(list(out.glob("*.png"))) == 1 + len(list((root / "plain").iterdir()))
    refused = subprocess.run([sys.executable, "-m", "showdown.cli", "explain", str(out / "01-000.png"),
                              str(root / "plain")], capture_output=True, text=True)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr and len(refused.stderr.splitlines()) == 1
