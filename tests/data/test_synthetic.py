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
from lwroi.data.synthetic import _distinctive_directions

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


@pytest.mark.parametrize("n_layers", [1, 2, 3, 5, 8, 12])
def test_planted_profiles_are_distributions_with_well_separated_values(n_layers):
    for roi, weights in planted_layer_profiles(list(ROI_TRACKS), n_layers).items():
        assert weights.shape == (n_layers,) and (weights > 0).all(), roi
        assert weights.sum() == pytest.approx(1.0)
        if n_layers > 1:
            gaps = np.diff(np.sort(weights))
            assert gaps.min() > 0.2 / n_layers**2, roi  # no near-ties: neighbours differ by a full rank step


def test_planted_profiles_follow_depth():
    profiles = planted_layer_profiles(list(ROI_TRACKS), 8)
    for roi in ("V1", "V2", "V3"):
        assert (np.diff(profiles[roi]) < 0).all(), roi
    for roi in ("FFA", "STS", "PPA"):
        assert (np.diff(profiles[roi]) > 0).all(), roi
    peaks = [int(np.argmax(profiles[roi])) for roi in ("V4", "LOC", "EBA")]
    assert 0 < peaks[0] < peaks[1] < peaks[2] < 7
    spread = {roi: profiles[roi].max() / profiles[roi].min() for roi in profiles}
    assert spread["WB"] == min(spread.values())  # broad


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
        assert entry["track"] == ROI_TRACKS[roi]
        assert entry["layer_weights"] == pytest.approx(profiles[roi].tolist())
        assert entry["n_voxels"] == VOXELS[roi] and entry["noise_sd"] == NOISE_SD[roi]
        assert entry["noise_ceiling"] == pytest.approx(np.sqrt(1 / (1 + NOISE_SD[roi] ** 2 / 3)))


def test_empirical_noise_ceiling_is_close_to_theory(dataset):
    _, truth = dataset
    for roi, entry in truth["rois"].items():
        assert entry["noise_ceiling_empirical"] == pytest.approx(entry["noise_ceiling"], abs=0.05), roi
    assert noise_ceiling(1.5) == pytest.approx(np.sqrt(1 / 1.75))


def test_planted_directions_are_distinctive_of_their_layer():
    """Two layers that share most of their variance: each layer's planted directions carry far
    more of its own variance than of the other layer's, unlike a random direction of the layer."""
    rng = np.random.default_rng(0)
    shared, own = rng.standard_normal((60, 40)), rng.standard_normal((2, 60, 40))
    layers = [shared @ rng.standard_normal((40, 50)) + 0.5 * own[i] @ rng.standard_normal((40, 50)) for i in (0, 1)]
    kernels = [z @ z.T / z.shape[1] for z in map(standardise, layers)]
    directions = _distinctive_directions(layers, 3, 0.1)
    for mine, other, (basis, _) in ((0, 1, directions[0]), (1, 0, directions[1])):
        assert basis.shape == (60, 3)
        np.testing.assert_allclose(basis.std(axis=0), 1.0)
        ratio = [d @ kernels[mine] @ d / (d @ kernels[other] @ d) for d in basis.T]
        random = kernels[mine] @ rng.standard_normal(60)
        assert min(ratio) > (random @ kernels[mine] @ random) / (random @ kernels[other] @ random)
        assert ratio[0] > 4


def test_planted_direction_cost_is_the_norm_of_its_coefficients_on_the_balanced_block():
    """F g = X b with X = Z / sqrt(D) and ||b||^2 = g^T C g: the truth is stated in the fitted model's terms."""
    rng = np.random.default_rng(1)
    layers = [rng.standard_normal((40, 30)) @ rng.standard_normal((30, d)) for d in (25, 60)]
    for features, (basis, cost) in zip(layers, _distinctive_directions(layers, 2, 1.0), strict=True):
        x = standardise(features) / np.sqrt(features.shape[1])
        g = rng.standard_normal(2)
        b = np.linalg.lstsq(x, basis @ g, rcond=None)[0]  # min-norm coefficients reproducing F g
        np.testing.assert_allclose(x @ b, basis @ g, atol=1e-8)
        np.testing.assert_allclose(b @ b, g @ cost @ g, rtol=1e-6)


def test_noiseless_responses_lie_in_the_span_of_the_layer_features(tmp_path):
    truth = write_small(tmp_path, n_subjects=1, voxels={"V3": 20}, noise_sd=0.0)
    features = pixel_statistics(list_videos(tmp_path / VIDEOS_DIR)[:N_VIDEOS])
    design = np.hstack([*features.values(), np.ones((N_VIDEOS, 1))])
    y = load_roi_responses(tmp_path / RESPONSES_DIR, "sub01", "V3", n_train_videos=N_VIDEOS).data
    residual = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
    assert (residual.std(axis=0) < 1e-4).all()
    assert truth["rois"]["V3"]["noise_ceiling"] == 1.0


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

    with pytest.raises(ValueError, match="every feature is constant over videos"):
        write_small(tmp_path, layer_features=constant, n_subjects=1, n_videos=5, voxels={"V1": 3})


def test_synthetic_dataset_rejects_malformed_layer_features(tmp_path):
    def wrong_rows(paths):
        return {"layer": np.zeros((len(paths) - 1, 3))}

    with pytest.raises(ValueError, match=r"layer 'layer' has shape \(4, 3\); expected finite \(n_videos=5, D\)"):
        write_small(tmp_path, layer_features=wrong_rows, n_subjects=1, n_videos=5, voxels={"V1": 3})
