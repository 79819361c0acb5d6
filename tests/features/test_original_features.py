"""Oracle: ``compat: true`` features are the original implementation's, row for row.

The oracle below is our own transcription of the original feature path
(QYiZhou/LWNeuralEncoding: ``feature_extraction/generate_features.py`` and ``utils.py``, then
``get_activations`` in ``code/perform_encoding.py``), written from its behaviour, sharing no code
with lwroi's pipeline:

- OpenCV decode, BGR -> RGB; frame ``fc`` (1-based, up to ``CAP_PROP_FRAME_COUNT``) kept when
  ``fc % 4 == 0``;
- per frame ``Compose([ToPILImage(), Resize(size), ToTensor(), Normalize(ImageNet)])`` and one
  forward of the chosen nodes; the activations summed in float32 and divided by the frame count;
- ``test_idx = permutation(n)[:n_test]`` after seeding with 400; ``np.delete(X, test_idx, 0)``
  for train rows, ``X[test_idx]`` for held-out rows (permutation order);
- conv layers: ``StandardScaler().fit_transform`` on train, a second one on the held-out rows,
  then ``SparseRandomProjection()`` fitted on train; fc layers raw;
- the concatenation standardised again: ``fit_transform`` on train, ``fit_transform`` (own
  statistics) on the held-out rows.

Two things are taken from lwroi on purpose, because the original leaves them to chance: the
random-weight network (AlexNet built after ``torch.manual_seed(seed)``, as
``features.weights: random`` does; the original loads pretrained weights, unavailable offline)
and each projection's ``random_state`` (lwroi's ``layer_seed(seed, position)``; the original's
projection is unseeded), so that both sides draw the same matrices. The network is torchvision's
AlexNet, whose conv1/conv2/fc6 outputs are the original's ``out1``/``out2``/``out6``.

lwroi runs for real: ``lwroi synth`` writes a tiny dataset, ``lwroi extract --set compat=true``
builds the feature store. It extracts with ``features.batch_size=1``, one frame per forward as the
original: conv layers then agree bit for bit (they do at any batch size), and fc6 to ~5e-6. A
batched fc6 GEMM rounds differently (~1e-7), and the second standardisation divides the
near-silent fc6 units of a random network (std ~1e-5) by their tiny std, which takes that past
1e-5; that batching changes nothing else is tested in test_extract.py.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torchvision
from sklearn.preprocessing import StandardScaler
from sklearn.random_projection import SparseRandomProjection
from torchvision import transforms
from torchvision.models.feature_extraction import create_feature_extractor

from lwroi.features import open_feature_store
from lwroi.features.reduce import layer_seed
from tests.conftest import run_lwroi

pytestmark = pytest.mark.slow

N_VIDEOS, N_TEST, SPLIT_SEED, SEED = 12, 3, 400, 0
IMAGE_SIZE = 80
"""Big enough that SRP at the original's eps 0.1 (1883 components for 9 training rows) reduces conv1
(5184 features) and conv2 (3072)."""
LAYERS = {"conv1": "features.2", "conv2": "features.5", "fc6": "classifier.2"}
"""The original's out1, out2 (conv + ReLU + max-pool) and out6 (linear + ReLU) in torchvision's AlexNet."""
CONFIG = f"""
data:
  root: data
  subjects: [sub01]
  rois: [V1]
  n_train_videos: {N_VIDEOS}
  n_videos: {N_VIDEOS + 2}
  n_test: {N_TEST}
  split_seed: {SPLIT_SEED}
features:
  model: alexnet
  weights: random
  seed: {SEED}
  layers: [{", ".join(LAYERS)}]
  image_size: {IMAGE_SIZE}
  frame_count: 4
  batch_size: 16
  store_dir: feature_store
run:
  output_dir: runs/oracle
  extract_shards: 2
"""


def original_frames(path: Path, sampling_rate: int = 4) -> np.ndarray:
    """``get_video_from_mp4``: RGB frames whose 1-based index is a multiple of ``sampling_rate``."""
    cap = cv2.VideoCapture(str(path))
    n_frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    kept = []
    for fc in range(1, n_frames + 1):
        ok, frame = cap.read()
        assert ok, f"{path}: frame {fc} of {n_frames} unreadable"
        if fc % sampling_rate == 0:
            kept.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    assert len(kept) == int(n_frames / sampling_rate)
    return np.stack(kept)


def original_activations(paths: list[Path]) -> tuple[dict[str, np.ndarray], int]:
    """``get_activations_and_save`` up to the frame average: one forward per frame, float32 sums.

    Also returns ``layer_3d``, the position of the first layer with a flat output: the layers
    before it are the ones the original reduces.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = torchvision.models.alexnet(weights=None).eval()
    net = create_feature_extractor(model, return_nodes={node: name for name, node in LAYERS.items()})
    transform = transforms.Compose(
        [
            transforms.ToPILImage(),
            transforms.Resize(IMAGE_SIZE),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    rows, layer_3d = [], 0
    for path in paths:
        frames = original_frames(path)
        sums: dict[str, np.ndarray] = {}
        for img in frames:
            with torch.no_grad():
                out = net(transform(img).unsqueeze(0))
            for i, name in enumerate(LAYERS):
                if not rows and out[name].ndim == 2 and layer_3d == 0:
                    layer_3d = i
                a = out[name].numpy().ravel()
                sums[name] = sums[name] + a if name in sums else a
        rows.append({name: s / float(len(frames)) for name, s in sums.items()})
    return {name: np.stack([r[name] for r in rows]) for name in LAYERS}, layer_3d


def original_features(
    activations: dict[str, np.ndarray], layer_3d: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """The split, the per-layer reduction and ``get_activations``' second standardisation.

    Returns the train and test matrices (layers concatenated), ``test_idx`` and the layer dims.
    """
    test_idx = np.random.RandomState(SPLIT_SEED).permutation(np.arange(N_VIDEOS))[:N_TEST]  # = seed(400); permutation
    train_parts, test_parts = [], []
    for position, X in enumerate(activations.values()):
        x_train = np.delete(X[:N_VIDEOS], test_idx, 0)
        x_test = X[:N_VIDEOS][test_idx]
        if position < layer_3d:
            x_train = StandardScaler().fit_transform(x_train)
            x_test = StandardScaler().fit_transform(x_test)
            srp = SparseRandomProjection(random_state=layer_seed(SEED, position)).fit(x_train)
            x_train, x_test = srp.transform(x_train), srp.transform(x_test)
        train_parts.append(x_train)
        test_parts.append(x_test)
    scaler = StandardScaler()
    train = scaler.fit_transform(np.hstack(train_parts))
    test = scaler.fit_transform(np.hstack(test_parts))
    return train, test, test_idx, [p.shape[1] for p in train_parts]


@pytest.fixture(scope="module")
def compat_store(tmp_path_factory):
    """A tiny synthetic dataset and the feature store ``lwroi extract --set compat=true`` builds from it."""
    root = tmp_path_factory.mktemp("oracle")
    config = root / "tiny.yaml"
    config.write_text(CONFIG)
    sizes = ("--subjects", "1", "--videos", str(N_VIDEOS), "--challenge", "2")
    run_lwroi("synth", "data", "--config", str(config), *sizes, cwd=root)
    compat = ("--set", "compat=true", "--set", "features.batch_size=1")  # batch size 1: see the module docstring
    # the forward's float32 sums round by the thread count (1e-4 after the scaler between 1 and 2
    # threads): lwroi's extraction uses as many threads as the oracle below, in this process
    threads = ("--set", f"run.threads={torch.get_num_threads()}")
    run_lwroi("extract", str(config), *compat, *threads, "--mpi", "none", cwd=root)
    (store_dir,) = (root / "feature_store").glob("alexnet-*/srp-*")
    videos = sorted((root / "data" / "AlgonautsVideos268_All_30fpsmax").glob("*.mp4"))
    return open_feature_store(store_dir), videos


def test_compat_features_are_the_originals_row_for_row(compat_store):
    store, videos = compat_store
    train, test, test_idx, dims = original_features(*original_activations(videos[:N_VIDEOS]))
    rows = store.meta["rows"]
    assert rows["test"] == test_idx.tolist()  # held-out rows in the permutation's order, as the original
    assert rows["train"] == np.delete(np.arange(N_VIDEOS), test_idx).tolist()
    assert list(store.layers) == list(LAYERS)
    assert [store.dims[name] for name in LAYERS] == dims
    assert dims[0] < 64 * 9 * 9 and dims[1] < 192 * 4 * 4  # the conv layers really were projected
    for split, expected in (("train", train), ("test", test)):
        ours = np.hstack(store.load(split))
        assert ours.shape == expected.shape
        np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5, err_msg=f"split {split}")
    assert store.meta["reduction"]["restandardize"] is True
    assert store.meta["reduction"]["scale_floor"] is False
