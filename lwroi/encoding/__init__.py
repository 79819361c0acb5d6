"""Encoding models: arrays and a device in, fitted layer-weighted models and scores out.

Knows nothing of files, videos, configs or MPI; importing it imports torch.
"""

from lwroi.encoding._kernel import solve_kernel
from lwroi.encoding._sgd import solve_sgd
from lwroi.encoding._solvers import SOLVERS, Solver, get_solver, make_options
from lwroi.encoding.checkpoint import load_checkpoint, save_checkpoint
from lwroi.encoding.cv import TuneResult, evaluate_grid_models, select_best, tune_grid
from lwroi.encoding.devices import resolve_device
from lwroi.encoding.metrics import mean_pcc, pearson_r_columns, pearson_r_columns_torch
from lwroi.encoding.model import LayerWeightedEncoder, stack_layer_features
from lwroi.encoding.result import SolverResult

__all__ = [
    "SOLVERS",
    "LayerWeightedEncoder",
    "Solver",
    "SolverResult",
    "TuneResult",
    "evaluate_grid_models",
    "get_solver",
    "load_checkpoint",
    "make_options",
    "mean_pcc",
    "pearson_r_columns",
    "pearson_r_columns_torch",
    "resolve_device",
    "save_checkpoint",
    "select_best",
    "solve_kernel",
    "solve_sgd",
    "stack_layer_features",
    "tune_grid",
]
