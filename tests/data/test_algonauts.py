"""The Algonauts layout reader: loading, averaging, invalid voxels, and every layout error."""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from lwroi.data import (
    ROI_TRACKS,
    VideoFingerprint,
    check_dataset,
    data_changes,
    data_fingerprint,
    list_videos,
    load_roi_responses,
    roi_response_path,
    video_fingerprints,
)
from lwroi.exceptions import DataLayoutError, DataWarning, UnsafePickleError

N_VIDEOS = 6
VIDEOS_DIR = "AlgonautsVideos268_All_30fpsmax"
RESPONSES_DIR = "participants_data_v2021"


def write_pickle(path: Path, obj: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=4))
    return path


def write_roi(root: Path, subject: str, roi: str, train: np.ndarray, **extra: np.ndarray) -> Path:
    return write_pickle(roi_response_path(root, subject, roi), {"train": train, **extra})


def make_train(rng: np.random.Generator, n_voxels: int = 5, n_videos: int = N_VIDEOS) -> np.ndarray:
    return rng.standard_normal((n_videos, 3, n_voxels))


def wb_mask(n_voxels: int) -> np.ndarray:
    mask = np.zeros((78, 93, 71))
    mask.flat[np.arange(n_voxels) * 7] = 1.0
    return mask


def build_dataset(root: Path, subjects: list[str], rois: list[str], n_videos: int = N_VIDEOS + 2) -> None:
    rng = np.random.default_rng(0)
    videos = root / VIDEOS_DIR
    videos.mkdir(parents=True)
    for i in range(n_videos):
        (videos / f"{i + 1:04d}.mp4").write_bytes(b"")
    for subject in subjects:
        for roi in rois:
            extra = {"voxel_mask": wb_mask(5)} if roi == "WB" else {}
            write_roi(root / RESPONSES_DIR, subject, roi, make_train(rng), **extra)


def check(root: Path, subjects: list[str], rois: list[str]) -> None:
    check_dataset(
        root, videos_dir=VIDEOS_DIR, responses_dir=RESPONSES_DIR, subjects=subjects, rois=rois, n_train_videos=N_VIDEOS
    )


def test_roi_tracks_put_wb_in_full_track_and_the_rest_in_mini_track():
    assert ROI_TRACKS == {
        **{roi: "mini_track" for roi in ("V1", "V2", "V3", "V4", "LOC", "EBA", "FFA", "STS", "PPA")},
        "WB": "full_track",
    }


def test_roi_response_path_follows_the_track_layout(tmp_path):
    assert roi_response_path(tmp_path, "sub03", "LOC") == tmp_path / "mini_track/sub03/LOC.pkl"
    assert roi_response_path(tmp_path, "sub03", "WB") == tmp_path / "full_track/sub03/WB.pkl"


def test_roi_response_path_rejects_unknown_roi(tmp_path):
    with pytest.raises(ValueError, match="unknown ROI 'V9'; known ROIs: V1, V2"):
        roi_response_path(tmp_path, "sub01", "V9")


def test_list_videos_returns_sorted_mp4_files_only(tmp_path):
    for name in ("0002_b.mp4", "0001_a.mp4", "notes.txt", "0003_c.avi"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_videos(tmp_path)] == ["0001_a.mp4", "0002_b.mp4"]


def test_list_videos_names_a_missing_folder(tmp_path):
    with pytest.raises(DataLayoutError, match=re.escape(f"{tmp_path / 'nope'}: video folder not found")):
        list_videos(tmp_path / "nope")


def test_list_videos_names_a_folder_without_mp4(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(DataLayoutError, match=re.escape(f"{tmp_path}: no .mp4 files")):
        list_videos(tmp_path)


def test_load_roi_responses_averages_repetitions(tmp_path):
    train = make_train(np.random.default_rng(1))
    path = write_roi(tmp_path, "sub01", "V1", train)
    resp = load_roi_responses(tmp_path, "sub01", "V1", n_train_videos=N_VIDEOS)
    assert resp.data.dtype == np.float32 and resp.repetitions.dtype == np.float32
    np.testing.assert_allclose(resp.data, train.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(resp.repetitions, train, rtol=1e-6)
    assert resp.valid.tolist() == [True] * 5
    assert resp.voxel_mask is None
    assert resp.path == path
    assert resp.n_voxels == 5


def test_nan_repetitions_are_left_out_of_the_mean(tmp_path):
    train = make_train(np.random.default_rng(2))
    train[0, 1, 2] = np.nan
    write_roi(tmp_path, "sub01", "V1", train)
    resp = load_roi_responses(tmp_path, "sub01", "V1", n_train_videos=N_VIDEOS)
    assert resp.data[0, 2] == pytest.approx(train[0, [0, 2], 2].mean(), rel=1e-6)
    assert resp.valid.all()


def test_nan_and_constant_voxels_are_marked_invalid_and_reported(tmp_path):
    train = make_train(np.random.default_rng(3))
    train[:, :, 1] = np.nan  # all-NaN voxel
    train[:, :, 3] = 7.0  # constant over videos
    train[4, :, 4] = np.nan  # one video without any finite repetition
    write_roi(tmp_path, "sub01", "V2", train)
    with pytest.warns(DataWarning, match="3 of 5 voxels are non-finite or constant"):
        resp = load_roi_responses(tmp_path, "sub01", "V2", n_train_videos=N_VIDEOS)
    assert resp.valid.tolist() == [True, False, True, False, False]
    assert resp.data.shape == (N_VIDEOS, 5)


def test_valid_data_loads_without_warnings(tmp_path):
    write_roi(tmp_path, "sub01", "V1", make_train(np.random.default_rng(4)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_roi_responses(tmp_path, "sub01", "V1", n_train_videos=N_VIDEOS)


def test_all_invalid_voxels_raise(tmp_path):
    path = write_roi(tmp_path, "sub01", "V1", np.ones((N_VIDEOS, 3, 4)))
    with pytest.raises(DataLayoutError, match=re.escape(f"{path}: all 4 voxels are non-finite or constant")):
        load_roi_responses(tmp_path, "sub01", "V1", n_train_videos=N_VIDEOS)


def test_missing_pickle_lists_the_rois_the_subject_has(tmp_path):
    rng = np.random.default_rng(5)
    write_roi(tmp_path, "sub01", "V1", make_train(rng))
    write_roi(tmp_path, "sub01", "WB", make_train(rng), voxel_mask=wb_mask(5))
    expected = f"{tmp_path / 'mini_track/sub01/FFA.pkl'}: file not found; sub01 has: V1, WB"
    with pytest.raises(DataLayoutError, match=re.escape(expected)):
        load_roi_responses(tmp_path, "sub01", "FFA", n_train_videos=N_VIDEOS)


def test_missing_subject_lists_the_subjects_found(tmp_path):
    write_roi(tmp_path, "sub01", "V1", make_train(np.random.default_rng(6)))
    with pytest.raises(DataLayoutError, match=r"no ROI pickles for sub07 under .*\(subjects found: sub01\)"):
        load_roi_responses(tmp_path, "sub07", "V1", n_train_videos=N_VIDEOS)


def test_pickle_that_is_not_a_dict_is_refused(tmp_path):
    path = write_pickle(roi_response_path(tmp_path, "sub01", "V1"), [np.zeros(3)])
    with pytest.raises(DataLayoutError, match=re.escape(f"{path}: expected a dict with key 'train', got list")):
        load_roi_responses(tmp_path, "sub01", "V1", n_train_videos=N_VIDEOS)


def test_pickle_without_train_key_names_the_keys_it_has(tmp_path):
    path = write_pickle(roi_response_path(tmp_path, "sub01", "V1"), {"test": np.zeros(3)})
    with pytest.raises(DataLayoutError, match=re.escape(f"{path}: no 'train' key; keys: ['test']")):
        load_roi_responses(tmp_path, "sub01", "V1", n_train_videos=N_VIDEOS)


def test_non_numeric_train_is_refused(tmp_path):
    path = write_pickle(roi_response_path(tmp_path, "sub01", "V1"), {"train": [[1.0, 2.0]]})
    with pytest.raises(DataLayoutError, match=re.escape(f"{path}: 'train' must be a numeric array, got list")):
        load_roi_responses(tmp_path, "sub01", "V1", n_train_videos=N_VIDEOS)


def test_train_that_is_not_3d_is_refused(tmp_path):
    path = write_roi(tmp_path, "sub01", "V1", np.zeros((N_VIDEOS, 5)))
    expected = f"{path}: 'train' has shape (6, 5); expected 3-D (n_videos, n_repetitions, n_voxels)"
    with pytest.raises(DataLayoutError, match=re.escape(expected)):
        load_roi_responses(tmp_path, "sub01", "V1", n_train_videos=N_VIDEOS)


def test_wrong_video_count_states_both_numbers(tmp_path):
    path = write_roi(tmp_path, "sub01", "V1", make_train(np.random.default_rng(7), n_videos=5))
    with pytest.raises(DataLayoutError, match=re.escape(f"{path}: 'train' has 5 videos; expected n_train_videos = 6")):
        load_roi_responses(tmp_path, "sub01", "V1", n_train_videos=N_VIDEOS)


def test_train_without_voxels_is_refused(tmp_path):
    path = write_roi(tmp_path, "sub01", "V1", np.zeros((N_VIDEOS, 3, 0)))
    with pytest.raises(DataLayoutError, match=re.escape(f"{path}: 'train' has shape (6, 3, 0): no voxels")):
        load_roi_responses(tmp_path, "sub01", "V1", n_train_videos=N_VIDEOS)


def test_wb_loads_its_voxel_mask(tmp_path):
    mask = wb_mask(5)
    write_roi(tmp_path, "sub02", "WB", make_train(np.random.default_rng(8)), voxel_mask=mask)
    resp = load_roi_responses(tmp_path, "sub02", "WB", n_train_videos=N_VIDEOS)
    np.testing.assert_array_equal(resp.voxel_mask, mask)


def test_wb_without_voxel_mask_is_refused(tmp_path):
    path = write_roi(tmp_path, "sub01", "WB", make_train(np.random.default_rng(9)))
    with pytest.raises(DataLayoutError, match=re.escape(f"{path}: WB responses need a 3-D 'voxel_mask' volume")):
        load_roi_responses(tmp_path, "sub01", "WB", n_train_videos=N_VIDEOS)


def test_wb_mask_must_have_one_entry_per_voxel(tmp_path):
    path = write_roi(tmp_path, "sub01", "WB", make_train(np.random.default_rng(10)), voxel_mask=wb_mask(4))
    with pytest.raises(DataLayoutError, match=re.escape(f"{path}: 'voxel_mask' has 4 ones but 'train' has 5 voxels")):
        load_roi_responses(tmp_path, "sub01", "WB", n_train_videos=N_VIDEOS)


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_response_pickle_is_refused_unexecuted(tmp_path):
    marker = tmp_path / "pwned"
    write_pickle(roi_response_path(tmp_path, "sub01", "V1"), {"train": _Exploit(marker)})
    with pytest.raises(UnsafePickleError, match="system"):
        load_roi_responses(tmp_path, "sub01", "V1", n_train_videos=N_VIDEOS)
    assert not marker.exists()


def test_check_dataset_accepts_a_complete_layout(tmp_path):
    build_dataset(tmp_path, ["sub01", "sub02"], ["V1", "FFA", "WB"])
    check(tmp_path, ["sub01", "sub02"], ["V1", "FFA", "WB"])


def test_check_dataset_lists_every_problem_in_one_error(tmp_path):
    build_dataset(tmp_path, ["sub01"], ["V1"], n_videos=N_VIDEOS)
    with pytest.raises(DataLayoutError) as info:
        check(tmp_path, ["sub01", "sub02"], ["V1", "FFA", "V9"])
    message = str(info.value)
    assert "4 problem(s)" in message
    assert f"{tmp_path / VIDEOS_DIR}: 6 .mp4 files; need at least n_train_videos + 1 = 7" in message
    assert "unknown ROI(s) V9" in message
    assert f"{tmp_path / RESPONSES_DIR / 'mini_track/sub01/FFA.pkl'}: file not found" in message
    assert f"{tmp_path / RESPONSES_DIR / 'mini_track/sub02'}: subject folder not found (needed for V1, FFA)" in message


def test_check_dataset_without_responses_needs_only_the_videos(tmp_path):
    build_dataset(tmp_path, [], [])
    check_dataset(tmp_path, videos_dir=VIDEOS_DIR, responses_dir=RESPONSES_DIR, subjects=["sub01"], rois=["V1"],
                  n_train_videos=N_VIDEOS, responses=False)
    with pytest.raises(DataLayoutError, match="responses folder not found"):
        check(tmp_path, ["sub01"], ["V1"])


def test_check_dataset_names_missing_folders(tmp_path):
    tmp_path.joinpath("other").mkdir()
    with pytest.raises(DataLayoutError) as info:
        check(tmp_path, ["sub01"], ["V1"])
    assert f"{tmp_path / VIDEOS_DIR}: video folder not found" in str(info.value)
    assert f"{tmp_path / RESPONSES_DIR}: responses folder not found" in str(info.value)


def test_check_dataset_names_a_missing_root(tmp_path):
    with pytest.raises(DataLayoutError, match=re.escape(f"{tmp_path / 'absent'}: dataset root not found")):
        check(tmp_path / "absent", ["sub01"], ["V1"])


def test_check_dataset_caps_the_listed_problems(tmp_path):
    build_dataset(tmp_path, [], [])
    (tmp_path / RESPONSES_DIR).mkdir()
    subjects = [f"sub{i:02d}" for i in range(1, 16)]
    with pytest.raises(DataLayoutError, match=r"15 problem\(s\)") as info:
        check(tmp_path, subjects, ["V1"])
    lines = str(info.value).splitlines()
    assert len(lines) == 12
    assert lines[-1].strip() == "... and 5 more"


def test_importing_lwroi_data_stays_light():
    code = "import sys, lwroi.data; print(sorted(m for m in ('torch', 'av', 'mpi4py') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------ video numbering, count and fingerprints


def write_videos(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(name.encode())


def numbered(n: int) -> list[str]:
    return [f"{i:04d}_clip.mp4" for i in range(1, n + 1)]


def test_list_videos_refuses_a_missing_video_naming_its_index(tmp_path):
    names = numbered(6)
    write_videos(tmp_path, names[:2] + names[3:])
    with pytest.raises(DataLayoutError, match=re.escape("missing video index 0003 (between 0002_clip.mp4 and "
                                                        "0004_clip.mp4)")):
        list_videos(tmp_path)


def test_list_videos_refuses_an_extra_video_that_sorts_first(tmp_path):
    write_videos(tmp_path, ["0000_extra.mp4", *numbered(4)])
    with pytest.raises(DataLayoutError, match=r"0000_extra.mp4: extra file: index 0 is out of sequence"):
        list_videos(tmp_path)


def test_list_videos_names_unnumbered_repeated_and_misordered_files(tmp_path):
    write_videos(tmp_path / "a", [*numbered(3), "0002_again.mp4", "clip.mp4", "010_wide.mp4"])
    with pytest.raises(DataLayoutError) as info:
        list_videos(tmp_path / "a")
    message = str(info.value)
    assert "the video names are not numbered 1..N in order" in message
    assert "0002_clip.mp4: extra file: index 2 is also 0002_again.mp4" in message
    assert "clip.mp4: extra file: its name does not start with a video index" in message
    assert "missing video index 0004..0009 (between 0003_clip.mp4 and 010_wide.mp4)" in message
    write_videos(tmp_path / "b", ["0001_clip.mp4", "002_short.mp4", "0003_clip.mp4"])
    with pytest.raises(DataLayoutError, match=r"0003_clip\.mp4 sorts before 002_short\.mp4: give every index the same"):
        list_videos(tmp_path / "b")


def test_check_dataset_lists_a_numbering_gap_with_the_folder(tmp_path):
    build_dataset(tmp_path, ["sub01"], ["V1"])
    (tmp_path / VIDEOS_DIR / "0004.mp4").unlink()
    with pytest.raises(DataLayoutError, match=re.escape(f"{tmp_path / VIDEOS_DIR}: missing video index 0004")):
        check(tmp_path, ["sub01"], ["V1"])


def test_check_dataset_counts_the_videos_against_n_videos(tmp_path):
    build_dataset(tmp_path, ["sub01"], ["V1"], n_videos=N_VIDEOS + 2)
    kwargs = {"videos_dir": VIDEOS_DIR, "responses_dir": RESPONSES_DIR, "subjects": ["sub01"], "rois": ["V1"],
              "n_train_videos": N_VIDEOS}
    check_dataset(tmp_path, n_videos=N_VIDEOS + 2, **kwargs)
    check_dataset(tmp_path, n_videos=0, **kwargs)  # 0: not checked
    (tmp_path / VIDEOS_DIR / f"{N_VIDEOS + 2:04d}.mp4").unlink()  # the last one: no gap in the numbering
    with pytest.raises(DataLayoutError, match=re.escape(f"{tmp_path / VIDEOS_DIR}: 7 .mp4 files; data.n_videos = 8")):
        check_dataset(tmp_path, n_videos=N_VIDEOS + 2, **kwargs)


def fingerprint_of(root: Path, rois: list[str]) -> dict:
    return data_fingerprint(root, videos_dir=VIDEOS_DIR, responses_dir=RESPONSES_DIR, subjects=["sub01"], rois=rois)


def test_data_fingerprint_sees_a_video_replaced_in_place_with_the_same_size(tmp_path):
    build_dataset(tmp_path, ["sub01"], ["V1"])
    before = fingerprint_of(tmp_path, ["V1"])
    (tmp_path / VIDEOS_DIR / "0002.mp4").write_bytes(b"")  # build_dataset's videos are empty: same size
    (tmp_path / VIDEOS_DIR / "0003.mp4").write_bytes(b"x")
    changes = data_changes(before, fingerprint_of(tmp_path, ["V1"]))
    assert len(changes) == 1 and changes[0].startswith("video 0003.mp4: content changed (size 0 -> 1, sha256 ")
    assert [v[:2] for v in before["videos"]] == [[f"{i:04d}.mp4", 0] for i in range(1, N_VIDEOS + 3)]


def test_data_fingerprint_sees_a_changed_response_pickle_but_not_an_added_roi(tmp_path):
    build_dataset(tmp_path, ["sub01"], ["V1", "FFA"])
    before = fingerprint_of(tmp_path, ["V1"])
    assert data_changes(before, fingerprint_of(tmp_path, ["V1", "FFA"])) == []
    write_roi(tmp_path / RESPONSES_DIR, "sub01", "V1", make_train(np.random.default_rng(99)))
    (change,) = data_changes(before, fingerprint_of(tmp_path, ["V1", "FFA"]))
    assert change.startswith("responses mini_track/sub01/V1.pkl: content changed (sha256 ")


def test_data_changes_lists_added_and_removed_videos():
    old = {"videos": [["0001_a.mp4", 3, "aa"], ["0002_b.mp4", 3, "bb"]], "responses": {}}
    new = {"videos": [["0001_a.mp4", 3, "aa"], ["0002_c.mp4", 3, "bb"]], "responses": {}}
    assert data_changes(old, new) == ["video 0002_b.mp4: removed", "video 0002_c.mp4: added"]


def test_video_fingerprints_hash_every_byte(tmp_path):
    write_videos(tmp_path, ["0001_a.mp4"])
    (fp,) = video_fingerprints([tmp_path / "0001_a.mp4"])
    assert fp == VideoFingerprint("0001_a.mp4", 10, hashlib.sha256(b"0001_a.mp4").hexdigest())
