"""Encoding models: arrays and a device in, fitted layer-weighted models and scores out.

Knows nothing of files, videos, configs or MPI; importing it imports torch.
"""

from lwroi.encoding._sgd import SGDResult, solve_sgd
from lwroi.encoding._solvers import SOLVERS, get_solver, solver_options
from lwroi.encoding.checkpoint import load_checkpoint, save_checkpoint
from lwroi.encoding.cv import TuneResult, evaluate_grid_models, select_best, tune_grid
from lwroi.encoding.devices import resolve_device
from lwroi.encoding.metrics import mean_pcc, pearson_r_columns, pearson_r_columns_torch
from lwroi.encoding.model import LayerWeightedEncoder, stack_layer_features

__all__ = [
    "SOLVERS",
    "LayerWeightedEncoder",
    "SGDResult",
    "TuneResult",
    "evaluate_grid_models",
    "get_solver",
    "load_checkpoint",
    "mean_pcc",
    "pearson_r_columns",
    "pearson_r_columns_torch",
    "resolve_device",
    "save_checkpoint",
    "select_best",
    "solve_sgd",
    "solver_options",
    "stack_layer_features",
    "tune_grid",
]
