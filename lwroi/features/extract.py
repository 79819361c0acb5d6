"""DNN layer activations of video clips: the extractor of a config, its pre-work check, batched extraction.

An image model's feature vector of a clip for a layer is the mean of that layer's activations
over the clip's sampled frames; a video model's is that layer's activations for the clip,
its sampled frames fed as one input. Inputs of consecutive clips share forward batches, and
clips are decoded in background threads while the network runs.
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
from lwroi.features.families import IMAGENET_MEAN, IMAGENET_STD, Feed, input_problems, model_spec
from lwroi.features.frame_cache import FrameCache
from lwroi.features.layers import layer_problems, resolve_layers
from lwroi.features.video import read_video_frames
from lwroi.features.weights import load_model, weights_problems

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "LayerFeatureExtractor", "build_extractor", "extract_video_features",
           "model_problems"]

RESIZES = ("square", "shorter")


def build_extractor(f: FeatureConfig, *, device: str | torch.device) -> tuple[LayerFeatureExtractor, dict[str, Any]]:
    """The extractor of the feature settings ``f`` on ``device``, and its weights' provenance.

    ``f.model`` may name any family of :mod:`lwroi.features.families`; the family sets the
    normalisation and whether the network sees frames or clips of ``f.frame_count`` frames.

    Returns
    -------
    extractor : LayerFeatureExtractor
    info : dict
        The weights' provenance (see :func:`~lwroi.features.weights.load_model`).

    Raises
    ------
    ConfigError
        The model cannot take these settings (see :func:`model_problems`, which lists them all).
    """
    spec = model_spec(f.model, image_size=f.image_size, frame_count=f.frame_count)
    problems = input_problems(spec, image_size=f.image_size, frame_count=f.frame_count, sampling=f.frame_sampling,
                              resize=f.resize)
    if problems:
        raise ConfigError("; ".join(problems))
    model, info = load_model(f.model, weights=f.weights, seed=f.seed, weights_sha256=f.weights_sha256,
                             image_size=f.image_size)
    layers = resolve_layers(f.model, model, f.layers)
    extractor = LayerFeatureExtractor(model, layers, image_size=f.image_size, device=device, resize=f.resize,
                                      feed=spec.feed)
    return extractor, info


def model_problems(f: FeatureConfig) -> list[str]:
    """Every problem of the feature settings that extraction would meet only in its first unit, one line each.

    Checked before any work (otherwise each extraction shard fails on its own, loading the
    network again): the model name, what its family takes (a video model's frame sampling,
    fixed or smallest clip size, square frames), every entry of ``layers``, one forward pass of
    an ``image_size`` frame (a video model: a clip of ``frame_count`` frames) through the chosen
    layers, and the weights file (exists, matches ``weights_sha256``, holds tensors only, fits
    the model). Layers are checked on the architecture alone, so a bad weights file and a bad
    layer are both reported. Costs one or two model constructions, a graph trace and reading
    the weights file.
    """
    try:
        spec = model_spec(f.model, image_size=f.image_size, frame_count=f.frame_count)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomWeightsWarning)  # the extraction units warn, not the check
            model, _ = load_model(f.model, weights="random", seed=f.seed, image_size=f.image_size)
    except ConfigError as exc:
        return [f"features.model: {exc}"]
    sizes = input_problems(spec, image_size=f.image_size, frame_count=f.frame_count, sampling=f.frame_sampling,
                           resize=f.resize)
    layers, problems = layer_problems(f.model, model, f.layers)
    problems = sizes + problems
    if layers is not None and not sizes:
        try:
            LayerFeatureExtractor(model, layers, image_size=f.image_size, device="cpu", resize=f.resize,
                                  feed=spec.feed)
        except Exception as exc:  # torch's shape errors come in many types; any of them ends extraction
            shape = f"{f.image_size}x{f.image_size}"
            shape = f"clip of {f.frame_count} frames of {shape}" if spec.feed.clip_frames else f"{shape} frame"
            problems.append(f"features.image_size = {f.image_size}: {f.model} fails on a {shape} "
                            f"({type(exc).__name__}: {exc})")
    if f.weights != "random":
        problems += weights_problems(f)
    return problems


class LayerFeatureExtractor:
    """Flattened activations of chosen graph nodes for batches of RGB frames or clips.

    Frames are resized, scaled to [0, 1] and normalised with the mean and std of ``feed``
    (ImageNet's by default, as torchvision's classifiers expect). An image model
    (``feed.clip_frames == 0``) sees every frame as its own input; a video model sees a clip of
    ``feed.clip_frames`` frames as one (N, C, T, H, W) input. Two resizes, of every frame alike:

    - ``square``: to ``image_size`` squared, antialiased bilinear in torch, inside the forward
      (on the device).
    - ``shorter``: the original's ``torchvision.transforms.Resize(image_size)`` on a PIL image:
      shorter side to ``image_size``, aspect kept, PIL's antialiased bilinear rounded to uint8.
      It runs on the CPU in :meth:`prepare`, which :func:`extract_video_features` calls in its
      decode threads, so the forward stays batched.

    Every layer is flattened whole, with all its axes: a conv map's channels x height x width;
    a transformer's tokens x dim, the class token and every patch token kept, because a token's
    position is information a voxel may use, as a conv map's spatial position is; a video
    model's time axis too (channels x time x height x width), so a voxel may weigh early and
    late frames differently. Every clip has ``clip_frames`` frames, so the sizes are fixed.

    Parameters
    ----------
    model : torch.nn.Module
    layers : dict of str to str
        Display name -> graph node (see :func:`resolve_layers`).
    image_size : int
    device : str or torch.device
    resize : {"square", "shorter"}, default="square"
    feed : Feed, optional
        Normalisation, input kind and tracing of the model's family (see
        :func:`~lwroi.features.families.model_spec`); the default is an ImageNet image model.

    Attributes
    ----------
    dims : dict of str to int
        Flattened feature size of each layer for an ``image_size`` squared input (under
        ``shorter``, non-square clips give spatial layers of other sizes).
    spatial : dict of str to bool
        True where the node output has axes beyond the feature axis: conv maps, transformer
        tokens, a video model's time; these are the layers that get reduced (SRP), as their
        size grows with the input's.
    clip_frames : int
        0 for an image model, else the frames of one clip input.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        layers: dict[str, str],
        *,
        image_size: int,
        device: str | torch.device,
        resize: str = "square",
        feed: Feed | None = None,
    ) -> None:
        if resize not in RESIZES:
            raise ConfigError(f"resize = {resize!r}: must be one of {', '.join(RESIZES)}")
        feed = feed or Feed()
        self.layers = dict(layers)
        self.image_size = image_size
        self.resize = resize
        self.device = torch.device(device)
        self.clip_frames = feed.clip_frames
        nodes = list(dict.fromkeys(self.layers.values()))
        self._graph = create_feature_extractor(
            model.eval(), return_nodes={n: n for n in nodes}, tracer_kwargs=feed.tracer_kwargs,
            suppress_diff_warning=True,
        )
        self._graph.to(self.device).eval()
        self._mean = torch.tensor(feed.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(feed.std, device=self.device).view(1, 3, 1, 1)
        frames = (self.clip_frames,) if self.clip_frames else ()
        with torch.inference_mode():
            probe = self._graph(torch.zeros(1, 3, *frames, image_size, image_size, device=self.device))
        self.spatial = {name: probe[node].ndim > 2 for name, node in self.layers.items()}
        self.dims = {name: int(probe[node][0].numel()) for name, node in self.layers.items()}

    def prepare(self, frames: np.ndarray) -> np.ndarray:
        """One clip's sampled frames as the model's inputs; the CPU part of the resize, safe in a worker thread.

        ``shorter``: every frame through ``Resize(image_size)`` on a PIL image; frames whose
        shorter side already is ``image_size`` come back as they are (``Resize`` leaves them
        unchanged too). ``square``: frames unchanged.

        Parameters
        ----------
        frames : uint8 ndarray of shape (n_frames, height, width, 3)

        Returns
        -------
        inputs : uint8 ndarray
            An image model: the frames, shape (n_frames, height', width', 3); a video model: the
            clip as one input, shape (1, n_frames, height', width', 3).
        """
        _check_inputs(frames, 0)
        frames = self._shorter(frames)
        return frames[None] if self.clip_frames else frames

    def _shorter(self, frames: np.ndarray) -> np.ndarray:
        """``shorter``'s PIL resize of (n, height, width, 3) frames; idempotent, and a no-op under ``square``."""
        if self.resize == "square" or min(frames.shape[1:3]) == self.image_size:
            return frames
        return np.stack([np.asarray(_pil_resize(frame, self.image_size)) for frame in frames])

    def __call__(self, inputs: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
        """Activations of a batch of inputs.

        Parameters
        ----------
        inputs : uint8 array or tensor
            Raw or :meth:`prepare`-d inputs, all of one size: frames of shape (n, height, width, 3)
            for an image model, clips of shape (n, clip_frames, height, width, 3) for a video model.

        Returns
        -------
        features : dict of str to float32 tensor of shape (n, n_features), on ``device``
        """
        x = torch.as_tensor(inputs)
        _check_inputs(x, self.clip_frames)
        lead = x.shape[:-3]  # (n,) or (n, clip_frames)
        frames = x.reshape(-1, *x.shape[-3:])
        if self.resize == "shorter":
            frames = torch.from_numpy(self._shorter(frames.cpu().numpy()))
        with torch.inference_mode():
            # contiguous NCHW, as ToTensor makes it: a channels-last view picks other conv kernels (other bits)
            x = frames.to(self.device, non_blocking=True).permute(0, 3, 1, 2).contiguous().float().div_(255)
            if self.resize == "square":
                size = (self.image_size, self.image_size)
                x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
            x = (x - self._mean) / self._std
            if self.clip_frames:  # (n, T, C, H, W) -> (n, C, T, H, W)
                x = x.reshape(*lead, *x.shape[1:]).transpose(1, 2).contiguous()
            out = self._graph(x)
            return {name: out[node].flatten(1).float() for name, node in self.layers.items()}


def _check_inputs(inputs: np.ndarray | torch.Tensor, clip_frames: int) -> None:
    """Refuse anything but uint8 RGB frames (n, height, width, 3), or clips (n, clip_frames, height, width, 3)."""
    shape = "(n, height, width, 3)" if not clip_frames else f"(n, {clip_frames}, height, width, 3)"
    ndim = 5 if clip_frames else 4
    if (inputs.dtype not in (np.uint8, torch.uint8) or inputs.ndim != ndim or inputs.shape[-1] != 3
            or (clip_frames and inputs.shape[1] != clip_frames)):
        raise ValueError(f"{'clips' if clip_frames else 'frames'}: expected uint8 of shape {shape}, got "
                         f"{inputs.dtype} {tuple(inputs.shape)}")


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
    """Cut a stream of clips' inputs into batches of at most ``batch_size`` inputs of one size.

    An input is a frame (image models) or a whole clip (video models: one per clip). Yields the
    inputs and their runs ``(clip, start, stop, clip_complete)``; a clip may span batches, and a
    batch ends early where the input size changes.
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
    frame_cache: FrameCache | None = None,
) -> dict[str, np.ndarray]:
    """Each layer's activations per clip: image models the mean over its sampled frames, video models its one clip.

    An image model's row is the float32 sum of the frames' activations / frame count; a video
    model's is the activations of the clip's ``count`` frames fed as one input (the mean of one).

    Parameters
    ----------
    video_paths : list of Path
    extractor : LayerFeatureExtractor
        Its :meth:`~LayerFeatureExtractor.prepare` runs in the decode threads.
    sampling, count, stride
        Frame sampling (see :func:`lwroi.features.video.sample_frame_indices`); a video model
        takes ``count`` sampling of its ``clip_frames`` frames only.
    batch_size : int
        Frames per forward pass; frames of consecutive clips of one size share a batch. A video
        model takes ``max(1, batch_size // clip_frames)`` clips per forward, so one setting bounds
        the memory of a forward for image and video models alike.
    progress : callable (n_done, n_videos), optional
        Called after each finished clip.
    prefetch : int, default=4
        Clips decoded ahead in background threads (0: decode in the calling thread). It
        changes speed only, never the numbers.
    frame_cache : FrameCache, optional
        Where decoded frames are kept: clips found there are read back instead of decoded, the
        others decoded and added (the same frames either way).

    Returns
    -------
    features : dict of str to float32 ndarray of shape (n_videos, n_features)

    Raises
    ------
    DataLayoutError
        A clip is unreadable, or its frames give a layer another size than the first clip's
        did (``resize: shorter`` with clips of different aspect ratios).
    ValueError
        ``batch_size`` < 1, or a sampling other than ``count`` of ``clip_frames`` frames for a
        video model.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size = {batch_size}: must be >= 1")
    if extractor.clip_frames:
        if sampling != "count" or count != extractor.clip_frames:
            raise ValueError(f"sampling = {sampling!r}, count = {count}: a video model takes clips of "
                             f"{extractor.clip_frames} frames, sampling 'count'")
        batch_size = max(1, batch_size // extractor.clip_frames)
    paths = list(video_paths)
    n_videos = len(paths)
    if not n_videos:
        return {name: np.empty((0, dim), dtype=np.float32) for name, dim in extractor.dims.items()}

    read = read_video_frames if frame_cache is None else frame_cache.read

    def decode(path: Path) -> np.ndarray:
        return extractor.prepare(read(path, sampling=sampling, count=count, stride=stride))

    out: dict[str, np.ndarray] = {}
    sums: dict[int, dict[str, torch.Tensor]] = {}
    n_frames: dict[int, int] = {}
    n_done = 0
    clips = _decode_in_order(paths, decode, prefetch)
    with contextlib.closing(clips):
        for frames, runs in _frame_batches(enumerate(clips), batch_size):
            feats = extractor(frames)
            batch = (paths[runs[0][0]], frames.shape[-3:-1])  # a clip of the batch, and the frame size
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
