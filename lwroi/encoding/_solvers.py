"""Registry of solvers of the layer-weighted model, looked up by the name in ``EncodingConfig.solver``.

A solver is one function, one options class and one entry here. The function fits G models over
the same rows of one feature matrix::

    solve(X, layer_of_feature, Y, *, train_idx, val_idx, wc, lay, options, pcc, primal, seed,
          state, on_epoch, workspace, x_key) -> SolverResult

and returns their effective coefficients on X (layer weights folded in). ``options`` is an
instance of the solver's own frozen dataclass (a ``lwroi.config.SolverOptions``), which holds
every setting only that solver reads, with its defaults and checks; the other arguments are the
same for every solver (a solver that has no use for one, as the kernel solver for wc and lay,
ignores it; ``workspace`` is a dict the caller keeps between solves, where a solver may keep work to
reuse under its own name, and ``x_key``, when given, a digest of X's content to key that work by,
so X need not be hashed again). Callers build the options with :func:`make_options`, which refuses an option the
solver does not have, naming it and the solver.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lwroi.config import KernelOptions, SGDOptions, SolverOptions
from lwroi.encoding._kernel import solve_kernel
from lwroi.encoding._sgd import solve_sgd
from lwroi.encoding.result import SolverResult


@dataclass(frozen=True)
class Solver:
    """A registry entry: the solve function, its options class, and what a run plan needs to know of it.

    ``uses_grid`` and ``needs_validation`` are the options class's (``SolverOptions``), so torch-free
    code (the run plan, the config's fingerprint) reads the same facts without importing the solver.
    """

    solve: Callable[..., SolverResult]
    options: type[SolverOptions]

    @property
    def name(self) -> str:
        return self.options.solver

    @property
    def uses_grid(self) -> bool:
        """Its wc and lay come from the CV grid search (the plan has tune and select units)."""
        return self.options.uses_grid

    @property
    def needs_validation(self) -> bool:
        """It stops early on validation rows, so a fit given none holds out a share of its training rows."""
        return self.options.needs_validation


SOLVERS: dict[str, Solver] = {
    "sgd": Solver(solve_sgd, SGDOptions),
    "kernel": Solver(solve_kernel, KernelOptions),
}


def get_solver(name: str) -> Solver:
    """Return the solver registered as ``name``; an unknown name lists the known ones."""
    try:
        return SOLVERS[name]
    except KeyError:
        raise ValueError(f"solver={name!r}: unknown; known solvers: {', '.join(sorted(SOLVERS))}") from None


def make_options(solver: str, params: Mapping[str, Any] | SolverOptions | None) -> SolverOptions:
    """The options object of ``solver`` from a dict of its options (missing ones take their defaults).

    Raises
    ------
    ValueError
        A key that is not an option of this solver (naming the key, the solver and its options,
        and the solver it belongs to if another one has it), or a value its options class refuses.
    """
    entry = get_solver(solver)
    if isinstance(params, SolverOptions):
        if not isinstance(params, entry.options):
            raise ValueError(f"solver_params: a {type(params).__name__} is not the options of solver {solver!r} "
                             f"(those are {entry.options.__name__})")
        return params
    params = dict(params or {})
    known = [f.name for f in dataclasses.fields(entry.options)]
    for key in params:
        if key not in known:
            owners = [name for name, other in SOLVERS.items()
                      if key in {f.name for f in dataclasses.fields(other.options)}]
            where = f" (it is an option of solver {owners[0]!r})" if owners else ""
            raise ValueError(f"solver_params: {key!r} is not an option of solver {solver!r}{where}; "
                             f"its options: {', '.join(known) or 'none'}")
    return entry.options(**params)
