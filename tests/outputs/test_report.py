"""``lwroi report``: the page and its figures, opened in a real headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_lwroi

pytestmark = pytest.mark.slow
FIGURES = ["layer_profile.png", "layer_weights.png", "layer_contributions.png", "pcc.png", "learning_curves.png"]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise RuntimeError("chromium not found: apt-get install chromium (scripts/test.sh does, as root)")
    return found


def rendered_images(page) -> dict[str, str]:
    """``src -> data-loaded`` of every image, from the DOM Chromium built after loading the page."""
    dom = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000", "--dump-dom",
         page.resolve().as_uri()], capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    tags = re.findall(r"<img\b[^>]*>", dom)
    return {re.search(r'src="([^"]+)"', t).group(1): (re.search(r'data-loaded="(\d)"', t) or [None, ""])[1]
            for t in tags}  # fmt: skip


@pytest.fixture(scope="module")
def report(tiny_run, tiny_workspace, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    run_lwroi("report", str(tiny_run), "--out", str(out), cwd=tiny_workspace)
    return out


def test_report_page_and_figures_are_written(report):
    assert (report / "index.html").is_file()
    assert sorted(p.name for p in report.glob("*.png")) == sorted(FIGURES)
    page = (report / "index.html").read_text()
    for heading in ("Layer profile per ROI", "Raw layer weights per ROI (not a profile)",
                    "Layer contributions per ROI", "Held-out accuracy per ROI", "Chosen hyper-parameters",
                    "summary.csv", "results.csv", "untrained"):  # fmt: skip
        assert heading in page


def test_layer_profile_is_the_headline_figure(report):
    """The first figure on the page is the ROI x layer profile, before the raw weights and contributions."""
    page = (report / "index.html").read_text()
    images = re.findall(r"<img src='([^']+)'", page)
    assert images[:3] == ["layer_profile.png", "layer_weights.png", "layer_contributions.png"]


@pytest.mark.parametrize("name", FIGURES)
def test_figures_hold_drawn_content(report, name):
    pixels = np.asarray(Image.open(report / name).convert("RGB"))
    assert pixels.shape[0] > 200 and pixels.shape[1] > 300
    not_white = (pixels < 240).any(axis=-1).mean()
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert not_white > 0.05 and colours > 50, f"{name}: {not_white:.1%} drawn, {colours} colours"


def test_page_loads_every_figure_in_headless_chromium(report):
    assert rendered_images(report / "index.html") == {name: "1" for name in FIGURES}


def test_a_missing_figure_is_shown_as_missing(report, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(report, broken)
    (broken / "pcc.png").unlink()
    images = rendered_images(broken / "index.html")
    assert images["pcc.png"] == "0" and all(v == "1" for k, v in images.items() if k != "pcc.png")
