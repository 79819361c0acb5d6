"""The plan: units, dependencies before dependents, cost-balanced shards."""

from __future__ import annotations

import pytest

from lwroi.config import config_from_dict
from lwroi.orchestration.plan import build_plan, grid_models, parse_shard, shard_units

VOXELS = {"V1": 250, "FFA": 70, "LOC": 1500, "WB": 18000}


def make_cfg(**encoding):
    return config_from_dict({
        "data": {"subjects": ["sub01", "sub02", "sub03"], "rois": list(VOXELS)},
        "encoding": {"folds": 2, **encoding},
    })


def cost(subject, roi):
    return float(VOXELS[roi])


def test_dependencies_come_before_dependents():
    units = build_plan(make_cfg(), cost)
    position = {u.key: i for i, u in enumerate(units)}
    for unit in units:
        assert all(position[d] < position[unit.key] for d in unit.deps), unit.key


def test_unit_keys_are_canonical():
    keys = {u.key for u in build_plan(make_cfg(), cost, tune_split="point")}
    assert "tune/alexnet/sub01/V1/wc=10,lay=1/fold=0" in keys
    assert {"features/alexnet", "extract/alexnet/shard=000", "select/alexnet/V1", "fit/alexnet/sub03/WB"} <= keys


@pytest.mark.parametrize("split,n_units", [("roi", 1), ("fold", 2), ("point", 18)])
def test_tune_split_covers_the_whole_grid_once(split, n_units):
    units = [u for u in build_plan(make_cfg(), cost, tune_split=split) if u.phase == "tune" and u.roi == "V1"]
    assert len(units) == n_units
    models = sorted(m.index for u in units for m in u.models)
    assert models == list(range(18))


def test_grid_model_index_is_independent_of_split():
    models = grid_models([1, 10], [0.1, 1], 2)
    assert [(m.wc, m.lay, m.fold) for m in models][:2] == [(1.0, 0.1, 0), (1.0, 1.0, 0)]
    assert [m.index for m in models] == list(range(8))


def test_costly_units_come_first_within_a_phase():
    fits = [u for u in build_plan(make_cfg(), cost) if u.phase == "fit"]
    assert fits[0].roi == "WB" and fits[-1].roi == "FFA"


def test_up_to_stops_at_phase():
    phases = {u.phase for u in build_plan(make_cfg(), cost, up_to="features")}
    assert phases == {"extract", "features"}


def test_shards_partition_the_plan():
    units = build_plan(make_cfg(), cost)
    shards = [shard_units(units, i, 3) for i in range(3)]
    keys = [u.key for s in shards for u in s]
    assert sorted(keys) == sorted(u.key for u in units)


def test_shards_keep_an_roi_together_and_balance_cost():
    units = build_plan(make_cfg(), cost)
    shards = [shard_units(units, i, 2) for i in range(2)]
    for roi in VOXELS:
        owners = {i for i, s in enumerate(shards) for u in s if u.roi == roi}
        assert len(owners) == 1, roi
    loads = [sum(u.cost for u in s) for s in shards]
    # the WB group alone outweighs all others, so it sits alone on one shard
    assert {u.roi for u in shards[0] + shards[1] if u.roi} == set(VOXELS)
    assert min(loads) > 0


def test_parse_shard_rejects_bad_text():
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "x", "1/0", "-1/2"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


def test_kernel_solver_plan_fits_straight_after_the_features():
    """The kernel solver picks its own layer weights and ridge strengths: no grid to tune or select."""
    units = build_plan(make_cfg(solver="kernel"), cost)
    assert {u.phase for u in units} == {"extract", "features", "fit"}
    fits = [u for u in units if u.phase == "fit"]
    assert len(fits) == 3 * len(VOXELS) and all(u.deps == ("features/alexnet",) for u in fits)
