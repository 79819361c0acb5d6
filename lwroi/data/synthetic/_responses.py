"""The planted response model of the synthetic datasets.

The truth is planted as per-layer shares of each voxel's signal, not in the fitted model's terms
(no layer weights, no coefficient norms, no layer scaling), so a fit is checked against something
it was not built from. For each ROI, with planted shares ``s_l`` (non-negative, summing to 1)::

    response_vr = gain_v * sum_l sqrt(s_l) * z_lv + offset_v + noise_vr,   noise_vr ~ N(0, sd_v^2)

for voxel v and repetition r (noise independent per repetition), where ``z_lv`` is a per-layer
signal over the videos with mean 0 and variance 1, so each layer's term has the share ``s_l`` of
the summed variance of the terms (the signal is then scaled to variance 1). Voxel gains and noise
sds vary about the ROI's level (log-normal), offsets are N(0, 1).

Each ``z_lv`` is a random linear function of layer l's own standardised DNN features ``Z_l``
(columns centred and scaled to unit variance, constant columns 0; ``K_l = Z_l Z_l^T / D_l``)::

    z_lv ~ K_l (Kbar_l + rho I)^(-1/2) u_lv,   u_lv ~ N(0, I),   Kbar_l = mean of the other layers' K_m

(i.e. ``z_lv = Z_l b_lv`` with ``b_lv = Z_l^T (Kbar_l + rho I)^(-1/2) u_lv / D_l``). Its covariance over
videos, ``K_l (Kbar_l + rho I)^-1 K_l``, keeps ``K_l^2``'s weight on the layer's leading principal
components, which ~100 videos can learn (an isotropic b spreads over the whole spectrum, much of
it unlearnable), and divides out the directions the other layers carry too: neighbouring layers
of one network are nearly the same function of the videos (centred kernel alignment 0.89-0.94
between neighbours of the 4 layers of tests/science.yaml), so without that a layer's signal could
be told from its neighbours' by no fit. ``rho`` (:data:`SIGNAL_RIDGE`, in units of Kbar_l's mean
eigenvalue) sets the balance; measured on those 4 layers with the kernel solver over 4 draws:
at rho = 2 it ranked every non-flat profile right (Spearman >= 0.8) and kept the flat one flat in
3 draws of 4, at a held-out r of 0.82-0.88 of the noise ceiling; rho = 1 ranked as well but
learnt less (0.77-0.86); rho = 4 learnt more but gave the flat profile's fc8 up to 3.4 times
conv1's share, and the plain ``K_l u`` (no whitening) confused the mid profiles.

De-correlation: the layers' ``u_lv`` are independent draws, so two layers' signals of a voxel are
uncorrelated in expectation, and the whitening keeps them in different directions where the
layers differ. What correlation a single draw has (``layer_signal_correlation`` in the ground
truth; on tests/science.yaml mean 0.001, mean absolute 0.26) averages out over an ROI's voxels:
the shares measured on the written signal (``layer_shares_empirical``, each term's covariance with
the signal over its variance) are within 0.04 of the planted ones. Orthogonalising each voxel's
signals exactly, layer by layer, was tried and dropped: it made the last layer the most
distinctive one, and the kernel solver then gave it a flat profile's largest share.

The DNN features that define the truth come from the caller, which keeps this module free of torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from lwroi.data.reliability import pearson_columns

N_REPETITIONS = 3
"""Repetitions of each video's response, as in the Algonauts data."""
SIGNAL_RIDGE = 2.0
"""rho of the per-layer signals' whitening against the other layers (see the module docstring)."""
VOXEL_SPREAD = 0.25
"""sd of log gain and of log noise sd across an ROI's voxels: gains and noise vary about +-25 %."""

MODEL_DESCRIPTION = (
    "response_vr = gain_v * sum_l sqrt(layer_shares_l) * z_lv + offset_v + noise_vr; z_lv = unit-variance "
    "K_l (Kbar_l + signal_ridge * mean_eig(Kbar_l) I)^(-1/2) u_lv, u_lv ~ N(0, I), K_l = Z_l Z_l^T / D_l of "
    "the column-standardised features of layer l over the training videos, Kbar_l the mean of the other "
    "layers' K_m; u_lv independent; the terms scaled together so that the signal has variance 1; "
    "log gain_v and log noise sd_v ~ N(log level, voxel_spread^2) (level 1 and the ROI's noise_sd), "
    "offset_v ~ N(0, 1), noise_vr ~ N(0, sd_v^2) independent per repetition"
)
"""The model in one line, for the ground truth file."""

PROFILE_SHAPES: dict[str, tuple[str, float]] = {
    # ROI: (shape, parameter): contrast first/last layer for early and late, peak depth for mid
    "V1": ("early", 8.0),
    "V2": ("early", 8.0),
    "V3": ("early", 8.0),
    "V4": ("mid", 1 / 3),
    "LOC": ("mid", 0.5),
    "EBA": ("mid", 2 / 3),
    "FFA": ("late", 8.0),
    "STS": ("two-layer", 0.0),
    "PPA": ("late", 8.0),
    "WB": ("flat", 0.0),
}
"""The planted profile of each ROI; see :func:`layer_shares`."""

_MID_WIDTH = 0.2
"""Width (sd, in units of depth 0..1) of the mid profile's Gaussian bump."""
_SHARE_DECIMALS = 12
"""Shares are rounded before normalising, so mirror-image depths tie exactly (a rank check of a fit
must see a tie as a tie, not as an order decided by rounding)."""

def layer_shares(shape: str, n_layers: int, parameter: float = 0.0) -> np.ndarray:
    """Planted signal shares of the layers (depth 0 .. 1 from first to last), non-negative, summing to 1.

    - ``"early"``: decreasing geometrically with depth, the first layer ``parameter`` times the last;
    - ``"late"``: the mirror image, increasing;
    - ``"mid"``: a Gaussian bump peaking at depth ``parameter`` (sd 0.2): low at both ends;
    - ``"flat"``: equal shares;
    - ``"two-layer"``: the first and the last layer carry half each, the others nothing.

    Raises
    ------
    ValueError
        Unknown shape, ``n_layers < 1``, or a contrast below 1.
    """
    if n_layers < 1:
        raise ValueError(f"n_layers = {n_layers}: must be >= 1")
    depth = np.linspace(0.0, 1.0, n_layers) if n_layers > 1 else np.zeros(1)
    if shape in ("early", "late"):
        if parameter < 1:
            raise ValueError(f"{shape} profile: contrast {parameter} must be >= 1")
        values = parameter ** ((1 - depth) if shape == "early" else depth)
    elif shape == "mid":
        values = np.exp(-0.5 * ((depth - parameter) / _MID_WIDTH) ** 2)
    elif shape == "flat":
        values = np.ones(n_layers)
    elif shape == "two-layer":
        values = np.zeros(n_layers)
        values[[0, -1]] = 1.0
    else:
        raise ValueError(f"unknown profile shape {shape!r}; known: early, mid, late, flat, two-layer")
    values = np.round(values, _SHARE_DECIMALS)
    return values / values.sum()


def planted_layer_profiles(rois: list[str] | tuple[str, ...], n_layers: int) -> dict[str, np.ndarray]:
    """Planted signal shares per ROI (:data:`PROFILE_SHAPES`): early visual ROIs draw on early layers.

    V1-V3 decrease with depth (first layer 8 times the last), V4, LOC and EBA are bumps peaking at
    depth 1/3, 1/2 and 2/3, FFA and PPA increase, STS draws on the first and the last layer only,
    and WB on every layer alike. Steep shapes on purpose: the layers of one network share most of
    their variance, so a shallow profile's order is not identifiable from ~100 videos (measured on
    tests/science.yaml: a contrast of 4 was ranked wrongly by the kernel solver in one ROI of three).

    Raises
    ------
    ValueError
        An ROI has no planted profile, or ``n_layers < 1``.
    """
    unknown = [roi for roi in rois if roi not in PROFILE_SHAPES]
    if unknown:
        raise ValueError(f"no planted layer profile for ROI {unknown[0]!r}; known: {', '.join(PROFILE_SHAPES)}")
    return {roi: layer_shares(PROFILE_SHAPES[roi][0], n_layers, PROFILE_SHAPES[roi][1]) for roi in rois}


def noise_ceiling(noise_sd: float, n_repetitions: int = N_REPETITIONS) -> float:
    """Return the expected Pearson r between a unit-variance signal and its repetition-averaged response."""
    return math.sqrt(1.0 / (1.0 + noise_sd**2 / n_repetitions))


def _standardised_kernel(features: np.ndarray) -> np.ndarray:
    """``Z Z^T / D`` of the column-standardised features (constant columns 0), mean eigenvalue 1 without them."""
    z = features - features.mean(axis=0)
    std = np.sqrt(np.einsum("ij,ij->j", z, z) / len(z))
    z *= np.divide(1.0, std, out=np.zeros_like(std), where=std > 0)
    return z @ z.T / z.shape[1]


def layer_signal_maps(layers: Mapping[str, np.ndarray], ridge: float = SIGNAL_RIDGE) -> list[np.ndarray]:
    """Per layer the map ``A_l = K_l (Kbar_l + ridge * mean_eig(Kbar_l) I)^(-1/2)``, (n_videos, n_videos).

    ``A_l u`` with ``u ~ N(0, I)`` is a random linear function of layer l's standardised features,
    weighted towards what it carries and the other layers do not (module docstring). With a single
    layer ``Kbar`` is 0 and the map is ``K_l``.

    Raises
    ------
    ValueError
        A layer is constant over the videos (it could carry no signal).
    """
    kernels = {name: _standardised_kernel(features) for name, features in layers.items()}
    constant = [name for name, kernel in kernels.items() if not np.trace(kernel) > 0]
    if constant:
        raise ValueError(f"layer_features: layer(s) {', '.join(constant)} constant over the videos: no signal to plant")
    n = len(next(iter(kernels.values())))
    maps = []
    for name, kernel in kernels.items():
        others = [k for other, k in kernels.items() if other != name]
        mean_other = sum(others) / len(others) if others else np.zeros_like(kernel)
        eigval, eigvec = np.linalg.eigh(mean_other)
        scale = max(np.trace(mean_other) / n, 0.0) or 1.0
        inv_sqrt = (eigvec / np.sqrt(np.clip(eigval, 0.0, None) + ridge * scale)) @ eigvec.T
        maps.append(kernel @ inv_sqrt)
    return maps


def draw_layer_signals(rng: np.random.Generator, maps: list[np.ndarray], n_voxels: int) -> np.ndarray:
    """Per voxel one unit-variance signal per layer, ``A_l u`` with independent ``u ~ N(0, I)``.

    The layers' draws are independent, so two layers' signals of a voxel are uncorrelated in
    expectation, and what correlation a draw has averages out over voxels.

    Returns
    -------
    array of shape (n_layers, n_videos, n_voxels)
    """
    n = maps[0].shape[0]
    signals = np.stack([mapping @ rng.standard_normal((n, n_voxels)) for mapping in maps])
    signals -= signals.mean(axis=1, keepdims=True)
    return signals / signals.std(axis=1, keepdims=True)




def draw_roi_responses(rng: np.random.Generator, maps: list[np.ndarray], shares: np.ndarray, n_voxels: int,
                       noise_sd: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One ROI's responses to the videos by the model of the module docstring, and what was planted.

    Parameters
    ----------
    rng : Generator
        The ROI's own stream.
    maps : list of ndarray of shape (n_videos, n_videos)
        From :func:`layer_signal_maps`.
    shares : ndarray of shape (n_layers,)
        Planted shares of the layers (:func:`layer_shares`).
    n_voxels : int
    noise_sd : float
        The ROI's typical noise sd per repetition; each voxel's varies about it.

    Returns
    -------
    responses : float32 ndarray of shape (n_videos, N_REPETITIONS, n_voxels)
    planted : dict of str to ndarray
        Per voxel: ``gain``, ``noise_sd``, the planted noise ``ceiling``, the ``empirical`` one (signal
        against the repetition mean), the layer ``shares`` measured on the signal (n_layers, n_voxels),
        and the ``correlation`` of every layer pair's signals.
    """
    n_videos = maps[0].shape[0]
    z = draw_layer_signals(rng, maps, n_voxels)
    terms = np.sqrt(shares)[:, None, None] * z
    scale = terms.sum(axis=0).std(axis=0)  # 1 up to the chance correlations of the voxel's z
    terms /= scale
    signal = terms.sum(axis=0)
    gain = np.exp(rng.normal(0.0, VOXEL_SPREAD, n_voxels))
    voxel_sd = noise_sd * np.exp(rng.normal(0.0, VOXEL_SPREAD, n_voxels))
    offset = rng.normal(0.0, 1.0, n_voxels)
    noise_draw = voxel_sd * rng.standard_normal((n_videos, N_REPETITIONS, n_voxels))
    responses = ((gain * signal)[:, None, :] + noise_draw + offset).astype(np.float32)
    pairs = np.triu_indices(len(z), k=1)
    return responses, {
        "gain": gain,
        "noise_sd": voxel_sd,
        "ceiling": np.sqrt(1.0 / (1.0 + (voxel_sd / gain) ** 2 / N_REPETITIONS)),
        "empirical": pearson_columns(signal, responses.mean(axis=1, dtype=np.float64)),
        "shares": np.einsum("lnv,nv->lv", terms, signal) / np.einsum("nv,nv->v", signal, signal),
        "correlation": np.einsum("lnv,mnv->lmv", z, z)[pairs].ravel() / n_videos,
    }
