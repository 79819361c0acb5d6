"""Synthetic Algonauts datasets: real mp4s and pickles in the real layout, with a planted truth."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import av
import numpy as np
import pytest

from lwroi.data import (
    ROI_TRACKS,
    check_dataset,
    list_videos,
    load_roi_responses,
    make_video_frames,
    noise_ceiling,
    planted_layer_profiles,
    write_synthetic_dataset,
    write_video,
)
from lwroi.data.synthetic import PROFILE_SHAPES, draw_layer_signals, layer_shares, layer_signal_maps

VIDEOS_DIR = "AlgonautsVideos268_All_30fpsmax"
RESPONSES_DIR = "participants_data_v2021"
N_VIDEOS, N_CHALLENGE = 24, 2
VOXELS = {"V1": 150, "FFA": 150, "WB": 40}
NOISE_SD = {"V1": 1.5, "FFA": 0.1, "WB": 1.0}


def decode(path: Path) -> tuple[np.ndarray, float]:
    """All frames of a video as uint8 RGB, and its frame rate (an independent PyAV reader)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(stream)])
        return frames, float(stream.average_rate)


def pixel_statistics(paths: list[Path]) -> dict[str, np.ndarray]:
    """Cheap deterministic stand-in for DNN layers: colour, edge and motion statistics of the decoded frames."""
    layers: dict[str, list[np.ndarray]] = {"colour": [], "edges": [], "motion": []}
    for path in paths:
        frames = decode(path)[0].astype(np.float64) / 255
        luminance = frames.mean(axis=-1)
        coarse = luminance.reshape(len(luminance), luminance.shape[1] // 2, 2, luminance.shape[2] // 2, 2).mean((2, 4))
        layers["colour"].append(np.concatenate([frames.mean(axis=(0, 1, 2)), frames.std(axis=(0, 1, 2))]))
        layers["edges"].append(
            [np.abs(np.diff(image, axis=axis)).mean() for image in (luminance, coarse) for axis in (1, 2)]
        )
        layers["motion"].append([np.abs(np.diff(image, axis=0)).mean() for image in (luminance, coarse, coarse**2)])
    return {name: np.asarray(rows) for name, rows in layers.items()}


def write_small(out_dir: Path, **kwargs) -> dict:
    settings = {
        "layer_features": pixel_statistics,
        "n_subjects": 2,
        "n_videos": N_VIDEOS,
        "n_challenge": N_CHALLENGE,
        "voxels": VOXELS,
        "noise_sd": NOISE_SD,
        "frame_size": 32,
        "features": {"model": "pixel_statistics", "image_size": 32},
    }
    return write_synthetic_dataset(out_dir, **{**settings, **kwargs})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synthetic")
    return root, write_small(root)


def standardise(features: np.ndarray) -> np.ndarray:
    std = features.std(axis=0)
    return np.where(std > 0, (features - features.mean(axis=0)) / np.where(std > 0, std, 1), 0.0)


def test_written_video_decodes_to_the_same_frames_count_and_fps(tmp_path):
    frames = make_video_frames(np.random.default_rng(0), 45, 64)
    write_video(tmp_path / "clip.mp4", frames, fps=15)
    decoded, fps = decode(tmp_path / "clip.mp4")
    assert decoded.shape == frames.shape
    assert fps == 15
    # colour is stored at half resolution (yuv420p, like the real videos): allow 3 grey levels on average
    assert np.abs(decoded.astype(int) - frames).mean() < 3


def test_write_video_refuses_odd_frame_sizes(tmp_path):
    with pytest.raises(ValueError, match="even height and width"):
        write_video(tmp_path / "odd.mp4", np.zeros((3, 33, 32, 3), np.uint8), fps=10)
    assert not (tmp_path / "odd.mp4").exists()


def test_video_frames_move_and_differ_between_draws():
    a = make_video_frames(np.random.default_rng(1), 10, 32)
    b = make_video_frames(np.random.default_rng(2), 10, 32)
    assert a.shape == (10, 32, 32, 3) and a.dtype == np.uint8
    assert np.abs(np.diff(a.astype(int), axis=0)).mean() > 1  # content moves between frames
    assert np.abs(a.astype(int) - b).mean() > 10
    np.testing.assert_array_equal(a, make_video_frames(np.random.default_rng(1), 10, 32))


@pytest.mark.parametrize("n_layers", [1, 2, 3, 4, 5, 8, 12])
def test_planted_shares_are_distributions(n_layers):
    for roi, shares in planted_layer_profiles(list(ROI_TRACKS), n_layers).items():
        assert shares.shape == (n_layers,) and (shares >= 0).all(), roi
        assert shares.sum() == pytest.approx(1.0), roi


@pytest.mark.parametrize("n_layers", [4, 8])
def test_planted_shares_have_the_declared_shapes(n_layers):
    profiles = planted_layer_profiles(list(ROI_TRACKS), n_layers)
    for roi, shares in profiles.items():
        shape = PROFILE_SHAPES[roi][0]
        if shape == "early":
            assert (np.diff(shares) < 0).all(), roi
        elif shape == "late":
            assert (np.diff(shares) > 0).all(), roi
        elif shape == "mid":
            assert 0 < np.argmax(shares) < n_layers - 1, roi
            assert shares[[0, -1]].max() < 0.5 * shares.max(), roi  # low at both ends
        elif shape == "flat":
            np.testing.assert_allclose(shares, 1 / n_layers)
        else:
            assert shape == "two-layer", roi
            np.testing.assert_allclose(shares, np.r_[0.5, np.zeros(n_layers - 2), 0.5])
    assert {PROFILE_SHAPES[roi][0] for roi in ROI_TRACKS} == {"early", "mid", "late", "flat", "two-layer"}
    peaks = [int(np.argmax(profiles[roi])) for roi in ("V4", "LOC", "EBA")]
    assert peaks == sorted(peaks) and peaks[0] < peaks[-1]
    np.testing.assert_allclose(profiles["V1"][0] / profiles["V1"][-1], 8)
    # mirror-image depths tie exactly, so a rank check sees a tie
    assert profiles["LOC"][1] == profiles["LOC"][-2] and profiles["LOC"][0] == profiles["LOC"][-1]


def test_layer_shares_reject_unknown_shape_and_flat_contrast():
    with pytest.raises(ValueError, match="unknown profile shape 'wavy'"):
        layer_shares("wavy", 4)
    with pytest.raises(ValueError, match=r"contrast 0\.5 must be >= 1"):
        layer_shares("early", 4, 0.5)


def test_planted_profiles_reject_unknown_roi():
    with pytest.raises(ValueError, match="no planted layer profile for ROI 'V9'"):
        planted_layer_profiles(["V1", "V9"], 8)


def test_synthetic_layout_matches_algonauts(dataset):
    root, _ = dataset
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    videos = [f"{VIDEOS_DIR}/{i:04d}_synth.mp4" for i in range(1, N_VIDEOS + N_CHALLENGE + 1)]
    pickles = [
        f"{RESPONSES_DIR}/{ROI_TRACKS[roi]}/{subject}/{roi}.pkl" for subject in ("sub01", "sub02") for roi in VOXELS
    ]
    assert files == sorted([*videos, *pickles, "ground_truth.json"])
    assert [p.name for p in list_videos(root / VIDEOS_DIR)] == [Path(v).name for v in videos]
    check_dataset(
        root,
        videos_dir=VIDEOS_DIR,
        responses_dir=RESPONSES_DIR,
        subjects=["sub01", "sub02"],
        rois=list(VOXELS),
        n_train_videos=N_VIDEOS,
    )


def test_synthetic_videos_last_three_seconds_at_the_chosen_rates(dataset):
    root, _ = dataset
    for path in list_videos(root / VIDEOS_DIR)[:4]:
        frames, fps = decode(path)
        assert fps in (10, 15)
        assert frames.shape == (3 * fps, 32, 32, 3)


def test_synthetic_pickles_are_plain_dicts_that_load_as_responses(dataset):
    root, _ = dataset
    for roi, n_voxels in VOXELS.items():
        path = root / RESPONSES_DIR / ROI_TRACKS[roi] / "sub02" / f"{roi}.pkl"
        assert path.read_bytes()[:2] == b"\x80\x04"  # pickle protocol 4
        raw = pickle.loads(path.read_bytes())
        assert sorted(raw) == (["train", "voxel_mask"] if roi == "WB" else ["train"])
        assert raw["train"].dtype == np.float32 and raw["train"].shape == (N_VIDEOS, 3, n_voxels)
        resp = load_roi_responses(root / RESPONSES_DIR, "sub02", roi, n_train_videos=N_VIDEOS)
        assert resp.valid.all()
        if roi == "WB":
            assert resp.voxel_mask.shape == (78, 93, 71)
            assert np.count_nonzero(resp.voxel_mask) == n_voxels == np.count_nonzero(resp.voxel_mask == 1)


def test_ground_truth_file_holds_the_planted_truth(dataset):
    root, truth = dataset
    stored = json.loads((root / "ground_truth.json").read_text())
    assert stored == json.loads(json.dumps(truth))
    assert stored["seed"] == 0 and stored["n_videos"] == N_VIDEOS and stored["n_challenge"] == N_CHALLENGE
    assert stored["subjects"] == ["sub01", "sub02"]
    assert stored["layers"] == ["colour", "edges", "motion"]
    assert stored["layer_dims"] == {"colour": 6, "edges": 4, "motion": 3}
    assert stored["features"] == {"model": "pixel_statistics", "image_size": 32}
    profiles = planted_layer_profiles(list(VOXELS), 3)
    for roi, entry in stored["rois"].items():
        assert entry["track"] == ROI_TRACKS[roi] and entry["shape"] == PROFILE_SHAPES[roi][0]
        assert entry["layer_shares"] == pytest.approx(profiles[roi].tolist())
        assert "layer_weights" not in entry  # the truth is not stated in the model's terms
        assert entry["n_voxels"] == VOXELS[roi] and entry["noise_sd"] == NOISE_SD[roi]
        gain, noise = entry["voxel_gain"], entry["voxel_noise_sd"]
        assert 0.3 < gain["min"] < gain["median"] < gain["max"] < 3, roi
        assert gain["median"] == pytest.approx(1.0, abs=0.15), roi
        assert noise["min"] < noise["median"] < noise["max"], roi
        assert noise["median"] == pytest.approx(NOISE_SD[roi], rel=0.15), roi


def test_planted_noise_ceiling_matches_the_repetitions(dataset):
    _, truth = dataset
    for roi, entry in truth["rois"].items():
        assert entry["noise_ceiling_empirical"] == pytest.approx(entry["noise_ceiling"], abs=0.03), roi
        # voxel gains and noise vary about the ROI's level, so the ROI's ceiling is near the level's
        assert entry["noise_ceiling"] == pytest.approx(noise_ceiling(NOISE_SD[roi]), abs=0.05), roi
    assert noise_ceiling(1.5) == pytest.approx(np.sqrt(1 / 1.75))


def test_empirical_layer_shares_of_the_signal_are_the_planted_ones(dataset):
    """Each layer's covariance with the written signal over its variance, mean over voxels: the
    layers' signals are nearly uncorrelated, so it is close to the planted share."""
    _, truth = dataset
    for roi, entry in truth["rois"].items():
        np.testing.assert_allclose(entry["layer_shares_empirical"], entry["layer_shares"], atol=0.05, err_msg=roi)
    correlation = truth["layer_signal_correlation"]
    assert abs(correlation["mean"]) < 0.05 and correlation["mean_abs"] < 0.4


def test_noiseless_responses_split_into_per_layer_terms_with_the_planted_shares(tmp_path):
    """An independent check of the planting: regress noiseless responses on all layers' standardised
    features at once; each layer's fitted term (gain and offset included) has the planted share
    of the variance, per voxel, and lies in the span of that layer's features alone."""
    voxels = {"V4": 30, "STS": 30}
    truth = write_small(tmp_path, n_subjects=1, voxels=voxels, noise_sd=0.0)
    blocks = [standardise(f) for f in pixel_statistics(list_videos(tmp_path / VIDEOS_DIR)[:N_VIDEOS]).values()]
    design = np.hstack([*blocks, np.ones((N_VIDEOS, 1))])
    bounds = np.cumsum([0, *(b.shape[1] for b in blocks)])
    for roi in voxels:
        y = load_roi_responses(tmp_path / RESPONSES_DIR, "sub01", roi, n_train_videos=N_VIDEOS).data
        coef = np.linalg.lstsq(design, y, rcond=None)[0]
        assert (np.abs(y - design @ coef).max(axis=0) < 1e-4 * y.std(axis=0)).all(), roi
        terms = [b @ coef[start:stop] for b, start, stop in zip(blocks, bounds[:-1], bounds[1:], strict=True)]
        variances = np.array([t.var(axis=0) for t in terms])
        shares = variances / variances.sum(axis=0)
        np.testing.assert_allclose(shares, np.tile(np.array(truth["rois"][roi]["layer_shares"])[:, None], 30),
                                   atol=1e-4, err_msg=roi)  # fmt: skip
        assert truth["rois"][roi]["noise_ceiling"] == 1.0


def test_layer_signals_avoid_what_the_other_layers_carry():
    """Two layers sharing most of their variance: a planted signal of one layer lies less in the other
    layer's leading principal components than the layer's plain random function ``K_l u`` (a numpy
    reference without the whitening), and keeps most of its own layer's leading variance."""
    rng = np.random.default_rng(0)
    shared, own = rng.standard_normal((80, 30)), rng.standard_normal((2, 80, 30))
    layers = {f"l{i}": shared @ rng.standard_normal((30, 60)) + 0.5 * own[i] @ rng.standard_normal((30, 60))
              for i in (0, 1)}  # fmt: skip
    blocks = [standardise(x) for x in layers.values()]
    leading = [np.linalg.svd(b, full_matrices=False)[0][:, :5] for b in blocks]
    planted = draw_layer_signals(rng, layer_signal_maps(layers), 400)

    def share_in(basis: np.ndarray, z: np.ndarray) -> float:
        return float(np.mean(np.sum((basis.T @ z) ** 2, axis=0) / np.sum(z**2, axis=0)))

    for mine, other in ((0, 1), (1, 0)):
        reference = blocks[mine] @ blocks[mine].T @ rng.standard_normal((80, 400))
        reference -= reference.mean(axis=0)
        assert share_in(leading[other], planted[mine]) < 0.85 * share_in(leading[other], reference), mine
        assert share_in(leading[mine], planted[mine]) > 0.85 * share_in(leading[mine], reference), mine
        residual = planted[mine] - blocks[mine] @ np.linalg.lstsq(blocks[mine], planted[mine], rcond=None)[0]
        assert np.abs(residual).max() < 1e-8  # a function of its own layer's features


def test_layer_signals_are_centred_unit_variance_and_independent_between_voxels():
    rng = np.random.default_rng(3)
    layers = {name: rng.standard_normal((50, d)) for name, d in (("a", 40), ("b", 70), ("c", 20))}
    signals = draw_layer_signals(np.random.default_rng(4), layer_signal_maps(layers), 300)
    assert signals.shape == (3, 50, 300)
    np.testing.assert_allclose(signals.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(signals.std(axis=1), 1)
    between_layers = np.einsum("lnv,mnv->lmv", signals, signals) / 50
    assert np.abs(between_layers[0, 1].mean()) < 0.03 and np.abs(between_layers[0, 2].mean()) < 0.03
    np.testing.assert_array_equal(signals, draw_layer_signals(np.random.default_rng(4), layer_signal_maps(layers), 300))


def test_layer_features_sees_only_the_training_videos(tmp_path):
    seen = []

    def record(paths):
        seen.extend(paths)
        return pixel_statistics(paths)

    write_small(tmp_path, layer_features=record, n_subjects=1, n_videos=5, voxels={"V1": 3})
    assert seen == list_videos(tmp_path / VIDEOS_DIR)[:5]


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def test_same_seed_writes_identical_datasets(tmp_path):
    small = {"n_subjects": 1, "n_videos": 5, "n_challenge": 1, "voxels": {"V1": 4, "WB": 6}}
    write_small(tmp_path / "a", seed=3, **small)
    write_small(tmp_path / "b", seed=3, **small)
    write_small(tmp_path / "c", seed=4, **small)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    changed = {k for k, v in _digest(tmp_path / "c").items() if _digest(tmp_path / "a")[k] != v}
    assert changed == set(_digest(tmp_path / "a"))


def test_synthetic_dataset_rejects_unknown_roi(tmp_path):
    with pytest.raises(ValueError, match="voxels: unknown ROI"):
        write_small(tmp_path, voxels={"V1": 3, "MT": 3})
    assert not tmp_path.joinpath(VIDEOS_DIR).exists()


def test_synthetic_dataset_rejects_constant_layer_features(tmp_path):
    def constant(paths):
        return {"layer": np.ones((len(paths), 3))}

    with pytest.raises(ValueError, match=r"layer\(s\) layer constant over the videos: no signal to plant"):
        write_small(tmp_path, layer_features=constant, n_subjects=1, n_videos=5, voxels={"V1": 3})


def test_synthetic_dataset_rejects_malformed_layer_features(tmp_path):
    def wrong_rows(paths):
        return {"layer": np.zeros((len(paths) - 1, 3))}

    with pytest.raises(ValueError, match=r"layer 'layer' has shape \(4, 3\); expected finite \(n_videos=5, D\)"):
        write_small(tmp_path, layer_features=wrong_rows, n_subjects=1, n_videos=5, voxels={"V1": 3})
