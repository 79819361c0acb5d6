"""solve_kernel: equal to primal ridge, recovers planted layer profiles, batches voxels, caches Grams."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from lwroi.config import KernelOptions
from lwroi.data.splits import kfold_splits
from lwroi.encoding import LayerWeightedEncoder, evaluate_grid_models, get_solver, stack_layer_features
from lwroi.encoding._kernel import KernelCache, _content_key, _layer_grams, _Problem, solve_kernel, voxel_batch_size
from tests.encoding.original import vectorized_correlation
from tests.encoding.test_model import FAST, PROFILE, planted_layers

SMALL = {"search_steps": 6, "refine_steps": 4}
OPTIONS = {f.name for f in dataclasses.fields(KernelOptions)}
DEFAULT_ALPHAS = KernelOptions().alphas


def solve(X, layer_of_feature, Y, **kwargs):
    """``solve_kernel``; the keyword arguments that are options go into ``options``."""
    options = KernelOptions(**{key: kwargs.pop(key) for key in OPTIONS & set(kwargs)})
    return solve_kernel(X, layer_of_feature, Y, options=options, **kwargs)


@pytest.fixture(scope="module")
def noisy():
    """Planted layers with noise as strong as the signal: the layer profile is not obvious."""
    X, Y = planted_layers(n=200, noise=1.0, seed=1)
    return [x[:150] for x in X], Y[:150], [x[150:] for x in X], Y[150:]


def tensors(X_layers, Y, dtype=torch.float64):
    X, layer_of_feature, _ = stack_layer_features(X_layers, "balanced")
    return torch.from_numpy(X).to(dtype), torch.from_numpy(layer_of_feature), torch.from_numpy(Y).to(dtype)


def test_registered_as_kernel():
    entry = get_solver("kernel")
    assert (entry.solve, entry.options, entry.uses_grid, entry.needs_validation) == (
        solve_kernel, KernelOptions, False, False)


def test_matches_direct_primal_ridge(noisy):
    X_layers, Y, _, _ = noisy
    X, layer_of_feature, Yt = tensors(X_layers, Y)
    train, val = np.arange(120), np.arange(120, 150)
    result = solve(X, layer_of_feature, Yt, train_idx=[train], val_idx=[val], alphas=[0.3],
                          search_steps=1, refine_steps=0)  # fmt: skip
    # The first candidate is the uniform weighting: ridge on the layers scaled by sqrt(1/L).
    Z = X.numpy()[train] * np.sqrt(1 / 4)
    z_mean, y_mean = Z.mean(0), Y[train].mean(0)
    Zc, Yc = Z - z_mean, Y[train] - y_mean
    alpha = 0.3 * np.trace(Zc @ Zc.T) / (len(train) - 1)
    W = np.linalg.solve(Zc.T @ Zc + alpha * np.eye(Z.shape[1]), Zc.T @ Yc)
    coef = W * np.sqrt(1 / 4)
    np.testing.assert_allclose(result.coef[0], coef, rtol=1e-5, atol=1e-5 * np.abs(coef).max())
    np.testing.assert_allclose(result.intercept[0], y_mean - z_mean @ W, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(result.layer_weights[0], np.full(4, 0.5))


def test_recovers_planted_profile_at_least_as_well_as_sgd(noisy):
    X, Y, X_test, Y_test = noisy
    kernel = LayerWeightedEncoder(solver="kernel", device="cpu").fit(X, Y)
    sgd = LayerWeightedEncoder(wc=0.01, lay=0.01, **FAST).fit(X, Y)
    assert spearmanr(kernel.layer_weights_, PROFILE)[0] >= spearmanr(sgd.layer_weights_, PROFILE)[0]
    planted = PROFILE / np.linalg.norm(PROFILE)
    np.testing.assert_allclose(kernel.layer_weights_, planted, atol=0.1)
    assert kernel.score(X_test, Y_test) >= sgd.score(X_test, Y_test) - 0.01


def test_gradient_steps_improve_on_the_design(noisy):
    X_layers, Y, _, _ = noisy
    X, layer_of_feature, Yt = tensors(X_layers, Y)
    rows = [np.arange(150)]
    result = solve(X, layer_of_feature, Yt, train_idx=rows, val_idx=[np.arange(0)], **SMALL)
    history = result.history["cv_score"][0]
    assert history.shape == (10,) and result.n_steps[0] == 10
    assert history[6:].max() > history[:6].max()
    assert result.best_score[0] == history.max() == history[result.best_step[0] - 1]


def test_gradient_matches_finite_differences(noisy):
    X_layers, Y, _, _ = noisy
    X, layer_of_feature, Yt = tensors(X_layers, Y)
    key = _content_key(X, layer_of_feature)
    alphas = torch.tensor(DEFAULT_ALPHAS, dtype=torch.float64)
    problem = _Problem(X, layer_of_feature, Yt, _layer_grams(X, layer_of_feature, 4), np.arange(150),
                       (key, b"rows"), alphas, 2**26, search_voxels=7, cache=KernelCache())  # fmt: skip
    gamma = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    _, alpha_index = problem.objective(gamma)

    def objective(logits):
        eigvals, eigvecs = torch.linalg.eigh(torch.tensordot(torch.softmax(logits, 0), problem.centred, dims=1))
        eigvals = eigvals.clamp_min(0)
        alpha = (alphas * eigvals.sum() / 149)[alpha_index]
        shrink = alpha / (eigvals[:, None] + alpha)
        rss = (shrink.square() * (eigvecs.T @ problem.Ys).square()).sum(0)
        return float((1 - 150 * rss / (shrink.sum(0) - 1).square() / problem.var_s).mean())

    step = 1e-6
    numeric = [(objective(gamma.log() + step * e) - objective(gamma.log() - step * e)) / (2 * step)
               for e in torch.eye(4, dtype=torch.float64)]  # fmt: skip
    np.testing.assert_allclose(problem.gradient(gamma, alpha_index).numpy(), numeric, rtol=1e-5, atol=1e-9)


def test_small_memory_budget_batches_voxels_with_same_numbers(noisy):
    X_layers, Y, _, _ = noisy
    X, layer_of_feature, Yt = tensors(X_layers, Y)
    budget_mb = 0.02
    n_voxels = Y.shape[1]
    batch = voxel_batch_size(150, X.shape[1], len(DEFAULT_ALPHAS), 8, int(budget_mb * 2**20) // 2)
    assert batch <= n_voxels // 3, "the budget must force several voxel batches"
    kwargs = {"train_idx": [np.arange(150)], "val_idx": [np.arange(100, 150)], **SMALL}
    one = solve(X, layer_of_feature, Yt, memory_budget_mb=1024, **kwargs)
    several = solve(X, layer_of_feature, Yt, memory_budget_mb=budget_mb, **kwargs)
    np.testing.assert_allclose(several.history["cv_score"], one.history["cv_score"], rtol=1e-10)
    np.testing.assert_allclose(several.layer_weights, one.layer_weights, rtol=1e-10)
    np.testing.assert_allclose(several.coef, one.coef, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(several.dual_coef, one.dual_coef, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(several.intercept, one.intercept, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(several.val_mean_r, one.val_mean_r, rtol=1e-10)


def test_grams_are_computed_once_per_feature_content_in_the_callers_workspace(noisy):
    X_layers, Y, _, _ = noisy
    X, layer_of_feature, Yt = tensors(X_layers, Y)
    workspace = {}
    kwargs = {"train_idx": [np.arange(100)], "val_idx": [np.arange(100, 150)], "search_steps": 2, "refine_steps": 0,
              "workspace": workspace}
    solve(X, layer_of_feature, Yt, **kwargs)
    grams = workspace["kernel"].entries["grams"]
    first = next(iter(grams.values()))
    solve(X.clone(), layer_of_feature.clone(), Yt[:, :3].contiguous(), **kwargs)
    assert len(grams) == 1 and next(iter(grams.values())) is first
    solve(X * 2, layer_of_feature, Yt, **kwargs)
    assert len(grams) == 2
    workspace["kernel"].clear(grams=False)
    assert len(grams) == 2 and not workspace["kernel"].entries["decompositions"]


def test_a_solve_without_workspace_keeps_nothing(noisy, monkeypatch):
    """No module-level cache: two solves without a workspace compute the Grams twice."""
    import lwroi.encoding._kernel as kernel_module

    calls = []
    compute = kernel_module._layer_grams
    monkeypatch.setattr(kernel_module, "_layer_grams", lambda *args: calls.append(1) or compute(*args))
    X_layers, Y, _, _ = noisy
    kwargs = {"train_idx": [np.arange(100)], "val_idx": [np.arange(0)], "search_steps": 1, "refine_steps": 0}
    solve(*tensors(X_layers, Y), **kwargs)
    solve(*tensors(X_layers, Y), **kwargs)
    assert len(calls) == 2
    workspace = {}
    solve(*tensors(X_layers, Y), workspace=workspace, **kwargs)
    solve(*tensors(X_layers, Y), workspace=workspace, **kwargs)
    assert len(calls) == 3


def test_encoder_fits_in_a_workspace_share_the_stacked_features_and_give_the_same_numbers(noisy):
    """A rank's fits on one store stack, scale and hash the blocks once; every number is the one a fresh fit gives."""
    X_layers, Y, X_test, _ = noisy
    params = {"solver": "kernel", "solver_params": SMALL, "device": "cpu"}
    alone = [LayerWeightedEncoder(**params).fit(X_layers, Y[:, cols]) for cols in (slice(0, 4), slice(4, 9))]
    workspace: dict = {}
    shared = [LayerWeightedEncoder(**params).fit([x.copy() for x in X_layers], Y[:, cols], workspace=workspace)
              for cols in (slice(0, 4), slice(4, 9))]  # fmt: skip
    (key,) = workspace["stacked"]
    assert shared[0]._dual[0] is shared[1]._dual[0]  # one stacked matrix, as reloading the store would give
    assert len(workspace["kernel"].entries["grams"]) == 1 and key in next(iter(workspace["kernel"].entries["grams"]))
    for a, b in zip(alone, shared, strict=True):
        np.testing.assert_array_equal(a.layer_weights_, b.layer_weights_)
        np.testing.assert_array_equal(a.intercept_, b.intercept_)
        np.testing.assert_array_equal(a.predict(X_test), b.predict(X_test))
    # the second fit predicted from the first one's cross Grams of X_test, to the same bits
    assert shared[0]._shared_cross is shared[1]._shared_cross and len(shared[0]._shared_cross) == 1
    assert alone[0]._shared_cross is None
    # The layer profile of the training rows comes from the solver's Grams (float64) instead of the features
    assert shared[0]._train_kernels is not None and alone[0]._train_kernels is None
    for a, b in zip(alone, shared, strict=True):
        np.testing.assert_allclose(b.layer_profile(X_layers), a.layer_profile(X_layers), rtol=1e-5, atol=1e-7)
    restored = pickle.loads(pickle.dumps(shared[0]))  # pickled without the Grams: the features' way again
    assert not hasattr(restored, "_train_kernels") and not hasattr(restored, "_shared_cross")
    np.testing.assert_array_equal(restored.predict(X_test), shared[0].predict(X_test))
    np.testing.assert_allclose(restored.layer_profile(X_layers), shared[0].layer_profile(X_layers), rtol=1e-5)
    changed = [x.copy() for x in X_layers]
    changed[2][0, 0] += 1.0  # one value of one block: other features, never the kept ones
    LayerWeightedEncoder(**params).fit(changed, Y, workspace=workspace)
    assert list(workspace["stacked"]) != [key] and len(workspace["stacked"]) == 1
    assert len(workspace["kernel"].entries["grams"]) == 2
    assert workspace["cross_grams"]["train"] != f"{key}" and not workspace["cross_grams"]["rows"]  # other rows


def test_models_that_differ_only_by_wc_and_lay_are_solved_once(noisy):
    """Issue 11: the "solve once" cache looked up (train, val) but stored under another key, so it never hit."""
    X_layers, Y, _, _ = noisy
    steps = []
    train, val = np.arange(120), np.arange(120, 150)
    result = solve(*tensors(X_layers, Y), train_idx=[train, train, train], val_idx=[val, val, val],
                   wc=[1.0, 10.0, 100.0], lay=[0.1, 1.0, 10.0], on_epoch=lambda step, get_state: steps.append(step),
                   **SMALL)
    assert steps == list(range(1, 11)), "one search of 6 + 4 steps for the three models"
    for name in ("layer_weights", "coef", "intercept", "val_mean_r"):
        np.testing.assert_array_equal(getattr(result, name)[1:], getattr(result, name)[:1].repeat(2, axis=0))


def test_estimator_fits_every_row_and_documents_the_search(noisy):
    X, Y, X_test, Y_test = noisy
    est = LayerWeightedEncoder(solver="kernel", device="cpu", solver_params=SMALL).fit(X, Y)
    assert est.solver_ == "kernel" and est.n_epochs_ == 10 and 1 <= est.best_epoch_ <= 10
    assert est.history_["cv_score"].shape == (10,) and np.isnan(est.val_mean_r_)
    est.score(X_test, Y_test), est.layer_contributions(X_test, Y_test)
    assert est._coef is None, "predicting in dual form must not build the n_features x n_voxels matrix"
    assert est.coef_.shape == (sum(x.shape[1] for x in X), Y.shape[1])
    np.testing.assert_allclose(est.predict(X_test), np.hstack(X_test) @ est.coef_ + est.intercept_, rtol=1e-4,
                               atol=1e-5)  # fmt: skip
    direct = solve(*tensors(X, Y, torch.float32), train_idx=[np.arange(150)], val_idx=[np.arange(0)], **SMALL)
    np.testing.assert_allclose(est.layer_weights_, direct.layer_weights[0], rtol=1e-6)
    with_val = LayerWeightedEncoder(solver="kernel", device="cpu", solver_params=SMALL)
    with_val.fit(X, Y, X_val=X_test, Y_val=Y_test)
    assert with_val.val_mean_r_ == pytest.approx(with_val.score(X_test, Y_test), abs=1e-5)


def test_validation_score_uses_the_estimators_pcc(noisy):
    X, Y, X_test, Y_test = noisy
    est = LayerWeightedEncoder(solver="kernel", device="cpu", pcc="original", solver_params=SMALL)
    est.fit(X, Y, X_val=X_test, Y_val=Y_test)
    expected = vectorized_correlation(Y_test.astype(np.float64), est.predict(X_test).astype(np.float64)).mean()
    assert est.val_mean_r_ == pytest.approx(expected, abs=1e-5)


def test_grid_models_on_the_same_fold_share_one_solve(noisy):
    X, Y, _, _ = noisy
    models = [(1.0, 0.1, 0), (10.0, 1.0, 0), (1.0, 0.1, 1)]
    result = evaluate_grid_models(X, Y, models, folds=2, seed=3, device="cpu", solver="kernel",
                                  solver_params=SMALL)
    assert result["score"][0] == result["score"][1] != result["score"][2]
    train, val = kfold_splits(len(Y), 2, seed=3)[1]
    alone = solve(*tensors(X, Y, torch.float32), train_idx=[train], val_idx=[val], **SMALL)
    assert result["score"][2] == pytest.approx(alone.val_mean_r[0], abs=1e-6)


def test_on_epoch_sees_every_search_step(noisy):
    X_layers, Y, _, _ = noisy
    seen = []
    solve(*tensors(X_layers, Y), train_idx=[np.arange(150)], val_idx=[np.arange(0)],
                 on_epoch=lambda step, get_state: seen.append(get_state()["epoch"]), **SMALL)  # fmt: skip
    assert seen == list(range(1, 11))


def test_invalid_alphas_are_named(noisy):
    X_layers, Y, _, _ = noisy
    with pytest.raises(ValueError, match=r"alphas \(an option of solver 'kernel'\) = \[1.0, 0.0\]: must be a non"):
        solve(*tensors(X_layers, Y), train_idx=[np.arange(150)], val_idx=[np.arange(0)], alphas=[1.0, 0.0])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(noisy):
    X_layers, Y, _, _ = noisy
    kwargs = {"train_idx": [np.arange(120)], "val_idx": [np.arange(120, 150)], **SMALL}
    on_cpu = solve(*tensors(X_layers, Y), **kwargs)
    on_gpu = solve(*(t.cuda() for t in tensors(X_layers, Y)), **kwargs)
    np.testing.assert_allclose(on_gpu.layer_weights, on_cpu.layer_weights, rtol=1e-6)
    np.testing.assert_allclose(on_gpu.coef, on_cpu.coef, rtol=1e-6, atol=1e-9)


def test_default_alphas_are_the_configs():
    from lwroi.config import EncodingConfig

    assert EncodingConfig().kernel.alphas == DEFAULT_ALPHAS == tuple(10.0 ** (k / 2) for k in range(-6, 11))
