"""Dual-form (kernel) solver of the layer-weighted ROI-wise model: banded ridge with ROI-wide layer weights.

With its layer weights a fixed, the model of Zhou, Du & He (2022)

    y_v = sum_l a_l X_l W_{l,v} + b_v,    penalty alpha_v ||W_v||^2

is kernel ridge regression with the kernel ``K = sum_l gamma_l X_l X_l^T`` (``gamma_l = a_l^2``)
and an unpenalised intercept. With ~900 samples and ~38k features, the dual costs n x n per layer
instead of n x D: the per-layer Gram matrices are computed once per feature matrix (and cached
by content, so every subject, ROI, fold and candidate weighting of one feature store reuses
them), and one eigendecomposition of the centred weighted kernel per candidate weighting scores
every ridge strength for every voxel at once by generalised cross-validation (GCV, Golub, Heath
& Wahba 1979: the rotation-invariant form of leave-one-out).

The weighting gamma, on the simplex, is shared by the ROI's voxels (the paper's ROI-wise layer
weights); the ridge strength is chosen per voxel. gamma is searched in two stages: a random
search over a fixed design of candidates (the uniform weighting, then Dirichlet draws from a fixed
stream) that is the same for every fit, so fits on one feature store share its
eigendecompositions through a cache; then gradient ascent on the logits of gamma from the best
candidate, with an adaptive step (grown after an improvement, shrunk and retried after a failure).
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
import torch

from lwroi.encoding._sgd import SeedLike, SGDResult
from lwroi.encoding.metrics import pearson_r_columns_torch

DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-3, 5, 17))
"""Ridge strengths, relative to the mean eigenvalue of the centred weighted training kernel."""

_DESIGN_SEED = 20220101
"""Seed of the fixed candidate design; one constant so every fit evaluates the same candidates."""

_GAMMA_FLOOR = 1e-12
_FIRST_STEP = 1.0
"""Largest change of a layer's log-weight in the first local step (then x1.5 on success, x0.4 on failure)."""
_MAX_GRAMS = 4
"""Feature matrices whose Gram matrices stay cached (each L n^2 float64 values: 52 MB at n=900, L=8)."""

_GRAMS: OrderedDict[tuple, torch.Tensor] = OrderedDict()
_DECOMPOSITIONS: OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()


def solve_kernel(
    X: torch.Tensor,
    layer_of_feature: torch.Tensor,
    Y: torch.Tensor,
    *,
    train_idx: Sequence[np.ndarray],
    val_idx: Sequence[np.ndarray],
    wc: Sequence[float] | None = None,
    lay: Sequence[float] | None = None,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    search_steps: int = 16,
    refine_steps: int = 8,
    memory_budget_mb: float = 1024.0,
    seed: SeedLike = 0,
    state: dict | None = None,
    on_epoch: Callable[[int, Callable[[], dict]], None] | None = None,
) -> SGDResult:
    """Fit G layer-weighted models in dual form, layer weights and ridge strengths chosen by GCV.

    For model g on its training rows T (n = |T|), with gamma on the simplex and
    ``K_gamma = sum_l gamma_l X_{T,l} X_{T,l}^T`` centred over T (an unpenalised intercept), the
    coefficients of voxel v minimise ``||y_v - b_v - sum_l X_l beta_{l,v}||^2 + alpha_v sum_l
    ||beta_{l,v}||^2 / gamma_l``, i.e. ridge on the layers scaled by ``a_l = sqrt(gamma_l)``.
    The search maximises over gamma::

        J(gamma) = mean_v max_alpha [1 - GCV_v(alpha, gamma) / s_v^2]
        GCV_v = n ||(I - H) y_v||^2 / (n - 1 - tr H)^2,   H = K_gamma (K_gamma + alpha I)^-1

    (``s_v^2`` the voxel's variance over T: J is the mean voxel GCV R^2), evaluated from one
    eigendecomposition of ``K_gamma`` for every alpha and voxel. Each voxel keeps its own best alpha
    at the chosen gamma. The search evaluates ``search_steps`` design candidates, then takes
    ``refine_steps`` gradient steps (see the module docstring); every evaluation counts as one
    step of ``history["cv_score"]``, and the best one is kept.

    Parameters
    ----------
    X : tensor of shape (n_samples, n_features)
        Features of all rows (float32 or float64), on the device to compute on.
    layer_of_feature : long tensor of shape (n_features,)
        Layer index (0..L-1) of each feature column, on the same device.
    Y : tensor of shape (n_samples, n_voxels)
        Responses, same device and dtype as X.
    train_idx : sequence of G int arrays
        Rows model g is fitted on; its hyper-parameters are chosen inside them.
    val_idx : sequence of G int arrays
        Rows model g is scored on (``val_mean_r``) and nothing else; may be empty (score NaN).
    wc, lay : ignored
        The SGD solver's penalty weights, accepted so one call drives either solver: a model that
        differs from another only by them gives the same result (and is computed once).
    alphas : sequence of float
        Candidate ridge strengths, relative to the mean non-null eigenvalue of the centred
        weighted training kernel (``trace / (n - 1)``), so one grid fits any feature scaling.
    search_steps : int
        Candidates of the fixed design (the uniform weighting first, then Dirichlet draws).
    refine_steps : int
        Gradient steps from the best design candidate (0: the design only).
    memory_budget_mb : float
        Working memory of the solve beyond its inputs, the Gram matrices and its outputs: half
        bounds the cache of eigendecompositions, half the voxel batches (whose size follows
        from it, so a whole-brain ROI is fitted in several batches with the same result).
    seed, state : ignored
        The search is deterministic (models with the same rows are solved once) and takes
        seconds: an interrupted one starts again and finds the same result.
    on_epoch : callable, optional
        ``on_epoch(steps_done, get_state)`` after every candidate evaluated; exceptions propagate.

    Returns
    -------
    SGDResult
        ``layer_weights`` is ``sqrt(gamma)`` (so its squares sum to 1); ``coef`` is
        ``a[layer] * W`` on X's columns, in X's dtype; ``n_epochs`` counts the candidates
        evaluated, ``best_epoch`` (1-based) is the chosen one, ``best_score`` its J;
        ``history["cv_score"]`` is J of each candidate in order.
    """
    G = len(train_idx)
    alphas_t = _check_inputs(X, layer_of_feature, Y, train_idx, val_idx, alphas, search_steps, refine_steps,
                             memory_budget_mb)  # fmt: skip
    n_layers = int(layer_of_feature.max()) + 1
    gram_key = _content_key(X, layer_of_feature)
    grams = _layer_grams(X, layer_of_feature, n_layers, gram_key)
    budget = int(memory_budget_mb * 2**20)
    design = _design(n_layers, search_steps)
    steps = search_steps + refine_steps
    done = 0

    def get_state() -> dict:
        return {"epoch": done, "solver": "kernel"}

    def step_done() -> None:
        nonlocal done
        done += 1
        if on_epoch is not None:
            on_epoch(done, get_state)

    solved: dict[tuple, dict] = {}
    results = []
    for g in range(G):
        train = np.asarray(train_idx[g], dtype=np.int64)
        val = np.asarray(val_idx[g], dtype=np.int64)
        key = (train.tobytes(), val.tobytes())
        if key not in solved:
            problem = _Problem(X, layer_of_feature, Y, grams, train, (gram_key, hashlib.sha1(train.tobytes()).digest()),
                               alphas_t, budget)  # fmt: skip
            solved[key] = problem.solve(design, refine_steps, val, step_done)
        results.append(solved[key])
    return SGDResult(
        layer_weights=_stack([r["layer_weights"] for r in results]),
        coef=_stack([r["coef"] for r in results]),
        intercept=_stack([r["intercept"] for r in results]),
        best_epoch=np.array([r["best_step"] for r in results], dtype=np.int64),
        n_epochs=np.full(G, steps, dtype=np.int64),
        best_score=np.array([r["best_score"] for r in results]),
        val_mean_r=np.array([r["val_mean_r"] for r in results]),
        history={"cv_score": np.stack([r["history"] for r in results])},
    )


def voxel_batch_size(n_train: int, n_features: int, n_alphas: int, itemsize: int, budget_bytes: int) -> int:
    """Voxels per batch so that one batch's working arrays fit in ``budget_bytes`` (at least 1).

    Per voxel: the centred responses, their eigenbasis coordinates and squares, the dual
    coefficients (n_train float64 each), the GCV table (n_alphas float64) and one column of
    primal coefficients and of its product (n_features values of X's dtype, twice).
    """
    per_voxel = 8 * (4 * n_train + 3 * n_alphas) + 2 * itemsize * n_features
    return max(1, budget_bytes // per_voxel)


def clear_kernel_cache(*, grams: bool = True) -> None:
    """Forget the cached eigendecompositions, and the Gram matrices unless ``grams=False``."""
    if grams:
        _GRAMS.clear()
    _DECOMPOSITIONS.clear()


class _Problem:
    """One training set of one solve: its centred layer kernels and centred responses."""

    def __init__(
        self,
        X: torch.Tensor,
        layer_of_feature: torch.Tensor,
        Y: torch.Tensor,
        grams: torch.Tensor,
        train: np.ndarray,
        key: tuple,
        alphas: torch.Tensor,
        budget: int,
    ) -> None:
        self.X, self.Y, self.lof = X, Y, layer_of_feature
        self.device = X.device
        self.key = key
        self.train = torch.from_numpy(train).to(self.device)
        self.n = n = len(train)
        self.alphas = alphas
        rows = self.train
        self.centred = _centre(grams.index_select(1, rows).index_select(2, rows))
        self.traces = torch.diagonal(self.centred, dim1=1, dim2=2).sum(1)
        Y_train = Y.index_select(0, rows).to(torch.float64)
        self.y_mean = Y_train.mean(0)
        self.Yc = Y_train - self.y_mean
        var = self.Yc.square().sum(0) / (n - 1)
        self.var = var
        self.constant = var <= 0
        self.cache_bytes = budget // 2
        self.batch = voxel_batch_size(n, X.shape[1], len(alphas), X.element_size(), budget // 2)

    def decompose(self, gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eigenvalues (clipped at 0) and eigenvectors of the centred ``sum_l gamma_l K_l``, cached."""
        key = (*self.key, gamma.cpu().numpy().tobytes())
        hit = _DECOMPOSITIONS.get(key)
        if hit is not None:
            _DECOMPOSITIONS.move_to_end(key)
            return hit
        kernel = torch.tensordot(gamma, self.centred, dims=1)
        eigvals, eigvecs = torch.linalg.eigh(kernel)
        entry = (eigvals.clamp_min(0.0), eigvecs)
        _DECOMPOSITIONS[key] = entry
        size = eigvecs.numel() * eigvecs.element_size()
        while _DECOMPOSITIONS and len(_DECOMPOSITIONS) * size > self.cache_bytes:
            _DECOMPOSITIONS.popitem(last=False)
        return entry

    def gcv_r2(self, gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Best GCV R^2 of each voxel over the alphas, its alpha index, and the decomposition used."""
        eigvals, eigvecs = self.decompose(gamma)
        n = self.n
        alpha = self.alphas * (eigvals.sum() / (n - 1))
        shrink = alpha[:, None] / (eigvals[None, :] + alpha[:, None])
        dof = (eigvals[None, :] / (eigvals[None, :] + alpha[:, None])).sum(1)
        denominator = (n - 1 - dof).clamp_min(1e-12).square()
        shrink2 = shrink.square()
        V = self.Yc.shape[1]
        best = torch.empty(V, dtype=torch.float64, device=self.device)
        index = torch.empty(V, dtype=torch.int64, device=self.device)
        for start in range(0, V, self.batch):
            part = slice(start, start + self.batch)
            z = eigvecs.T @ self.Yc[:, part]
            rss = shrink2 @ z.square_()
            r2 = 1.0 - n * rss / denominator[:, None] / self.var[part].clamp_min(1e-300)
            best[part], index[part] = r2.max(0)
        best = torch.where(self.constant, torch.zeros_like(best), best)
        return best, index, eigvals, eigvecs

    def solve(self, design: np.ndarray, refine_steps: int, val: np.ndarray, step_done: Callable[[], None]) -> dict:
        """Search gamma (design, then local steps), refit at the best, score the validation rows."""
        scores: list[float] = []
        best = {"score": -math.inf, "step": 0}

        def evaluate(gamma: torch.Tensor) -> bool:
            r2, alpha_index, _, _ = self.gcv_r2(gamma)
            score = float(r2.mean())
            scores.append(score)
            step_done()
            if score > best["score"]:
                best.update(score=score, gamma=gamma, alpha_index=alpha_index, step=len(scores))
                return True
            return False

        for gamma in design:
            evaluate(torch.as_tensor(gamma, dtype=torch.float64, device=self.device))
        step, direction = _FIRST_STEP, None
        for _ in range(refine_steps):
            if direction is None:
                grad = self.gradient(best["gamma"], best["alpha_index"])
                direction = grad / grad.abs().max().clamp_min(1e-300)
            logits = best["gamma"].clamp_min(_GAMMA_FLOOR).log() + step * direction
            if evaluate(torch.softmax(logits, 0)):
                step, direction = step * 1.5, None
            else:
                step *= 0.4
        gamma = best["gamma"]
        coef, intercept = self._refit(gamma, best["alpha_index"])
        return {
            "layer_weights": gamma.sqrt().cpu().numpy(),
            "coef": coef,
            "intercept": intercept,
            "best_step": best["step"],
            "best_score": best["score"],
            "val_mean_r": self._score(coef, intercept, val),
            "history": np.asarray(scores),
        }

    def gradient(self, gamma: torch.Tensor, alpha_index: torch.Tensor) -> torch.Tensor:
        """Gradient of J with respect to the logits of gamma (gamma = softmax), each voxel's relative alpha fixed.

        Analytic, in the eigenbasis of the current kernel, so repeated eigenvalues (a kernel of rank
        below n - 1) are harmless. With ``p = G^-1 y``, ``q = G^-2 y`` (``G = K + alpha I``), the
        derivatives along ``K_l`` are ``d||(I - H) y||^2 = -2 alpha^2 p^T K_l q`` and
        ``d tr(I - H) = -alpha tr(G^-1 K_l G^-1)``; summed over voxels, both are one inner
        product of ``K_l`` with an n x n matrix built once, so a gradient costs n^2 V + 2 n^3, not
        L times that. The absolute alpha scales with the mean eigenvalue, which is linear in gamma.
        """
        eigvals, eigvecs = self.decompose(gamma)
        n, V = self.n, self.Yc.shape[1]
        mean_eig = eigvals.sum() / (n - 1)
        alpha_all = self.alphas * mean_eig
        inv = 1.0 / (eigvals[None, :] + alpha_all[:, None])  # (A, n)
        dof_free = (alpha_all[:, None] * inv).sum(1) - 1.0  # n - 1 - tr H, per alpha
        inner = torch.zeros((n, n), dtype=torch.float64, device=self.device)
        diagonal = torch.zeros(n, dtype=torch.float64, device=self.device)
        alpha_term = torch.zeros((), dtype=torch.float64, device=self.device)
        for start in range(0, V, self.batch):
            part = slice(start, start + self.batch)
            index = alpha_index[part]
            alpha, d = alpha_all[index], dof_free[index]
            inv_v = inv.index_select(0, index).T  # (n, B)
            z = eigvecs.T @ self.Yc[:, part]
            p = z * inv_v
            rss = alpha.square() * p.square().sum(0)
            weight = (~self.constant[part]).to(torch.float64) / (V * self.var[part].clamp_min(1e-300))
            c_rss = -n * weight / d.square()
            c_dof = 2.0 * n * weight * rss / d.pow(3)
            inner += (p * (-2.0 * c_rss * alpha.square())) @ (p * inv_v).T
            diagonal += inv_v.square() @ (-c_dof * alpha)
            d_rss = 2.0 * alpha * (z.square() * eigvals[:, None] * inv_v.pow(3)).sum(0)
            d_dof = (eigvals[:, None] * inv_v.square()).sum(0)
            alpha_term += (alpha / mean_eig * (c_rss * d_rss + c_dof * d_dof)).sum()
        inner.diagonal().add_(diagonal)
        outer = eigvecs @ inner @ eigvecs.T
        grad_gamma = (self.centred * outer).sum((1, 2)) + alpha_term * self.traces / (n - 1)
        return gamma * (grad_gamma - (gamma * grad_gamma).sum())

    def _refit(self, gamma: torch.Tensor, alpha_index: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Primal coefficients on X (``gamma_l X_l^T c`` for dual coefficients c) and intercepts."""
        eigvals, eigvecs = self.decompose(gamma)
        alpha = (self.alphas * (eigvals.sum() / (self.n - 1)))[alpha_index]
        X, dtype = self.X, self.X.dtype
        in_train = torch.zeros(X.shape[0], dtype=dtype, device=self.device)
        in_train[self.train] = 1.0 / self.n
        x_mean = in_train @ X
        scale = gamma.to(dtype).index_select(0, self.lof)
        V = self.Yc.shape[1]
        coef = np.empty((X.shape[1], V), dtype=torch.empty(0, dtype=dtype).numpy().dtype)
        intercept = np.empty(V, dtype=coef.dtype)
        for start in range(0, V, self.batch):
            part = slice(start, start + self.batch)
            z = eigvecs.T @ self.Yc[:, part]
            dual = eigvecs @ (z / (eigvals[:, None] + alpha[None, part]))
            full = torch.zeros((X.shape[0], dual.shape[1]), dtype=dtype, device=self.device)
            full[self.train] = dual.to(dtype)
            block = X.T @ full
            block -= x_mean[:, None] * full.sum(0)[None, :]
            block *= scale[:, None]
            coef[:, part] = block.cpu().numpy()
            intercept[part] = (self.y_mean[part].to(dtype) - x_mean @ block).cpu().numpy()
        return coef, intercept

    def _score(self, coef: np.ndarray, intercept: np.ndarray, val: np.ndarray) -> float:
        """Mean voxel Pearson r on the validation rows; NaN when there are fewer than 2."""
        if len(val) < 2:
            return math.nan
        rows = torch.from_numpy(val).to(self.device)
        X_val, Y_val = self.X.index_select(0, rows), self.Y.index_select(0, rows)
        V = coef.shape[1]
        total = 0.0
        for start in range(0, V, self.batch):
            part = slice(start, start + self.batch)
            pred = X_val @ torch.from_numpy(coef[:, part]).to(self.device)
            pred += torch.from_numpy(intercept[part]).to(self.device)
            total += float(pearson_r_columns_torch(Y_val[:, part], pred).sum())
        return total / V


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    """``np.stack``, without copying a lone array (a whole-brain coefficient matrix is gigabytes)."""
    return arrays[0][None] if len(arrays) == 1 else np.stack(arrays)


def _centre(kernels: torch.Tensor) -> torch.Tensor:
    """Double-centre each (n, n) kernel: the kernel of the centred features (an unpenalised intercept)."""
    row = kernels.mean(-1, keepdim=True)
    return kernels - row - row.transpose(-1, -2) + kernels.mean((-1, -2), keepdim=True)


def _design(n_layers: int, steps: int) -> np.ndarray:
    """The fixed candidates: the uniform weighting, then Dirichlet draws (concentration 1, then 0.3)."""
    rng = np.random.default_rng(_DESIGN_SEED)
    rows = [np.full(n_layers, 1.0 / n_layers)]
    for k in range(1, steps):
        rows.append(rng.dirichlet(np.full(n_layers, 1.0 if k % 2 else 0.3)))
    return np.asarray(rows)


def _content_key(X: torch.Tensor, layer_of_feature: torch.Tensor) -> tuple:
    """Identify a feature matrix by its bytes (so reloading the same store finds the cached Grams)."""
    digest = hashlib.sha1()
    for tensor in (X, layer_of_feature):
        host = tensor.detach().contiguous().cpu().numpy()
        digest.update(str((host.shape, host.dtype)).encode())
        digest.update(memoryview(host).cast("B"))
    return (digest.hexdigest(), str(X.device))


def _layer_grams(X: torch.Tensor, layer_of_feature: torch.Tensor, n_layers: int, key: tuple) -> torch.Tensor:
    """Per-layer Gram matrices ``X_l X_l^T`` of all rows, float64, tensor of shape (L, n, n); cached."""
    hit = _GRAMS.get(key)
    if hit is not None:
        _GRAMS.move_to_end(key)
        return hit
    n = X.shape[0]
    grams = torch.zeros((n_layers, n, n), dtype=torch.float64, device=X.device)
    chunk = 4096
    for layer in range(n_layers):
        columns = torch.nonzero(layer_of_feature == layer).flatten()
        for start in range(0, len(columns), chunk):
            block = X.index_select(1, columns[start : start + chunk]).to(torch.float64)
            grams[layer].addmm_(block, block.T)
    _GRAMS[key] = grams
    while len(_GRAMS) > _MAX_GRAMS:
        _GRAMS.popitem(last=False)
    return grams


def _check_inputs(
    X: torch.Tensor,
    layer_of_feature: torch.Tensor,
    Y: torch.Tensor,
    train_idx: Sequence[np.ndarray],
    val_idx: Sequence[np.ndarray],
    alphas: Sequence[float],
    search_steps: int,
    refine_steps: int,
    memory_budget_mb: float,
) -> torch.Tensor:
    """Fail before any work with a message naming the argument; returns the alphas as a tensor."""
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise ValueError(
            f"X must be (n_samples, n_features) and Y (n_samples, n_voxels) with the same rows; "
            f"got {tuple(X.shape)} and {tuple(Y.shape)}"
        )
    if not X.is_floating_point() or Y.dtype != X.dtype or Y.device != X.device:
        raise ValueError(f"X and Y must share a float dtype and device; got {X.dtype}/{X.device}, {Y.dtype}/{Y.device}")
    if layer_of_feature.shape != (X.shape[1],) or layer_of_feature.dtype != torch.int64:
        raise ValueError(
            f"layer_of_feature must be a long tensor of shape ({X.shape[1]},); "
            f"got {layer_of_feature.dtype} {tuple(layer_of_feature.shape)}"
        )
    if len(alphas) == 0 or any(not a > 0 for a in alphas):
        raise ValueError(f"alphas={list(alphas)}: must be a non-empty list of values > 0")
    if search_steps < 1 or refine_steps < 0:
        raise ValueError(f"search_steps={search_steps}, refine_steps={refine_steps}: need >= 1 and >= 0")
    if not memory_budget_mb > 0:
        raise ValueError(f"memory_budget_mb={memory_budget_mb}: must be > 0")
    G = len(train_idx)
    if G == 0:
        raise ValueError("train_idx is empty: nothing to fit")
    if len(val_idx) != G:
        raise ValueError(f"val_idx has {len(val_idx)} entries but train_idx has {G} (one per model)")
    n = X.shape[0]
    for name, seq, least in (("train_idx", train_idx, 3), ("val_idx", val_idx, 0)):
        for g, idx in enumerate(seq):
            idx = np.asarray(idx)
            if len(idx) < least or (len(idx) and (idx.min() < 0 or idx.max() >= n)):
                raise ValueError(f"{name}[{g}]: need >= {least} row indices in [0, {n}); got {len(idx)} rows")
    return torch.tensor([float(a) for a in alphas], dtype=torch.float64, device=X.device)
