"""Peak memory (RSS) and scratch disk of feature extraction and of the features phase, measured, then extrapolated.

Run from the repository root (CPU only, random weights, nothing downloaded)::

    python scripts/measure_memory.py --models vgg16 --videos 16 24 --frames 8 --threads 2

Every measurement runs in its own child process, which reports its peak resident memory (see
:func:`_peak_mb`) as JSON, so no phase inherits another's pages:

(a) ``extract``: one extraction shard of K synthetic clips (``lwroi.data.synthetic``'s clips,
    decoded with PyAV) through ``build_extractor`` and ``extract_video_features`` at
    ``--image-size``, then ``save_raw_shard``: the ``extract`` unit of a run. Run at two values
    of K with the same ``--batch-size``, both of at least two forward batches (the previous
    batch's activations are still held while the next one runs: a fixed cost reached only from
    the second batch on), so the difference is what one more video of a shard costs.
(b) ``features``: the ``features`` unit on that shard: ``load_raw_shards`` (memory-mapped),
    ``reduce_features`` (streaming, ``--memory-budget``) and ``write_feature_store``; and, for
    comparison, the same with every layer first read into memory (the former ``load_raw_shards``).
(c) ``srp``: the sparse random projection matrix of the widest reduced layer, made as
    ``LayerReducer.fit`` makes it (from the shape alone), for the training rows of the small run
    and of the full dataset.

Extrapolation to ``--full-videos`` (Algonauts: 1,102; ``--full-train`` = 900 training rows, as
``n_train_videos: 1000`` less ``n_test: 100``), per rank, with S = ``run.extract_shards``:

- extraction: E(V) = E(K2) + (V - K2) x slope, V = ceil(1102 / S) videos in the rank's shard,
  slope = max(measured (E(K2) - E(K1)) / (K2 - K1), sum of layer dims x 4 B). Everything but the
  shard's feature rows (interpreter, torch, the network, the forward batch) is fixed.
- features: F <= F(K2) + SRP(widest layer, 900 training rows) + 1102 x sum of reduced dims x 4 B.
  The chunk working set is bounded by the budget, not by the videos; what grows with the total
  videos is the reduced output (held for the store) and, with the training rows, the SRP size
  (k = JL(n_train, eps), logarithmic). It is an upper bound: F(K2) already holds a smaller SRP
  matrix and outputs.
- disk: raw shards 1102 x sum of dims x 4 B (a rank writes its shard's share), the feature store
  1102 x sum of reduced dims x 4 B.

Prints a table; ``--json`` writes every measurement.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MB = 2**20
VIDEO_SIZE = 128
VIDEO_FPS = 30


def _peak_mb() -> float:
    """This process's peak resident memory so far, in MB.

    Linux's ``ru_maxrss`` survives an exec: a child started by a parent holding 2 GB reports at
    least 2 GB. ``VmHWM``, the high-water mark of the process's own address space, starts afresh
    with the exec'd program; ``ru_maxrss`` (kB on Linux) is the fallback where there is no /proc.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------ children
def child_extract(args: argparse.Namespace) -> dict[str, Any]:
    """(a): one raw shard of ``args.n`` clips, as the ``extract`` unit makes it."""
    import numpy as np
    import torch

    from lwroi.config import FeatureConfig
    from lwroi.features import build_extractor, extract_video_features, save_raw_shard

    torch.set_num_threads(args.threads)
    f = FeatureConfig(model=args.model, frame_count=args.frames, image_size=args.image_size,
                      batch_size=args.batch_size)
    extractor, weights = build_extractor(f, device="cpu")
    base = _peak_mb()
    start = time.perf_counter()
    paths = sorted(Path(args.videos_dir).glob("*.mp4"))[: args.n]
    feats = extract_video_features(paths, extractor, sampling=f.frame_sampling, count=f.frame_count,
                                   stride=f.frame_stride, batch_size=f.batch_size)
    save_raw_shard(args.out, feats, np.arange(len(paths)), meta={"weights": weights, "spatial": extractor.spatial})
    return {"base_mb": base, "peak_mb": _peak_mb(), "seconds": time.perf_counter() - start,
            "dims": extractor.dims, "spatial": extractor.spatial, "disk_bytes": _folder_bytes(Path(args.out))}


def child_features(args: argparse.Namespace) -> dict[str, Any]:
    """(b): the ``features`` unit on the raw shard ``args.shard``, streaming or (``--in-memory``) not."""
    import numpy as np

    from lwroi.data import heldout_split
    from lwroi.features import load_raw_shards, reduce_features, write_feature_store
    from lwroi.features.reduce import chunk_rows

    base = _peak_mb()
    start = time.perf_counter()
    raw, order, extracted = load_raw_shards([args.shard])
    if args.in_memory:
        raw = {layer: np.asarray(X) for layer, X in raw.items()}
    n_train_videos = len(order) - args.challenge
    train, test = heldout_split(n_train_videos, args.n_test)
    rows = {"train": train, "test": test, "challenge": np.arange(n_train_videos, len(order))}
    reduce = {layer: extracted["spatial"][layer] for layer in raw}
    arrays, described = reduce_features(raw, rows, reduce=reduce, method="srp", srp_eps=args.eps, pca_ratio=0.98,
                                        test_scaler="train", seed=0, memory_budget=args.memory_budget)
    write_feature_store(args.out, arrays, {"reduction": described})
    widest = max(X.shape[1] for X in raw.values())
    return {"base_mb": base, "peak_mb": _peak_mb(), "seconds": time.perf_counter() - start,
            "n_train": len(train), "dims": described["dims"], "disk_bytes": _folder_bytes(Path(args.out)),
            "chunk_rows_widest": chunk_rows(widest, args.memory_budget)}


def child_srp(args: argparse.Namespace) -> dict[str, Any]:
    """(c): the SRP matrix of a layer of ``args.n_features`` for ``args.n_train`` rows, as LayerReducer.fit makes it."""
    import numpy as np
    import scipy.sparse as sp
    from sklearn.random_projection import SparseRandomProjection

    base = _peak_mb()
    start = time.perf_counter()
    stand_in = sp.csr_matrix((args.n_train, args.n_features), dtype=np.float32)
    components = SparseRandomProjection(eps=args.eps, random_state=0).fit(stand_in).components_
    held = components.data.nbytes + components.indices.nbytes + components.indptr.nbytes
    return {"base_mb": base, "peak_mb": _peak_mb(), "seconds": time.perf_counter() - start,
            "n_components": components.shape[0], "nnz": int(components.nnz), "matrix_mb": held / MB}


def child_check(args: argparse.Namespace) -> dict[str, Any]:
    """Why ``build_extractor`` cannot make ``args.model`` at these settings (empty: it can)."""
    from lwroi.config import FeatureConfig
    from lwroi.features import model_problems

    return {"problems": model_problems(FeatureConfig(model=args.model, frame_count=args.frames,
                                                     image_size=args.image_size))}


CHILDREN = {"check": child_check, "extract": child_extract, "features": child_features, "srp": child_srp}


def run_child(kind: str, threads: int, **options: Any) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter with ``threads`` threads; its JSON line back."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "OPENBLAS_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, __file__, "--child", kind, f"--threads={threads}"]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        cmd += [flag] if value is True else [] if value is False else [flag, str(value)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"measurement {kind} {options} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------ driver
def write_videos(folder: Path, n: int) -> None:
    """``n`` synthetic clips of lwroi's own kind (3 s at 30 fps, 128 px)."""
    import numpy as np

    from lwroi.data.synthetic import CLIP_SECONDS, make_video_frames, write_video

    folder.mkdir(parents=True, exist_ok=True)
    for index in range(n):
        frames = make_video_frames(np.random.default_rng([7, index]), CLIP_SECONDS * VIDEO_FPS, VIDEO_SIZE)
        write_video(folder / f"{index + 1:04d}_synth.mp4", frames, VIDEO_FPS)


def measure_model(model: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement of one model, and its extrapolation to the full dataset."""
    from sklearn.random_projection import johnson_lindenstrauss_min_dim

    k1, k2 = args.videos
    extract = {}
    for k in (k1, k2):
        print(f"  {model}: extracting {k} videos ...", flush=True)
        extract[k] = run_child("extract", args.threads, model=model, n=k, videos_dir=work / "videos",
                               out=work / model / f"shard-{k}", frames=args.frames, image_size=args.image_size,
                               batch_size=args.batch_size)
    shard = work / model / f"shard-{k2}"
    features = {}
    for mode in ("streaming", "in_memory"):
        print(f"  {model}: features phase ({mode}) ...", flush=True)
        features[mode] = run_child("features", args.threads, shard=shard, out=work / model / f"store-{mode}",
                                   challenge=1, n_test=2, eps=args.eps, memory_budget=args.memory_budget,
                                   in_memory=mode == "in_memory")
    dims, spatial = extract[k2]["dims"], extract[k2]["spatial"]
    widest = max((d for layer, d in dims.items() if spatial[layer]), default=0)
    srp = {}
    for n_train in (features["streaming"]["n_train"], args.full_train):
        print(f"  {model}: SRP matrix of {widest} features for {n_train} training rows ...", flush=True)
        srp[n_train] = run_child("srp", args.threads, n_features=widest, n_train=n_train, eps=args.eps)
    raw_per_video = sum(dims.values()) * 4
    full_k = int(johnson_lindenstrauss_min_dim(args.full_train, eps=args.eps))
    reduced = sum(min(full_k, d) if spatial[layer] and full_k < d else d for layer, d in dims.items())
    slope_measured = (extract[k2]["peak_mb"] - extract[k1]["peak_mb"]) / (k2 - k1)
    slope = max(slope_measured, raw_per_video / MB)
    store_full = args.full_videos * reduced * 4 / MB
    full_srp = srp[args.full_train]
    return {
        "extract": extract, "features": features, "srp": srp, "widest": widest, "raw_per_video_mb": raw_per_video / MB,
        "slope_measured_mb": slope_measured, "slope_mb": slope, "full_reduced_dims": reduced, "full_k": full_k,
        "extract_full_mb": {s: extract[k2]["peak_mb"] + (math.ceil(args.full_videos / s) - k2) * slope
                            for s in args.shards},
        "features_full_mb": features["streaming"]["peak_mb"] + (full_srp["peak_mb"] - full_srp["base_mb"]) + store_full,
        "former_features_full_mb": features["streaming"]["base_mb"] + args.full_videos * raw_per_video / MB,
        "raw_disk_full_mb": args.full_videos * raw_per_video / MB, "store_disk_full_mb": store_full,
    }


def report(model: str, m: dict[str, Any], args: argparse.Namespace) -> str:
    """The table of one model: what was measured, then the full-size figures per rank."""
    k1, k2 = args.videos
    ex, fs, fm = m["extract"], m["features"]["streaming"], m["features"]["in_memory"]
    small, full = (m["srp"][n] for n in sorted(m["srp"]))
    gb = 1024
    lines = [
        f"## {model}: {len(ex[k2]['dims'])} layers, {sum(ex[k2]['dims'].values()):,} raw dims a video "
        f"({m['raw_per_video_mb']:.1f} MB), widest reduced layer {m['widest']:,}",
        "",
        "| measured | videos | peak RSS MB | fixed MB (before work) | seconds | disk MB |",
        "|---|---|---|---|---|---|",
    ]
    for k in (k1, k2):
        lines.append(f"| (a) extract one shard | {k} | {ex[k]['peak_mb']:.0f} | {ex[k]['base_mb']:.0f} | "
                     f"{ex[k]['seconds']:.1f} | {ex[k]['disk_bytes'] / MB:.0f} (raw shard) |")
    lines += [
        f"| (b) features, streaming (chunk {fs['chunk_rows_widest']} rows of the widest layer) | {k2} | "
        f"{fs['peak_mb']:.0f} | {fs['base_mb']:.0f} | {fs['seconds']:.1f} | {fs['disk_bytes'] / MB:.1f} (store) |",
        f"| (b') features, every layer read into memory first (former) | {k2} | {fm['peak_mb']:.0f} | "
        f"{fm['base_mb']:.0f} | {fm['seconds']:.1f} | |",
    ]
    for n, s in ((sorted(m["srp"])[0], small), (args.full_train, full)):
        lines.append(f"| (c) SRP matrix {s['n_components']:,} x {m['widest']:,}, {s['nnz']:,} nonzeros "
                     f"({s['matrix_mb']:.0f} MB held), {n} train rows | | {s['peak_mb']:.0f} | {s['base_mb']:.0f} | "
                     f"{s['seconds']:.1f} | |")
    lines += [
        "",
        f"extraction slope: {m['slope_measured_mb']:.1f} MB/video measured, {m['raw_per_video_mb']:.1f} MB/video of "
        f"feature rows; used {m['slope_mb']:.1f}",
        "",
        f"| full size: {args.full_videos} videos, {args.full_train} train rows, k = {m['full_k']:,} | per rank |",
        "|---|---|",
    ]
    for s, mb in m["extract_full_mb"].items():
        lines.append(f"| extract unit, extract_shards = {s} ({math.ceil(args.full_videos / s)} videos a shard) | "
                     f"{mb / gb:.1f} GB RSS, {math.ceil(args.full_videos / s) * m['raw_per_video_mb'] / gb:.1f} GB "
                     "raw shard written |")
    lines += [
        f"| features unit (streaming, budget {args.memory_budget / MB:.0f} MB) | <= {m['features_full_mb'] / gb:.2f} "
        "GB RSS |",
        f"| features unit, former (all raw layers in memory) | >= {m['former_features_full_mb'] / gb:.1f} GB RSS |",
        f"| scratch disk: raw shards (all ranks) | {m['raw_disk_full_mb'] / gb:.1f} GB |",
        f"| feature store ({m['full_reduced_dims']:,} reduced dims a video) | {m['store_disk_full_mb'] / gb:.2f} GB |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vgg16"])
    parser.add_argument("--videos", nargs=2, type=int, default=[16, 24], metavar=("K1", "K2"),
                        help="videos of the two measured extraction shards (default: 16 24)")
    parser.add_argument("--frames", type=int, default=8, help="frames sampled a clip (default: 8)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64, help="frames a forward pass (the config's default)")
    parser.add_argument("--memory-budget", type=int, default=256 * MB, help="features phase chunk budget, bytes")
    parser.add_argument("--eps", type=float, default=0.1, help="srp_eps (the config's default)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--full-videos", type=int, default=1102)
    parser.add_argument("--full-train", type=int, default=900)
    parser.add_argument("--shards", nargs="+", type=int, default=[1, 8, 32, 128], help="extract_shards to tabulate")
    parser.add_argument("--work", type=Path, help="keep the videos, shards and stores here (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="write every measurement here")
    # a child's own options
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    for name in ("model", "videos-dir", "out", "shard"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    for name in ("n", "challenge", "n-test", "n-features", "n-train"):
        parser.add_argument(f"--{name}", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--in-memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(CHILDREN[args.child](args)))
        return
    if args.videos[0] >= args.videos[1]:
        parser.error("--videos K1 K2: K1 must be smaller than K2")
    with tempfile.TemporaryDirectory(prefix="lwroi-mem-") as tmp:
        work = args.work or Path(tmp)
        print(f"writing {args.videos[1]} synthetic clips to {work / 'videos'} ...", flush=True)
        write_videos(work / "videos", args.videos[1])
        results, tables = {}, []
        for model in args.models:
            problems = run_child("check", args.threads, model=model, frames=args.frames,
                                 image_size=args.image_size)["problems"]
            if problems:
                tables.append(f"## {model}: not measured: build_extractor cannot make it ({'; '.join(problems)})")
                continue
            results[model] = measure_model(model, work, args)
            tables.append(report(model, results[model], args))
    print("\n\n".join(tables))
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                        indent=1, default=str))


if __name__ == "__main__":
    main()
