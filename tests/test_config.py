"""Config loading: every error names the file, the key and the value, before any work."""

from __future__ import annotations

import functools

import pytest

from lwroi.config import (
    COMPAT_SETTINGS,
    MOVED_SETTINGS,
    KernelOptions,
    SGDOptions,
    config_from_dict,
    load_config,
    result_settings,
)
from lwroi.exceptions import ConfigError


def write(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_defaults_are_the_papers_settings():
    cfg = config_from_dict({})
    assert cfg.encoding.wc == (1.0, 10.0, 100.0)
    assert cfg.encoding.lay == (0.1, 1.0, 10.0)
    assert (cfg.encoding.sgd.lr, cfg.encoding.sgd.batch_size, cfg.encoding.sgd.max_epochs) == (1e-4, 16, 500)
    assert (cfg.encoding.sgd.patience, cfg.encoding.sgd.min_delta, cfg.encoding.folds) == (30, 1e-3, 2)
    assert cfg.data.split_seed == 400 and cfg.data.n_test == 100


def test_unknown_section_lists_valid_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"run.yaml: unknown key 'encodng'; valid keys: data, features"):
        load_config(write(tmp_path, "encodng: {}\n"))


def test_unknown_key_in_section_names_dotted_key(tmp_path):
    with pytest.raises(ConfigError, match=r"run.yaml: unknown key 'encoding.fold'; valid keys of 'encoding'"):
        load_config(write(tmp_path, "encoding:\n  fold: 3\n"))


def test_wrong_type_names_key_and_value(tmp_path):
    with pytest.raises(ConfigError, match=r"run.yaml: encoding.folds = 'two': expected an integer"):
        load_config(write(tmp_path, "encoding:\n  folds: two\n"))


def test_out_of_range_names_key_and_value(tmp_path):
    with pytest.raises(ConfigError, match=r"run.yaml: encoding.wc = \[1.0, -1.0\]: must be"):
        load_config(write(tmp_path, "encoding:\n  wc: [1, -1]\n"))


def test_bad_choice_lists_choices(tmp_path):
    with pytest.raises(ConfigError, match=r"features.reduction = 'umap': must be one of: srp, pca, none"):
        load_config(write(tmp_path, "features:\n  reduction: umap\n"))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_invalid_yaml_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"run.yaml: not valid YAML"):
        load_config(write(tmp_path, "data: [\n"))


def test_set_overrides_one_key(tmp_path):
    cfg = load_config(write(tmp_path, "encoding:\n  folds: 3\n"), ["encoding.folds=4", "data.rois=[V1, FFA]"])
    assert cfg.encoding.folds == 4
    assert cfg.data.rois == ("V1", "FFA")


def test_set_with_bad_value_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"encoding.sgd.max_epochs = 0: must be >= 1"):
        load_config(write(tmp_path, "{}\n"), ["encoding.sgd.max_epochs=0"])


def test_set_without_equals_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"--set 'encoding.folds': expected section.key=value"):
        load_config(write(tmp_path, "{}\n"), ["encoding.folds"])


def test_tune_subject_must_be_a_subject():
    with pytest.raises(ConfigError, match=r"encoding.tune_subjects = \['sub09'\]: 'sub09' is not in data.subjects"):
        config_from_dict({"data": {"subjects": ["sub01"]}, "encoding": {"tune_subjects": ["sub09"]}})


def test_compat_switches_back_the_original_flaws():
    cfg = config_from_dict({"compat": True})
    assert ("encoding", "sgd", "val_pcc") in COMPAT_SETTINGS
    for path, value in COMPAT_SETTINGS.items():
        assert functools.reduce(getattr, path, cfg) == value


def test_compat_keeps_explicit_settings():
    cfg = config_from_dict({"compat": True, "encoding": {"early_stopping_on": "inner", "sgd": {"drop_last": False}}})
    assert cfg.encoding.early_stopping_on == "inner"
    assert (cfg.encoding.sgd.drop_last, cfg.encoding.sgd.val_pcc) == (False, "batch")
    set_on_the_command_line = config_from_dict({"compat": True}, overrides=["encoding.sgd.val_pcc=full"])
    assert (set_on_the_command_line.encoding.sgd.val_pcc, set_on_the_command_line.encoding.sgd.drop_last) == (
        "full", True)


def test_fingerprint_ignores_output_dir_but_not_science():
    a = config_from_dict({"run": {"output_dir": "a"}})
    b = config_from_dict({"run": {"output_dir": "b"}})
    c = config_from_dict({"encoding": {"sgd": {"lr": 0.01}}})
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_shipped_configs_load():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs"
    for path in sorted(root.glob("*.yaml")):
        load_config(path)


def test_kernel_solver_and_its_settings_are_accepted(tmp_path):
    text = "encoding:\n  solver: kernel\n  kernel:\n    refine_steps: 0\n    memory_budget_mb: 64\n"
    cfg = load_config(write(tmp_path, text))
    assert (cfg.encoding.solver, cfg.encoding.kernel.refine_steps, cfg.encoding.kernel.memory_budget_mb) == (
        "kernel", 0, 64)
    assert cfg.encoding.options is cfg.encoding.kernel
    with pytest.raises(ConfigError, match=r"encoding.solver = 'lbfgs': must be one of: sgd, kernel"):
        load_config(write(tmp_path, "encoding:\n  solver: lbfgs\n"))
    with pytest.raises(ConfigError, match=r"encoding.kernel.alphas = \[0.0\]: must be"):
        load_config(write(tmp_path, "encoding:\n  kernel:\n    alphas: [0]\n"))
    with pytest.raises(ConfigError, match=r"unknown key 'encoding.kernel.lr'; valid keys of 'encoding.kernel': alphas"):
        load_config(write(tmp_path, "encoding:\n  kernel:\n    lr: 0.1\n"))


@pytest.mark.parametrize(("old", "new"), sorted(MOVED_SETTINGS.items()))
def test_the_flat_solver_keys_of_before_are_refused_naming_the_new_key(tmp_path, old, new):
    message = rf"run.yaml: 'encoding.{old}' has moved to 'encoding.{new[0]}.{new[1]}'"
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, f"encoding:\n  {old}: 1\n"))
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, "{}\n"), [f"encoding.{old}=1"])


def test_set_reaches_a_solver_option(tmp_path):
    cfg = load_config(write(tmp_path, "encoding:\n  sgd:\n    lr: 0.01\n"), ["encoding.sgd.lr=0.5",
                                                                           "encoding.kernel.alphas=[1, 10]"])
    assert (cfg.encoding.sgd.lr, cfg.encoding.sgd.max_epochs, cfg.encoding.kernel.alphas) == (0.5, 500, (1.0, 10.0))
    with pytest.raises(ConfigError, match=r"--set 'encoding.sgd.lr=0.5': 'encoding.sgd' is not a section"):
        load_config(write(tmp_path, "{}\n"), ["encoding.sgd=1", "encoding.sgd.lr=0.5"])


def test_fingerprints_of_runs_made_before_the_solver_sections_are_kept():
    """The fingerprint hashes the flat encoding keys of before, so earlier runs, records and checkpoints resume."""
    assert config_from_dict({}).fingerprint() == "8c2107a997675535"
    assert config_from_dict({"encoding": {"solver": "kernel"}}).fingerprint() == "5cb2b2eee5201cfa"
    kernel = {"solver": "kernel", "kernel": {"alphas": [1.0], "memory_budget_mb": 5}}
    assert config_from_dict({"encoding": kernel}).fingerprint() == "f9a4f37b8a0f366e"


def test_a_run_record_with_the_flat_keys_of_before_reads_in_the_new_shape():
    old = {"encoding": {"solver": "kernel", "kernel_alphas": [1.0], "lr": 0.5, "wc": [3.0], "val_fraction": 0.2}}
    new = {"encoding": {"solver": "kernel", "kernel": {"alphas": [1.0]}}}
    assert result_settings(old)["encoding"] == result_settings(new)["encoding"] == {"solver": "kernel",
                                                                                   "kernel": {"alphas": [1.0]}}


@pytest.mark.parametrize(("options", "kwargs", "message"), [
    (SGDOptions, {"lr": 0}, r"lr \(an option of solver 'sgd'\) = 0.0: must be > 0"),
    (SGDOptions, {"metric": "r2"}, r"metric \(an option of solver 'sgd'\) = 'r2': must be one of: pcc, mse"),
    (KernelOptions, {"alphas": []}, r"alphas \(an option of solver 'kernel'\) = \[\]: must be a non-empty list"),
    (KernelOptions, {"search_steps": 1.5}, r"search_steps \(an option of solver 'kernel'\) = 1.5: expected an integer"),
])
def test_solver_options_check_themselves_naming_option_and_solver(options, kwargs, message):
    with pytest.raises(ValueError, match=message):
        options(**kwargs)


def test_choices_are_literal_types_checked_in_one_place():
    from typing import Literal, get_origin, get_type_hints

    from lwroi.config import SECTIONS, SOLVER_SECTIONS

    for cls in [*SECTIONS.values(), *SOLVER_SECTIONS.values()]:
        for key, typ in get_type_hints(cls).items():
            check = getattr(cls, "_constraints", {}).get(key)
            if get_origin(typ) is Literal:
                assert check is None, f"{cls.__name__}.{key}: its choices are its type"


def test_wb_affine_needs_16_values(tmp_path):
    with pytest.raises(ConfigError, match=r"data.wb_affine = \[1.0, 0.0\]: must be empty or 16 values"):
        load_config(write(tmp_path, "data:\n  wb_affine: [1, 0]\n"))


def _float_keys() -> list[tuple[str, str, bool]]:
    """(section, key, is_list) of every float setting, found from the dataclasses so new keys are covered.

    Solver sections are walked too: ``("encoding.sgd", "lr", False)``.
    """
    import dataclasses
    from typing import get_type_hints

    from lwroi.config import SECTIONS

    keys = []
    sections = list(SECTIONS.items())
    while sections:
        section, cls = sections.pop(0)
        for key, typ in get_type_hints(cls).items():
            if typ is float or typ == tuple[float, ...]:
                keys.append((section, key, typ is not float))
            elif dataclasses.is_dataclass(typ):
                sections.append((f"{section}.{key}", typ))
    return keys


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "nan", "1e400"])
@pytest.mark.parametrize(("section", "key", "is_list"), _float_keys(), ids=lambda x: str(x))
def test_non_finite_numbers_are_refused_naming_the_key(tmp_path, section, key, is_list, value):
    shown = f"[{value}]" if is_list else value
    with pytest.raises(ConfigError, match=rf"run.yaml: {section}.{key}(\[0\])? = .*: expected a finite number"):
        load_config(write(tmp_path, "{}\n"), [f"{section}.{key}={shown}"])


def test_float_keys_include_the_learning_rate_and_the_grids():
    keys = {(s, k) for s, k, _ in _float_keys()}
    assert {("encoding.sgd", "lr"), ("encoding", "wc"), ("encoding.sgd", "min_delta"), ("features", "srp_eps"),
            ("encoding.kernel", "alphas")} <= keys


@pytest.mark.parametrize("key", ["data.split_seed", "features.seed", "encoding.seed"])
@pytest.mark.parametrize("value", [-1, 2**32])
def test_seeds_outside_numpys_range_are_refused_naming_the_key(tmp_path, key, value):
    with pytest.raises(ConfigError, match=rf"run.yaml: {key} = {value}: must be in \[0, 2\*\*32\)"):
        load_config(write(tmp_path, "{}\n"), [f"{key}={value}"])
    section, name = key.split(".")
    assert getattr(getattr(load_config(write(tmp_path, "{}\n"), [f"{key}={2**32 - 1}"]), section), name) == 2**32 - 1


@pytest.mark.parametrize("device", ["cuda:x", "cuda:", "cuda:-1", "gpu", "cuda:0 "])
def test_a_device_that_is_not_auto_cpu_or_cuda_n_is_refused(tmp_path, device):
    with pytest.raises(ConfigError, match=r"run.device = .*: must be auto, cpu, cuda or cuda:N with N a GPU index"):
        load_config(write(tmp_path, "{}\n"), [f"run.device='{device}'"])


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_valid_devices_are_accepted(tmp_path, device):
    assert load_config(write(tmp_path, "{}\n"), [f"run.device={device}"]).run.device == device


def test_settings_that_do_not_fit_together_are_listed_in_one_error():
    with pytest.raises(ConfigError) as info:
        config_from_dict({"data": {"subjects": ["sub01"], "n_train_videos": 10, "n_test": 10},
                          "encoding": {"tune_subjects": ["sub08", "sub09"]}})
    message = str(info.value)
    assert "2 settings do not fit together" in message
    assert "'sub08', 'sub09' are not in data.subjects ['sub01']" in message
    assert "data.n_test = 10: must be smaller than data.n_train_videos = 10" in message
