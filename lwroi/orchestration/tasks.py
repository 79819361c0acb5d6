"""What each kind of unit computes: the science pipeline, one unit at a time.

Every function here reads its inputs from files (dataset, feature store, earlier units'
records) and writes exactly one unit record, so any rank can run any unit, in any launch.
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lwroi.config import Config
from lwroi.data import (
    heldout_split,
    list_videos,
    load_roi_responses,
    noise_normalised,
    split_half_reliability,
)
from lwroi.exceptions import DataLayoutError, Interrupted
from lwroi.orchestration.journal import Journal
from lwroi.orchestration.lock import building
from lwroi.orchestration.plan import Unit, uses_grid
from lwroi.orchestration.progress import show_detail
from lwroi.orchestration.results import ResultStore
from lwroi.orchestration.rundir import recorded_videos
from lwroi.orchestration.schedule import StopFlag

if TYPE_CHECKING:
    from lwroi.features import FeaturePaths

log = logging.getLogger("lwroi")


def unit_seed(base: int, key: str) -> int:
    """A seed for a unit that depends only on its key, never on the rank that runs it."""
    return (base * 1_000_003 + zlib.crc32(key.encode())) % (2**31 - 1)


class ModelView:
    """One model of the run: its one-model config, its feature folders and its verified feature store."""

    def __init__(self, cfg: Config, run_dir: Path) -> None:
        self.cfg = cfg
        self.run_dir = run_dir

    @cached_property
    def paths(self) -> FeaturePaths:
        from lwroi.features import feature_paths

        return feature_paths(self.cfg, recorded_videos(self.run_dir))

    @cached_property
    def features(self) -> Any:
        """The feature store, its arrays verified against their checksums once per process.

        A garbled array fails the unit with an error naming the file; the ``features`` record
        vouches for the store's files, so the next launch recomputes that unit and rebuilds it.
        """
        from lwroi.features import open_feature_store

        return open_feature_store(self.paths.store)

    def complete_store(self) -> Any:
        """The feature store if it is complete and verified, else None."""
        from lwroi.features import open_feature_store

        try:
            return open_feature_store(self.paths.store)
        except DataLayoutError:
            return None


class UnitRunner:
    """Runs units of one config on one rank's device; ``__call__(unit)`` is the scheduler's hook."""

    def __init__(self, cfg: Config, store: ResultStore, journal: Journal, stop: StopFlag, device: str) -> None:
        self.cfg = cfg
        self.store = store
        self.journal = journal
        self.stop = stop
        self.device = device
        self.run_dir = store.run_dir
        self._views: dict[str, ModelView] = {}

    @cached_property
    def videos(self) -> list[Path]:
        return list_videos(Path(self.cfg.data.root) / self.cfg.data.videos_dir)

    def model(self, name: str) -> ModelView:
        """The model ``name`` of the run (its store opened at most once per process)."""
        if name not in self._views:
            self._views[name] = ModelView(self.cfg.for_model(name), self.run_dir)
        return self._views[name]

    def roi_cost(self, subject: str, roi: str) -> float:
        """Relative cost of an ROI: its response file's size (proportional to its voxel count)."""
        from lwroi.data import roi_response_path

        path = roi_response_path(Path(self.cfg.data.root) / self.cfg.data.responses_dir, subject, roi)
        try:
            return float(path.stat().st_size)
        except OSError:
            return 1.0

    def __call__(self, unit: Unit) -> None:
        PHASE_RUNNERS[unit.phase](self, unit)

    # -- features -----------------------------------------------------------------------------

    def _shard_videos(self, shard: int) -> np.ndarray:
        """Indices of the videos of extraction shard ``shard``."""
        return np.array_split(np.arange(len(self.videos)), self.cfg.run.extract_shards)[shard]

    def _raw_shard(self, shard: int, unit: Unit) -> Path:
        """The folder of extraction shard ``shard`` of the unit's model, extracted unless complete and verified."""
        from lwroi.features import build_extractor, extract_video_features, raw_shard_complete, save_raw_shard

        view = self.model(unit.model)
        folder = view.paths.raw_shard(shard)
        if raw_shard_complete(folder):
            return folder
        with building(folder):
            if raw_shard_complete(folder):  # another launch extracted it while this one waited
                return folder
            if folder.exists():
                log.warning("%s: raw shard %s is incomplete or corrupt; extracting it again", unit.key, folder)
            indices = self._shard_videos(shard)
            f = view.cfg.features
            extractor, weights = build_extractor(f, device=self.device)
            feats = extract_video_features(
                [self.videos[i] for i in indices], extractor, sampling=f.frame_sampling, count=f.frame_count,
                stride=f.frame_stride, batch_size=f.batch_size,
                progress=self._extract_progress(unit), frame_cache=self.frame_cache,
            )
            save_raw_shard(folder, feats, indices, meta={"weights": weights, "spatial": extractor.spatial})
        return folder

    @cached_property
    def frame_cache(self) -> Any:
        """The run's decoded-frame cache (``store_dir/frames``, shared by every model), or None if disabled."""
        from lwroi.features import FrameCache

        f = self.cfg.features
        return FrameCache(Path(f.store_dir) / "frames") if f.frame_cache else None

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

    # -- encoding -----------------------------------------------------------------------------

    def _responses(self, unit: Unit) -> tuple[Any, np.ndarray, np.ndarray]:
        """(responses, train-row Y, test-row Y) of the unit's ROI's valid voxels, rows as in its model's store."""
        d = self.cfg.data
        resp = load_roi_responses(Path(d.root) / d.responses_dir, unit.subject, unit.roi,
                                  n_train_videos=d.n_train_videos)
        rows = self.model(unit.model).features.meta["rows"]
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
                save_checkpoint(path, get_state(), fingerprint=self.store.fingerprint_of(unit.key))
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
        state = load_checkpoint(path, fingerprint=self.store.fingerprint_of(unit.key))
        if state is not None:
            log.info("%s: resuming from checkpoint %s", unit.key, path)
            self.journal.event("resume", unit.key, epoch=int(state["epoch"]))
        return state

    def _finish(self, unit: Unit) -> None:
        path = self.checkpoint_path(unit.key)
        path.unlink(missing_ok=True)

    @cached_property
    def solver_workspace(self) -> dict:
        """What fits keep between this process's units: a store's stacked features, the kernel solver's Grams."""
        return {}

    def _train_kwargs(self) -> dict[str, Any]:
        """The config's training settings, as tuning and fitting both take them.

        The solver, its own options (``encoding.<solver>``) and the settings every solver shares.
        """
        e = self.cfg.encoding
        return {"solver": e.solver, "solver_params": dataclasses.asdict(e.options), "pcc": e.pcc,
                "layer_scaling": e.layer_scaling}


def _extract(run: UnitRunner, unit: Unit) -> None:
    """Extract one shard of the videos' raw features, unless the reduced store is complete already."""
    view = run.model(unit.model)
    reused = view.complete_store()
    if reused is not None:  # its record vouches for the store, so a store gone bad gets the shard extracted
        run.store.write_ok(unit.key, {"reused_store": str(view.paths.store)}, files=reused.file_paths())
        return
    cache = run.frame_cache
    counts = (cache.decoded, cache.hits) if cache else (0, 0)
    folder = run._raw_shard(unit.shard, unit)
    record = {"n_videos": len(run._shard_videos(unit.shard)), "raw_shard": str(folder)}
    if cache:
        record.update(clips_decoded=cache.decoded - counts[0], clips_from_frame_cache=cache.hits - counts[1])
        log.info("%s: %d clip(s) decoded, %d read from the frame cache %s", unit.key, record["clips_decoded"],
                 record["clips_from_frame_cache"], cache.root)
    run.store.write_ok(unit.key, record)


def _features(run: UnitRunner, unit: Unit) -> None:
    """Reduce the raw shards into the feature store (the network is not needed: the shards say what it was)."""
    from lwroi.features import open_feature_store

    view = run.model(unit.model)
    store = view.complete_store()
    if store is None:  # missing, or garbled since: rebuilt from the (verified) raw shards
        with building(view.paths.store):
            store = view.complete_store()  # built by another launch while this one waited?
            if store is None:
                _build_store(run, view, unit)
                store = open_feature_store(view.paths.store)  # what was written, verified
    # a store gone bad later voids this record
    run.store.write_ok(unit.key, {"store": str(view.paths.store)}, files=store.file_paths())


def _build_store(run: UnitRunner, view: ModelView, unit: Unit) -> None:
    """Reduce the model's raw shards (extracted first if need be) and write its feature store."""
    from lwroi.features import load_raw_shards, reduce_features, write_feature_store

    cfg, f, d = view.cfg, view.cfg.features, view.cfg.data
    raw, order, extracted = load_raw_shards([run._raw_shard(k, unit) for k in range(cfg.run.extract_shards)])
    if not np.array_equal(order, np.arange(len(run.videos))):
        raise RuntimeError(f"{view.paths.raw_root}: raw shards do not cover the {len(run.videos)} videos")
    train, test = heldout_split(d.n_train_videos, d.n_test, d.split_seed, d.test_order)
    rows = {"train": train, "test": test, "challenge": np.arange(d.n_train_videos, len(run.videos))}
    reduce = {name: f.reduce_layers == "all" or extracted["spatial"][name] for name in raw}
    arrays, described = reduce_features(raw, rows, reduce=reduce, method=f.reduction, srp_eps=f.srp_eps,
                                        pca_ratio=f.pca_ratio, test_scaler=f.test_scaler, seed=f.seed,
                                        scale_floor=f.scale_floor, restandardize=f.restandardize)
    meta = {"weights": extracted["weights"], "reduction": described,
            "rows": {k: v.tolist() for k, v in rows.items()}, "videos": [p.name for p in run.videos]}
    write_feature_store(view.paths.store, arrays, meta)


def _tune(run: UnitRunner, unit: Unit) -> None:
    """Train one tuning unit's grid models on their CV folds and record each model's validation score."""
    from lwroi.encoding import evaluate_grid_models

    e = run.cfg.encoding
    _, y_train, _ = run._responses(unit)
    result = evaluate_grid_models(
        run.model(unit.model).features.load("train", mmap=True), y_train, [(m.wc, m.lay, m.fold) for m in unit.models],
        folds=e.folds, seed=e.seed, device=run.device, fold_split=e.fold_split,
        state=run._resume_state(unit), on_epoch=run._on_epoch(unit), workspace=run.solver_workspace,
        **run._train_kwargs(),
    )
    rows = [{"wc": m.wc, "lay": m.lay, "fold": m.fold, "score": float(result["score"][i]),
             "best_epoch": int(result["best_epoch"][i]), "n_epochs": int(result["n_epochs"][i]),
             "layer_weights": [float(x) for x in result["layer_weights"][i]]}
            for i, m in enumerate(unit.models)]
    run.store.write_ok(unit.key, {"model": unit.model, "subject": unit.subject, "roi": unit.roi, "models": rows})
    run._finish(unit)


def _fit(run: UnitRunner, unit: Unit) -> None:
    """Fit the final model of one subject and ROI, score it on the held-out rows and record every output."""
    from lwroi.encoding import LayerWeightedEncoder

    e = run.cfg.encoding
    chosen = {}  # the kernel solver has no (wc, lay): it picks its own settings inside the fit
    if uses_grid(run.cfg):
        selected = run.store.read(f"select/{unit.model}/{unit.roi}").payload
        chosen = {"wc": selected["wc"], "lay": selected["lay"]}
    store = run.model(unit.model).features
    resp, y_train, y_test = run._responses(unit)
    # mapped, not read: the pages are the page cache's, and the fit identifies them by the file's sha256
    x_train, x_test = store.load("train", mmap=True), store.load("test", mmap=True)
    model = LayerWeightedEncoder(**chosen, contributions=e.contributions, val_fraction=e.val_fraction,
                                 device=run.device, random_state=unit_seed(e.seed, _fit_seed_key(unit)),
                                 **run._train_kwargs())
    val = {"X_val": x_test, "Y_val": y_test} if e.early_stopping_on == "test" else {}
    model.fit(x_train, y_train, state=run._resume_state(unit), on_epoch=run._on_epoch(unit),
              workspace=run.solver_workspace, **val)
    scores = np.full(resp.n_voxels, np.nan, dtype=np.float32)
    scores[resp.valid] = model.score_voxels(x_test, y_test)
    reliability = np.full(resp.n_voxels, np.nan, dtype=np.float32)
    reliability[resp.valid] = split_half_reliability(resp.repetitions[:, :, resp.valid])
    reliable = resp.valid & (reliability > 0)
    challenge = np.full((store.n_samples("challenge"), resp.n_voxels), np.nan, dtype=np.float32)
    if challenge.shape[0]:
        challenge[:, resp.valid] = model.predict(store.load("challenge", mmap=True))
    weights = store.meta["weights"]
    payload = {
        "model": unit.model, "family": weights.get("family", ""), "subject": unit.subject, "roi": unit.roi,
        "pcc": float(np.nanmean(scores)),
        "n_voxels": int(resp.n_voxels), "n_valid_voxels": int(resp.valid.sum()),
        "noise_ceiling": _mean_or_none(np.sqrt(reliability[reliable])),
        "pcc_normalized": _mean_or_none(noise_normalised(scores, reliability)[reliable]),
        "n_reliable_voxels": int(reliable.sum()),
        "wc": chosen.get("wc"), "lay": chosen.get("lay"), "solver": model.solver_,
        "best_epoch": int(model.best_epoch_), "n_epochs": int(model.n_epochs_),
        "layers": list(store.layers),
        "layer_weights": [float(x) for x in model.layer_weights_],
        "layer_profile": [float(x) for x in model.layer_profile(x_train)],
        "contributions": [float(x) for x in model.layer_contributions(x_test, y_test)],
        "random_weights": bool(weights["random_init"]),
    }
    history = {f"history_{k}": np.asarray(v, dtype=np.float32) for k, v in model.history_.items()}
    arrays = {"scores": scores, "reliability": reliability, "challenge_pred": challenge, **history}
    if resp.voxel_mask is not None:  # WB: where each voxel sits in the volume, for the NIfTI maps
        arrays["voxel_mask"] = (np.asarray(resp.voxel_mask) == 1).astype(np.uint8)
    run.store.write_ok(unit.key, payload, arrays)
    run._finish(unit)


def _select(run: UnitRunner, unit: Unit) -> None:
    """Pick the (wc, lay) of the best mean cross-validated score over the tuning units."""
    from lwroi.encoding import select_best

    table: dict[tuple[float, float], list[float]] = {}
    for dep in unit.deps:
        for row in run.store.read(dep).payload["models"]:
            table.setdefault((row["wc"], row["lay"]), []).append(row["score"])
    means = {k: float(np.mean(v)) for k, v in table.items()}
    wc, lay = select_best(means)
    grid = [{"wc": k[0], "lay": k[1], "cv_score": v} for k, v in sorted(means.items())]
    run.store.write_ok(unit.key, {"model": unit.model, "roi": unit.roi, "wc": wc, "lay": lay, "grid": grid})


PHASE_RUNNERS: dict[str, Callable[[UnitRunner, Unit], None]] = {
    "extract": _extract,
    "features": _features,
    "tune": _tune,
    "select": _select,
    "fit": _fit,
}
"""What a unit of each phase (:data:`lwroi.orchestration.plan.PHASES`) runs: ``f(runner, unit)``."""


def _fit_seed_key(unit: Unit) -> str:
    """What seeds a fit: its subject and ROI, not its model.

    So a zoo's models of one subject and ROI share their validation split and initial draws (a
    paired comparison), and a one-model run draws what it did before zoos.
    """
    return f"fit/{unit.subject}/{unit.roi}"


def _mean_or_none(values: np.ndarray) -> float | None:
    """The mean, or None (JSON null) for no values: an ROI without a reliable voxel has no ceiling."""
    return float(np.mean(values)) if values.size else None
