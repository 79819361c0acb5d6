"""What each kind of unit computes: the science pipeline, one unit at a time.

Every function here reads its inputs from files (dataset, feature store, earlier units'
records) and writes exactly one unit record, so any rank can run any unit, in any launch.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from lwroi.config import Config, stable_hash
from lwroi.data import (
    VideoFingerprint,
    heldout_split,
    list_videos,
    load_roi_responses,
    noise_normalised,
    split_half_reliability,
)
from lwroi.exceptions import DataLayoutError, Interrupted
from lwroi.orchestration.journal import Journal
from lwroi.orchestration.plan import Unit, uses_grid
from lwroi.orchestration.progress import show_detail
from lwroi.orchestration.results import ResultStore
from lwroi.orchestration.rundir import recorded_videos
from lwroi.orchestration.schedule import StopFlag

log = logging.getLogger("lwroi")


def unit_seed(base: int, key: str) -> int:
    """A seed for a unit that depends only on its key, never on the rank that runs it."""
    return (base * 1_000_003 + zlib.crc32(key.encode())) % (2**31 - 1)


@dataclass(frozen=True)
class FeaturePaths:
    """Where a config's features live: raw shards (per extraction settings) and the reduced store."""

    raw_root: Path
    store: Path

    def raw_shard(self, shard: int) -> Path:
        return self.raw_root / "raw" / f"shard-{shard:03d}"


def feature_paths(cfg: Config, videos: Sequence[VideoFingerprint]) -> FeaturePaths:
    """Content-addressed store folders: same videos + same settings => same folder, reused by any run.

    The videos enter by name, size and sha256 of their bytes, so a clip replaced in place (same
    name and size) gets new features instead of the stale ones. Extraction settings added later
    enter the hash only when they change the frames (stride sampling keeps 0-based frames k-1,
    2k-1, ... since issue 9; ``resize: shorter``), so the raw shards of earlier runs stay valid.
    """
    f = cfg.features
    listing = [list(v) for v in videos]
    extraction = {
        "videos": listing, "model": f.model, "layers": list(f.layers), "weights": f.weights,
        "weights_sha256": f.weights_sha256, "seed": f.seed, "frame_sampling": f.frame_sampling,
        "frame_count": f.frame_count if f.frame_sampling == "count" else None,
        "frame_stride": [f.frame_stride - 1, f.frame_stride] if f.frame_sampling == "stride" else None,
        "image_size": f.image_size, **({"resize": f.resize} if f.resize != "square" else {}),
    }
    reduction = {
        "reduction": f.reduction, "reduce_layers": f.reduce_layers,
        "srp_eps": f.srp_eps if f.reduction == "srp" else None,
        "pca_ratio": f.pca_ratio if f.reduction == "pca" else None, "test_scaler": f.test_scaler, "seed": f.seed,
        "n_train_videos": cfg.data.n_train_videos, "n_test": cfg.data.n_test, "split_seed": cfg.data.split_seed,
        "test_order": cfg.data.test_order, "scale_floor": f.scale_floor, "restandardize": f.restandardize,
    }
    raw_root = Path(f.store_dir) / f"{f.model}-{stable_hash(extraction)}"
    return FeaturePaths(raw_root, raw_root / f"{f.reduction}-{stable_hash(reduction)}")


class UnitRunner:
    """Runs units of one config on one rank's device; ``__call__(unit)`` is the scheduler's hook."""

    def __init__(self, cfg: Config, store: ResultStore, journal: Journal, stop: StopFlag, device: str) -> None:
        self.cfg = cfg
        self.store = store
        self.journal = journal
        self.stop = stop
        self.device = device
        self.run_dir = store.run_dir

    @cached_property
    def videos(self) -> list[Path]:
        return list_videos(Path(self.cfg.data.root) / self.cfg.data.videos_dir)

    @cached_property
    def paths(self) -> FeaturePaths:
        return feature_paths(self.cfg, recorded_videos(self.run_dir))

    def roi_cost(self, subject: str, roi: str) -> float:
        """Relative cost of an ROI: its response file's size (proportional to its voxel count)."""
        from lwroi.data import roi_response_path

        path = roi_response_path(Path(self.cfg.data.root) / self.cfg.data.responses_dir, subject, roi)
        try:
            return float(path.stat().st_size)
        except OSError:
            return 1.0

    def __call__(self, unit: Unit) -> None:
        getattr(self, f"_run_{unit.phase}")(unit)

    # -- features -----------------------------------------------------------------------------

    def _extractor(self) -> Any:
        from lwroi.features import LayerFeatureExtractor, load_model, resolve_layers

        f = self.cfg.features
        model, info = load_model(f.model, weights=f.weights, seed=f.seed, weights_sha256=f.weights_sha256)
        layers = resolve_layers(f.model, model, f.layers)
        return LayerFeatureExtractor(model, layers, image_size=f.image_size, device=self.device,
                                     resize=f.resize), info

    def _run_extract(self, unit: Unit) -> None:
        reused = self._complete_store()
        if reused is not None:  # its record vouches for the store, so a store gone bad gets the shard extracted
            self.store.write_ok(unit.key, {"reused_store": str(self.paths.store)}, files=reused.file_paths())
            return
        folder = self._raw_shard(unit.shard, unit)
        self.store.write_ok(unit.key, {"n_videos": len(self._shard_videos(unit.shard)), "raw_shard": str(folder)})

    def _complete_store(self) -> Any:
        """The feature store if it is complete and verified, else None."""
        from lwroi.features import open_feature_store

        try:
            return open_feature_store(self.paths.store)
        except DataLayoutError:
            return None

    def _shard_videos(self, shard: int) -> np.ndarray:
        """Indices of the videos of extraction shard ``shard``."""
        return np.array_split(np.arange(len(self.videos)), self.cfg.run.extract_shards)[shard]

    def _raw_shard(self, shard: int, unit: Unit) -> Path:
        """The folder of extraction shard ``shard``, extracted first unless it is complete and verified."""
        from lwroi.features import extract_video_features, raw_shard_complete, save_raw_shard

        folder = self.paths.raw_shard(shard)
        if raw_shard_complete(folder):
            return folder
        if folder.exists():
            log.warning("%s: raw shard %s is incomplete or corrupt; extracting it again", unit.key, folder)
        indices = self._shard_videos(shard)
        f = self.cfg.features
        extractor, _ = self._extractor()
        feats = extract_video_features(
            [self.videos[i] for i in indices], extractor, sampling=f.frame_sampling, count=f.frame_count,
            stride=f.frame_stride, batch_size=f.batch_size,
            progress=self._extract_progress(unit),
        )
        save_raw_shard(folder, feats, indices)
        return folder

    def _extract_progress(self, unit: Unit) -> Any:
        """Progress hook: heartbeat for ``lwroi status`` and a log line every tenth of the shard."""
        step = {"next": 0.1}

        def progress(done: int, total: int) -> None:
            self.journal.heartbeat(unit.key, videos=done, of=total)
            show_detail(f"{unit.key}: {done}/{total} videos")
            if done >= step["next"] * total:
                log.info("%s: %d/%d videos", unit.key, done, total)
                step["next"] += 0.1

        return progress

    def _run_features(self, unit: Unit) -> None:
        from lwroi.features import (
            LayerFeatureExtractor,
            load_model,
            load_raw_shards,
            open_feature_store,
            reduce_features,
            resolve_layers,
            write_feature_store,
        )

        cfg, f, d = self.cfg, self.cfg.features, self.cfg.data
        if self._complete_store() is None:  # missing, or garbled since: rebuilt from the (verified) raw shards
            raw, order = load_raw_shards([self._raw_shard(k, unit) for k in range(cfg.run.extract_shards)])
            if not np.array_equal(order, np.arange(len(self.videos))):
                raise RuntimeError(f"{self.paths.raw_root}: raw shards do not cover the {len(self.videos)} videos")
            model, info = load_model(f.model, weights=f.weights, seed=f.seed, weights_sha256=f.weights_sha256)
            extractor = LayerFeatureExtractor(model, resolve_layers(f.model, model, f.layers),
                                              image_size=f.image_size, device="cpu")
            train, test = heldout_split(d.n_train_videos, d.n_test, d.split_seed, d.test_order)
            rows = {"train": train, "test": test, "challenge": np.arange(d.n_train_videos, len(self.videos))}
            reduce = {name: f.reduce_layers == "all" or extractor.spatial[name] for name in raw}
            arrays, described = reduce_features(raw, rows, reduce=reduce, method=f.reduction, srp_eps=f.srp_eps,
                                                pca_ratio=f.pca_ratio, test_scaler=f.test_scaler, seed=f.seed,
                                                scale_floor=f.scale_floor, restandardize=f.restandardize)
            meta = {"weights": info, "reduction": described, "rows": {k: v.tolist() for k, v in rows.items()},
                    "videos": [p.name for p in self.videos]}
            write_feature_store(self.paths.store, arrays, meta)
        files = open_feature_store(self.paths.store).file_paths()  # a store gone bad later voids this record
        self.store.write_ok(unit.key, {"store": str(self.paths.store)}, files=files)

    # -- encoding -----------------------------------------------------------------------------

    @cached_property
    def features(self) -> Any:
        """The feature store, its arrays verified against their checksums once per process.

        A garbled array fails the unit with an error naming the file; the ``features`` record
        vouches for the store's files, so the next launch recomputes that unit and rebuilds it.
        """
        from lwroi.features import open_feature_store

        return open_feature_store(self.paths.store)

    def _responses(self, subject: str, roi: str) -> tuple[Any, np.ndarray, np.ndarray]:
        """(responses, train-row Y, test-row Y) of the ROI's valid voxels, rows as in the feature store."""
        d = self.cfg.data
        resp = load_roi_responses(Path(d.root) / d.responses_dir, subject, roi, n_train_videos=d.n_train_videos)
        rows = self.features.meta["rows"]
        valid = resp.valid
        return resp, resp.data[np.asarray(rows["train"])][:, valid], resp.data[np.asarray(rows["test"])][:, valid]

    def _on_epoch(self, unit: Unit) -> Any:
        """Epoch hook: heartbeat, periodic checkpoint, and checkpoint-then-stop on a signal."""
        from lwroi.encoding import save_checkpoint

        path = self.checkpoint_path(unit.key)
        every = self.cfg.run.checkpoint_every

        def on_epoch(epoch: int, get_state: Any) -> None:
            self.journal.heartbeat(unit.key, epoch=epoch)
            show_detail(f"{unit.key}: epoch {epoch}")
            if self.stop or epoch % every == 0:
                save_checkpoint(path, get_state(), fingerprint=self.store.fingerprint)
                self.journal.event("checkpoint", unit.key, epoch=epoch)
                log.info("%s: epoch %d, checkpoint saved", unit.key, epoch)
            if self.stop:
                raise Interrupted(f"checkpointed at epoch {epoch}")

        return on_epoch

    def checkpoint_path(self, key: str) -> Path:
        return self.run_dir / "checkpoints" / f"{key}.pt"

    def _resume_state(self, unit: Unit) -> dict | None:
        from lwroi.encoding import load_checkpoint

        path = self.checkpoint_path(unit.key)
        state = load_checkpoint(path, fingerprint=self.store.fingerprint)
        if state is not None:
            log.info("%s: resuming from checkpoint %s", unit.key, path)
            self.journal.event("resume", unit.key, epoch=int(state["epoch"]))
        return state

    def _finish(self, unit: Unit) -> None:
        path = self.checkpoint_path(unit.key)
        path.unlink(missing_ok=True)

    def _train_kwargs(self) -> dict[str, Any]:
        """The solver settings of the config; each solver takes the ones it names."""
        e = self.cfg.encoding
        return {"lr": e.lr, "batch_size": e.batch_size, "max_epochs": e.max_epochs, "patience": e.patience,
                "min_delta": e.min_delta, "metric": e.metric, "val_pcc": e.val_pcc, "pcc": e.pcc,
                "drop_last": e.drop_last, "layer_scaling": e.layer_scaling, "alphas": e.kernel_alphas,
                "search_steps": e.kernel_search_steps, "refine_steps": e.kernel_refine_steps,
                "search_voxels": e.kernel_search_voxels, "memory_budget_mb": e.memory_budget_mb}

    def _run_tune(self, unit: Unit) -> None:
        from lwroi.encoding import evaluate_grid_models, get_solver, solver_options

        e = self.cfg.encoding
        _, y_train, _ = self._responses(unit.subject, unit.roi)
        kwargs = self._train_kwargs()
        scaling = kwargs.pop("layer_scaling")
        result = evaluate_grid_models(
            self.features.load("train"), y_train, [(m.wc, m.lay, m.fold) for m in unit.models],
            folds=e.folds, seed=e.seed, device=self.device, solver=e.solver, layer_scaling=scaling,
            fold_split=e.fold_split, state=self._resume_state(unit), on_epoch=self._on_epoch(unit),
            **solver_options(get_solver(e.solver), kwargs),
        )
        rows = [{"wc": m.wc, "lay": m.lay, "fold": m.fold, "score": float(result["score"][i]),
                 "best_epoch": int(result["best_epoch"][i]), "n_epochs": int(result["n_epochs"][i]),
                 "layer_weights": [float(x) for x in result["layer_weights"][i]]}
                for i, m in enumerate(unit.models)]
        self.store.write_ok(unit.key, {"subject": unit.subject, "roi": unit.roi, "models": rows})
        self._finish(unit)

    def _run_select(self, unit: Unit) -> None:
        from lwroi.encoding import select_best

        table: dict[tuple[float, float], list[float]] = {}
        for dep in unit.deps:
            for row in self.store.read(dep).payload["models"]:
                table.setdefault((row["wc"], row["lay"]), []).append(row["score"])
        means = {k: float(np.mean(v)) for k, v in table.items()}
        wc, lay = select_best(means)
        grid = [{"wc": k[0], "lay": k[1], "cv_score": v} for k, v in sorted(means.items())]
        self.store.write_ok(unit.key, {"roi": unit.roi, "wc": wc, "lay": lay, "grid": grid})

    def _run_fit(self, unit: Unit) -> None:
        from lwroi.encoding import LayerWeightedEncoder

        e = self.cfg.encoding
        chosen = {}  # the kernel solver has no (wc, lay): it picks its own settings inside the fit
        if uses_grid(self.cfg):
            selected = self.store.read(f"select/{unit.roi}").payload
            chosen = {"wc": selected["wc"], "lay": selected["lay"]}
        resp, y_train, y_test = self._responses(unit.subject, unit.roi)
        x_train, x_test = self.features.load("train"), self.features.load("test")
        model = LayerWeightedEncoder(**chosen, solver=e.solver, contributions=e.contributions,
                                     val_fraction=e.val_fraction, device=self.device,
                                     random_state=unit_seed(e.seed, unit.key), **self._train_kwargs())
        val = {"X_val": x_test, "Y_val": y_test} if e.early_stopping_on == "test" else {}
        model.fit(x_train, y_train, state=self._resume_state(unit), on_epoch=self._on_epoch(unit), **val)
        scores = np.full(resp.n_voxels, np.nan, dtype=np.float32)
        scores[resp.valid] = model.score_voxels(x_test, y_test)
        reliability = np.full(resp.n_voxels, np.nan, dtype=np.float32)
        reliability[resp.valid] = split_half_reliability(resp.repetitions[:, :, resp.valid])
        reliable = resp.valid & (reliability > 0)
        challenge = np.full((self.features.n_samples("challenge"), resp.n_voxels), np.nan, dtype=np.float32)
        if challenge.shape[0]:
            challenge[:, resp.valid] = model.predict(self.features.load("challenge"))
        payload = {
            "subject": unit.subject, "roi": unit.roi, "pcc": float(np.nanmean(scores)),
            "n_voxels": int(resp.n_voxels), "n_valid_voxels": int(resp.valid.sum()),
            "noise_ceiling": _mean_or_none(np.sqrt(reliability[reliable])),
            "pcc_normalized": _mean_or_none(noise_normalised(scores, reliability)[reliable]),
            "n_reliable_voxels": int(reliable.sum()),
            "wc": chosen.get("wc"), "lay": chosen.get("lay"), "solver": model.solver_,
            "best_epoch": int(model.best_epoch_), "n_epochs": int(model.n_epochs_),
            "layers": list(self.features.layers),
            "layer_weights": [float(x) for x in model.layer_weights_],
            "layer_profile": [float(x) for x in model.layer_profile(x_train)],
            "contributions": [float(x) for x in model.layer_contributions(x_test, y_test)],
            "random_weights": bool(self.features.meta["weights"]["random_init"]),
        }
        history = {f"history_{k}": np.asarray(v, dtype=np.float32) for k, v in model.history_.items()}
        arrays = {"scores": scores, "reliability": reliability, "challenge_pred": challenge, **history}
        if resp.voxel_mask is not None:  # WB: where each voxel sits in the volume, for the NIfTI maps
            arrays["voxel_mask"] = (np.asarray(resp.voxel_mask) == 1).astype(np.uint8)
        self.store.write_ok(unit.key, payload, arrays)
        self._finish(unit)


def _mean_or_none(values: np.ndarray) -> float | None:
    """The mean, or None (JSON null) for no values: an ROI without a reliable voxel has no ceiling."""
    return float(np.mean(values)) if values.size else None
