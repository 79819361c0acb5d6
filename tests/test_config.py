"""Config loading: every error names the file, the key and the value, before any work."""

from __future__ import annotations

import pytest

from lwroi.config import COMPAT_SETTINGS, config_from_dict, load_config
from lwroi.exceptions import ConfigError


def write(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_defaults_are_the_papers_settings():
    cfg = config_from_dict({})
    assert cfg.encoding.wc == (1.0, 10.0, 100.0)
    assert cfg.encoding.lay == (0.1, 1.0, 10.0)
    assert (cfg.encoding.lr, cfg.encoding.batch_size, cfg.encoding.max_epochs) == (1e-4, 16, 500)
    assert (cfg.encoding.patience, cfg.encoding.min_delta, cfg.encoding.folds) == (30, 1e-3, 2)
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
    with pytest.raises(ConfigError, match=r"encoding.max_epochs = 0: must be >= 1"):
        load_config(write(tmp_path, "{}\n"), ["encoding.max_epochs=0"])


def test_set_without_equals_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"--set 'encoding.folds': expected section.key=value"):
        load_config(write(tmp_path, "{}\n"), ["encoding.folds"])


def test_tune_subject_must_be_a_subject():
    with pytest.raises(ConfigError, match=r"encoding.tune_subjects = \['sub09'\]: 'sub09' is not in data.subjects"):
        config_from_dict({"data": {"subjects": ["sub01"]}, "encoding": {"tune_subjects": ["sub09"]}})


def test_compat_switches_back_the_original_flaws():
    cfg = config_from_dict({"compat": True})
    for (section, key), value in COMPAT_SETTINGS.items():
        assert getattr(getattr(cfg, section), key) == value


def test_compat_keeps_explicit_settings():
    cfg = config_from_dict({"compat": True, "encoding": {"early_stopping_on": "inner"}})
    assert cfg.encoding.early_stopping_on == "inner"


def test_fingerprint_ignores_output_dir_but_not_science():
    a = config_from_dict({"run": {"output_dir": "a"}})
    b = config_from_dict({"run": {"output_dir": "b"}})
    c = config_from_dict({"encoding": {"lr": 0.01}})
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_shipped_configs_load():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs"
    for path in sorted(root.glob("*.yaml")):
        load_config(path)


def test_kernel_solver_and_its_settings_are_accepted(tmp_path):
    text = "encoding:\n  solver: kernel\n  kernel_refine_steps: 0\n  memory_budget_mb: 64\n"
    cfg = load_config(write(tmp_path, text))
    assert (cfg.encoding.solver, cfg.encoding.kernel_refine_steps, cfg.encoding.memory_budget_mb) == ("kernel", 0, 64)
    with pytest.raises(ConfigError, match=r"encoding.solver = 'lbfgs': must be one of: sgd, kernel"):
        load_config(write(tmp_path, "encoding:\n  solver: lbfgs\n"))
    with pytest.raises(ConfigError, match=r"encoding.kernel_alphas = \[0.0\]: must be"):
        load_config(write(tmp_path, "encoding:\n  kernel_alphas: [0]\n"))


def test_wb_affine_needs_16_values(tmp_path):
    with pytest.raises(ConfigError, match=r"data.wb_affine = \[1.0, 0.0\]: must be empty or 16 values"):
        load_config(write(tmp_path, "data:\n  wb_affine: [1, 0]\n"))


def _float_keys() -> list[tuple[str, str, bool]]:
    """(section, key, is_list) of every float setting, found from the dataclasses so new keys are covered."""
    from typing import get_type_hints

    from lwroi.config import SECTIONS

    keys = []
    for section, cls in SECTIONS.items():
        for key, typ in get_type_hints(cls).items():
            if typ is float or typ == tuple[float, ...]:
                keys.append((section, key, typ is not float))
    return keys


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "nan", "1e400"])
@pytest.mark.parametrize(("section", "key", "is_list"), _float_keys(), ids=lambda x: str(x))
def test_non_finite_numbers_are_refused_naming_the_key(tmp_path, section, key, is_list, value):
    shown = f"[{value}]" if is_list else value
    with pytest.raises(ConfigError, match=rf"run.yaml: {section}.{key}(\[0\])? = .*: expected a finite number"):
        load_config(write(tmp_path, f"{section}:\n  {key}: {shown}\n"))


def test_float_keys_include_the_learning_rate_and_the_grids():
    keys = {(s, k) for s, k, _ in _float_keys()}
    assert {("encoding", "lr"), ("encoding", "wc"), ("encoding", "min_delta"), ("features", "srp_eps")} <= keys


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
