"""DNN layer activations of video clips: the extractor of a config, its pre-work check, batched extraction.

A clip's feature vector for a layer is the mean of that layer's activations over the
clip's sampled frames. Frames of consecutive clips share forward batches, and clips are
decoded in background threads while the network runs.
"""

from __future__ import annotations

import contextlib
import itertools
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.transforms import functional as TF

from lwroi.config import FeatureConfig
from lwroi.exceptions import ConfigError, DataLayoutError, RandomWeightsWarning
from lwroi.features.layers import layer_problems, resolve_layers
from lwroi.features.video import read_video_frames
from lwroi.features.weights import load_model, weights_problems

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZES = ("square", "shorter")


def build_extractor(f: FeatureConfig, *, device: str | torch.device) -> tuple[LayerFeatureExtractor, dict[str, Any]]:
    """The extractor of the feature settings ``f`` on ``device``, and its weights' provenance.

    Returns
    -------
    extractor : LayerFeatureExtractor
    info : dict
        The weights' provenance (see :func:`~lwroi.features.weights.load_model`).
    """
    model, info = load_model(f.model, weights=f.weights, seed=f.seed, weights_sha256=f.weights_sha256)
    layers = resolve_layers(f.model, model, f.layers)
    return LayerFeatureExtractor(model, layers, image_size=f.image_size, device=device, resize=f.resize), info


def model_problems(f: FeatureConfig) -> list[str]:
    """Every problem of the feature settings that extraction would meet only in its first unit, one line each.

    Checked before any work (otherwise each extraction shard fails on its own, loading the
    network again): the model name, every entry of ``layers``, one forward pass of an
    ``image_size`` frame through the chosen layers, and the weights file (exists, matches
    ``weights_sha256``, holds tensors only, fits the model). Layers are checked on the
    architecture alone, so a bad weights file and a bad layer are both reported. Costs one
    or two model constructions, a graph trace and reading the weights file.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomWeightsWarning)  # the extraction units warn, not the check
            model, _ = load_model(f.model, weights="random", seed=f.seed)
    except ConfigError as exc:
        return [f"features.model: {exc}"]
    layers, problems = layer_problems(f.model, model, f.layers)
    if layers is not None:
        try:
            LayerFeatureExtractor(model, layers, image_size=f.image_size, device="cpu", resize=f.resize)
        except Exception as exc:  # torch's shape errors come in many types; any of them ends extraction
            problems.append(f"features.image_size = {f.image_size}: {f.model} fails on a {f.image_size}x"
                            f"{f.image_size} frame ({type(exc).__name__}: {exc})")
    if f.weights != "random":
        problems += weights_problems(f)
    return problems


class LayerFeatureExtractor:
    """Flattened activations of chosen graph nodes for batches of RGB frames.

    Frames are resized, scaled to [0, 1] and normalised with the ImageNet mean and std, as
    torchvision's classifiers expect. Two resizes:

    - ``square``: to ``image_size`` squared, antialiased bilinear in torch, inside the forward
      (on the device).
    - ``shorter``: the original's ``torchvision.transforms.Resize(image_size)`` on a PIL image:
      shorter side to ``image_size``, aspect kept, PIL's antialiased bilinear rounded to uint8.
      It runs on the CPU in :meth:`prepare`, which :func:`extract_video_features` calls in its
      decode threads, so the forward stays batched.

    Parameters
    ----------
    model : torch.nn.Module
    layers : dict of str to str
        Display name -> graph node (see :func:`resolve_layers`).
    image_size : int
    device : str or torch.device
    resize : {"square", "shorter"}, default="square"

    Attributes
    ----------
    dims : dict of str to int
        Flattened feature size of each layer for an ``image_size`` squared input (under
        ``shorter``, non-square clips give spatial layers of other sizes).
    spatial : dict of str to bool
        True where the node output has spatial (or token) axes, e.g. conv layers; these are
        the layers that get reduced.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        layers: dict[str, str],
        *,
        image_size: int,
        device: str | torch.device,
        resize: str = "square",
    ) -> None:
        if resize not in RESIZES:
            raise ConfigError(f"resize = {resize!r}: must be one of {', '.join(RESIZES)}")
        self.layers = dict(layers)
        self.image_size = image_size
        self.resize = resize
        self.device = torch.device(device)
        nodes = list(dict.fromkeys(self.layers.values()))
        self._graph = create_feature_extractor(
            model.eval(), return_nodes={n: n for n in nodes}, suppress_diff_warning=True
        )
        self._graph.to(self.device).eval()
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        with torch.inference_mode():
            probe = self._graph(torch.zeros(1, 3, image_size, image_size, device=self.device))
        self.spatial = {name: probe[node].ndim > 2 for name, node in self.layers.items()}
        self.dims = {name: int(probe[node][0].numel()) for name, node in self.layers.items()}

    def prepare(self, frames: np.ndarray) -> np.ndarray:
        """The CPU part of the resize, safe to run in a worker thread.

        ``shorter``: every frame through ``Resize(image_size)`` on a PIL image; frames whose
        shorter side already is ``image_size`` come back as they are (``Resize`` leaves them
        unchanged too), so preparing twice changes nothing. ``square``: frames unchanged.

        Parameters
        ----------
        frames : uint8 ndarray of shape (n_frames, height, width, 3)

        Returns
        -------
        frames : uint8 ndarray of shape (n_frames, height', width', 3)
        """
        _check_frames(frames)
        if self.resize == "square" or min(frames.shape[1:3]) == self.image_size:
            return frames
        return np.stack([np.asarray(_pil_resize(frame, self.image_size)) for frame in frames])

    def __call__(self, frames: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
        """Activations of a batch of frames.

        Parameters
        ----------
        frames : uint8 array or tensor of shape (n_frames, height, width, 3)
            Raw or :meth:`prepare`-d frames; all of one size.

        Returns
        -------
        features : dict of str to float32 tensor of shape (n_frames, n_features), on ``device``
        """
        x = torch.as_tensor(frames)
        _check_frames(x)
        if self.resize == "shorter":
            x = torch.from_numpy(self.prepare(x.cpu().numpy()))
        with torch.inference_mode():
            # contiguous NCHW, as ToTensor makes it: a channels-last view picks other conv kernels (other bits)
            x = x.to(self.device, non_blocking=True).permute(0, 3, 1, 2).contiguous().float().div_(255)
            if self.resize == "square":
                size = (self.image_size, self.image_size)
                x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
            out = self._graph((x - self._mean) / self._std)
            return {name: out[node].flatten(1).float() for name, node in self.layers.items()}


def _check_frames(frames: np.ndarray | torch.Tensor) -> None:
    if frames.dtype not in (np.uint8, torch.uint8) or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(
            f"frames: expected uint8 of shape (n, height, width, 3), got {frames.dtype} {tuple(frames.shape)}"
        )


def _pil_resize(frame: np.ndarray, size: int) -> Image.Image:
    """The original's ``Compose([ToPILImage(), Resize(size)])`` on one RGB uint8 frame."""
    return TF.resize(Image.fromarray(frame), size, interpolation=TF.InterpolationMode.BILINEAR)


def _decode_in_order(paths: list[Path], decode: Callable[[Path], np.ndarray], prefetch: int) -> Iterator[np.ndarray]:
    """Yield each clip's frames in input order, decoding up to ``prefetch`` clips ahead in threads."""
    if prefetch < 1:
        yield from map(decode, paths)
        return
    todo = iter(paths)
    with ThreadPoolExecutor(max_workers=prefetch, thread_name_prefix="lwroi-decode") as pool:
        pending: deque[Future] = deque(pool.submit(decode, p) for p in itertools.islice(todo, prefetch))
        try:
            while pending:
                frames = pending.popleft().result()
                nxt = next(todo, None)
                if nxt is not None:
                    pending.append(pool.submit(decode, nxt))
                yield frames
        finally:
            for fut in pending:
                fut.cancel()


def _frame_batches(clips: Iterable[tuple[int, np.ndarray]], batch_size: int) -> Iterator[tuple[np.ndarray, list]]:
    """Cut a stream of clips into batches of at most ``batch_size`` frames of one size.

    Yields the frames and their runs ``(clip, start, stop, clip_complete)``; a clip may
    span batches, and a batch ends early where the frame size changes.
    """
    chunks: list[np.ndarray] = []
    runs: list[tuple[int, int, int, bool]] = []
    filled = 0
    for clip, frames in clips:
        if chunks and frames.shape[1:] != chunks[0].shape[1:]:
            yield np.concatenate(chunks), runs
            chunks, runs, filled = [], [], 0
        start = 0
        while start < len(frames):
            take = min(batch_size - filled, len(frames) - start)
            chunks.append(frames[start : start + take])
            runs.append((clip, filled, filled + take, start + take == len(frames)))
            filled += take
            start += take
            if filled == batch_size:
                yield np.concatenate(chunks), runs
                chunks, runs, filled = [], [], 0
    if filled:
        yield np.concatenate(chunks), runs


def extract_video_features(
    video_paths: list[Path],
    extractor: LayerFeatureExtractor,
    *,
    sampling: str,
    count: int,
    stride: int,
    batch_size: int,
    progress: Callable[[int, int], None] | None = None,
    prefetch: int = 4,
) -> dict[str, np.ndarray]:
    """Mean activation of each layer over each clip's sampled frames (float32 sum / frame count).

    Parameters
    ----------
    video_paths : list of Path
    extractor : LayerFeatureExtractor
        Its :meth:`~LayerFeatureExtractor.prepare` runs in the decode threads.
    sampling, count, stride
        Frame sampling (see :func:`lwroi.features.video.sample_frame_indices`).
    batch_size : int
        Frames per forward pass; frames of consecutive clips of one size share a batch.
    progress : callable (n_done, n_videos), optional
        Called after each finished clip.
    prefetch : int, default=4
        Clips decoded ahead in background threads (0: decode in the calling thread). It
        changes speed only, never the numbers.

    Returns
    -------
    features : dict of str to float32 ndarray of shape (n_videos, n_features)

    Raises
    ------
    DataLayoutError
        A clip is unreadable, or its frames give a layer another size than the first clip's
        did (``resize: shorter`` with clips of different aspect ratios).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size = {batch_size}: must be >= 1")
    paths = list(video_paths)
    n_videos = len(paths)
    if not n_videos:
        return {name: np.empty((0, dim), dtype=np.float32) for name, dim in extractor.dims.items()}

    def decode(path: Path) -> np.ndarray:
        return extractor.prepare(read_video_frames(path, sampling=sampling, count=count, stride=stride))

    out: dict[str, np.ndarray] = {}
    sums: dict[int, dict[str, torch.Tensor]] = {}
    n_frames: dict[int, int] = {}
    n_done = 0
    clips = _decode_in_order(paths, decode, prefetch)
    with contextlib.closing(clips):
        for frames, runs in _frame_batches(enumerate(clips), batch_size):
            feats = extractor(frames)
            batch = (paths[runs[0][0]], frames.shape[1:3])  # a clip of the batch, and the frame size
            if not out:
                out = {name: np.empty((n_videos, f.shape[1]), dtype=np.float32) for name, f in feats.items()}
                first = batch
            _check_sizes(feats, out, batch, first)
            for clip, start, stop, complete in runs:
                _add_frames(sums.setdefault(clip, {}), feats, start, stop)
                n_frames[clip] = n_frames.get(clip, 0) + stop - start
                if complete:
                    for name, total in sums.pop(clip).items():
                        out[name][clip] = (total / n_frames[clip]).cpu().numpy()
                    n_done += 1
                    if progress is not None:
                        progress(n_done, n_videos)
    return out


def _add_frames(acc: dict[str, torch.Tensor], feats: dict[str, torch.Tensor], start: int, stop: int) -> None:
    """Add rows ``start:stop`` to a clip's sums one frame at a time, in float32.

    That is how the original sums its frames, so from the same activations the means are its
    means to the last bit (float32 rounding over a clip's few dozen frames is negligible).
    """
    for name, f in feats.items():
        for row in f[start:stop]:
            acc[name] = acc[name] + row if name in acc else row.clone()


def _check_sizes(
    feats: dict[str, torch.Tensor], out: dict[str, np.ndarray], batch: tuple[Path, tuple], first: tuple[Path, tuple]
) -> None:
    """Refuse a batch whose layer sizes differ from the first clip's: the rows could not share an array."""
    for name, f in feats.items():
        if f.shape[1] != out[name].shape[1]:
            (path, size), (first_path, first_size) = batch, first
            raise DataLayoutError(
                f"{path}: frames of {size[0]}x{size[1]} pixels give layer {name!r} {f.shape[1]} features, but "
                f"{first_path.name}'s {first_size[0]}x{first_size[1]} gave {out[name].shape[1]}; with resize: "
                "shorter (aspect kept) every clip needs the same frame size (or use resize: square)"
            )
