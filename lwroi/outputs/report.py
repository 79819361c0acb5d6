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
    models = list(dict.fromkeys(results["model"]))
    figures = []
    if len(models) > 1 and (run_dir / "comparison.csv").is_file():
        figures += _zoo_figures(out, pd.read_csv(run_dir / "comparison.csv"), results)
    for model in models:
        figures += _model_figures(out, results[results["model"] == model], summary[summary["model"] == model],
                                  store, model, zoo=len(models) > 1)
    page = out / "index.html"
    atomic_write_bytes(page, _page(run_dir, figures, results, summary).encode())
    return page


def _model_figures(out: Path, results: pd.DataFrame, summary: pd.DataFrame, store: ResultStore, model: str,
                   zoo: bool) -> list[Figure]:
    """The figures of one model's fits; in a zoo their files and titles name the model."""
    layers = [c.removeprefix("weight_") for c in results.columns
              if c.startswith("weight_") and results[c].notna().any()]
    rois = list(summary["roi"])
    tag, of = (f"_{model}", f" ({model})") if zoo else ("", "")
    figures = [
        Figure(_save(out, f"layer_profile{tag}.png",
                     _heatmap(results, rois, layers, "profile_", "share of predicted variance (mean over subjects)")),
               f"Layer profile per ROI{of}",
               "Each DNN layer's share of the fitted model's predicted variance on the training videos (per voxel "
               "the variance of that layer's term of the prediction over the sum of all layers', then the mean "
               "over voxels), mean over subjects: which depth each ROI resembles. It depends only on the fitted "
               "predictions, so it means the same for every solver and is blind to voxel gains: early visual ROIs "
               "should draw on early layers, higher ROIs on later ones."),
        Figure(_save(out, f"layer_weights{tag}.png",
                     _heatmap(results, rois, layers, "weight_", "raw layer weight |a| (mean over subjects)")),
               f"Raw layer weights per ROI (not a profile){of}",
               "The fitted layer weight |a| of each layer, mean over subjects, kept for comparison with the "
               "original. It is not a layer profile: with the sgd solver the scale of a layer's weight trades "
               "freely against its coefficients W, so its value follows the learning rate, the number of epochs "
               "and the penalties as much as the data (see the README); read the profile above."),
        Figure(_save(out, f"layer_contributions{tag}.png",
                     _heatmap(results, rois, layers, "contrib_", "layer contribution (share of accuracy)")),
               f"Layer contributions per ROI (held-out r with one layer kept){of}",
               "The held-out accuracy each layer gives alone (r with only that layer's features kept, the others "
               "zeroed, normalised over layers to sum 1), mean over subjects. Layers that carry the same "
               "information each score high alone, so this rates what a layer can predict, not what the fit drew "
               "from it."),
        Figure(_save(out, f"pcc{tag}.png", _accuracy(results, summary, rois)), f"Held-out accuracy per ROI{of}",
               "Mean voxel Pearson r on the held-out videos: bars are the subject mean, dots each subject, the "
               "black tick the noise ceiling (split-half reliability, Spearman-Brown)."),
    ]
    curves = _learning_curves(results, store, rois)
    if curves is not None:
        figures.append(Figure(_save(out, f"learning_curves{tag}.png", curves), f"Learning curves (SGD){of}",
                              "Validation score per epoch of each subject's final fit; the circle marks the "
                              "restored (best) epoch."))
    return figures


def _zoo_figures(out: Path, comparison: pd.DataFrame, results: pd.DataFrame) -> list[Figure]:
    """The comparison of the models (``comparison.csv``): accuracy map, ranking per ROI, profile centres."""
    return [
        Figure(_save(out, "zoo_accuracy.png", _zoo_heatmap(comparison)), "Models x ROIs: held-out accuracy",
               "Mean voxel Pearson r on the held-out videos, subject mean, per model (rows, grouped by family) "
               "and ROI (columns)."),
        Figure(_save(out, "zoo_ranking.png", _zoo_ranking(comparison, results)), "Model ranking per ROI",
               "Per ROI the models from best to worst by subject-mean held-out r: bars the mean, dots each "
               "subject, the dashed line the ROI's noise ceiling (split-half reliability, Spearman-Brown)."),
        Figure(_save(out, "zoo_profile_centre.png", _zoo_centres(comparison)), "Layer profile centre per ROI",
               "The centre of mass of each model's layer profile in normalised depth (0: the first layer read, "
               "1: the last), subject mean, ROIs along the visual pathway; one panel per family. A model whose "
               "profiles follow the visual hierarchy rises from left to right (hierarchy.csv scores it)."),
    ]


def _by_family(comparison: pd.DataFrame) -> list[str]:
    """The models in family order, each family in config order."""
    first = comparison.drop_duplicates("model")
    families = list(dict.fromkeys(first["family"]))
    return [m for f in families for m in first.loc[first["family"] == f, "model"]]


def _zoo_heatmap(comparison: pd.DataFrame):
    models, rois = _by_family(comparison), list(dict.fromkeys(comparison["roi"]))
    values = comparison.pivot(index="model", columns="roi", values="pcc_mean").reindex(index=models, columns=rois)
    family = comparison.drop_duplicates("model").set_index("model")["family"]
    fig = _new_figure(1.5 + 0.7 * len(rois), 1.0 + 0.4 * len(models))
    ax = fig.subplots()
    image = ax.imshow(values.to_numpy(float), cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(rois)), rois, rotation=45, ha="right")
    ax.set_yticks(range(len(models)), [f"{m} ({family[m]})" for m in models])
    fig.colorbar(image, ax=ax, label="held-out Pearson r (subject mean)")
    return fig


def _zoo_ranking(comparison: pd.DataFrame, results: pd.DataFrame):
    rois = list(dict.fromkeys(comparison["roi"]))
    cols = min(3, len(rois))
    rows = -(-len(rois) // cols)
    n_models = comparison["model"].nunique()
    fig = _new_figure(3.2 * cols, (0.9 + 0.25 * n_models) * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, roi in zip(axes.flat, rois, strict=False):
        ranked = comparison[comparison["roi"] == roi].sort_values("pcc_mean", ascending=True)
        positions = np.arange(len(ranked))
        ax.barh(positions, ranked["pcc_mean"], color="#8fb3d9")
        for i, model in enumerate(ranked["model"]):
            values = results.loc[(results["roi"] == roi) & (results["model"] == model), "pcc"].to_numpy(float)
            ax.scatter(values, np.full(len(values), i), color="#1f3b5a", s=10, zorder=3)
        ceiling = ranked["noise_ceiling_mean"].dropna()
        if len(ceiling):
            ax.axvline(float(ceiling.iloc[0]), color="black", linestyle="--", linewidth=1)
        ax.set_yticks(positions, ranked["model"], fontsize=7)
        ax.set_title(roi, fontsize=9)
        ax.axvline(0, color="grey", linewidth=0.8)
    for ax in axes.flat[len(rois):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("held-out r")
    fig.tight_layout()
    return fig


def _zoo_centres(comparison: pd.DataFrame):
    from lwroi.outputs.comparison import VISUAL_HIERARCHY

    rois = sorted(dict.fromkeys(comparison["roi"]), key=lambda r: VISUAL_HIERARCHY.get(r, 99))
    families = list(dict.fromkeys(comparison["family"]))
    fig = _new_figure(3.2 * len(families), 3.0)
    axes = fig.subplots(1, len(families), squeeze=False, sharey=True)[0]
    for ax, family in zip(axes, families, strict=True):
        for model, group in comparison[comparison["family"] == family].groupby("model", sort=False):
            centres = group.set_index("roi")["profile_centre_mean"].reindex(rois)
            ax.plot(range(len(rois)), centres.to_numpy(float), marker="o", linewidth=1, label=model)
        ax.set_xticks(range(len(rois)), rois, rotation=45, ha="right")
        ax.set_title(family or "(unknown family)", fontsize=9)
        ax.set_ylim(-0.05, 1.05)
        ax.legend(fontsize=7, frameon=False)
    axes[0].set_ylabel("profile centre (normalised depth)")
    fig.tight_layout()
    return fig


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
        key = f"fit/{row['model']}/{row['subject']}/{row['roi']}"
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
    params = results.groupby(["model", "roi"], sort=False)[["solver", "wc", "lay"]].first().reset_index()
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
