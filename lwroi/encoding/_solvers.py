"""Registry of solvers of the layer-weighted model, looked up by the name in ``EncodingConfig.solver``.

A solver is a function ``solve_<method>(X, layer_of_feature, Y, *, train_idx, val_idx, wc, lay,
seed, state, on_epoch, **options) -> SGDResult`` that fits G models over the same rows of one
feature matrix and returns their effective coefficients on X (layer weights folded in). Options
it does not share with the others (``lr``, ``patience``...) are keyword arguments of its own;
callers pass only those its signature names (see ``solver_options``). Adding a solver is one
function and one entry here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from lwroi.encoding._kernel import solve_kernel
from lwroi.encoding._sgd import SGDResult, solve_sgd

SOLVERS: dict[str, Callable[..., SGDResult]] = {"sgd": solve_sgd, "kernel": solve_kernel}

EARLY_STOPPING_SOLVERS = frozenset({"sgd"})
"""Solvers that need validation rows to stop early. The others choose their hyper-parameters inside
the training rows, so the estimator gives them every row and scores validation rows only if given."""


def get_solver(name: str) -> Callable[..., SGDResult]:
    """Return the solver registered as ``name``; an unknown name lists the known ones."""
    try:
        return SOLVERS[name]
    except KeyError:
        raise ValueError(f"solver={name!r}: unknown; known solvers: {', '.join(sorted(SOLVERS))}") from None


def solver_options(solver: Callable[..., SGDResult], candidates: Mapping[str, Any]) -> dict[str, Any]:
    """Keep the entries of ``candidates`` that ``solver`` takes as keyword arguments.

    Lets one set of training options (the estimator's parameters, a config section) drive any
    registered solver: a dual-form solver simply does not name ``lr`` or ``batch_size``.
    """
    accepted = inspect.signature(solver).parameters
    return {key: value for key, value in candidates.items() if key in accepted}
