"""Benchmark lwroi's solvers against the original training loop and himalaya, and extraction against a bare forward.

Run from the repository root (``pip install -e .[bench]`` first)::

    python scripts/bench.py --out bench_results --threads 2

On Algonauts-shaped synthetic data (900 training / 100 held-out videos; 8 layers of 5,830 x 5 conv
dims, as SparseRandomProjection(eps=0.1) gives for 900 samples, and 4096/4096/1000 fc dims; the
real per-ROI voxel counts of sub01..sub10 with planted layer profiles), every method runs in its
own subprocess on the same data and folds, so its peak RSS (``ru_maxrss``) is its own:

(0) the floors: the machine's streaming bandwidth (a STREAM triad) and float32 matmul rate, against
    which every sgd row states its achieved FLOP/s and bytes/s (by the least work a model-epoch
    needs, ``model_epoch_cost``) and its time over the floor;
(a) the original as it runs: the test suite's transcription of its ``predict_fmri_fc2``
    (tests/encoding/original.py), one model at a time, batch-16 Adam with the last short batch
    dropped, every epoch's validation one 16-row batch at a time with its PCC in numpy;
(b) lwroi sgd: ``solve_sgd`` with the 18 tuning models of an ROI (3x3 grid x 2 folds) in one
    batched solve;
(c) lwroi kernel: the whole paper pipeline from a feature store on disk as ``lwroi run`` does it
    with ``solver: kernel`` (10 subjects x 9 ROIs fits, each choosing its layer weights and ridge
    strengths by GCV, with held-out scores, predictions and layer contributions; the 3x3 wc/lay
    grid does not apply, so there is no separate tuning), against its floor measured in the same
    process (the Grams, then every eigendecomposition, eigenbasis projection, gradient product and
    prediction cross-Gram the pipeline made, counted as it ran, each primitive timed alone); and
    one whole-brain-sized ROI (20,000 voxels) in its own process for its peak RSS;
(d) himalaya's ``MultipleKernelRidgeCV`` (random search, 5-fold CV, the same alphas and number of
    candidate weightings) on the same train/test split of the same ROIs.

(a) and (b) are measured at V1's size (232 voxels) and at 600 voxels on a few epochs (``--epochs``);
the V1 rates are projected to the paper's pipeline
(252 models: 162 tuning + 90 fits) at ``--assume-epochs`` epochs per model, with the epoch time
scaled by each ROI's voxel count; the output says so. Extraction is timed on ``--videos``
synthetic clips encoded like the Algonauts videos (H.264 crf 23, 268 px, 3 s): decoding (PyAV, and
torchcodec when it is installed), preprocessing and a random-init AlexNet's forward each alone,
then ``extract_video_features`` against the same extractor on decoded frames, with torch on one
thread so decoding has the other core, and from a frame cache; ``zoo_extract``
times ``lwroi extract``'s path (decoding, default layers, random weights) for one network per
family of a model zoo (``ZOO_BENCH``) on ``--zoo-videos`` clips.

Writes ``bench.csv`` and ``bench.md`` under ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROIS = ("V1", "V2", "V3", "V4", "LOC", "EBA", "FFA", "STS", "PPA")
VOXELS = {
    "V1": (232, 285, 164, 176, 326, 286, 195, 300, 271, 238),
    "V2": (231, 231, 271, 209, 196, 281, 189, 238, 265, 249),
    "V3": (261, 270, 270, 212, 176, 229, 174, 223, 245, 188),
    "V4": (107, 95, 111, 117, 73, 108, 55, 85, 94, 60),
    "LOC": (1843, 1348, 1237, 1153, 1397, 1356, 1117, 1244, 1515, 1034),
    "EBA": (351, 183, 376, 368, 309, 308, 101, 55, 191, 162),
    "FFA": (68, 157, 80, 210, 69, 119, 89, 163, 76, 69),
    "STS": (341, 421, 278, 398, 219, 173, 80, 306, 346, 120),
    "PPA": (425, 153, 368, 225, 210, 216, 33, 150, 262, 165),
}
LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
DIMS = (5830,) * 5 + (4096, 4096, 1000)
N_TRAIN, N_TEST = 900, 100
GRID = [(wc, lay) for wc in (1.0, 10.0, 100.0) for lay in (0.1, 1.0, 10.0)]
FOLDS, SEED = 2, 0
TARGETS = {"sgd_speedup": 10.0, "kernel_pipeline_s": 60.0, "pcc_margin": 0.01, "extract_ratio": 0.8,
           "wb_rss_mb": 4096.0}
WB_VOXELS = 20_000
WIDE_VOXELS = 600


# ---------------------------------------------------------------------------------------- data
def make_data(folder: Path, n_subjects: int) -> None:
    """Feature store (train/test splits) and per-subject ROI responses with planted layer profiles.

    Layers are noisy mixtures of a chain of latent factors (neighbouring layers share most of
    their latents, as in a DNN); a voxel is a planted mix of the layers' latents plus noise set so
    that held-out r lands in the realistic 0.1-0.5 range.
    """
    from lwroi.data import planted_layer_profiles
    from lwroi.features.store import write_feature_store

    rng = np.random.default_rng(SEED)
    n, k = N_TRAIN + N_TEST, 128
    latents, current = [], rng.standard_normal((n, k))
    for _ in LAYERS:
        current = 0.8 * current + 0.6 * rng.standard_normal((n, k))
        latents.append(current)
    arrays = {"train": {}, "test": {}}
    for name, dim, latent in zip(LAYERS, DIMS, latents, strict=True):
        block = (latent @ rng.standard_normal((k, dim)) / np.sqrt(k) + rng.standard_normal((n, dim))).astype(np.float32)
        arrays["train"][name], arrays["test"][name] = block[:N_TRAIN], block[N_TRAIN:]
    rows = {"train": list(range(N_TRAIN)), "test": list(range(N_TRAIN, n))}
    write_feature_store(folder / "store", arrays, {"synthetic": True, "rows": rows})
    profiles = planted_layer_profiles(list(ROIS), len(LAYERS))
    responses = {}
    for s in range(n_subjects):
        for roi in ROIS:
            V = VOXELS[roi][s]
            mix = zip(profiles[roi], latents, strict=True)
            signal = sum(np.sqrt(p) * latent @ rng.standard_normal((k, V)) for p, latent in mix)
            noise = rng.uniform(1.5, 4.0, V) * rng.standard_normal((n, V))
            responses[f"sub{s + 1:02d}/{roi}"] = (signal / signal.std(0) + noise).astype(np.float32)
    np.savez(folder / "responses.npz", **responses)


def load_data(folder: Path) -> tuple[object, dict[str, np.ndarray]]:
    from lwroi.features import open_feature_store

    return open_feature_store(folder / "store"), dict(np.load(folder / "responses.npz"))


# ------------------------------------------------------------------------------- (a) original
def original_epoch_seconds(X: np.ndarray, layer_dims: list[int], Y: np.ndarray, val: np.ndarray, *, epochs: int,
                           wc: float, lay: float) -> float:  # fmt: skip
    """Seconds per epoch (training + validation) of the original's ``predict_fmri_fc2``, one model.

    The baseline is the test suite's transcription of the original (tests/encoding/original.py,
    checked against lwroi's compat fits to 1e-5): autograd ``FC_reg``, ``nn.MSELoss`` and Adam on
    16-row shuffled batches with the last short one dropped, and every epoch's validation as the
    original runs it, one 16-row batch at a time through the autograd graph, its PCC in numpy,
    and a deep copy of the state at each new best. Patience is set past ``epochs`` so every
    epoch runs.
    """
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests/
    from tests.encoding.original import Settings, predict_fmri_fc2

    train = np.setdiff1d(np.arange(len(Y)), val)
    generator = torch.Generator().manual_seed(SEED)
    weight = torch.empty(Y.shape[1], X.shape[1])
    torch.nn.init.xavier_normal_(weight, generator=generator)

    def epoch_order(epoch: int) -> list[int]:
        return torch.randperm(len(train), generator=generator).tolist()

    start = time.perf_counter()
    predict_fmri_fc2(X[train], X[val], Y[train], Y[val], dim_list=layer_dims, w_coe=wc, layer_coe=lay,
                     settings=Settings(epochs=epochs, patience=epochs + 1), initial_weight=weight,
                     epoch_order=epoch_order)  # fmt: skip
    return (time.perf_counter() - start) / epochs


def model_epoch_cost(n_features: int, n_voxels: int, n_train: int, n_val: int, batch: int = 16) -> dict[str, float]:
    """The least work of one model-epoch of the layer-weighted model's minibatch Adam: FLOPs and bytes.

    FLOPs: the forward product and the weight gradient of every training row (2 x 2 n D V) and
    the validation forward (2 n_val D V); the per-element Adam and penalty arithmetic is left out.
    Bytes: per step, one read of W for the forward and one fused sweep that reads W, its first
    and second moments and writes the three back (the gradient tile stays in cache): 7 D V
    float32 values per step, and one read of W for validation. Every entry of W's gradient is
    non-zero at every step (measured), so no step can touch less.
    """
    dv = n_features * n_voxels
    steps = n_train // batch
    return {"flops": 4.0 * n_train * dv + 2.0 * n_val * dv, "bytes": 4.0 * dv * (7 * steps + 1)}


# ----------------------------------------------------------------------------------- workers
def worker(name: str, folder: Path, args: argparse.Namespace) -> dict:
    """Run one method in this (fresh) process and return its measurements."""
    import torch

    torch.set_num_threads(args.threads)
    return {"floor": _work_floor, "original": _work_original, "sgd": _work_sgd, "kernel": _work_kernel,
            "kernel_wb": _work_kernel_wb, "himalaya": _work_himalaya, "extract": _work_extract,
            "zoo_extract": _work_zoo_extract}[name](folder, args)  # fmt: skip


def _sized_responses(responses: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Training responses at the sizes the speed targets name: V1 of sub01, and 600 voxels (sub01's V1-V3)."""
    wide = np.hstack([responses[f"sub01/{roi}"] for roi in ("V1", "V2", "V3")])[:N_TRAIN, :WIDE_VOXELS]
    return {"V1": responses["sub01/V1"][:N_TRAIN], str(WIDE_VOXELS): wide}


def _work_floor(folder: Path, args: argparse.Namespace) -> dict:
    """The machine's streaming bandwidth and float32 matmul rate, with the methods' threads.

    Bandwidth: the best of 5 ``c = a + s * b`` over 256 MB arrays (a STREAM triad: 3 arrays moved).
    Matmul: the best of 5 square float32 products of 2048. These are the floors the solvers'
    rows are measured against.
    """
    import torch

    n = 64 * 2**20
    a, b, c = torch.rand(n), torch.rand(n), torch.empty(n)
    triad = []
    for _ in range(6):
        start = time.perf_counter()
        torch.add(a, b, alpha=0.5, out=c)
        triad.append(time.perf_counter() - start)
    m = torch.rand(2048, 2048)
    products = []
    for _ in range(6):
        start = time.perf_counter()
        torch.mm(m, m)
        products.append(time.perf_counter() - start)
    return {"stream_gbs": 3 * 4 * n / min(triad[1:]) / 1e9, "matmul_gflops": 2 * 2048**3 / min(products[1:]) / 1e9}


def _work_original(folder: Path, args: argparse.Namespace) -> dict:
    from lwroi.data.splits import kfold_splits

    store, responses = load_data(folder)
    X_train = store.load("train")
    val = kfold_splits(N_TRAIN, FOLDS, SEED)[0][1]
    X = np.hstack(X_train)
    out = {}
    for size, Y in _sized_responses(responses).items():
        seconds = original_epoch_seconds(X, [x.shape[1] for x in X_train], Y, val, epochs=args.epochs, wc=10.0,
                                         lay=1.0)  # fmt: skip
        out[f"model_epochs_per_s_{size}"] = 1.0 / seconds
        out[f"voxels_{size}"] = Y.shape[1]
    return out


def _work_sgd(folder: Path, args: argparse.Namespace) -> dict:
    import torch

    from lwroi.config import SGDOptions
    from lwroi.data.splits import kfold_splits
    from lwroi.encoding import LayerWeightedEncoder, solve_sgd, stack_layer_features

    store, responses = load_data(folder)
    X_train, X_test = store.load("train", mmap=True), store.load("test", mmap=True)
    Y_train, Y_test = responses["sub01/V1"][:N_TRAIN], responses["sub01/V1"][N_TRAIN:]
    features, layer_of_feature, _ = stack_layer_features(X_train, "balanced")
    splits = kfold_splits(N_TRAIN, FOLDS, SEED)
    models = [(wc, lay, fold) for wc, lay in GRID for fold in range(FOLDS)]
    out = {}
    for size, Y in _sized_responses(responses).items():
        inputs = (torch.from_numpy(features), torch.from_numpy(layer_of_feature), torch.from_numpy(Y))
        for label, chosen in (("one", models[2:3]), ("grid", models)):
            kwargs = {"train_idx": [splits[f][0] for _, _, f in chosen],
                      "val_idx": [splits[f][1] for _, _, f in chosen],
                      "wc": [m[0] for m in chosen], "lay": [m[1] for m in chosen],
                      "seed": [(SEED, m[2]) for m in chosen]}  # fmt: skip
            solve_sgd(*inputs, options=SGDOptions(max_epochs=1, patience=10**6), **kwargs)  # warm-up
            start = time.perf_counter()
            solve_sgd(*inputs, options=SGDOptions(max_epochs=args.epochs, patience=10**6), **kwargs)
            out[f"model_epochs_per_s_{label}_{size}"] = len(chosen) * args.epochs / (time.perf_counter() - start)
            if label == "grid" and size == "V1":
                out["one_live_of_6_over_alone"] = _one_live_model_rate(inputs, kwargs, args.epochs)
    start = time.perf_counter()
    model = LayerWeightedEncoder(wc=1.0, lay=0.1, solver_params={"lr": 1e-3, "max_epochs": args.sgd_fit_epochs,
                                                                 "patience": 10}, device="cpu")
    model.fit(X_train, Y_train)
    out.update(fit_s=time.perf_counter() - start, fit_epochs=model.n_epochs_, pcc=model.score(X_test, Y_test))
    return out


def _one_live_model_rate(inputs: tuple, grid_kwargs: dict, epochs: int) -> float:
    """Epoch rate of a 6-model grid in which 5 models have stopped over that of its live model trained alone.

    A grid runs as long as its slowest model: this is what the stopped ones still cost it. The 5 are
    stopped in a state saved after one epoch, as early stopping would stop them; each rate is
    ``epochs`` over the time a solve takes with ``epochs`` more epochs than another, so the set-up
    and the final predictions, made once per solve, cancel.
    """
    from lwroi.config import SGDOptions
    from lwroi.encoding import solve_sgd

    rates = []
    for n_models in (6, 1):
        kwargs = {key: value[:n_models] for key, value in grid_kwargs.items()}
        saved: dict = {}
        solve_sgd(*inputs, options=SGDOptions(max_epochs=1, patience=10**6),
                  on_epoch=lambda _, get, saved=saved: saved.update(get()), **kwargs)  # fmt: skip
        saved["tensors"]["stopped"][1:] = True
        seconds = []
        for more in (1, 1 + epochs):
            start = time.perf_counter()
            solve_sgd(*inputs, options=SGDOptions(max_epochs=1 + more, patience=10**6), state=saved, **kwargs)
            seconds.append(time.perf_counter() - start)
        rates.append(epochs / (seconds[1] - seconds[0]))
    return rates[0] / rates[1]


def _work_kernel(folder: Path, args: argparse.Namespace) -> dict:
    from lwroi.encoding import LayerWeightedEncoder

    store, responses = load_data(folder)
    out: dict = {}
    workspace: dict = {}  # kept between fits, as a rank's runner keeps it between units
    # Per-fit time and held-out PCC of the ROIs himalaya also fits: the Gram matrices are computed
    # beforehand (himalaya gets precomputed kernels), no eigendecomposition is cached.
    X_train, X_test = store.load("train", mmap=True), store.load("test", mmap=True)
    start = time.perf_counter()
    warm = LayerWeightedEncoder(solver="kernel", solver_params={"search_steps": 1, "refine_steps": 0}, device="cpu")
    warm.fit(X_train, responses["sub01/V1"][:N_TRAIN, :2], workspace=workspace)
    out["grams_s"] = time.perf_counter() - start
    for roi in args.peer_rois:
        Y = responses[f"sub01/{roi}"]
        workspace["kernel"].clear(grams=False)
        start = time.perf_counter()
        model = LayerWeightedEncoder(solver="kernel", device="cpu").fit(X_train, Y[:N_TRAIN], workspace=workspace)
        out[f"fit_s_{roi}"] = time.perf_counter() - start
        out[f"pcc_{roi}"] = model.score(X_test, Y[N_TRAIN:])
    # The paper's pipeline from the feature store, as `lwroi run` does it with solver: kernel: features
    # are reloaded for every unit, so the Gram matrices are found again by content. The kernel solver
    # chooses its layer weights and ridge strengths by GCV inside each fit, so the pipeline has no
    # wc/lay grid to tune: its tuning is part of every fit.
    counts = _count_kernel_work()
    start = time.perf_counter()
    pccs = []
    for s in range(args.subjects):
        for roi in ROIS:
            Y = responses[f"sub{s + 1:02d}/{roi}"]
            X_train, X_test = store.load("train", mmap=True), store.load("test", mmap=True)
            model = LayerWeightedEncoder(solver="kernel", device="cpu", random_state=s)
            model.fit(X_train, Y[:N_TRAIN], workspace=workspace)
            pccs.append(float(model.score_voxels(X_test, Y[N_TRAIN:]).mean()))
            model.predict([x[::-1] for x in X_test])  # challenge-sized rows of their own, as the pipeline predicts
            model.layer_contributions(X_test, Y[N_TRAIN:])
            model.layer_profile(X_train)  # the fit unit's parameterisation-invariant profile, on the training rows
            searched = min(Y.shape[1], model.solver_options_.search_voxels)
            counts["gradient"] += counts["gradients"]
            counts["projected_voxels"] += searched * (counts["candidates"] + 2 * counts["gradients"])
            counts["projected_voxels"] += 2 * Y.shape[1]  # the refit: every voxel into the eigenbasis and back
            counts["projected_voxels"] += len(X_train) * Y.shape[1]  # the profile: each layer's Gram times the duals
            counts.update(candidates=0, gradients=0)  # this fit's, counted
    out["pipeline_s"] = time.perf_counter() - start
    out["fit_units"] = args.subjects * len(ROIS)
    out["pcc"] = float(np.mean(pccs))
    out.update(_kernel_floor(counts, X_test, out["grams_s"]))
    return out


def _count_kernel_work() -> dict:
    """Count the pipeline's eigendecompositions (and time them: their speed depends on the spectrum), gradients
    and candidates as it runs: the work the method cannot skip."""
    import torch

    from lwroi.encoding import _kernel

    counts = {"eigh": 0, "eigh_s": 0.0, "gradient": 0, "projected_voxels": 0, "candidates": 0, "gradients": 0}
    eigh, gradient, objective = torch.linalg.eigh, _kernel._Problem.gradient, _kernel._Problem.objective

    def counted_eigh(*a: object, **k: object) -> object:
        counts["eigh"] += 1
        start = time.perf_counter()
        try:
            return eigh(*a, **k)
        finally:
            counts["eigh_s"] += time.perf_counter() - start

    def counted_gradient(self: object, *a: object) -> object:
        counts["gradients"] += 1  # this fit's; the pipeline loop adds them to the total
        return gradient(self, *a)

    def counted_objective(self: object, *a: object) -> object:
        counts["candidates"] += 1
        return objective(self, *a)

    torch.linalg.eigh = counted_eigh
    _kernel._Problem.gradient, _kernel._Problem.objective = counted_gradient, counted_objective
    return counts


def _kernel_floor(counts: dict, X_test: list[np.ndarray], grams_s: float) -> dict:
    """The least time of the pipeline's unavoidable work on this machine.

    The Gram matrices (timed before the pipeline); every eigendecomposition of an n x n weighted
    kernel the search made (timed as the pipeline made them: their speed depends on the spectrum);
    and, each primitive timed alone (best of 5), the products with the eigenbasis (n x n x
    voxels: each candidate's search voxels, each gradient's twice, for their projection and the
    n x n matrix they sum into, each refit's voxels into the eigenbasis and back), each
    gradient's two n x n x n products, the cross-Gram products of the held-out and challenge
    rows (once each: every fit on the store shares them, and scoring and contributions share
    theirs). The layer profile of the training rows is made from the solver's Grams (n x n x
    voxels a layer), counted with the projections.
    Everything else (GCV tables, elementwise work, intercepts, scores, loading, checking, Python)
    is overhead.
    """
    import torch

    n, rng = N_TRAIN, np.random.default_rng(SEED)
    A = torch.from_numpy(rng.standard_normal((n, 2 * n)))
    K = A @ A.T / (2 * n)
    features = torch.from_numpy(np.concatenate(X_test, axis=1))
    train_rows = torch.from_numpy(rng.standard_normal((n, features.shape[1])).astype(np.float32))

    def best(f: object, reps: int = 5) -> float:
        f()
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            f()
            times.append(time.perf_counter() - start)
        return min(times)

    t_gemm = best(lambda: K @ K)  # n^3 multiply-adds in float64
    t_cross = best(lambda: features @ train_rows.T)
    parts = {"grams": grams_s, "eigh": counts["eigh_s"], "projections": counts["projected_voxels"] / n * t_gemm,
             "gradients": counts["gradient"] * 2 * t_gemm, "cross_grams": 2 * t_cross}
    return {"floor_s": sum(parts.values()), "floor_parts": parts, "n_eigh": counts["eigh"],
            "eigh_ms": counts["eigh_s"] / max(1, counts["eigh"]) * 1e3,
            "n_gradient": counts["gradient"]}


def _work_kernel_wb(folder: Path, args: argparse.Namespace) -> dict:
    """A whole-brain-sized ROI (20,000 voxels: sub01's ROIs tiled) fitted and scored in one process."""
    from lwroi.encoding import LayerWeightedEncoder

    store, responses = load_data(folder)
    Y = np.hstack([responses[f"sub01/{roi}"] for roi in ROIS])
    Y = np.tile(Y, (1, -(-WB_VOXELS // Y.shape[1])))[:, :WB_VOXELS]
    del responses
    start = time.perf_counter()
    model = LayerWeightedEncoder(solver="kernel", device="cpu").fit(store.load("train"), Y[:N_TRAIN])
    pcc = model.score(store.load("test"), Y[N_TRAIN:])
    return {"wb_s": time.perf_counter() - start, "wb_pcc": pcc}


def _work_himalaya(folder: Path, args: argparse.Namespace) -> dict:
    from himalaya.backend import set_backend
    from himalaya.kernel_ridge import MultipleKernelRidgeCV

    from lwroi.config import KernelOptions
    from lwroi.encoding import stack_layer_features
    from lwroi.encoding.metrics import pearson_r_columns

    set_backend("torch")
    store, responses = load_data(folder)
    X_train, X_test = store.load("train", mmap=True), store.load("test", mmap=True)
    features, layer_of_feature, _ = stack_layer_features([np.vstack(p) for p in zip(X_train, X_test, strict=True)],
                                                         "balanced")  # fmt: skip
    blocks = [features[:, layer_of_feature == layer].astype(np.float64) for layer in range(len(LAYERS))]
    # (L, n, n_train), computed once and not timed; float32 like lwroi's search
    grams = np.stack([b @ b[:N_TRAIN].T for b in blocks]).astype(np.float32)
    out: dict = {}
    for roi in args.peer_rois:
        Y = responses[f"sub01/{roi}"]
        model = MultipleKernelRidgeCV(kernels="precomputed", solver="random_search", fit_intercept=True, cv=5,
                                      random_state=SEED,
                                      solver_params={"n_iter": 24, "alphas": np.asarray(KernelOptions().alphas),
                                                     "progress_bar": False})  # fmt: skip
        start = time.perf_counter()
        model.fit(grams[:, :N_TRAIN], Y[:N_TRAIN])
        pred = np.asarray(model.predict(grams[:, N_TRAIN:]))
        out[f"fit_s_{roi}"] = time.perf_counter() - start
        out[f"pcc_{roi}"] = float(pearson_r_columns(Y[N_TRAIN:], pred).mean())
    return out


def _bench_videos(folder: Path, n: int) -> list[Path]:
    """``n`` synthetic clips encoded like the Algonauts videos: H.264 crf 23, 268 px, 3 s at 15 or 30 fps."""
    from lwroi.data import make_video_frames, write_video

    rng = np.random.default_rng(SEED)
    videos = folder / "videos"
    videos.mkdir(exist_ok=True)
    paths = []
    for i in range(n):
        fps = int(rng.choice([15, 30]))
        path = videos / f"{i:04d}.mp4"
        if not path.exists():
            write_video(path, make_video_frames(rng, 3 * fps, size=268), fps, crf=23)
        paths.append(path)
    return paths


ZOO_BENCH = (("cnn", "resnet50", 224, 16), ("transformer", "vit_b_16", 224, 16), ("hybrid", "maxvit_t", 224, 16),
             ("clip", "timm:vit_base_patch16_clip_224.openai", 224, 16), ("video", "r3d_18", 112, 16))
"""One network per family, as the paper-like zoo runs it: (family, model, image_size, frames per video)."""


def _work_zoo_extract(folder: Path, args: argparse.Namespace) -> dict:
    """Extraction throughput of one network per family, default layers, random weights, as `lwroi extract` runs it."""
    import warnings

    from lwroi.config import FeatureConfig
    from lwroi.features import build_extractor, extract_video_features

    paths = _bench_videos(folder, args.zoo_videos + 1)
    out = {}
    for family, model, size, frames in ZOO_BENCH:
        f = FeatureConfig(model=model, image_size=size, frame_count=frames)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            extractor, _ = build_extractor(f, device="cpu")
        sampling = {"sampling": "count", "count": frames, "stride": 4}
        extract_video_features(paths[:1], extractor, batch_size=f.batch_size, **sampling)  # warm-up
        start = time.perf_counter()
        extract_video_features(paths[1:], extractor, batch_size=f.batch_size, **sampling)
        out[family] = {"model": model, "size": size, "frames": frames,
                       "videos_per_s": args.zoo_videos / (time.perf_counter() - start)}
    return out


def _work_extract(folder: Path, args: argparse.Namespace) -> dict:
    """Extraction's parts, apart and together, with torch on one thread so decoding has a core of its own.

    Decode (PyAV, lwroi's reader; torchcodec beside it when installed), preprocess (to float,
    antialiased resize to 224, normalise: what the extractor does before the network) and the
    forward of a random-init AlexNet's eight layers, each alone on decoded frames; the
    extractor on decoded frames (preprocess + forward, decode-free); end-to-end extraction with
    decoding in background threads, and from a frame cache a first model filled.
    """
    import warnings

    import torch

    from lwroi.features import ALEXNET_LAYERS, FrameCache, LayerFeatureExtractor, extract_video_features, load_model
    from lwroi.features.video import read_video_frames

    torch.set_num_threads(1)
    paths = _bench_videos(folder, args.videos)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, _ = load_model("alexnet", weights="random", seed=SEED)
    extractor = LayerFeatureExtractor(model, dict(ALEXNET_LAYERS), image_size=224, device="cpu")
    sampling = {"sampling": "count", "count": 16, "stride": 4}
    batch = 64
    out: dict = {"clip_kb": float(np.mean([p.stat().st_size for p in paths]) / 1e3)}

    start, cpu = time.perf_counter(), time.process_time()
    clips = [read_video_frames(p, **sampling) for p in paths]
    out["decode_pyav_ms"] = (time.perf_counter() - start) / len(paths) * 1e3
    out["decode_pyav_cpu_ms"] = (time.process_time() - cpu) / len(paths) * 1e3
    out.update(_torchcodec_decode(paths, clips, sampling))
    frames = torch.from_numpy(np.concatenate(clips))
    n = len(frames)
    extractor(frames[:batch])  # warm-up
    timed = {"preprocess": 0.0, "forward": 0.0}
    with torch.inference_mode():
        for k in range(0, n, batch):
            t0 = time.perf_counter()
            x = frames[k : k + batch].permute(0, 3, 1, 2).contiguous().float().div_(255)
            x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", antialias=True,
                                                align_corners=False)
            x = (x - extractor._mean) / extractor._std
            t1 = time.perf_counter()
            extractor._graph(x)
            timed["preprocess"] += t1 - t0
            timed["forward"] += time.perf_counter() - t1
    out.update({f"{name}_fps": n / s for name, s in timed.items()})

    def decode_free() -> None:
        for k in range(0, n, batch):
            extractor(frames[k : k + batch])

    with tempfile.TemporaryDirectory(prefix="lwroi-bench-frames-") as tmp:
        cache = FrameCache(tmp)
        passes = {"extractor": decode_free,
                  "extract": lambda: extract_video_features(paths, extractor, batch_size=batch, **sampling),
                  "extract_cache_fill": lambda: extract_video_features(paths, extractor, batch_size=batch,
                                                                       frame_cache=cache, **sampling),
                  "extract_cached": lambda: extract_video_features(paths, extractor, batch_size=batch,
                                                                   frame_cache=cache, **sampling)}  # fmt: skip
        best = dict.fromkeys(passes, 0.0)
        for _ in range(3):  # interleaved, best of three: the machine's noise hits every pass alike
            for name, run in passes.items():
                start = time.perf_counter()
                run()
                best[name] = max(best[name], n / (time.perf_counter() - start))
            out["cached_clip_kb"] = float(np.mean([p.stat().st_size for p in Path(tmp).rglob("*.npz")]) / 1e3)
            start, cpu = time.perf_counter(), time.process_time()
            for path in paths:
                cache.read(path, **sampling)
            wall, cpu = (time.perf_counter() - start) / len(paths), (time.process_time() - cpu) / len(paths)
            if wall * 1e3 < out.get("cache_read_ms", np.inf):
                out["cache_read_ms"], out["cache_read_cpu_ms"] = wall * 1e3, cpu * 1e3
            shutil.rmtree(tmp)  # the next round fills the cache again
            cache = FrameCache(tmp)
    out.update({f"{name}_fps": fps for name, fps in best.items()})
    out["frames"] = n
    return out


def _torchcodec_decode(paths: list[Path], clips: list[np.ndarray], sampling: dict) -> dict:
    """torchcodec's time for the same frames (``get_frames_at``, one FFmpeg thread), if it is installed and loads.

    It needs FFmpeg's shared libraries (4 to 8) on the library path; PyAV brings its own.
    """
    try:
        from torchcodec.decoders import VideoDecoder
    except (ImportError, RuntimeError, OSError) as exc:
        return {"torchcodec": f"not available ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"}
    from lwroi.features.video import sample_frame_indices

    def decode(path: Path) -> np.ndarray:
        decoder = VideoDecoder(str(path), seek_mode="exact", num_ffmpeg_threads=1, dimension_order="NHWC")
        indices = sample_frame_indices(decoder.metadata.num_frames, **sampling).tolist()
        return decoder.get_frames_at(indices=indices).data.numpy()

    try:
        decode(paths[0])  # loads FFmpeg
    except (RuntimeError, OSError) as exc:
        return {"torchcodec": f"not available ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"}
    start, cpu = time.perf_counter(), time.process_time()
    got = [decode(p) for p in paths]
    ms = (time.perf_counter() - start) / len(paths) * 1e3
    cpu_ms = (time.process_time() - cpu) / len(paths) * 1e3
    same = all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(got, clips, strict=True))
    return {"torchcodec": "same frames as PyAV" if same else "frames differ from PyAV's", "decode_torchcodec_ms": ms,
            "decode_torchcodec_cpu_ms": cpu_ms}


# ------------------------------------------------------------------------------------ driver
def run_worker(name: str, folder: Path, args: argparse.Namespace) -> dict:
    """Run a method in a subprocess with ``--threads`` threads; add its peak RSS and wall time."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    cmd = [sys.executable, __file__, "--worker", name, "--data", str(folder), *args.passthrough]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker {name!r} failed:\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - start
    print(f"  {name}: done in {result['wall_s']:.1f} s", flush=True)
    return result


def report(results: dict, args: argparse.Namespace, out: Path) -> None:
    """Rows of (method, measure, value, target, verdict); written as CSV and markdown, printed."""
    import pandas as pd

    rows = []

    def add(method: str, measure: str, value: float, unit: str, target: str = "", met: bool | None = None) -> None:
        rows.append({"method": method, "measure": measure, "value": round(float(value), 4), "unit": unit,
                     "target": target, "met": "" if met is None else ("yes" if met else "NO")})  # fmt: skip

    floor = results.get("floor")
    if floor:
        add("floor", "streaming bandwidth (triad, 256 MB arrays)", floor["stream_gbs"], "GB/s")
        add("floor", "float32 matmul (2048 x 2048)", floor["matmul_gflops"], "GFLOP/s")
    total_voxels = sum(sum(v[: args.subjects]) for v in VOXELS.values())
    tune_voxels = sum(v[0] for v in VOXELS.values())
    # voxel-weighted count of model fits: 18 tuning models per sub01 ROI + 1 fit per subject x ROI
    voxel_models = (len(GRID) * FOLDS * tune_voxels + total_voxels) / VOXELS["V1"][0]
    n_features = sum(DIMS)
    rates = {"original": ("original", "model_epochs_per_s_{}"), "sgd": ("sgd", "model_epochs_per_s_grid_{}"),
             "sgd, one model": ("sgd", "model_epochs_per_s_one_{}")}  # fmt: skip
    for size in ("V1", str(WIDE_VOXELS)):
        voxels = VOXELS["V1"][0] if size == "V1" else WIDE_VOXELS
        cost = model_epoch_cost(n_features, voxels, N_TRAIN // FOLDS, N_TRAIN // FOLDS)
        floor_s = None
        if floor:
            floor_s = max(cost["flops"] / floor["matmul_gflops"], cost["bytes"] / floor["stream_gbs"]) / 1e9
        if floor_s:
            add("floor", f"least time of a model-epoch at {voxels} voxels (FLOPs or bytes, whichever binds)",
                floor_s, "s")  # fmt: skip
        for label, (method, key) in rates.items():
            r = results.get(method)
            if r is None:
                continue
            rate = r[key.format(size)]
            add(label, f"model-epochs per second ({voxels} voxels)", rate, "1/s")
            add(label, f"  achieved matmul FLOP rate ({voxels} voxels)", cost["flops"] * rate / 1e9, "GFLOP/s")
            add(label, f"  achieved bytes/s by the least-traffic count ({voxels} voxels)", cost["bytes"] * rate / 1e9,
                "GB/s")  # fmt: skip
            if floor_s:
                add(label, f"  time over the floor ({voxels} voxels)", 1.0 / rate / floor_s, "x")
        if "original" in results and "sgd" in results:
            base = results["original"][f"model_epochs_per_s_{size}"]
            sgd = results["sgd"]
            best = max(sgd[f"model_epochs_per_s_grid_{size}"], sgd[f"model_epochs_per_s_one_{size}"])
            speedup = best / base
            if floor_s and 1.0 / (TARGETS["sgd_speedup"] * base) < floor_s:  # 10x is faster than the machine allows
                over = 1.0 / best / floor_s
                add("sgd", f"within 1.3x of the floor ({voxels} voxels; 10x the original is below it)", over, "x",
                    "<= 1.3x", over <= 1.3)  # fmt: skip
            add("sgd", f"speed-up over the original, per model-epoch ({voxels} voxels)", speedup, "x",
                f">= {TARGETS['sgd_speedup']:g}x", speedup >= TARGETS["sgd_speedup"])  # fmt: skip
    if "sgd" in results:
        add("sgd", "6-model grid with 5 stopped: its epochs per second / its live model's alone (232 voxels)",
            results["sgd"]["one_live_of_6_over_alone"], "x")  # fmt: skip
    for name, key in (("original", "model_epochs_per_s_V1"), ("sgd", "model_epochs_per_s_grid_V1")):
        r = results.get(name)
        if r is None:
            continue
        projected = voxel_models * args.assume_epochs / r[key]
        add(name, f"projected paper pipeline ({args.assume_epochs} epochs/model, scaled by voxels)", projected / 3600,
            "h")  # fmt: skip
        add(name, "peak RSS", r["peak_rss_mb"], "MB")
    if "sgd" in results:
        add("sgd", f"held-out PCC V1 sub01 (lr 1e-3, <= {args.sgd_fit_epochs} epochs)", results["sgd"]["pcc"], "r")
    if "kernel" in results:
        r = results["kernel"]
        seconds = r["pipeline_s"]
        add("kernel", f"paper pipeline: {r['fit_units']} fits (GCV search inside each) + predictions + contributions "
            "+ profiles",
            seconds, "s", f"<= {TARGETS['kernel_pipeline_s']:g} s",
            seconds <= TARGETS["kernel_pipeline_s"])  # fmt: skip
        add("kernel", "  Gram matrices of the feature store (once, before the pipeline)", r["grams_s"], "s")
        add("kernel", f"  floor: Grams + {r['n_eigh']} eigendecompositions ({r['eigh_ms']:.0f} ms each) + projections "
            f"+ {r['n_gradient']} gradients' products + cross-Grams, each timed alone", r["floor_s"], "s")
        for part, part_s in r["floor_parts"].items():
            add("kernel", f"    of which {part}", part_s, "s")
        add("kernel", "  pipeline / floor", seconds / r["floor_s"], "x", "<= 1.5x", seconds / r["floor_s"] <= 1.5)
        add("kernel", "mean held-out PCC over the fits", r["pcc"], "r")
        add("kernel", "peak RSS", r["peak_rss_mb"], "MB")
    if "kernel_wb" in results:
        r = results["kernel_wb"]
        add("kernel", f"whole-brain-sized ROI ({WB_VOXELS} voxels): fit + score", r["wb_s"], "s")
        add("kernel", "  its peak RSS", r["peak_rss_mb"], "MB", f"< {TARGETS['wb_rss_mb']:g} MB",
            r["peak_rss_mb"] < TARGETS["wb_rss_mb"])  # fmt: skip
    if "himalaya" in results and "kernel" in results:
        for roi in args.peer_rois:
            k, h = results["kernel"], results["himalaya"]
            add("kernel", f"fit + search {roi} sub01 ({VOXELS[roi][0]} voxels)", k[f"fit_s_{roi}"], "s",
                f"< himalaya {h[f'fit_s_{roi}']:.2f} s", k[f"fit_s_{roi}"] < h[f"fit_s_{roi}"])  # fmt: skip
            add("himalaya", f"fit + predict {roi} sub01", h[f"fit_s_{roi}"], "s")
            close = k[f"pcc_{roi}"] >= h[f"pcc_{roi}"] - TARGETS["pcc_margin"]
            target = f">= himalaya {h[f'pcc_{roi}']:.3f} - 0.01"
            add("kernel", f"held-out PCC {roi} sub01", k[f"pcc_{roi}"], "r", target, close)
            add("himalaya", f"held-out PCC {roi} sub01", h[f"pcc_{roi}"], "r")
        add("himalaya", "peak RSS", results["himalaya"]["peak_rss_mb"], "MB")
    if "extract" in results:
        r = results["extract"]
        clips = f"{r['frames']} frames of {args.videos} clips of {r['clip_kb']:.0f} kB, H.264 crf 23, 268 px"
        add("extract", f"decode with PyAV (FFmpeg's own threads), ms per clip ({clips})", r["decode_pyav_ms"], "ms")
        add("extract", "  CPU time per clip (what bounds several clips decoded at once)", r["decode_pyav_cpu_ms"], "ms")
        if "decode_torchcodec_ms" in r:
            add("extract", f"decode with torchcodec (one FFmpeg thread), ms per clip ({r['torchcodec']})",
                r["decode_torchcodec_ms"], "ms")  # fmt: skip
            add("extract", "  CPU time per clip", r["decode_torchcodec_cpu_ms"], "ms")
        else:
            add("extract", f"decode with torchcodec: {r['torchcodec']}", float("nan"), "ms")
        add("extract", "read the same frames from the frame cache (sha256 of the clip, CRC-checked npz), ms per clip",
            r["cache_read_ms"], "ms")  # fmt: skip
        add("extract", "  CPU time per clip", r["cache_read_cpu_ms"], "ms")
        add("extract", "preprocess alone (float, resize to 224, normalise), frames/s", r["preprocess_fps"], "1/s")
        add("extract", "AlexNet forward alone (8 layers), frames/s", r["forward_fps"], "1/s")
        add("extract", "decode-free extraction (extractor on decoded frames), frames/s", r["extractor_fps"], "1/s")
        add("extract", "extraction, decoding in background threads, frames/s", r["extract_fps"], "1/s")
        ratio = r["extract_fps"] / r["extractor_fps"]
        add("extract", "extraction / decode-free extraction (torch on 1 thread, decoding on the other core)", ratio,
            "", f">= {TARGETS['extract_ratio']:g}", ratio >= TARGETS["extract_ratio"])  # fmt: skip
        add("extract", "extraction filling the frame cache (first model of a study), frames/s",
            r["extract_cache_fill_fps"], "1/s")  # fmt: skip
        add("extract", f"extraction from the frame cache (every later model; {r['cached_clip_kb']:.0f} kB a clip), "
            "frames/s", r["extract_cached_fps"], "1/s")  # fmt: skip
    for family, r in results.get("zoo_extract", {}).items():
        if isinstance(r, dict):
            add("zoo_extract", f"{family}: {r['model']} at {r['size']} px, {r['frames']} frames per video, videos/s",
                r["videos_per_s"], "1/s")  # fmt: skip
    table = pd.DataFrame(rows)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "bench.csv", index=False)
    machine = (f"{platform.node()}: {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, "
               f"{args.threads} threads per method; load average before/after "
               f"{results['load_before']} / {os.getloadavg()[0]:.2f}")  # fmt: skip
    notes = [f"Machine: {machine}.",
             f"(a) and (b) ran {args.epochs} epochs each and are projected; (c) and (d) ran in full."]  # fmt: skip
    missed = table[table["met"] == "NO"]
    for _, row in missed.iterrows():
        notes.append(
            f"MISSED: {row['method']} {row['measure'].strip()}: {row['value']} {row['unit']} vs {row['target']}."
        )
    markdown = _markdown(table) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    (out / "bench.md").write_text(markdown)
    print(markdown)


def _markdown(table) -> str:
    """A pipe table (pandas' to_markdown needs the optional tabulate package)."""
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_results"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2, help="epochs timed for (a) and (b)")
    parser.add_argument("--assume-epochs", type=int, default=100, help="epochs per model in the projections")
    parser.add_argument("--sgd-fit-epochs", type=int, default=30, help="epoch cap of (b)'s held-out fit")
    parser.add_argument("--subjects", type=int, default=10)
    parser.add_argument("--videos", type=int, default=32)
    parser.add_argument("--zoo-videos", type=int, default=4, help="videos timed per network of zoo_extract")
    parser.add_argument("--peer-rois", nargs="+", default=["V1", "LOC"])
    parser.add_argument("--methods", nargs="+",
                        default=["floor", "original", "sgd", "kernel", "kernel_wb", "himalaya", "extract",
                                 "zoo_extract"])
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        result = worker(args.worker, args.data, args)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    args.passthrough = [f"--threads={args.threads}", f"--epochs={args.epochs}", f"--subjects={args.subjects}",
                        f"--videos={args.videos}", f"--zoo-videos={args.zoo_videos}",
                        f"--sgd-fit-epochs={args.sgd_fit_epochs}", "--peer-rois",
                        *args.peer_rois]  # fmt: skip
    results: dict = {"load_before": f"{os.getloadavg()[0]:.2f}"}
    with tempfile.TemporaryDirectory(prefix="lwroi-bench-") as tmp:
        folder = Path(tmp)
        print(f"writing synthetic data to {folder} ...", flush=True)
        make_data(folder, args.subjects)
        for name in args.methods:
            results[name] = run_worker(name, folder, args)
    report(results, args, args.out)


if __name__ == "__main__":
    main()
