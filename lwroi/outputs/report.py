"""``lwroi report``: one HTML page with the figures a reader of the paper looks for first.

The page shows, from a finished run's tables and unit records: the ROI x layer heatmap of the
layer profile (each layer's share of the predicted variance: the paper's central figure, measured
so that it means the same for every solver), then the raw layer weights and the layer
contributions, held-out accuracy per ROI with every subject's value and the noise ceiling, the
chosen hyper-parameters, SGD learning curves, and the two tables. Figures are PNG files beside
``index.html``, drawn with matplotlib's object API (``matplotlib.figure.Figure``, no pyplot): no
display is needed on a cluster node and the process-wide backend is left alone; every file is
written atomically.
"""

from __future__ import annotations

import html
import importlib.util
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lwroi._io import atomic_write_bytes
from lwroi.exceptions import LwroiError
from lwroi.orchestration.results import ResultStore


@dataclass(frozen=True)
class Figure:
    """One PNG of the report and what it shows."""

    file: str
    title: str
    caption: str


def write_report(run_dir: str | Path, store: ResultStore, out_dir: str | Path | None = None) -> Path:
    """Write ``index.html`` and its PNG figures under ``out_dir`` (default ``RUN_DIR/report``); return the page.

    Raises
    ------
    FileNotFoundError
        ``results.csv`` or ``summary.csv`` is missing (run ``lwroi summarize`` first).
    LwroiError
        matplotlib is not installed (a login node's minimal install): the message says how to get it.
    """
    if importlib.util.find_spec("matplotlib") is None:
        raise LwroiError("the report's figures need matplotlib, which is not installed here: pip install "
                         "matplotlib, or run `lwroi report` in the image")
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "report"
    for name in ("results.csv", "summary.csv"):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir / name} is missing: run `lwroi summarize {run_dir}` first")
    results, summary = pd.read_csv(run_dir / "results.csv"), pd.read_csv(run_dir / "summary.csv")
    layers = [c.removeprefix("weight_") for c in results.columns if c.startswith("weight_")]
    rois = list(summary["roi"])
    figures = [
        Figure(_save(out, "layer_profile.png",
                     _heatmap(results, rois, layers, "profile_", "share of predicted variance (mean over subjects)")),
               "Layer profile per ROI",
               "Each DNN layer's share of the fitted model's predicted variance on the training videos (per voxel "
               "the variance of that layer's term of the prediction over the sum of all layers', then the mean "
               "over voxels), mean over subjects: which depth each ROI resembles. It depends only on the fitted "
               "predictions, so it means the same for every solver and is blind to voxel gains: early visual ROIs "
               "should draw on early layers, higher ROIs on later ones."),
        Figure(_save(out, "layer_weights.png",
                     _heatmap(results, rois, layers, "weight_", "raw layer weight |a| (mean over subjects)")),
               "Raw layer weights per ROI (not a profile)",
               "The fitted layer weight |a| of each layer, mean over subjects, kept for comparison with the "
               "original. It is not a layer profile: with the sgd solver the scale of a layer's weight trades "
               "freely against its coefficients W, so its value follows the learning rate, the number of epochs "
               "and the penalties as much as the data (see the README); read the profile above."),
        Figure(_save(out, "layer_contributions.png",
                     _heatmap(results, rois, layers, "contrib_", "layer contribution (share of accuracy)")),
               "Layer contributions per ROI (held-out r with one layer kept)",
               "The held-out accuracy each layer gives alone (r with only that layer's features kept, the others "
               "zeroed, normalised over layers to sum 1), mean over subjects. Layers that carry the same "
               "information each score high alone, so this rates what a layer can predict, not what the fit drew "
               "from it."),
        Figure(_save(out, "pcc.png", _accuracy(results, summary, rois)), "Held-out accuracy per ROI",
               "Mean voxel Pearson r on the held-out videos: bars are the subject mean, dots each subject, the "
               "black tick the noise ceiling (split-half reliability, Spearman-Brown)."),
    ]
    curves = _learning_curves(results, store, rois)
    if curves is not None:
        figures.append(Figure(_save(out, "learning_curves.png", curves), "Learning curves (SGD)",
                              "Validation score per epoch of each subject's final fit; the circle marks the "
                              "restored (best) epoch."))
    page = out / "index.html"
    atomic_write_bytes(page, _page(run_dir, figures, results, summary).encode())
    return page


def _save(out: Path, name: str, figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(out / name, buffer.getvalue())
    return name


def _new_figure(width: float, height: float):
    """A matplotlib figure of its own (not pyplot's): it renders PNGs without a display or a backend switch."""
    from matplotlib.figure import Figure as MatplotlibFigure

    return MatplotlibFigure(figsize=(width, height))


def _heatmap(results: pd.DataFrame, rois: list[str], layers: list[str], prefix: str, label: str):
    values = results.groupby("roi")[[prefix + layer for layer in layers]].mean().reindex(rois).to_numpy(float)
    fig = _new_figure(1.0 + 0.75 * len(layers), 1.0 + 0.45 * len(rois))
    ax = fig.subplots()
    image = ax.imshow(values, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(layers)), layers, rotation=45, ha="right")
    ax.set_yticks(range(len(rois)), rois)
    ax.set_xlabel("DNN layer")
    ax.set_ylabel("ROI")
    fig.colorbar(image, ax=ax, label=label)
    return fig


def _accuracy(results: pd.DataFrame, summary: pd.DataFrame, rois: list[str]):
    fig = _new_figure(1.5 + 0.6 * len(rois), 3.6)
    ax = fig.subplots()
    positions = np.arange(len(rois))
    means = summary.set_index("roi").reindex(rois)
    ax.bar(positions, means["pcc_mean"], color="#8fb3d9", label="mean over subjects")
    for i, roi in enumerate(rois):
        values = results.loc[results["roi"] == roi, "pcc"].to_numpy(float)
        jitter = np.linspace(-0.2, 0.2, len(values)) if len(values) > 1 else np.zeros(1)
        ax.scatter(i + jitter, values, color="#1f3b5a", s=14, zorder=3, label="subject" if i == 0 else None)
    if "noise_ceiling_mean" in means:
        ax.scatter(positions, means["noise_ceiling_mean"], marker="_", s=400, color="black", zorder=4,
                   label="noise ceiling")
    ax.set_xticks(positions, rois, rotation=45, ha="right")
    ax.set_xlabel("ROI")
    ax.set_ylabel("held-out Pearson r")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def _learning_curves(results: pd.DataFrame, store: ResultStore, rois: list[str]):
    """One panel per ROI with each subject's validation curve; None when no fit kept a curve (kernel)."""
    curves = {}
    for _, row in results.iterrows():
        key = f"fit/{row['subject']}/{row['roi']}"
        record = store.read(key, verify_arrays=False)
        if record is not None and "history_val_score" in record.arrays:
            curves[(row["roi"], row["subject"])] = (store.load_array(key, "history_val_score"), int(row["best_epoch"]))
    if not curves:
        return None
    shown = [roi for roi in rois if any(r == roi for r, _ in curves)]
    cols = min(5, len(shown))
    rows = -(-len(shown) // cols)
    fig = _new_figure(2.6 * cols, 2.2 * rows)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True)
    for ax, roi in zip(axes.flat, shown, strict=False):
        for (r, subject), (curve, best) in curves.items():
            if r == roi:
                line, = ax.plot(np.arange(1, len(curve) + 1), curve, linewidth=1, label=subject)
                if 1 <= best <= len(curve):
                    ax.plot(best, curve[best - 1], "o", color=line.get_color(), markersize=4)
        ax.set_title(roi, fontsize=9)
    for ax in axes.flat[len(shown):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    for ax in axes[:, 0]:
        ax.set_ylabel("validation score")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.tight_layout()
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, title="subject")
    return fig


def _page(run_dir: Path, figures: list[Figure], results: pd.DataFrame, summary: pd.DataFrame) -> str:
    params = results.groupby("roi", sort=False)[["solver", "wc", "lay"]].first().reset_index()
    warning = ""
    if "random_weights" in results and results["random_weights"].astype(str).str.lower().eq("true").any():
        warning = ("<p class='warn'>The features came from an untrained (randomly initialised) network: "
                   "the layer profiles show the method, not a trained DNN's brain-likeness.</p>")
    sections = "\n".join(
        f"<section><h2>{html.escape(f.title)}</h2>"
        f"<img src='{html.escape(f.file)}' alt='{html.escape(f.title)}' "
        "onload=\"this.dataset.loaded='1'\" "
        "onerror=\"this.dataset.loaded='0';this.insertAdjacentHTML('afterend',"
        "'<p class=warn>figure file missing: '+this.getAttribute('src')+'</p>')\">"
        f"<p>{html.escape(f.caption)}</p></section>"
        for f in figures
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>lwroi report: {html.escape(run_dir.name)}</title>
<style>
body {{ font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
img {{ max-width: 100%; }} table {{ border-collapse: collapse; font-size: 0.85em; }}
td, th {{ border: 1px solid #ccc; padding: 2px 6px; text-align: right; }} .warn {{ color: #a40; }}
.scroll {{ overflow-x: auto; }}
</style></head><body>
<h1>lwroi report: {html.escape(str(run_dir))}</h1>
{warning}
{sections}
<section><h2>Chosen hyper-parameters</h2>{params.to_html(index=False, na_rep="(kernel: GCV)")}</section>
<section><h2>summary.csv</h2><div class="scroll">{summary.to_html(index=False, float_format="%.4f")}</div></section>
<section><h2>results.csv</h2><div class="scroll">{results.to_html(index=False, float_format="%.4f")}</div></section>
</body></html>
"""
