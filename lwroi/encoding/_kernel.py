"""Dual-form (kernel) solver of the layer-weighted ROI-wise model: banded ridge with ROI-wide layer weights.

With its layer weights a fixed, the model of Zhou, Du & He (2022)

    y_v = sum_l a_l X_l W_{l,v} + b_v,    penalty alpha_v ||W_v||^2

is kernel ridge regression with the kernel ``K = sum_l gamma_l X_l X_l^T`` (``gamma_l = a_l^2``)
and an unpenalised intercept. With ~900 samples and ~38k features, the dual costs n x n per layer
instead of n x D: the per-layer Gram matrices are computed once per feature matrix (and cached
by content in the caller's :class:`KernelCache`, so every subject, ROI, fold and candidate
weighting of one feature store reuses them), and one eigendecomposition of the centred weighted
kernel per candidate weighting scores every ridge strength for every voxel at once by generalised
cross-validation (GCV, Golub, Heath & Wahba 1979: the rotation-invariant form of leave-one-out).

The weighting gamma, on the simplex, is shared by the ROI's voxels (the paper's ROI-wise layer
weights); the ridge strength is chosen per voxel. gamma is searched in two stages: a random
search over a fixed design of candidates (the uniform weighting, then Dirichlet draws from a fixed
stream) that is the same for every fit, so fits on one feature store share its
eigendecompositions through that cache; then gradient ascent on the logits of gamma from the best
candidate, with an adaptive step (grown after an improvement, shrunk and retried after a failure).
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from lwroi.config import KernelOptions
from lwroi.encoding._arrays import check_solver_arrays, content_digest
from lwroi.encoding.metrics import pearson_r_columns_torch
from lwroi.encoding.result import SeedLike, SolverResult

_DESIGN_SEED = 20220101
"""Seed of the fixed candidate design; one constant so every fit evaluates the same candidates."""

_GAMMA_FLOOR = 1e-12
_FIRST_STEP = 1.0
"""Largest change of a layer's log-weight in the first local step (then x1.5 on success, x0.4 on failure)."""
_MAX_GRAMS = 2
"""Feature matrices (and training sets) whose Gram matrices (and centred training blocks) stay cached;
each is L n^2 float64 values, 52 MB at n=900, L=8."""

_CACHED = ("grams", "centred", "decompositions")
"""What :class:`KernelCache` keeps."""


class KernelCache:
    """What the kernel solver reuses between solves on the same features, kept by the caller.

    Per-layer Gram matrices (by the content of X), their centred training blocks (by training
    rows) and eigendecompositions of weighted kernels (by weighting), each dropped least recently
    used first: Grams and centred blocks beyond ``max_grams`` feature matrices, decompositions
    beyond half a solve's ``memory_budget_mb``. A solve finds it in its ``workspace`` dict (under
    ``"kernel"``), so one dict kept by a process lets every subject, ROI and fold of one feature
    store share the Grams and the decompositions of the fixed candidate design; a solve given no
    workspace starts from an empty cache and keeps nothing.
    """

    def __init__(self, max_grams: int = _MAX_GRAMS) -> None:
        self.max_grams = max_grams
        self.entries: dict[str, OrderedDict[tuple, Any]] = {kind: OrderedDict() for kind in _CACHED}

    def get(self, kind: str, key: tuple, compute: Callable[[], Any], max_bytes: int | None = None) -> Any:
        """The cached ``kind`` entry of ``key``, computed (and older entries dropped) on a miss."""
        entries = self.entries[kind]
        if key in entries:
            entries.move_to_end(key)
            return entries[key]
        entries[key] = value = compute()
        while entries and (len(entries) > self.max_grams if max_bytes is None else _nbytes(entries) > max_bytes):
            entries.popitem(last=False)
        return value

    def clear(self, *, grams: bool = True) -> None:
        """Forget the eigendecompositions, and the Gram matrices and centred blocks unless ``grams=False``."""
        for kind in _CACHED if grams else ("decompositions",):
            self.entries[kind].clear()



def _nbytes(entries: OrderedDict[tuple, Any]) -> int:
    """Bytes of the eigenvectors held by a cache of decompositions."""
    return sum(vectors.numel() * vectors.element_size() for _, vectors in entries.values())


def solve_kernel(
    X: torch.Tensor,
    layer_of_feature: torch.Tensor,
    Y: torch.Tensor,
    *,
    train_idx: Sequence[np.ndarray],
    val_idx: Sequence[np.ndarray],
    wc: Sequence[float] | None = None,
    lay: Sequence[float] | None = None,
    options: KernelOptions | None = None,
    pcc: str = "pearson",
    primal: bool = True,
    seed: SeedLike = 0,
    state: dict | None = None,
    on_epoch: Callable[[int, Callable[[], dict]], None] | None = None,
    workspace: dict | None = None,
    x_key: str | None = None,
) -> SolverResult:
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
    options : KernelOptions, default=KernelOptions()
        ``alphas``: candidate ridge strengths, relative to the mean non-null eigenvalue of the
        centred weighted training kernel (``trace / (n - 1)``), so one grid fits any feature
        scaling. ``search_steps``: candidates of the fixed design (the uniform weighting first,
        then Dirichlet draws). ``refine_steps``: gradient steps from the best design candidate
        (0: the design only). ``search_voxels``: J is averaged over at most this many voxels
        (evenly spread over the ROI's columns): the weighting is shared by the ROI, so a
        whole-brain search need not score every voxel; every voxel's alpha and coefficients are
        fitted at the chosen weighting. ``memory_budget_mb``: working memory of the solve beyond
        its inputs, the Gram matrices and its outputs: half bounds the cache of
        eigendecompositions, half the voxel batches (whose size follows from it, so a
        whole-brain ROI is fitted in several batches with the same result).
    primal : bool, default=True
        Also return the primal coefficients (n_features x n_voxels: 3 GB for a whole-brain ROI
        on 38k features, and the dominant cost of a large fit). Without them, ``coef`` is None
        and predictions go through ``dual_coef`` and the Gram matrices of the new rows.
    pcc : {"pearson", "original"}, default="pearson"
        The correlation of ``val_mean_r`` (``lwroi.encoding.metrics``).
    seed, state : ignored
        The search is deterministic (models with the same rows are solved once) and takes
        seconds: an interrupted one starts again and finds the same result.
    on_epoch : callable, optional
        ``on_epoch(steps_done, get_state)`` after every candidate evaluated; exceptions propagate.
    workspace : dict, optional
        Kept by the caller between solves: the solve keeps its :class:`KernelCache` there (under
        ``"kernel"``) and finds it again. None: a cache for this call alone.
    x_key : str, optional
        A digest of X's content the caller has already (the encoder's, of its layer blocks and
        scaling), under which the Gram matrices are cached; None: X is hashed here.

    Returns
    -------
    SolverResult
        ``layer_weights`` is ``sqrt(gamma)`` (so its squares sum to 1); ``coef`` is
        ``a[layer] * W`` on X's columns, in X's dtype, equal to
        ``gamma[layer_of_feature][:, None] * X.T @ dual_coef``; a step is a candidate weighting
        evaluated: ``n_steps`` counts them, ``best_step`` (1-based) is the chosen one,
        ``best_score`` its J; ``history["cv_score"]`` is J of each candidate in order.
    """
    opts = KernelOptions() if options is None else options
    G = len(train_idx)
    _check_inputs(X, layer_of_feature, Y, train_idx, val_idx)
    alphas_t = torch.tensor(opts.alphas, dtype=torch.float64, device=X.device)
    n_layers = int(layer_of_feature.max()) + 1
    cache = KernelCache() if workspace is None else workspace.setdefault("kernel", KernelCache())
    gram_key = (x_key or _content_key(X, layer_of_feature), str(X.device))
    grams = cache.get("grams", gram_key, lambda: _layer_grams(X, layer_of_feature, n_layers))
    budget = int(opts.memory_budget_mb * 2**20)
    design = _design(n_layers, opts.search_steps)
    steps = opts.search_steps + opts.refine_steps
    done = 0

    def get_state() -> dict:
        return {"epoch": done, "solver": "kernel"}

    def step_done() -> None:
        nonlocal done
        done += 1
        if on_epoch is not None:
            on_epoch(done, get_state)

    solved: dict[tuple[bytes, bytes], dict] = {}  # models that differ only by wc or lay are solved once
    results = []
    for g in range(G):
        train = np.asarray(train_idx[g], dtype=np.int64)
        val = np.asarray(val_idx[g], dtype=np.int64)
        rows = (train.tobytes(), val.tobytes())
        if rows not in solved:
            key = (gram_key, hashlib.sha1(train.tobytes()).digest())
            problem = _Problem(X, layer_of_feature, Y, grams, train, key, alphas_t, budget, opts.search_voxels, cache)
            solved[rows] = problem.solve(design, opts.refine_steps, val, step_done, primal, pcc)
        results.append(solved[rows])
    return SolverResult(
        layer_weights=_stack([r["layer_weights"] for r in results]),
        coef=_stack([r["coef"] for r in results]) if primal else None,
        intercept=_stack([r["intercept"] for r in results]),
        dual_coef=_stack([r["dual_coef"] for r in results]),
        layer_kernels=grams.cpu().numpy(),
        best_step=np.array([r["best_step"] for r in results], dtype=np.int64),
        n_steps=np.full(G, steps, dtype=np.int64),
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


class _Problem:
    """One training set of one solve: its centred layer kernels, centred responses and search."""

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
        search_voxels: int,
        cache: KernelCache,
    ) -> None:
        self.X, self.Y, self.lof = X, Y, layer_of_feature
        self.cache = cache
        # The search runs in float64 whatever X's dtype: its gradient steps amplify rounding, and
        # float32 rounding depends on how BLAS splits the work over threads, so in float32 the chosen
        # weighting (hence results.csv) moved by 1e-3 between 1 and 2 threads. Outputs use X's dtype.
        self.device, self.out_dtype = X.device, X.dtype
        self.key = key
        self.train = torch.from_numpy(train).to(self.device)
        self.n = n = len(train)
        self.every_row = n == grams.shape[2] and np.array_equal(train, np.arange(n))
        self.alphas = alphas
        self.grams = grams
        self.centred, self.traces = cache.get("centred", key, lambda: _centred_grams(grams, self.train))
        Y_train = Y.index_select(0, self.train).to(torch.float64)
        self.y_mean = Y_train.mean(0)
        Yc = Y_train - self.y_mean
        # The search scores an evenly spread subset of a large ROI's voxels: the weighting is
        # shared by the ROI, and its cost then stops growing with the voxel count.
        V = Yc.shape[1]
        subset = torch.from_numpy(np.unique(np.linspace(0, V - 1, min(V, search_voxels)).round().astype(np.int64)))
        self.Yc = Yc
        self.var = Yc.square().sum(0) / (n - 1)
        self.search = subset.to(self.device)
        self.Ys, self.var_s = self.Yc.index_select(1, self.search), self.var.index_select(0, self.search)
        self.cache_bytes = budget // 2
        self.batch = voxel_batch_size(n, X.shape[1], len(alphas), 8, budget // 2)

    def decompose(self, gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eigenvalues (clipped at 0) and eigenvectors of the centred kernel, float64; cached."""
        def compute() -> tuple[torch.Tensor, torch.Tensor]:
            eigvals, eigvecs = torch.linalg.eigh(torch.tensordot(gamma, self.centred, dims=1))
            return eigvals.clamp_min(0.0), eigvecs

        key = (*self.key, gamma.cpu().numpy().tobytes())
        return self.cache.get("decompositions", key, compute, max_bytes=self.cache_bytes)

    def gcv_table(self, eigvals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Absolute alphas, squared residual shrinkage (n_alphas, n) and ``n - 1 - tr H`` per alpha."""
        alpha = self.alphas * (eigvals.sum() / (self.n - 1))
        shrink = alpha[:, None] / (eigvals[None, :] + alpha[:, None])
        return alpha, shrink.square(), shrink.sum(1) - 1.0

    def gcv_r2(self, z2: torch.Tensor, var: torch.Tensor, table: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        """Best GCV R^2 over the alphas and its index, per voxel, from the squares z2 of eigenbasis coordinates."""
        _, shrink2, dof_free = table
        rss = shrink2 @ z2
        r2 = 1.0 - self.n * rss / dof_free.square()[:, None] / var.clamp_min(1e-300)
        best, index = r2.max(0)
        return torch.where(var > 0, best, torch.zeros_like(best)), index

    def objective(self, gamma: torch.Tensor) -> tuple[float, torch.Tensor]:
        """J(gamma) over the search voxels, and each search voxel's best alpha index."""
        eigvals, eigvecs = self.decompose(gamma)
        table = self.gcv_table(eigvals)
        parts = [
            self.gcv_r2((eigvecs.T @ self.Ys[:, k : k + self.batch]).square_(), self.var_s[k : k + self.batch], table)
            for k in range(0, self.Ys.shape[1], self.batch)
        ]
        r2, index = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        return float(r2.mean()), index

    def solve(self, design: np.ndarray, refine_steps: int, val: np.ndarray, step_done: Callable[[], None],
              primal: bool, pcc: str) -> dict:
        """Search gamma (design, then gradient steps), refit at the best, score the validation rows."""
        scores: list[float] = []
        best = {"score": -math.inf, "step": 0}

        def evaluate(gamma: torch.Tensor) -> bool:
            score, alpha_index = self.objective(gamma)
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
        fit = self._refit(gamma, primal)
        return {
            "layer_weights": gamma.sqrt().cpu().numpy(),
            "coef": fit["coef"],
            "dual_coef": fit["dual"].to(self.out_dtype).cpu().numpy(),
            "intercept": fit["intercept"].to(self.out_dtype).cpu().numpy(),
            "best_step": best["step"],
            "best_score": best["score"],
            "val_mean_r": self._score(fit, val, pcc),
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
        n, V = self.n, self.Ys.shape[1]
        alpha_all, _, dof_free = self.gcv_table(eigvals)
        mean_eig = eigvals.sum() / (n - 1)
        inv = 1.0 / (eigvals[None, :] + alpha_all[:, None])  # (A, n)
        inner = torch.zeros((n, n), dtype=torch.float64, device=self.device)
        diagonal = torch.zeros(n, dtype=torch.float64, device=self.device)
        alpha_term = torch.zeros((), dtype=torch.float64, device=self.device)
        for start in range(0, V, self.batch):
            part = slice(start, start + self.batch)
            index = alpha_index[part]
            alpha, d, var = alpha_all[index], dof_free[index], self.var_s[part]
            inv_v = inv.index_select(0, index).T  # (n, B)
            p = (eigvecs.T @ self.Ys[:, part]).mul_(inv_v)
            p2 = p.square()
            rss = alpha.square() * p2.sum(0)
            weight = (var > 0).to(torch.float64) / (V * var.clamp_min(1e-300))
            c_rss = -n * weight / d.square()
            c_dof = 2.0 * n * weight * rss / d.pow(3)
            inner += (p * (-2.0 * c_rss * alpha.square())) @ (p * inv_v).T
            inv2 = inv_v.square()
            diagonal += inv2 @ (-c_dof * alpha)
            d_rss = 2.0 * alpha * (eigvals @ p2.mul_(inv_v))  # z^2 eig / (eig + alpha)^3 = p^2 eig / (eig + alpha)
            d_dof = eigvals @ inv2
            alpha_term += (alpha / mean_eig * (c_rss * d_rss + c_dof * d_dof)).sum()
        inner.diagonal().add_(diagonal)
        outer = eigvecs @ inner @ eigvecs.T
        products = self.centred.reshape(len(gamma), -1) @ outer.reshape(-1)  # <K_l, outer>: no L x n x n temporary
        grad_gamma = products + alpha_term * self.traces / (n - 1)
        return gamma * (grad_gamma - (gamma * grad_gamma).sum())

    def _refit(self, gamma: torch.Tensor, primal: bool) -> dict:
        """Each voxel's best alpha at gamma; dual coefficients, intercepts and (if asked) primal coefficients.

        The dual coefficients ``c = (K_gamma + alpha I)^-1 y`` live on the training rows (zero on
        the others). ``c`` sums to 0 (the centred kernel has the ones vector in its null space),
        so layer l's primal coefficients are ``gamma_l X_l^T c`` and the intercept is
        ``mean(y) - mean_T(x) @ coef = mean(y) - m^T c`` with ``m = sum_l gamma_l K_l[T, T] 1 / n``:
        everything but the primal coefficients comes from the Gram matrices, never from X.
        """
        eigvals, eigvecs = self.decompose(gamma)
        table = self.gcv_table(eigvals)
        V = self.Yc.shape[1]
        dual = torch.zeros((self.X.shape[0], V), dtype=torch.float64, device=self.device)
        for start in range(0, V, self.batch):
            part = slice(start, start + self.batch)
            z = eigvecs.T @ self.Yc[:, part]
            _, index = self.gcv_r2(z.square(), self.var[part], table)
            shrink = 1.0 / (eigvals[:, None] + table[0][index][None, :])
            dual[self.train, part] = eigvecs @ (z * shrink)
        # sum_l gamma_l K_l[:, T] over all rows of X: the intercept and the validation predictions need it
        grams = self.grams if self.every_row else self.grams.index_select(2, self.train)  # no copy of all L Grams
        cross = torch.tensordot(gamma, grams, dims=1)
        mean_row = cross.index_select(0, self.train).mean(0)
        intercept = self.y_mean - mean_row @ dual.index_select(0, self.train)
        out = {"dual": dual, "intercept": intercept, "cross": cross, "coef": None}
        if primal:
            scale = gamma.to(self.out_dtype).index_select(0, self.lof)
            X_train = self.X.index_select(0, self.train)
            coef = np.empty((self.X.shape[1], V), dtype=torch.empty(0, dtype=self.out_dtype).numpy().dtype)
            for start in range(0, V, self.batch):
                part = slice(start, start + self.batch)
                dual_part = dual[self.train, part].to(self.out_dtype)
                coef[:, part] = (scale[:, None] * (X_train.T @ dual_part)).cpu().numpy()
            out["coef"] = coef
        return out

    def _score(self, fit: dict, val: np.ndarray, pcc: str) -> float:
        """Mean voxel correlation on the validation rows (predicted from the Gram matrices); NaN when fewer than 2."""
        if len(val) < 2:
            return math.nan
        rows = torch.from_numpy(val).to(self.device)
        kernel = fit["cross"].index_select(0, rows)
        dual_train, Y_val = fit["dual"].index_select(0, self.train), self.Y.index_select(0, rows)
        V = dual_train.shape[1]
        total = 0.0
        for start in range(0, V, self.batch):
            part = slice(start, start + self.batch)
            pred = kernel @ dual_train[:, part] + fit["intercept"][part]
            total += float(pearson_r_columns_torch(Y_val[:, part], pred, kind=pcc).sum())
        return total / V


def _centred_grams(grams: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The training block of each layer kernel, double-centred (an unpenalised intercept), and its trace."""
    block = grams.index_select(1, rows).index_select(2, rows)
    row = block.mean(-1, keepdim=True)
    centred = block - row - row.transpose(-1, -2) + block.mean((-1, -2), keepdim=True)
    return centred, torch.diagonal(centred, dim1=1, dim2=2).sum(1)


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    """``np.stack``, without copying a lone array (a whole-brain coefficient matrix is gigabytes)."""
    return arrays[0][None] if len(arrays) == 1 else np.stack(arrays)


def _design(n_layers: int, steps: int) -> np.ndarray:
    """The fixed candidates: the uniform weighting, then Dirichlet draws (concentration 1, then 0.3)."""
    rng = np.random.default_rng(_DESIGN_SEED)
    rows = [np.full(n_layers, 1.0 / n_layers)]
    for k in range(1, steps):
        rows.append(rng.dirichlet(np.full(n_layers, 1.0 if k % 2 else 0.3)))
    return np.asarray(rows)


def _content_key(X: torch.Tensor, layer_of_feature: torch.Tensor) -> str:
    """Identify a feature matrix by its bytes (so reloading the same store finds the cached Grams)."""
    return content_digest([t.detach().cpu().numpy() for t in (X, layer_of_feature)])


def _layer_grams(X: torch.Tensor, layer_of_feature: torch.Tensor, n_layers: int) -> torch.Tensor:
    """Per-layer Gram matrices ``X_l X_l^T`` of all rows, float64, tensor of shape (L, n, n)."""
    n = X.shape[0]
    grams = torch.zeros((n_layers, n, n), dtype=torch.float64, device=X.device)
    chunk = 4096
    for layer in range(n_layers):
        columns = torch.nonzero(layer_of_feature == layer).flatten()
        for start in range(0, len(columns), chunk):
            block = X.index_select(1, columns[start : start + chunk]).to(torch.float64)
            grams[layer].addmm_(block, block.T)
    return grams


def _check_inputs(
    X: torch.Tensor,
    layer_of_feature: torch.Tensor,
    Y: torch.Tensor,
    train_idx: Sequence[np.ndarray],
    val_idx: Sequence[np.ndarray],
) -> None:
    """Fail before any work with a message naming the argument (the options were checked by :class:`KernelOptions`)."""
    check_solver_arrays(X, layer_of_feature, Y)
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
