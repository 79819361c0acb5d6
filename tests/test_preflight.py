"""Every check that can be made before work is made before work: exit 2 listing every problem, nothing written.

Each bad input goes through the real command (``lwroi run``/``extract``/``fit``/``submit``) on a small
dataset in the real layout; the run directory and the feature store must not exist afterwards.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from lwroi._io import sha256_file
from lwroi.cli import main
from lwroi.config import load_config
from lwroi.data import make_video_frames, roi_response_path, write_video
from lwroi.data.algonauts import response_problems
from lwroi.orchestration import driver
from lwroi.orchestration.driver import InputError, check_inputs
from tests.data.test_algonauts import RESPONSES_DIR, VIDEOS_DIR, wb_mask, write_pickle, write_roi

SUBJECTS = ("sub01", "sub02")
N_TRAIN, N_TEST, N_CHALLENGE, N_VOXELS = 10, 2, 2, 5
ROWS = N_TRAIN - N_TEST


def write_layout(root: Path, subjects=SUBJECTS, rois=("V1", "V2", "WB"), n_train: int = N_TRAIN,
                 n_challenge: int = N_CHALLENGE) -> Path:
    """Real tiny mp4 files and response pickles in the Algonauts layout."""
    rng = np.random.default_rng(0)
    for i in range(n_train + n_challenge):
        write_video(root / VIDEOS_DIR / f"{i + 1:04d}.mp4", make_video_frames(rng, 6, size=32), fps=10)
    for subject in subjects:
        for roi in rois:
            extra = {"voxel_mask": wb_mask(N_VOXELS)} if roi == "WB" else {}
            write_roi(root / RESPONSES_DIR, subject, roi, rng.standard_normal((n_train, 3, N_VOXELS)), **extra)
    return root


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return write_layout(tmp_path_factory.mktemp("layout") / "data")


@pytest.fixture
def work(tmp_path, pristine, monkeypatch) -> Path:
    """A working folder with its own copy of the dataset and a config for it (kernel solver, CPU)."""
    shutil.copytree(pristine, tmp_path / "data")
    (tmp_path / "run.yaml").write_text(f"""
data: {{root: data, subjects: [{", ".join(SUBJECTS)}], rois: [V1, V2, WB], n_train_videos: {N_TRAIN}, n_test: {N_TEST},
       n_videos: {N_TRAIN + N_CHALLENGE}}}
features: {{model: alexnet, weights: random, image_size: 64, frame_count: 2, batch_size: 8, reduction: none}}
encoding: {{solver: kernel, tune_subjects: [sub01], sgd: {{batch_size: 4}},
           kernel: {{refine_steps: 0, search_steps: 2}}}}
run: {{output_dir: runs/x, extract_shards: 2, device: cpu}}
""")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def lwroi(verb: str, *sets: str, capsys) -> tuple[int, str]:
    """Run ``lwroi VERB run.yaml --set ...`` in-process; its exit code and stderr."""
    code = main([verb, "run.yaml", "--mpi", "none", *(x for s in sets for x in ("--set", s))])
    return code, capsys.readouterr().err


def refused(work: Path, verb: str, *sets: str, capsys) -> str:
    """Assert the launch exits 2 and wrote nothing; return its message."""
    code, err = lwroi(verb, *sets, capsys=capsys)
    assert code == 2, err
    assert not (work / "runs").exists(), err
    assert not (work / "feature_store").exists(), err
    assert "Traceback" not in err
    return err


def test_the_good_layout_passes_every_check(work):
    check_inputs(load_config(work / "run.yaml", ["encoding.solver=sgd"]), "fit")


@pytest.mark.parametrize(("sets", "expected"), [
    (["encoding.sgd.lr=.inf"], "encoding.sgd.lr = inf: expected a finite number"),
    (["encoding.wc=[1, .nan]"], "encoding.wc[1] = nan: expected a finite number"),
    (["data.split_seed=-1"], "data.split_seed = -1: must be in [0, 2**32)"),
    (["run.device=cuda:x"], "run.device = 'cuda:x': must be auto, cpu, cuda or cuda:N"),
    (["run.extract_shards=13"], f"run.extract_shards = 13: more than the {N_TRAIN + N_CHALLENGE} videos"),
    (["encoding.solver=sgd", "encoding.folds=5"],
     f"encoding.folds = 5: the {ROWS} training rows (data.n_train_videos - data.n_test = {N_TRAIN} - {N_TEST}) "
     f"allow at most {ROWS // 2} folds"),
    (["encoding.solver=sgd", f"encoding.sgd.batch_size={ROWS + 1}"],
     f"encoding.sgd.batch_size = {ROWS + 1}: more than the {ROWS} training rows"),
    (["features.model=alexnett"], "features.model: model 'alexnett' is not a torchvision classification model "
                                  "(did you mean alexnet"),
    (["data.rois=[V1, V9]"], "unknown ROI(s) V9"),
])
@pytest.mark.parametrize("verb", ["run", "fit"])
def test_a_bad_input_exits_2_before_any_work_naming_the_key(work, capsys, verb, sets, expected):
    assert expected in refused(work, verb, *sets, capsys=capsys)


def test_every_unknown_layer_is_named(work, capsys):
    err = refused(work, "extract", "features.layers=[conv1, conv9, fc99]", capsys=capsys)
    assert "features.layers: layer 'conv9'" in err and "features.layers: layer 'fc99'" in err
    assert "layer 'conv1'" not in err


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:1"])
def test_a_cuda_device_torch_does_not_see_is_refused_naming_the_gpu_count(work, capsys, monkeypatch, device):
    monkeypatch.setattr(driver, "_gpu_count", lambda: 1 if device == "cuda:1" else 0)
    err = refused(work, "extract", f"run.device={device}", capsys=capsys)
    n = 1 if device == "cuda:1" else 0
    assert f"run.device = '{device}': torch sees {n} GPU(s) here (CUDA_VISIBLE_DEVICES=" in err
    assert "use run.device: auto" in err


def test_auto_device_passes_without_a_gpu(work, monkeypatch):
    monkeypatch.setattr(driver, "_gpu_count", lambda: 0)
    check_inputs(load_config(work / "run.yaml", ["run.device=auto"]), "fit")


# -- weights files --------------------------------------------------------------------------------------------


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


MODEL = "squeezenet1_1"
"""A small torchvision model (5 MB of weights), so the weights files stay small."""


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("weights")
    files = {
        "good": torchvision.models.get_model(MODEL, weights=None).state_dict(),
        "tensor": torch.zeros(3),
        "mismatched": {"features.0.weight": torch.zeros(1)},
        "malicious": {"features.0.weight": _Exploit(folder / "pwned")},
    }
    for name, obj in files.items():
        torch.save(obj, folder / f"{name}.pt")
    return {name: folder / f"{name}.pt" for name in files} | {"absent": folder / "absent.pt"}


def weights_sets(path: Path, *extra: str) -> list[str]:
    return [f"features.model={MODEL}", f"features.weights={path}", *extra]


def test_a_good_weights_file_with_its_sha256_passes(work, weights):
    sets = weights_sets(weights["good"], f"features.weights_sha256={sha256_file(weights['good'])}")
    check_inputs(load_config(work / "run.yaml", sets), "features")


@pytest.mark.parametrize(("name", "sha", "expected"), [
    ("absent", "", "absent.pt: weights file not found"),
    ("good", "f" * 64, f"expected {'f' * 64}"),
    ("tensor", "", "holds a Tensor, expected a state dict"),
    ("mismatched", "", f"state dict does not fit {MODEL}"),
])
def test_a_bad_weights_file_exits_2_before_any_work(work, capsys, weights, name, sha, expected):
    err = refused(work, "extract", *weights_sets(weights[name], f"features.weights_sha256={sha}"), capsys=capsys)
    assert "features.weights: " in err and expected in err


def test_a_malicious_weights_file_is_refused_for_safety_without_torchs_advice(work, capsys, weights):
    err = refused(work, "run", *weights_sets(weights["malicious"]), capsys=capsys)
    assert "refused for safety: the file holds objects other than tensors" in err
    assert "weights_only" not in err and "will likely succeed" not in err
    assert not (weights["malicious"].parent / "pwned").exists()


def test_a_bad_weights_file_and_a_bad_layer_are_both_listed(work, capsys, weights):
    err = refused(work, "extract", *weights_sets(weights["tensor"], "features.layers=[features.99]"), capsys=capsys)
    assert "holds a Tensor" in err and "features.layers: layer 'features.99'" in err


# -- response pickles -----------------------------------------------------------------------------------------


def break_responses(root: Path) -> dict[str, Path]:
    """One pickle broken in each way a unit would otherwise meet only when it reaches that ROI."""
    rng = np.random.default_rng(1)
    responses = root / RESPONSES_DIR
    marker = root / "pwned"
    broken = {
        "2-D": write_roi(responses, "sub01", "V1", rng.standard_normal((N_TRAIN, N_VOXELS))),
        "dtype": write_roi(responses, "sub01", "V2", np.full((N_TRAIN, 3, N_VOXELS), "x")),
        "mask": write_roi(responses, "sub01", "WB", rng.standard_normal((N_TRAIN, 3, N_VOXELS)),
                          voxel_mask=wb_mask(N_VOXELS - 1)),
        "count": write_roi(responses, "sub02", "V1", rng.standard_normal((N_TRAIN - 1, 3, N_VOXELS))),
        "unsafe": write_pickle(roi_response_path(responses, "sub02", "V2"), {"train": _Exploit(marker)}),
    }
    return broken | {"marker": marker}


def test_every_response_pickle_problem_is_listed_in_one_error_before_any_work(work, capsys):
    broken = {kind: path.relative_to(work) for kind, path in break_responses(work / "data").items()}
    err = refused(work, "run", capsys=capsys)
    assert f"{broken['2-D']}: 'train' has shape ({N_TRAIN}, {N_VOXELS}); expected 3-D" in err
    assert f"{broken['dtype']}: 'train' must be a numeric array, got array of <U1" in err
    assert f"{broken['mask']}: 'voxel_mask' has {N_VOXELS - 1} ones but 'train' has {N_VOXELS} voxels" in err
    assert f"{broken['count']}: 'train' has {N_TRAIN - 1} videos; expected n_train_videos = {N_TRAIN}" in err
    assert f"{broken['unsafe']}: refusing to load pickle: it asks for posix.system" in err
    assert not (work / broken["marker"]).exists()


def test_extraction_does_not_need_the_responses(work):
    break_responses(work / "data")
    check_inputs(load_config(work / "run.yaml"), "features")
    with pytest.raises(InputError):
        check_inputs(load_config(work / "run.yaml"), "tune")


def test_wb_masks_of_different_volume_shapes_are_refused(tmp_path):
    write_layout(tmp_path, rois=("WB",), n_challenge=0)
    write_roi(tmp_path / RESPONSES_DIR, "sub02", "WB", np.ones((N_TRAIN, 3, 2)), voxel_mask=np.ones((1, 1, 2)))
    problems = response_problems(tmp_path / RESPONSES_DIR, SUBJECTS, ["WB"], n_train_videos=N_TRAIN)
    assert problems == [f"{tmp_path / RESPONSES_DIR}: the WB voxel_mask volumes of the subjects differ in shape: "
                        "(78, 93, 71) in sub01; (1, 1, 2) in sub02"]


def test_missing_pickles_and_unknown_rois_are_left_to_the_layout_check(tmp_path):
    write_layout(tmp_path, subjects=("sub01",), rois=("V1",), n_challenge=0)
    assert response_problems(tmp_path / RESPONSES_DIR, ["sub01", "sub02"], ["V1", "FFA", "V9"],
                             n_train_videos=N_TRAIN) == []


def test_problems_of_every_kind_come_in_one_error(work, capsys):
    break_responses(work / "data")
    err = refused(work, "run", "run.extract_shards=99", "features.layers=[conv9]", "encoding.solver=sgd",
                  "encoding.folds=5", capsys=capsys)
    for part in ("run.extract_shards = 99", "layer 'conv9'", "encoding.folds = 5", "'train' has shape",
                 "refusing to load pickle"):
        assert part in err


# -- a failed check claims nothing (issue 10, item 9) ---------------------------------------------------------


@pytest.mark.slow
def test_after_a_failed_layout_check_the_corrected_run_starts_in_the_same_output_dir(work, capsys):
    refused(work, "fit", "data.rois=[V1, V9]", capsys=capsys)
    code, err = lwroi("fit", "data.rois=[V1]", capsys=capsys)
    assert code == 0, err
    assert "different configuration" not in err
    assert (work / "runs" / "x" / "run.json").is_file()


# -- lwroi submit -------------------------------------------------------------------------------------------------


@pytest.fixture
def site(tmp_path) -> Path:
    folder = tmp_path / "site"
    shutil.copytree(Path(__file__).resolve().parents[1] / "slurm", folder)
    return folder / "site.env"


def submit(site: Path, *sets: str, capsys) -> tuple[int, str, str]:
    code = main(["submit", "run.yaml", "--site", str(site), "--image", "lwroi.sif", "--dry-run",
                 *(x for s in sets for x in ("--set", s))])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_submit_checks_config_data_and_model_before_submitting(work, site, capsys):
    break_responses(work / "data")
    code, out, err = submit(site, "features.layers=[conv9]", capsys=capsys)
    assert code == 2 and out == ""
    assert "refusing to load pickle" in err and "layer 'conv9'" in err
    assert not (work / "runs").exists()


def test_submit_leaves_the_device_to_the_compute_nodes(work, site, capsys, monkeypatch):
    monkeypatch.setattr(driver, "_gpu_count", lambda: 0)
    code, out, err = submit(site, "run.device=cuda:0", capsys=capsys)
    assert code == 0, err
    assert out.startswith("#!/bin/bash\n")


def test_submit_without_torch_checks_the_data_and_says_the_model_is_left_to_the_jobs(work, site, capsys,
                                                                                    monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else find_spec(name, *a))
    code, out, err = submit(site, "features.model=alexnett", capsys=capsys)
    assert code == 0, err
    assert out.startswith("#!/bin/bash\n")
    assert "torch is not importable here, so the model, layers and weights are checked by the jobs" in err
    break_responses(work / "data")
    code, _, err = submit(site, capsys=capsys)
    assert code == 2 and "refusing to load pickle" in err


def test_the_checks_of_a_login_node_import_neither_torch_nor_mpi4py(work):
    import subprocess
    import sys

    code = ("import sys; from lwroi.config import load_config; from lwroi.orchestration.driver import check_inputs; "
            "check_inputs(load_config('run.yaml'), 'fit', device=False, model=False); "
            "print(sorted({'torch', 'mpi4py'} & set(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


def test_a_launch_whose_feature_store_is_built_does_not_load_the_network(work, capsys):
    """The model was checked when its store was built; a fit-only launch skips torchvision and the model."""
    import subprocess
    import sys

    code = ("import sys; from lwroi.config import load_config; from lwroi.orchestration.driver import check_inputs; "
            "check_inputs(load_config('run.yaml'), 'fit', device=False); print('torchvision' in sys.modules)")

    def loads_the_network() -> str:
        proc = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, text=True, check=True)
        return proc.stdout.strip()

    assert loads_the_network() == "True"  # no store yet: the model, layers and weights are checked
    assert lwroi("extract", capsys=capsys)[0] == 0
    assert loads_the_network() == "False"
