"""Layer-profile recovery on planted truth that `lwroi synth` did not make (issue 9, point 3).

A second generator, deliberately unlike lwroi.data.synthetic: each layer's signal is a random
combination of that layer's top 8 principal components (of the stored, reduced training
features), z-scored on the training rows and mixed with planted shares (the square roots of the
shares weight the z-scored signals); voxel gains are
log-normal, offsets N(0, 1), noise sd 0.6. Both solvers are fitted on the store's training rows
(sgd with tests/science.yaml's settings) and their ``layer_profile`` is compared with the shares:

    python scripts/independent_profile_check.py STORE_DIR [SEED]

STORE_DIR is a reduced feature store folder (``features.store_dir/<model>-<hash>/<reduction>-<hash>``),
e.g. from `lwroi run tests/science.yaml` on `lwroi synth`'s data.
"""

from __future__ import annotations

import sys

import numpy as np
from scipy.stats import spearmanr

from lwroi.encoding import LayerWeightedEncoder
from lwroi.features import open_feature_store

SHAPES = {"early": [8, 4, 2, 1], "mid": [1, 4, 4, 1], "late": [1, 2, 4, 8], "two-layer": [1, 0, 0, 1],
          "flat": [1, 1, 1, 1]}
SOLVERS = {"kernel": {},
           "sgd": {"solver_params": {"lr": 3e-3, "max_epochs": 30, "patience": 30}, "val_fraction": 0.2}}
N_COMPONENTS, N_VOXELS, NOISE_SD = 8, 40, 0.6


def leading_components(x: np.ndarray, k: int) -> np.ndarray:
    """The top ``k`` principal axes of ``x``'s rows, array of shape (n_features, k)."""
    _, _, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    return vt[:k].T


def linear_cka(a: np.ndarray, b: np.ndarray) -> float:
    """Linear centred kernel alignment of two row-matched feature blocks (Kornblith et al. 2019).

    Near 1, the two layers carry nearly the same information about the rows, and no fit can
    tell which of them a signal came from: the limit of any layer profile on these features.
    """
    ka, kb = ((x - x.mean(0)) @ (x - x.mean(0)).T for x in (a, b))
    return float((ka * kb).sum() / np.sqrt((ka * ka).sum() * (kb * kb).sum()))


def plant(X: list[np.ndarray], n_train: int, shares: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Responses (n_rows, N_VOXELS) whose signal takes ``shares`` of its variance from each layer."""
    Z = np.stack([x @ leading_components(x[:n_train], N_COMPONENTS) @ rng.standard_normal((N_COMPONENTS, N_VOXELS))
                  for x in X])
    Z = (Z - Z[:, :n_train].mean(1, keepdims=True)) / Z[:, :n_train].std(1, keepdims=True)
    signal = np.einsum("l,lnv->nv", np.sqrt(shares), Z)
    signal /= signal[:n_train].std(0)
    gain, offset = np.exp(rng.normal(0, 0.3, N_VOXELS)), rng.normal(0, 1, N_VOXELS)
    return gain * signal + offset + rng.normal(0, NOISE_SD, signal.shape)


def main() -> int:
    store = open_feature_store(sys.argv[1])
    rng = np.random.default_rng(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
    X_train, X_test = store.load("train"), store.load("test")
    n_train = len(X_train[0])
    print("linear CKA between layers (training rows):")
    for a in X_train:
        print("  " + " ".join(f"{linear_cka(a, b):.2f}" for b in X_train))
    X = [np.concatenate([a, b]) for a, b in zip(X_train, X_test, strict=True)]
    for shape, raw in SHAPES.items():
        shares = np.asarray(raw, float) / sum(raw)
        Y = plant(X, n_train, shares, rng)
        for solver, options in SOLVERS.items():
            model = LayerWeightedEncoder(solver=solver, device="cpu", **options).fit(X_train, Y[:n_train])
            profile = model.layer_profile(X_train)
            flat = shape == "flat"
            stat = profile.min() / profile.max() if flat else spearmanr(shares, profile).statistic
            print(f"{shape:9s} {solver:6s} planted {np.round(shares, 2)} profile {np.round(profile, 2)} "
                  f"{'min/max' if flat else 'Spearman'} {stat:.2f} held-out r {model.score(X_test, Y[n_train:]):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
