"""Layer profiles on planted truth that lwroi did not make: a random deep network's layers, not lwroi's.

tests/test_science.py checks the profiles on ``lwroi synth``'s data, whose generator lives in
lwroi. This file plants its own truth, with nothing from lwroi but the estimator under test:

- **Layers**: a random 4-layer ReLU network (Gaussian weights) on Gaussian inputs, each layer's
  128 units z-scored. Neighbouring layers share much of their information (linear CKA 0.70-0.75),
  the first and last less (0.39), as the layers of a trained DNN do.
- **Responses**: per layer a random combination of its units, z-scored; the voxel's signal is the
  sum of the layers' signals weighted by the square roots of the planted shares, rescaled to unit
  variance; log-normal voxel gains, N(0, 1) offsets, noise sd 0.6.
- **Rows**: 1,000 training and 100 held-out rows, the size of the Algonauts training set.
- **Fits**: the kernel solver as configured by default; the sgd solver with the (wc, lay) that
  lwroi's own cross-validation picks: measured with ``tune_grid`` (2 folds) on every shape here,
  it is (1.0, 0.1) for all five, both on the default grid (wc 1, 10, 100 x lay 0.1, 1, 10; CV r
  0.73-0.75, the next point 0.52-0.58) and on a grid below it (wc 0.1, 1 x lay 0.01, 0.1; CV r
  0.71-0.74 elsewhere): it beats its neighbours on both sides, not only a corner of one grid.

The bars are the issue's: Spearman of ``layer_profile`` with the planted shares >= 0.8 for every
profile that is not flat (one adjacent swap of four layers is 0.8); a flat profile keeps
min / max >= 0.5; the sgd solver's held-out r >= 0.9 of the kernel solver's.

Measured (seed 0; the profile is the covariance split of ``layer_profile``):

=========  ==========================  ==========================  ===============
planted    kernel profile              sgd profile                 r kernel / sgd
=========  ==========================  ==========================  ===============
early      .59 .24 .11 .06   1.00      .55 .25 .11 .09   1.00      0.786 / 0.775
mid        .10 .40 .41 .09   0.89      .14 .35 .37 .14   0.89      0.786 / 0.774
late       .05 .11 .28 .56   1.00      .10 .10 .27 .53   0.80      0.777 / 0.759
two-layer  .50 .01 0 .49     0.89      .50 .01 0 .49     0.89      0.775 / 0.765
flat       .26 .25 .25 .23   0.90      .29 .22 .23 .26   0.76      0.767 / 0.749
=========  ==========================  ==========================  ===============

Seeds 1-3 give the same verdicts: flat min/max kernel 0.90, 0.88, 0.93 and sgd 0.80, 0.81, 0.74.
The paper's L1 penalty on the sgd solver's layer weights drains the layers a neighbour can stand
in for: the middle layers, which share the most with both neighbours, lose weight to the two ends,
whose terms then carry what the middle ones share with them. Measured by each term's own variance
(``Var(p_l) / Σ Var(p_m)``, the profile before the covariance split) that shared part counted for
the ends alone, and the sgd flat profile failed its bar (min/max 0.499, 0.60, 0.59, 0.49 at seeds
0-3; kernel 0.78-0.81), the early and late ones reading sharper than planted (kernel early .69 .20
.08 .04). The covariance split gives each layer half of what its term shares with another's.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import spearmanr

from lwroi.encoding import LayerWeightedEncoder

pytestmark = pytest.mark.slow(seconds=40)

N_TRAIN, N_TEST, UNITS, N_VOXELS, NOISE_SD, SEED = 1000, 100, 128, 40, 0.6, 0
SHAPES = {"early": [8, 4, 2, 1], "mid": [1, 4, 4, 1], "late": [1, 2, 4, 8], "two-layer": [1, 0, 0, 1],
          "flat": [1, 1, 1, 1]}
SOLVERS = {
    "kernel": {},
    "sgd": {"wc": 1.0, "lay": 0.1, "val_fraction": 0.2,
            "solver_params": {"lr": 3e-3, "max_epochs": 60, "patience": 60}},
}


def random_network_layers(rng: np.random.Generator) -> list[np.ndarray]:
    """The z-scored activations of a random 4-layer ReLU network, one (rows, UNITS) block per layer."""
    x = rng.standard_normal((N_TRAIN + N_TEST, UNITS))
    layers = []
    for _ in range(4):
        x = np.maximum(x @ rng.standard_normal((UNITS, UNITS)) / np.sqrt(UNITS), 0)
        x = (x - x.mean(0)) / (x.std(0) + 1e-8)
        layers.append(x.astype(np.float32))
    return layers


def linear_cka(a: np.ndarray, b: np.ndarray) -> float:
    """Linear centred kernel alignment (Kornblith et al. 2019) of two row-matched, centred blocks."""
    ka, kb = a @ a.T, b @ b.T
    return float((ka * kb).sum() / np.sqrt((ka * ka).sum() * (kb * kb).sum()))


def planted_responses(layers: list[np.ndarray], shares: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Responses whose signal takes ``shares`` of its variance from the layers, with gains, offsets, noise."""
    signals = np.stack([x @ rng.standard_normal((UNITS, N_VOXELS)) for x in layers])
    train = signals[:, :N_TRAIN]
    signals = (signals - train.mean(1, keepdims=True)) / train.std(1, keepdims=True)
    signal = np.einsum("l,lnv->nv", np.sqrt(shares), signals)
    signal /= signal[:N_TRAIN].std(0)
    gain, offset = np.exp(rng.normal(0, 0.3, N_VOXELS)), rng.normal(0, 1, N_VOXELS)
    return (gain * signal + offset + rng.normal(0, NOISE_SD, signal.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def fits() -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray, float]]:
    """(solver, shape) -> (planted shares, fitted layer profile, held-out r)."""
    rng = np.random.default_rng(SEED)
    layers = random_network_layers(rng)
    train, test = [x[:N_TRAIN] for x in layers], [x[N_TRAIN:] for x in layers]
    out = {}
    for shape, raw in SHAPES.items():
        shares = np.asarray(raw, float) / sum(raw)
        Y = planted_responses(layers, shares, rng)
        for solver, settings in SOLVERS.items():
            model = LayerWeightedEncoder(solver=solver, device="cpu", **settings).fit(train, Y[:N_TRAIN])
            out[solver, shape] = shares, model.layer_profile(train), model.score(test, Y[N_TRAIN:])
    return out


def test_the_random_networks_layers_overlap_as_a_dnns_do():
    """The check means something only if the layers are neither copies nor strangers."""
    layers = [x[:N_TRAIN] for x in random_network_layers(np.random.default_rng(SEED))]
    neighbours = [linear_cka(a, b) for a, b in itertools.pairwise(layers)]
    assert all(0.6 < c < 0.85 for c in neighbours), neighbours
    assert linear_cka(layers[0], layers[-1]) < 0.5


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("solver", SOLVERS)
def test_each_solver_recovers_the_planted_profile(fits, solver, shape):
    shares, profile, _ = fits[solver, shape]
    if shape == "flat":
        assert profile.min() / profile.max() >= 0.5, profile
    else:
        assert spearmanr(shares, profile).statistic >= 0.8 - 1e-9, (shares, profile)


@pytest.mark.parametrize("shape", SHAPES)
def test_sgd_predicts_nearly_as_well_as_the_kernel_solver(fits, shape):
    assert fits["sgd", shape][2] >= 0.9 * fits["kernel", shape][2], (fits["sgd", shape][2], fits["kernel", shape][2])
