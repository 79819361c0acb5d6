"""The layer-weighted ROI-wise encoding model as a scikit-learn estimator.

``LayerWeightedEncoder`` validates arrays, stacks the layer blocks, and dispatches by name to a
solver from ``SOLVERS`` (arrays and a device in, arrays out); it holds no numerics of its own.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Sequence
from numbers import Integral, Real
from typing import ClassVar, get_args

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from lwroi.config import Contributions, LayerScaling, SolverOptions
from lwroi.data.splits import inner_validation_split
from lwroi.encoding._arrays import all_finite, content_digest
from lwroi.encoding._products import matmul
from lwroi.encoding._solvers import get_solver, make_options
from lwroi.encoding.devices import resolve_device
from lwroi.encoding.metrics import PCC_KINDS, pearson_r_columns

LAYER_SCALINGS = get_args(LayerScaling)
CONTRIBUTIONS = get_args(Contributions)


def stack_layer_features(
    X_layers: Sequence[np.ndarray], layer_scaling: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate layer blocks into one float32 matrix, scaled once before training.

    ``"balanced"`` divides each block by its root-mean-square row norm (the square root of the
    summed column variances), so every layer enters with the same total variance and a layer
    weight measures the layer's share of the prediction, not its feature count or how a
    projection rescaled it (SRP keeps row norms, so a reduced conv block keeps its raw layer's
    variance; for standardised, unreduced features this is sqrt(dimension)). ``"none"`` keeps
    the original's scaling.

    Returns
    -------
    X : array of shape (n_samples, n_features), float32
    layer_of_feature : int64 array of shape (n_features,)
    feature_scale : float32 array of shape (n_features,)
        The factor each column was multiplied by: coefficients on X times this factor are the
        coefficients on the unscaled input.
    """
    if layer_scaling not in LAYER_SCALINGS:
        raise ValueError(f"layer_scaling={layer_scaling!r}: must be one of {', '.join(LAYER_SCALINGS)}")
    dims = [x.shape[1] for x in X_layers]
    layer_of_feature = np.repeat(np.arange(len(dims)), dims)
    per_layer = [1.0 / _block_norm(x) if layer_scaling == "balanced" else 1.0 for x in X_layers]
    feature_scale = np.repeat(np.asarray(per_layer, dtype=np.float32), dims)
    X = np.empty((X_layers[0].shape[0], sum(dims)), dtype=np.float32)
    for block, start, stop in zip(X_layers, np.cumsum([0, *dims[:-1]]), np.cumsum(dims), strict=True):
        X[:, start:stop] = block
    X *= feature_scale
    return X, layer_of_feature, feature_scale


def _stacked(
    X: Sequence[np.ndarray], layer_scaling: str, workspace: dict | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str | None]:
    """:func:`stack_layer_features`, and the blocks' digest, kept in ``workspace`` for the next fit on the same blocks.

    A rank fits every subject and ROI of a model on one feature store: the blocks' digest (one
    pass) then spares the scaling (a variance pass over every block), the copy into one matrix,
    and the solver's own hash of that matrix, about a fifth of a kernel fit. The matrix is
    shared, never written, by the fits that get it. Without a workspace, nothing is kept or hashed.
    """
    if workspace is None:
        return (*stack_layer_features(X, layer_scaling), None)
    digest = content_digest(X)
    key = f"{digest}-{layer_scaling}"
    kept = workspace.setdefault("stacked", {})
    if key not in kept:
        kept.clear()  # one feature matrix at a time: it is the size of the store's training rows
        kept[key] = stack_layer_features(X, layer_scaling)
    return (*kept[key], digest)


def _block_norm(block: np.ndarray) -> float:
    """Root-mean-square norm of a block's centred rows; 1 for a constant block.

    Column variances in torch (two-pass, all cores, no float64 copy of a 100 MB block), summed
    in float64.
    """
    block = np.ascontiguousarray(block, dtype=np.float32)
    with warnings.catch_warnings():  # a store's rows are mapped read-only; torch only reads them here
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        variances = torch.from_numpy(block).var(dim=0, correction=0)
    norm = float(variances.double().sum()) ** 0.5
    return norm if norm > 0 else 1.0


class LayerWeightedEncoder(RegressorMixin, BaseEstimator):
    """Layer-weighted ROI-wise encoding model (Zhou, Du & He 2022): one weight per DNN layer per ROI.

    ``y_v = sum_l |a_l| X_l W_{l,v} + b_v``, with the layer weights a shared by all voxels of
    the ROI, fitted by minimising ``MSE + wc * mean_v sqrt(mean_j W_jv^2) + lay * mean_l |a_l|``
    with early stopping on a validation set (``solver="sgd"``), or in dual form as ridge on the
    layers scaled by a, a and the ridge strengths chosen by generalised cross-validation inside
    the training rows (``solver="kernel"``, see ``lwroi.encoding.solve_kernel``; wc and lay do
    not apply to it).

    Parameters
    ----------
    wc : float, default=10.0
        Weight of the per-voxel RMS (group) penalty on W (solvers that ``uses_grid``).
    lay : float, default=1.0
        Weight of the L1 penalty on the layer weights (solvers that ``uses_grid``).
    solver : str, default="sgd"
        Name of a solver in ``lwroi.encoding.SOLVERS``.
    solver_params : dict, optional
        The solver's own options, the fields of its options class (``lwroi.config.SGDOptions``:
        lr, batch_size, max_epochs, patience, min_delta, metric, val_pcc, drop_last;
        ``lwroi.config.KernelOptions``: alphas, search_steps, refine_steps, search_voxels,
        memory_budget_mb); missing ones take that class's defaults. A key the solver does not
        have (another solver's option, or a parameter of this estimator) is refused at ``fit``,
        naming the key and the solver.
    pcc : {"pearson", "original"}, default="pearson"
        The correlation used everywhere: early stopping, ``score``, ``score_voxels``,
        ``layer_contributions`` ("original": the original's r * n / (n - 1), see
        ``lwroi.encoding.metrics``).
    contributions : {"clipped", "original"}, default="clipped"
        How ``layer_contributions`` turns per-layer scores into shares (see there).
    val_fraction : float, default=0.1
        Share of the training rows held out for early stopping when no X_val is given (solvers
        that ``needs_validation``; the others fit every training row).
    layer_scaling : {"balanced", "none"}, default="balanced"
        Divide each layer block by its root-mean-square row norm before training ("none": the original).
    layer_dims : list of int, optional
        When X is one 2-D array: the number of columns of each layer, in order (they must sum to
        its columns); None: X is one layer. Not used when X is a list of per-layer blocks.
    device : str, default="auto"
        "auto", "cpu", "cuda" or "cuda:N".
    random_state : int, default=0
        Seeds the inner validation split, the initial W and the minibatch order.

    Attributes
    ----------
    layer_weights_ : array of shape (n_layers,)
        Non-negative layer weights |a| (of the scaled blocks when layer_scaling="balanced").
    coef_ : array of shape (n_features, n_voxels)
        Coefficients on the unscaled, concatenated input layers, layer weights folded in, so
        ``predict`` is ``concat(X) @ coef_ + intercept_``.
    intercept_ : array of shape (n_voxels,)
    n_features_in_, n_layers_, layer_dims_ : int, int, list of int
    solver_ : str
    solver_options_ : SolverOptions
        The options the solver ran with (``solver_params`` and the defaults).
    n_epochs_, best_epoch_ : int
        Steps the solver ran, and the 1-based step of the returned state (``SolverResult.n_steps``,
        ``best_step``): sgd, epochs trained and the epoch restored; kernel, layer weightings
        evaluated by the search and the chosen one.
    best_score_ : float
        Early-stopping metric of the restored state (kernel: the search objective, mean voxel
        GCV R^2, of the chosen weighting).
    val_mean_r_ : float
        Mean voxel correlation (``pcc`` kind) of the restored state on the whole validation set
        (kernel: on X_val if given, else NaN).
    history_ : dict of str to array of shape (n_epochs_,)
        "val_score" and "train_loss" per epoch (kernel: "cv_score" per search step).
    """

    _parameter_constraints: ClassVar[dict] = {
        "wc": [Interval(Real, 0, None, closed="left")],
        "lay": [Interval(Real, 0, None, closed="left")],
        "solver": [str],
        "solver_params": [dict, SolverOptions, None],
        "pcc": [StrOptions(set(PCC_KINDS))],
        "contributions": [StrOptions(set(CONTRIBUTIONS))],
        "val_fraction": [Interval(Real, 0, 0.5, closed="neither")],
        "layer_scaling": [StrOptions(set(LAYER_SCALINGS))],
        "layer_dims": ["array-like", None],
        "device": [str, torch.device],
        "random_state": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(
        self,
        *,
        wc: float = 10.0,
        lay: float = 1.0,
        solver: str = "sgd",
        solver_params: dict | None = None,
        pcc: str = "pearson",
        contributions: str = "clipped",
        val_fraction: float = 0.1,
        layer_scaling: str = "balanced",
        layer_dims: Sequence[int] | None = None,
        device: str = "auto",
        random_state: int = 0,
    ) -> None:
        self.wc = wc
        self.lay = lay
        self.solver = solver
        self.solver_params = solver_params
        self.pcc = pcc
        self.contributions = contributions
        self.val_fraction = val_fraction
        self.layer_scaling = layer_scaling
        self.layer_dims = layer_dims
        self.device = device
        self.random_state = random_state

    def fit(
        self,
        X: Sequence[np.ndarray] | np.ndarray,
        Y: np.ndarray,
        *,
        X_val: Sequence[np.ndarray] | np.ndarray | None = None,
        Y_val: np.ndarray | None = None,
        state: dict | None = None,
        on_epoch: Callable[[int, Callable[[], dict]], None] | None = None,
        workspace: dict | None = None,
    ) -> LayerWeightedEncoder:
        """Fit on layer blocks X and responses Y, early stopping on (X_val, Y_val) or an inner split.

        Parameters
        ----------
        X : list of arrays of shape (n_samples, n_features_l), one per layer; or one array of
            shape (n_samples, n_features) cut into layers by ``layer_dims``
        Y : array of shape (n_samples, n_voxels) or (n_samples,)
            Only valid voxels: the caller drops constant or masked-out columns.
        X_val, Y_val : same layout, optional
            Validation rows for early stopping. Without them, a ``val_fraction`` share of the
            rows (``lwroi.data.splits.inner_validation_split``) is held out of training. A
            solver that needs no validation rows (kernel) fits every row of X and only scores
            X_val.
        state, on_epoch :
            Resume support, passed to the solver (see ``lwroi.encoding.solve_sgd``).
        workspace : dict, optional
            Kept by the caller between fits on the same features: the encoder keeps the stacked,
            scaled features there (under ``"stacked"``), and the solver work to reuse (the
            kernel solver: Gram matrices and decompositions).
        """
        self._validate_params()
        entry = get_solver(self.solver)
        own = sorted(set(self.solver_params if isinstance(self.solver_params, dict) else ()) & set(self.get_params()))
        if own:
            raise ValueError(f"solver_params: {own[0]!r} is a parameter of LayerWeightedEncoder, not an option of "
                             f"solver {self.solver!r}: pass it as LayerWeightedEncoder({own[0]}=...)")
        options = make_options(self.solver, self.solver_params)
        if Y is None:
            raise ValueError("LayerWeightedEncoder requires y to be passed, but the target y is None")
        if not _is_blocks(X):  # one 2-D array: sklearn's checks of X and y (and their messages)
            X, Y = validate_data(self, X, Y, multi_output=True, y_numeric=True, dtype=[np.float32, np.float64])
        X = self._layers(X, "X", reset=True)
        Y = _check_responses(Y, X[0].shape[0], "Y")
        if len(Y) < 3:
            raise ValueError(f"n_samples = {len(Y)}: the layer-weighted model needs at least 3 rows to fit")
        self._single_target = Y.ndim == 1
        Y = Y.reshape(len(Y), -1)
        n = Y.shape[0]
        if (X_val is None) != (Y_val is None):
            raise ValueError("pass both X_val and Y_val, or neither")
        if X_val is not None:
            X_val = self._layers(X_val, "X_val")
            Y_val = _check_responses(Y_val, X_val[0].shape[0], "Y_val", n_voxels=Y.shape[1]).reshape(len(X_val[0]), -1)
            X = [np.concatenate([x, xv]) for x, xv in zip(X, X_val, strict=True)]
            Y = np.concatenate([Y, Y_val])
            train, val = np.arange(n), np.arange(n, Y.shape[0])
        elif entry.needs_validation:
            train, val = inner_validation_split(n, self.val_fraction, self.random_state)
        else:
            train, val = np.arange(n), np.arange(0)

        features, layer_of_feature, feature_scale, digest = _stacked(X, self.layer_scaling, workspace)
        x_key = None if digest is None else f"{digest}-{self.layer_scaling}"  # these stacked, scaled features
        device = resolve_device(self.device)
        result = entry.solve(
            torch.from_numpy(features).to(device),
            torch.from_numpy(layer_of_feature).to(device),
            torch.from_numpy(np.asarray(Y, dtype=np.float32)).to(device),
            train_idx=[train],
            val_idx=[val],
            wc=[self.wc],
            lay=[self.lay],
            options=options,
            pcc=self.pcc,
            primal=False,
            seed=self.random_state,
            state=state,
            on_epoch=on_epoch,
            workspace=workspace,
            x_key=x_key,
        )
        self.solver_ = self.solver
        self.solver_options_ = options
        self.n_layers_ = len(X)
        self.layer_weights_ = result.layer_weights[0]
        self._feature_scale = feature_scale
        if result.dual_coef is None:
            self._dual, self._coef = None, result.coef[0] * feature_scale[:, None]
        else:  # keep the training rows: predictions go through their Gram matrices, never a D x V matrix
            every_row = len(train) == len(features)
            rows = features if every_row else features[train]
            self._dual, self._coef = (rows, result.dual_coef[0][train]), None
            self._parts_cache: dict[str, list[np.ndarray]] = {}
            # The solver's Grams of these rows, and the rows' digest: the training rows' layer terms
            # (the layer profile) come from them instead of the features again (see _layer_predictions)
            known = every_row and result.layer_kernels is not None and digest is not None
            self._train_kernels = (digest, result.layer_kernels) if known else None
            # New rows' cross Grams with these training rows are the same for every fit on them (fits
            # differ in layer weights and duals): shared through the workspace, one training set at a time.
            self._shared_cross = None
            if every_row and x_key is not None:  # a digest means a workspace
                if workspace.get("cross_grams", {}).get("train") != x_key:
                    workspace["cross_grams"] = {"train": x_key, "rows": {}}
                self._shared_cross = workspace["cross_grams"]["rows"]
        self.intercept_ = result.intercept[0]
        self.n_epochs_ = int(result.n_steps[0])
        self.best_epoch_ = int(result.best_step[0])
        self.best_score_ = float(result.best_score[0])
        self.val_mean_r_ = float(result.val_mean_r[0])
        self.history_ = {key: value[0] for key, value in result.history.items()}
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _layers(self, X: Sequence[np.ndarray] | np.ndarray, name: str, *, reset: bool = False) -> list[np.ndarray]:
        """X as per-layer float32 blocks: a list of blocks as given, or one 2-D array cut by ``layer_dims``.

        ``reset``: record ``n_features_in_`` and ``layer_dims_`` (fit); otherwise X must match them.
        """
        if _is_blocks(X):
            blocks = _check_layers(X, name, dims=None if reset else self.layer_dims_)
        else:
            array = validate_data(self, X, reset=reset, dtype=[np.float32, np.float64])
            dims = self.layer_dims_ if not reset else [array.shape[1]] if self.layer_dims is None else \
                [int(d) for d in self.layer_dims]
            if sum(dims) != array.shape[1] or min(dims) < 1:
                raise ValueError(f"layer_dims={list(dims)}: must be positive and sum to the {array.shape[1]} "
                                 f"columns of {name}")
            blocks = _check_layers(np.split(array, np.cumsum(dims)[:-1], axis=1), name)
        if reset:
            self.layer_dims_ = [x.shape[1] for x in blocks]
            self.n_features_in_ = sum(self.layer_dims_)
        return blocks

    def predict(self, X: Sequence[np.ndarray]) -> np.ndarray:
        """Predicted responses, array of shape (n_samples, n_voxels), or (n_samples,) when fitted on a 1-D Y."""
        check_is_fitted(self)
        X = self._layers(X, "X")
        pred = sum(self._layer_predictions(X)) + self.intercept_
        return pred[:, 0] if self._single_target else pred

    def score(self, X: Sequence[np.ndarray], y: np.ndarray) -> float:
        """Mean over voxels of the correlation between y and the prediction (the paper's accuracy, not R^2)."""
        return float(self.score_voxels(X, y).mean())

    def score_voxels(self, X: Sequence[np.ndarray], Y: np.ndarray) -> np.ndarray:
        """Correlation (``pcc`` kind) of each voxel, array of shape (n_voxels,); 0 for constant voxels."""
        check_is_fitted(self)
        X = self._layers(X, "X")
        Y = _check_responses(Y, X[0].shape[0], "Y", n_voxels=self.intercept_.shape[0])
        return pearson_r_columns(Y, sum(self._layer_predictions(X)) + self.intercept_, kind=self.pcc)

    def layer_contributions(self, X: Sequence[np.ndarray], Y: np.ndarray) -> np.ndarray:
        """Each layer's share of the accuracy, array of shape (n_layers,) summing to 1.

        Per layer: predict with only that layer's features (the others zeroed, intercept kept)
        and take the mean voxel correlation (``pcc`` kind) on (X, Y). ``contributions="clipped"``
        clips negative values to 0 (a layer that predicts worse than chance contributes nothing,
        and the shares stay in [0, 1]) and normalises to sum 1; if no layer has a positive
        score, the shares are uniform (1 / n_layers). ``"original"`` divides the scores by their
        sum as they are, as the original did: a negative score gives a negative share, and a
        sum near 0 gives shares far outside [0, 1] (inf or NaN for a sum of exactly 0).
        """
        check_is_fitted(self)
        X = self._layers(X, "X")
        Y = _check_responses(Y, X[0].shape[0], "Y", n_voxels=self.intercept_.shape[0])
        parts = self._layer_predictions(X)
        r = np.array([pearson_r_columns(Y, part + self.intercept_, kind=self.pcc).mean() for part in parts])
        if self.contributions == "original":
            with np.errstate(divide="ignore", invalid="ignore"):
                return r / r.sum()
        r = np.clip(r, 0.0, None)
        total = r.sum()
        return r / total if total > 0 else np.full(len(r), 1.0 / len(r))

    def layer_profile(self, X: Sequence[np.ndarray]) -> np.ndarray:
        """Each layer's share of the predicted variance, array of shape (n_layers,) summing to 1.

        Per voxel, the prediction's variance over the rows of X is split over the layers' terms
        p_l = ``X_l @ coef_l`` (layer weight folded in) as ``Cov(p_l, p) / Var(p)``: each term's own
        variance plus half of every covariance it shares with another term (Pratt's measure). The
        shares are then averaged over voxels, leaving out voxels whose prediction does not vary.
        Pass the training rows: this is the fitted model's own attribution, not a test score.

        The split is exact (the shares add up to the prediction's variance, cross terms included),
        so where layers overlap, which of two overlapping layers the solver happened to load does
        not decide the profile: the variance they share is split evenly. Dropping the cross terms
        instead (``Var(p_l) / Σ Var(p_m)``) credited the sgd solver's outer layers with what they
        carry for their neighbours (a flat profile read as .34 .17 .18 .30, against .29 .22 .23 .26
        with the split: ``tests/test_independent_profile.py``). A share is negative only for a term
        that works against the rest of the prediction.

        Unlike the layer weights it does not depend on how the model is parameterised: scaling
        a_l by c and W_l by 1/c leaves every term unchanged (the sgd solver's a_l alone is not
        identifiable, its scale moves freely into W), and both solvers are measured alike.
        Normalising per voxel before averaging makes it blind to voxel gains, so a few voxels
        with large responses do not decide the ROI's profile. Returns NaN for every layer when
        no voxel's prediction varies.
        """
        check_is_fitted(self)
        X = self._layers(X, "X")
        parts = self._layer_predictions(X)
        prediction = np.sum(parts, axis=0, dtype=np.float64)
        prediction -= prediction.mean(axis=0)
        variance = np.einsum("nv,nv->v", prediction, prediction)
        varying = variance > 0
        if not varying.any():
            return np.full(self.n_layers_, np.nan)
        # Σ_n p_l (p - mean p) is the covariance sum: the centred prediction sums to zero over the rows
        shared = np.stack([np.einsum("nv,nv->v", part.astype(np.float64), prediction) for part in parts])
        return (shared[:, varying] / variance[varying]).mean(axis=1)

    @property
    def coef_(self) -> np.ndarray:
        """Coefficients on the unscaled, concatenated input layers (computed from the dual form on first use)."""
        if self._coef is None:
            features, dual = self._dual
            gamma = np.repeat(self.layer_weights_.astype(np.float32) ** 2, self.layer_dims_)
            self._coef = (gamma * self._feature_scale)[:, None] * matmul(features.T, dual)
        return self._coef

    def _layer_predictions(self, X: list[np.ndarray]) -> list[np.ndarray]:
        """Each layer's term ``X_l @ coef_l`` of the prediction, without the intercept.

        Dual form (kernel solver): ``a_l^2 K_l(X, X_train) @ dual``, the cross Gram matrices
        costing n_new x n_train x n_features; cached by the rows' content, so scoring and layer
        contributions on the same rows pay for them once. The training rows of a fit in a
        workspace (the layer profile) take their Grams from the solver instead, in float64,
        where that costs less (2 x layers x voxels < features).
        """
        bounds = np.cumsum([0, *self.layer_dims_])
        spans = list(itertools.pairwise(bounds))
        if self._dual is None:
            return [matmul(x, self.coef_[start:stop]) for x, (start, stop) in zip(X, spans, strict=True)]
        key = content_digest(X)
        if key not in self._parts_cache:
            if len(self._parts_cache) >= 2:
                self._parts_cache.pop(next(iter(self._parts_cache)))
            features, dual = self._dual
            kernels = getattr(self, "_train_kernels", None)
            if kernels is not None and kernels[0] == key and 2 * len(X) * dual.shape[1] < features.shape[1]:
                # X is the training rows, whose Grams the solver had: n^2 V a layer in float64 instead of n^2 D_l
                dual64 = dual.astype(np.float64)
                self._parts_cache[key] = [((a * a) * matmul(gram, dual64)).astype(np.float32)
                                          for a, gram in zip(self.layer_weights_.astype(np.float64), kernels[1],
                                                             strict=True)]  # fmt: skip
            else:
                weights = self.layer_weights_.astype(np.float32)
                grams = self._cross_grams(X, key, features, spans)
                self._parts_cache[key] = [(a * a) * matmul(gram, dual) for a, gram in zip(weights, grams, strict=True)]
        return self._parts_cache[key]

    def _cross_grams(self, X: list[np.ndarray], key: str, features: np.ndarray,
                     spans: list[tuple[int, int]]) -> list[np.ndarray]:
        """Each layer's ``(x_l * scale_l) @ X_train,l^T``, from the workspace's fits on the same rows when it has them.

        n_new x n_train x D multiply-adds, the dual predictions' whole cost: a rank's fits of every
        subject and ROI on one store score the same held-out and challenge rows, so the first fit
        pays for them (at most 4 sets of rows kept, 4 n_new n_train bytes a layer).
        """
        shared = getattr(self, "_shared_cross", None)
        if shared is not None and key in shared:
            return shared[key]
        grams = [matmul(x * self._feature_scale[start], features[:, start:stop].T)
                 for x, (start, stop) in zip(X, spans, strict=True)]
        if shared is not None:
            if len(shared) >= 4:
                shared.pop(next(iter(shared)))
            shared[key] = grams
        return grams

    def __getstate__(self) -> dict:
        """Pickled without the solver's Grams (n x n a layer) and the shared cross Grams: they only spare work."""
        state = super().__getstate__()
        state.pop("_train_kernels", None)
        state.pop("_shared_cross", None)
        return state


def _is_blocks(X: object) -> bool:
    """Whether X is a list (or tuple) of 2-D per-layer blocks, rather than one 2-D array-like."""
    return isinstance(X, (list, tuple)) and len(X) > 0 and all(getattr(x, "ndim", 0) == 2 for x in X)


def _check_layers(X: Sequence[np.ndarray], name: str, dims: Sequence[int] | None = None) -> list[np.ndarray]:
    """Layer blocks as finite 2-D float32 arrays with equal rows (and the fitted dims, if given)."""
    blocks = [np.asarray(x, dtype=np.float32) for x in X]
    for i, x in enumerate(blocks):
        if x.ndim != 2:
            raise ValueError(f"{name}[{i}] must be 2-D (n_samples, n_features_l); got shape {x.shape}")
        if x.shape[0] != blocks[0].shape[0]:
            raise ValueError(f"{name}[{i}] has {x.shape[0]} rows but {name}[0] has {blocks[0].shape[0]}")
        if not all_finite(x):
            raise ValueError(f"{name}[{i}] contains NaN or infinite values")
    if dims is not None and [x.shape[1] for x in blocks] != list(dims):
        raise ValueError(
            f"{name} has layer dims {[x.shape[1] for x in blocks]} but the model was fitted with {list(dims)}"
        )
    return blocks


def _check_responses(Y: np.ndarray, n_samples: int, name: str, n_voxels: int | None = None) -> np.ndarray:
    """Responses as a finite 1-D or 2-D array with the features' row count (and the fitted voxel count)."""
    Y = np.asarray(Y)
    if Y.ndim not in (1, 2) or not np.issubdtype(Y.dtype, np.number) or np.iscomplexobj(Y):
        raise ValueError(f"{name} must be a real array of shape (n_samples, n_voxels) or (n_samples,); "
                         f"got shape {Y.shape}, dtype {Y.dtype}")
    if n_voxels is not None and Y.ndim == 1:
        Y = Y[:, None]
    if Y.shape[0] != n_samples:
        raise ValueError(f"{name} has {Y.shape[0]} rows but the features have {n_samples}")
    if n_voxels is not None and Y.shape[1] != n_voxels:
        raise ValueError(f"{name} has {Y.shape[1]} voxels but the model was fitted with {n_voxels}")
    if not np.isfinite(Y).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return Y
