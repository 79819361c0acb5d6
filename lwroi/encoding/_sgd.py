"""Minibatch Adam solver of the layer-weighted ROI-wise model, many models trained as one batch.

The model of Zhou, Du & He (2022, Machine Intelligence Research), for one ROI:

    y_v = sum_l |a_l| X_l W_{l,v} + b_v
    loss = MSE(Y, Yhat) + wc * mean_v sqrt(mean_j W_{j,v}^2) + lay * mean_l |a_l|

A hyper-parameter grid times CV folds is G independent models over the same features. They train
together: parameters carry a leading model axis (a: (G, L), W: (G, D, V), b: (G, V)), each step
gathers a (G, batch, D) minibatch, and gradients are written out by hand (no autograd graph: each
step is a few passes over W). Every product and sum over W is made one model at a time, with the
BLAS calls of a model trained alone, and only for the models still training: a model that stopped
early costs no step and no validation (the grid runs as long as its slowest model). The update is
torch's fused Adam kernel (the one ``torch.optim.Adam(fused=True)`` runs) over per-model views of
the stacked parameters and of moments kept beside them, W's applied tile by tile while each tile's
gradient is in cache: a model with no gradient this step (stopped early, or out of rows in a
ragged epoch) is skipped, so its parameters and Adam state stay exactly as they were. The moments
are kept here, not in a ``torch.optim.Adam``: the sweep calls the kernel itself, and an
optimizer's first use imports ``torch._dynamo``, about 1.2 s of start-up for every process that
fits (measured with ``python -X importtime``). Early-stopping bookkeeping lives on the device; the
host synchronises once per epoch, to learn which models stopped and which improved.

Early stopping follows the original's ``EarlyStopping``: the first epoch is always the best so
far; a later epoch improves only if its score is at least the best plus ``min_delta`` (``>=``,
so with ``min_delta = 0`` an equal score counts as an improvement and moves the restored state
to the later epoch); after ``patience`` epochs without improvement the model stops.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from lwroi.config import SGDOptions
from lwroi.encoding._arrays import check_solver_arrays
from lwroi.encoding.metrics import PCC_KINDS, pearson_r_columns_torch
from lwroi.encoding.result import SeedLike, SolverResult

_CHUNK_ELEMENTS = 1 << 25
"""Largest gathered (models x rows x features) block when scoring validation rows (128 MB float32)."""

_PARAMS = ("a", "W", "b")
_ADAM = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False, "maximize": False}
"""Adam's settings besides the learning rate: the original's ``optim.Adam(params, lr=lr)``, torch's defaults."""

_TILE_BYTES = 1 << 22
"""Size of the gradient tile of the CPU sweep (rows of one model's W x voxels, float32): 4 MB, so the
tile stays in the cores' L2 caches from its product to its Adam update (see ``_train_step``;
measured on a 2-core Xeon with 2 MB L2 per core: 1 MB tiles were 25 % slower, 16 MB 45 %)."""



def solve_sgd(
    X: torch.Tensor,
    layer_of_feature: torch.Tensor,
    Y: torch.Tensor,
    *,
    train_idx: Sequence[np.ndarray],
    val_idx: Sequence[np.ndarray],
    wc: Sequence[float],
    lay: Sequence[float],
    options: SGDOptions | None = None,
    pcc: str = "pearson",
    primal: bool = True,
    seed: SeedLike = 0,
    state: dict | None = None,
    on_epoch: Callable[[int, Callable[[], dict]], None] | None = None,
    workspace: dict | None = None,
    x_key: str | None = None,
) -> SolverResult:
    """Train G layer-weighted models with Adam and early stopping, all in one batched loop.

    Minimises, for each model g on its own training rows,
    ``MSE + wc[g] * mean_v sqrt(mean_j W_jv^2) + lay[g] * mean_l |a_l|`` (Zhou, Du & He 2022).
    Layer weights start at 1/L, W is Xavier-normal like the original (std sqrt(2 / (D + V))),
    b is zero. Each epoch shuffles each model's rows with its own generator (``torch.randperm``)
    and cuts the permutation into consecutive minibatches, like a ``DataLoader(shuffle=True)``:
    the last one is short, or with ``drop_last`` left out (floor(n / batch_size) steps, the rows
    beyond them unused that epoch); a model with fewer steps sits out the extra ones.
    After each epoch the validation metric decides early stopping: the first epoch is always
    the best so far, a later one improves when its score is at least the best plus
    ``min_delta`` (the original's rule); after ``patience`` epochs without improvement the model
    is frozen (parameters and Adam state stop changing) while the others go on. The best state
    is returned.

    Parameters
    ----------
    X : tensor of shape (n_samples, n_features)
        Features of all rows, on the device to train on (float32).
    layer_of_feature : long tensor of shape (n_features,)
        Layer index (0..L-1) of each feature column, on the same device.
    Y : tensor of shape (n_samples, n_voxels)
        Responses, same device and dtype as X.
    train_idx, val_idx : sequence of G int arrays
        Rows of X/Y that model g trains on and that decide its early stopping.
    wc, lay : sequence of G floats
        Penalty weights of model g.
    options : SGDOptions, default=SGDOptions()
        ``lr``, ``batch_size``, ``max_epochs``, ``patience``, ``min_delta``: Adam and
        early-stopping settings. ``metric``: "pcc" (mean voxel correlation, higher is better)
        or "mse" (lower is better). ``val_pcc``: "full", the metric over each whole validation
        set, or "batch", the original's mean over consecutive ``batch_size``-row batches of the
        validation rows, last short batch dropped. ``drop_last``: leave out each epoch's last
        short minibatch (the original's training loader; needs at least ``batch_size`` training
        rows per model).
    pcc : {"pearson", "original"}
        The correlation of the "pcc" metric and of ``val_mean_r``
        (``lwroi.encoding.metrics``; "original": the original's r * n / (n - 1) variant).
    primal : bool
        Ignored: this solver fits the primal coefficients.
    seed : int or sequence of G seeds
        An int s gives model g the stream of seed (s, g); a sequence gives model g the stream of
        ``seed[g]`` (an int or a tuple of ints). A model's result depends only on its own seed,
        data and settings, never on which models train beside it.
    state : dict, optional
        A dict from ``get_state`` (see ``on_epoch``) to continue an interrupted run exactly.
    on_epoch : callable, optional
        ``on_epoch(epochs_done, get_state)`` after every epoch. ``get_state()`` returns a dict of
        CPU tensors, ints and lists, loadable with ``torch.load(weights_only=True)``. Exceptions
        propagate (a caller may save the state and raise to stop).
    workspace : dict, optional; x_key : str, optional
        Ignored: nothing is worth keeping between solves.

    Returns
    -------
    SolverResult
        A step is an epoch.
    """
    opts = SGDOptions() if options is None else options
    trainer = _BatchedTrainer(
        X,
        layer_of_feature,
        Y,
        train_idx=train_idx,
        val_idx=val_idx,
        wc=wc,
        lay=lay,
        lr=opts.lr,
        batch_size=opts.batch_size,
        patience=opts.patience,
        min_delta=opts.min_delta,
        metric=opts.metric,
        val_pcc=opts.val_pcc,
        pcc=pcc,
        drop_last=opts.drop_last,
    )
    if state is None:
        trainer.initialize(seed)
    else:
        trainer.load_state(state)
    return trainer.run(opts.max_epochs, on_epoch)


def model_seed(seed: int | Sequence[int]) -> int:
    """Draw a 64-bit torch seed from numpy's SeedSequence, so nearby seeds give unrelated streams."""
    words = np.random.SeedSequence(seed).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 32) | int(words[1])


def _model_seeds(seed: SeedLike, n_models: int) -> list[int]:
    if isinstance(seed, (int, np.integer)):
        return [model_seed((int(seed), g)) for g in range(n_models)]
    if len(seed) != n_models:
        raise ValueError(f"seed: got {len(seed)} seeds for {n_models} models")
    return [model_seed(s) for s in seed]


class _BatchedTrainer:
    """The tensors of G models in training and the loop over their epochs."""

    def __init__(
        self,
        X: torch.Tensor,
        layer_of_feature: torch.Tensor,
        Y: torch.Tensor,
        *,
        train_idx: Sequence[np.ndarray],
        val_idx: Sequence[np.ndarray],
        wc: Sequence[float],
        lay: Sequence[float],
        lr: float,
        batch_size: int,
        patience: int,
        min_delta: float,
        metric: str,
        val_pcc: str,
        pcc: str,
        drop_last: bool,
    ) -> None:
        _check_inputs(X, layer_of_feature, Y, train_idx, val_idx, wc, lay, val_pcc, pcc, drop_last, batch_size)
        self.X, self.Y, self.lof = X, Y, layer_of_feature
        self.device, self.dtype = X.device, X.dtype
        self.n_models = G = len(train_idx)
        self.n_features = X.shape[1]
        self.n_voxels = Y.shape[1]
        self.n_layers = int(layer_of_feature.max()) + 1
        # Summing per-feature gradients into layers by a matmul, not index_add_ (atomic, hence
        # nondeterministic, on CUDA).
        self.layer_onehot = torch.nn.functional.one_hot(layer_of_feature, self.n_layers).to(X.dtype)
        self.lr, self.batch_size, self.patience, self.min_delta = lr, batch_size, patience, min_delta
        self.metric, self.val_pcc, self.pcc, self.drop_last = metric, val_pcc, pcc, bool(drop_last)
        self.train_idx = [np.asarray(i, dtype=np.int64) for i in train_idx]
        self.n_train = np.array([len(i) for i in self.train_idx])
        self.penalties = {"wc": [float(x) for x in wc], "lay": [float(x) for x in lay]}
        self.wc = torch.tensor(self.penalties["wc"], dtype=self.dtype, device=self.device)
        self.lay = torch.tensor(self.penalties["lay"], dtype=self.dtype, device=self.device)

        # Ragged epochs: model g has ceil(n_g / B) minibatches (floor with drop_last), the first
        # n_used[g] rows of its epoch permutation; the step grid is padded to the longest, and a
        # padded slot has mask 0 (a step with no rows is no step for that model).
        B = batch_size
        n_steps = self.n_train // B if self.drop_last else -(-self.n_train // B)
        self.n_used = np.minimum(self.n_train, n_steps * B)
        self.steps_per_epoch = int(n_steps.max())
        self.n_batches = torch.tensor(n_steps, dtype=self.dtype, device=self.device)
        slot = np.arange(self.steps_per_epoch * B)
        row_mask = (slot[None, :] < self.n_used[:, None]).reshape(G, self.steps_per_epoch, B)
        self.row_mask = torch.tensor(row_mask, dtype=self.dtype, device=self.device)
        self.step_has_rows_host = row_mask.any(-1)
        self.step_has_rows = torch.tensor(self.step_has_rows_host, device=self.device)

        self._prepare_validation([np.asarray(i, dtype=np.int64) for i in val_idx])
        self.t: dict[str, torch.Tensor] = {}
        self.generators: list[torch.Generator] = []
        self.epoch = 0
        self.squares = torch.empty((G, self.n_features, self.n_voxels), dtype=self.dtype, device=self.device)
        # On the CPU the weight gradient is made and used one tile of rows at a time; a GPU takes W whole.
        # Tiles of equal size (no short last tile: BLAS takes other paths for very few rows).
        D = self.n_features
        tile = max(1, _TILE_BYTES // (self.n_voxels * X.element_size())) if self.device.type == "cpu" else D
        self.tile_rows = -(-D // -(-D // min(tile, D)))
        self.grad_tile = torch.empty((self.tile_rows, self.n_voxels), dtype=self.dtype, device=self.device)
        self.scaled = torch.zeros((G, batch_size, D), dtype=self.dtype, device=self.device)
        self.pred = torch.zeros((G, batch_size, self.n_voxels), dtype=self.dtype, device=self.device)
        self.rms = torch.ones((G, self.n_voxels), dtype=self.dtype, device=self.device)

    # ------------------------------------------------------------------ set-up
    def _prepare_validation(self, val_idx: list[np.ndarray]) -> None:
        G, B = self.n_models, self.batch_size
        n_val = np.array([len(i) for i in val_idx])
        rows = np.zeros((G, n_val.max()), dtype=np.int64)
        for g, idx in enumerate(val_idx):
            rows[g, : len(idx)] = idx
        self.val_rows = torch.tensor(rows, device=self.device)
        counted = np.arange(n_val.max())[None, :] < n_val[:, None]
        if self.val_pcc == "batch":
            # The original scored validation batches with drop_last=True.
            n_batches = n_val // B
            counted = np.arange(n_val.max())[None, :] < (n_batches * B)[:, None]
            self.val_batch_mask = torch.tensor(
                np.arange(n_batches.max())[None, :] < n_batches[:, None], dtype=self.dtype, device=self.device
            )
        self.val_mask = torch.tensor(counted, dtype=self.dtype, device=self.device)
        self.val_full_mask = torch.tensor(
            np.arange(n_val.max())[None, :] < n_val[:, None], dtype=self.dtype, device=self.device
        )
        self.Y_val = self.Y.index_select(0, self.val_rows.reshape(-1)).view(G, -1, self.n_voxels)

    def initialize(self, seed: SeedLike) -> None:
        """Fresh parameters: a = 1/L, W Xavier-normal from each model's own generator, b = 0."""
        G, D, V, L = self.n_models, self.n_features, self.n_voxels, self.n_layers
        opts = {"dtype": self.dtype, "device": self.device}
        self.generators = [torch.Generator().manual_seed(s) for s in _model_seeds(seed, G)]
        W = torch.empty((G, D, V), **opts)
        std = math.sqrt(2.0 / (D + V))
        for g, gen in enumerate(self.generators):
            W[g].copy_(torch.randn((D, V), generator=gen, dtype=self.dtype).mul_(std))
        t = {"a": torch.full((G, L), 1.0 / L, **opts), "W": W, "b": torch.zeros((G, V), **opts)}
        for name in _PARAMS:
            t[f"best_{name}"] = t[name].clone()
        zeros = torch.zeros(G, dtype=torch.int64, device=self.device)
        t["best_gain"] = torch.full((G,), -math.inf, **opts)
        t["best_epoch"] = zeros.clone()
        t["wait"] = zeros.clone()
        t["n_epochs"] = zeros.clone()
        t["stopped"] = torch.zeros(G, dtype=torch.bool, device=self.device)
        t["history_val_score"] = torch.empty((G, 0), **opts)
        t["history_train_loss"] = torch.empty((G, 0), **opts)
        self.t = t
        self.epoch = 0
        self._start_sweeps({
            "step": torch.zeros((G, len(_PARAMS)), dtype=torch.float32, device=self.device),
            "exp_avg": {name: torch.zeros_like(t[name]) for name in _PARAMS},
            "exp_avg_sq": {name: torch.zeros_like(t[name]) for name in _PARAMS},
        })

    def _start_sweeps(self, adam: dict) -> None:
        """Take Adam's moments and step counts (per model and parameter), and square W for the first step.

        The step sweeps keep ``self.squares`` current from then on. Fresh moments are zeros and
        step counts 0, as ``Adam`` creates them on a first step.
        """
        torch.mul(self.t["W"], self.t["W"], out=self.squares)
        self.adam = adam

    def _fingerprint(self) -> dict:
        """Collect the settings a saved state must share with this run to continue it."""
        return {
            "n_models": self.n_models,
            "n_features": self.n_features,
            "n_voxels": self.n_voxels,
            "n_layers": self.n_layers,
            "n_train": [int(n) for n in self.n_train],
            **self.penalties,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "metric": self.metric,
            "val_pcc": self.val_pcc,
            "pcc": self.pcc,
            "drop_last": self.drop_last,
        }

    def get_state(self) -> dict:
        """Everything needed to continue exactly: CPU tensors, ints and lists only."""
        return {
            "epoch": self.epoch,
            "fingerprint": self._fingerprint(),
            "tensors": {name: x.detach().to("cpu", copy=True) for name, x in self.t.items()},
            "adam": _to_device(self.adam, torch.device("cpu"), copy=True),
            "generators": [gen.get_state() for gen in self.generators],
        }

    def load_state(self, state: dict) -> None:
        """Continue from ``get_state()``'s dict; refuses a state saved by different settings."""
        saved, current = state["fingerprint"], self._fingerprint()
        for key, value in current.items():
            if saved.get(key) != value:
                raise ValueError(f"cannot resume: saved state has {key}={saved.get(key)!r} but this run has {value!r}")
        # Copies: training updates its tensors in place, and the caller's state must stay a state.
        self.t = {name: x.to(self.device, copy=True) for name, x in state["tensors"].items()}
        self._start_sweeps(_to_device(state["adam"], self.device, copy=True))
        self.generators = []
        for gen_state in state["generators"]:
            gen = torch.Generator()
            gen.set_state(gen_state)
            self.generators.append(gen)
        self.epoch = int(state["epoch"])

    # ------------------------------------------------------------------ training
    def run(self, max_epochs: int, on_epoch: Callable[[int, Callable[[], dict]], None] | None) -> SolverResult:
        """Train until every model stopped or ``max_epochs`` epochs ran, then return the best states."""
        t = self.t
        for _ in range(self.epoch, max_epochs):
            stopped = t["stopped"].cpu().numpy()
            if stopped.all():
                break
            live = ~t["stopped"]
            train_loss = self._train_epoch(live, ~stopped)
            score = self._validation_score(np.flatnonzero(~stopped).tolist())
            self._early_stopping_update(score, train_loss, live)
            if on_epoch is not None:
                on_epoch(self.epoch, self.get_state)
        return self._result()

    def _train_epoch(self, live: torch.Tensor, live_host: np.ndarray) -> torch.Tensor:
        G, B = self.n_models, self.batch_size
        rows = np.zeros((G, self.steps_per_epoch * B), dtype=np.int64)
        for g, gen in enumerate(self.generators):
            perm = torch.randperm(int(self.n_train[g]), generator=gen).numpy()[: self.n_used[g]]
            rows[g, : self.n_used[g]] = self.train_idx[g][perm]
        rows_t = torch.from_numpy(rows).view(G, self.steps_per_epoch, B).to(self.device)
        loss_sum = torch.zeros(G, dtype=self.dtype, device=self.device)
        for s in range(self.steps_per_epoch):
            active = self.step_has_rows[:, s] & live
            loss = self._train_step(rows_t[:, s], self.row_mask[:, s], self.step_has_rows_host[:, s] & live_host)
            loss_sum += torch.where(active, loss, torch.zeros_like(loss))
        return loss_sum / self.n_batches

    def _train_step(self, rows: torch.Tensor, row_mask: torch.Tensor, active: np.ndarray) -> torch.Tensor:
        """One Adam step of the ``active`` models on their minibatches; returns each model's loss.

        Gradients by hand, and the W update in one sweep over tiles of rows: each tile's gradient
        (penalty term, data term, its share of the layer-weight gradient) is made in a small
        buffer and handed at once to torch's fused Adam kernel, the one ``Adam(fused=True).step()``
        runs, so it is used while in cache instead of being written out whole and read back; the
        updated tile is squared for the next step's RMS penalty while it is still in cache. The
        moments and step counts are ``self.adam`` (which a checkpoint saves). The numbers are
        those of one ``Adam(fused=True).step()`` over whole tensors, bit for bit
        (tests/encoding/test_sgd.py); tiles are never one row thin, where BLAS's matrix-vector
        kernel would sum in another order. Measured at Algonauts size on 2 cores: 10-15 % less
        time per model-epoch than whole-tensor passes (``python scripts/bench.py``).
        """
        t = self.t
        G, B = rows.shape
        D, V, L = self.n_features, self.n_voxels, self.n_layers
        W, a = t["W"], t["a"]
        flat = rows.reshape(-1)
        Xb = self.X.index_select(0, flat).view(G, B, D)
        Yb = self.Y.index_select(0, flat).view(G, B, V)
        a_abs = a.abs()
        Xs = Xb * a_abs.index_select(1, self.lof).unsqueeze(1)
        models = np.flatnonzero(active).tolist()
        pred = self.pred  # a model that takes no step keeps a stale prediction: its loss is not counted
        for g in models:
            torch.addmm(t["b"][g], Xs[g], W[g], out=pred[g])
        resid = (pred - Yb) * row_mask.unsqueeze(-1)
        count = row_mask.sum(1).clamp_min(1)
        rms = self.rms  # of W * W, written by the last sweep while each tile was in cache; stale for the others
        for g in models:
            torch.sum(self.squares[g : g + 1], 1, out=rms[g : g + 1]).div_(D).sqrt_()
        loss = resid.square().sum((1, 2)) / (count * V) + self.wc * rms.mean(1) + self.lay * a_abs.mean(1)

        # d/dW of the RMS penalty is wc / (V D) * W_jv / rms_v; d/dW of the MSE is Xs^T dpred.
        dpred = resid * (2.0 / (count * V)).view(G, 1, 1)
        penalty = (self.wc.view(G, 1) / (V * D) / rms.clamp_min(1e-30)).unsqueeze(1)
        if models:
            self.adam["step"][models] += 1
        # Terms of the layer-weight gradient, summed over the batch rows in one call after the sweep
        # (a sum per tile rounds differently).
        scaled = self.scaled  # rows of models that take no step stay stale: their layer-weight gradient is unused
        for g in models:  # a model that takes no step needs no gradient
            for lo in range(0, D, self.tile_rows):
                part = slice(lo, min(D, lo + self.tile_rows))
                W_tile = W[g, part]
                grad = self.grad_tile[: W_tile.shape[0]]
                torch.mul(W_tile, penalty[g], out=grad)
                grad.addmm_(Xs[g, :, part].T, dpred[g])
                torch.mul(dpred[g] @ W_tile.T, Xb[g, :, part], out=scaled[g, :, part])
                self._adam("W", [g], [grad], part)
                torch.mul(W_tile, W_tile, out=self.squares[g, part])
        grad_a_abs = scaled.sum(1) @ self.layer_onehot + (self.lay / L).unsqueeze(1)
        grad_a, grad_b = grad_a_abs * torch.sign(a), dpred.sum(1)
        self._adam("a", models, [grad_a[g] for g in models])
        self._adam("b", models, [grad_b[g] for g in models])
        return loss

    def _adam(self, name: str, models: list[int], grads: list[torch.Tensor], part: slice = slice(None)) -> None:
        """Update rows ``part`` of parameter ``name`` of ``models`` from ``grads`` with torch's fused Adam kernel."""
        if models:
            k = _PARAMS.index(name)
            rows = lambda tensor: [tensor[g, part] for g in models]  # noqa: E731 - local view helper
            torch._fused_adam_(rows(self.t[name]), grads, rows(self.adam["exp_avg"][name]),
                               rows(self.adam["exp_avg_sq"][name]), [], [self.adam["step"][g, k] for g in models],
                               lr=self.lr, **_ADAM)

    # ------------------------------------------------------------------ validation
    def _predict_rows(
        self, rows: torch.Tensor, a: torch.Tensor, W: torch.Tensor, b: torch.Tensor, models: list[int]
    ) -> torch.Tensor:
        """Predictions (G, n_rows, V) of ``models`` for their own rows (zeros for the others), in row chunks.

        One model at a time, so a model that stopped costs nothing and a chunk is as large as the
        memory bound allows for one model (each chunk reads all of W once).
        """
        n_rows = rows.shape[1]
        chunk = max(1, _CHUNK_ELEMENTS // self.n_features)
        out = torch.zeros((self.n_models, n_rows, self.n_voxels), dtype=self.dtype, device=self.device)
        for g in models:
            scale = a[g].abs().index_select(0, self.lof)
            for start in range(0, n_rows, chunk):
                Xc = self.X.index_select(0, rows[g, start : start + chunk]).mul_(scale)
                torch.addmm(b[g], Xc, W[g], out=out[g, start : start + chunk])
        return out

    def _validation_score(self, models: list[int]) -> torch.Tensor:
        """Each model's validation metric; only ``models`` (those still training) are scored, the others' is junk."""
        t = self.t
        pred = self._predict_rows(self.val_rows, t["a"], t["W"], t["b"], models)
        if self.metric == "mse":
            err = (pred - self.Y_val).square() * self.val_mask.unsqueeze(-1)
            return err.sum((1, 2)) / (self.val_mask.sum(1) * self.n_voxels)
        if self.val_pcc == "full":
            return pearson_r_columns_torch(self.Y_val, pred, self.val_mask, kind=self.pcc).mean(-1)
        G, B, V = self.n_models, self.batch_size, self.n_voxels
        n_batches = self.val_batch_mask.shape[1]
        used = slice(0, n_batches * B)
        r = pearson_r_columns_torch(
            self.Y_val[:, used].reshape(G * n_batches, B, V), pred[:, used].reshape(G * n_batches, B, V), kind=self.pcc
        ).view(G, n_batches, V)
        return (r.mean(-1) * self.val_batch_mask).sum(1) / self.val_batch_mask.sum(1)

    def _early_stopping_update(self, score: torch.Tensor, train_loss: torch.Tensor, live: torch.Tensor) -> None:
        t = self.t
        self.epoch += 1
        gain = score if self.metric == "pcc" else -score
        first = t["best_epoch"] == 0  # the original's first epoch is the best so far, whatever its score
        improved = live & (first | (gain >= t["best_gain"] + self.min_delta))
        for g in np.flatnonzero(improved.cpu().numpy()).tolist():
            for name in _PARAMS:
                t[f"best_{name}"][g].copy_(t[name][g])
        t["best_gain"] = torch.where(improved, gain, t["best_gain"])
        t["best_epoch"] = torch.where(improved, self.epoch, t["best_epoch"])
        t["wait"] = torch.where(improved, 0, t["wait"] + live.long())
        t["n_epochs"] = torch.where(live, self.epoch, t["n_epochs"])
        t["stopped"] = t["stopped"] | (t["wait"] >= self.patience)
        nan = torch.full_like(score, math.nan)
        for key, value in (("history_val_score", score), ("history_train_loss", train_loss)):
            t[key] = torch.cat([t[key], torch.where(live, value, nan).unsqueeze(1)], dim=1)

    def _result(self) -> SolverResult:
        t = self.t
        a, W, b = t["best_a"], t["best_W"], t["best_b"]
        full = self._predict_rows(self.val_rows, a, W, b, list(range(self.n_models)))
        val_mean_r = pearson_r_columns_torch(self.Y_val, full, self.val_full_mask, kind=self.pcc).mean(-1)
        coef = W.to("cpu", copy=True).mul_(a.abs().index_select(1, self.lof).unsqueeze(-1).cpu())
        best_score = t["best_gain"] if self.metric == "pcc" else -t["best_gain"]
        return SolverResult(
            layer_weights=a.abs().cpu().numpy(),
            coef=coef.numpy(),
            intercept=b.cpu().numpy(),
            best_step=t["best_epoch"].cpu().numpy(),
            n_steps=t["n_epochs"].cpu().numpy(),
            best_score=best_score.cpu().numpy(),
            val_mean_r=val_mean_r.cpu().numpy(),
            history={
                "val_score": t["history_val_score"].cpu().numpy(),
                "train_loss": t["history_train_loss"].cpu().numpy(),
            },
        )


def _to_device(obj: dict, device: torch.device, copy: bool = False) -> dict:
    """A nested dict of tensors moved to ``device`` (``copy``: always new tensors, as a saved state needs)."""
    return {key: _to_device(value, device, copy) if isinstance(value, dict) else value.to(device, copy=copy)
            for key, value in obj.items()}


def _check_inputs(
    X: torch.Tensor,
    layer_of_feature: torch.Tensor,
    Y: torch.Tensor,
    train_idx: Sequence[np.ndarray],
    val_idx: Sequence[np.ndarray],
    wc: Sequence[float],
    lay: Sequence[float],
    val_pcc: str,
    pcc: str,
    drop_last: bool,
    batch_size: int,
) -> None:
    """Fail before any work with a message that names the argument, its value and what was expected.

    The options themselves were checked by :class:`SGDOptions`; here, what they need of the rows.
    """
    check_solver_arrays(X, layer_of_feature, Y)
    if pcc not in PCC_KINDS:
        raise ValueError(f"pcc={pcc!r}: must be one of {', '.join(PCC_KINDS)}")
    G = len(train_idx)
    if G == 0:
        raise ValueError("train_idx is empty: nothing to train")
    for name, seq in (("val_idx", val_idx), ("wc", wc), ("lay", lay)):
        if len(seq) != G:
            raise ValueError(f"{name} has {len(seq)} entries but train_idx has {G} (one per model)")
    n = X.shape[0]
    for name, seq, least in (("train_idx", train_idx, 1), ("val_idx", val_idx, 2)):
        for g, idx in enumerate(seq):
            idx = np.asarray(idx)
            if len(idx) < least or idx.min() < 0 or idx.max() >= n:
                raise ValueError(f"{name}[{g}]: need >= {least} row indices in [0, {n}); got {len(idx)} rows")
    if drop_last:
        short = [g for g, idx in enumerate(train_idx) if len(idx) < batch_size]
        if short:
            raise ValueError(
                f"drop_last=True needs >= batch_size={batch_size} training rows per model; "
                f"models {short} have fewer (no minibatch would be left)"
            )
    if val_pcc == "batch":
        short = [g for g, idx in enumerate(val_idx) if len(idx) < batch_size]
        if short:
            raise ValueError(
                f"val_pcc='batch' needs >= batch_size={batch_size} validation rows per model; "
                f"models {short} have fewer (use val_pcc='full')"
            )
