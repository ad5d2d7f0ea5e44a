"""Data modules: shapes, split disjointness, determinism, errors."""

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cimnas.data import FashionMNISTDataModule, ImageFolderDataModule, heldout_split
from cimnas.data.fashion_mnist import DataNotFoundError, find_fashion_mnist, read_idx


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def tiny_fmnist(tmp_path_factory) -> Path:
    """A 300/50-image IDX folder in Fashion-MNIST's format (labels = image index mod 10)."""
    root = tmp_path_factory.mktemp("fmnist")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 300), ("t10k", 50)):
        images = rng.integers(0, 256, size=(n, 28, 28))
        images[:, 0, 0] = np.arange(n) % 256  # a per-image tag to check disjointness
        _write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return root


def test_idx_reader_round_trip(tiny_fmnist):
    images = read_idx(tiny_fmnist / "train-images-idx3-ubyte.gz")
    labels = read_idx(tiny_fmnist / "train-labels-idx1-ubyte.gz")
    assert images.shape == (300, 28, 28) and labels.shape == (300,)
    assert (labels == np.arange(300) % 10).all()


def test_truncated_idx_is_rejected(tmp_path):
    bad = tmp_path / "bad-idx3-ubyte"
    bad.write_bytes(bytes([0, 0, 8, 3]) + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\0" * 100)
    with pytest.raises(ValueError, match="truncated"):
        read_idx(bad)


def test_heldout_split_disjoint_and_deterministic():
    train, val = heldout_split(1000, 100, seed=3)
    assert len(val) == 100 and len(train) == 900
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(1000))
    train2, val2 = heldout_split(1000, 100, seed=3)
    assert torch.equal(val, val2) and torch.equal(train, train2)
    _, val3 = heldout_split(1000, 100, seed=4)
    assert not torch.equal(val, val3)


@pytest.mark.parametrize("resolution,channels", [(28, 1), (32, 3)])
def test_fmnist_shapes_and_splits(tiny_fmnist, resolution, channels):
    dm = FashionMNISTDataModule(str(tiny_fmnist), batch_size=16, resolution=resolution, channels=channels,
                                val_size=60, seed=1)
    dm.prepare_data()
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (240, 60, 50)
    assert set(dm.train_indices.tolist()).isdisjoint(dm.val_indices.tolist())
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, channels, resolution, resolution) and x.dtype == torch.float32
    assert y.dtype == torch.long and int(y.max()) < 10
    xv, _ = next(iter(dm.val_dataloader()))
    assert xv.shape[1:] == (channels, resolution, resolution)
    calib = dm.calibration_batches(num_images=40, batch_size=16)
    assert [len(b) for b in calib] == [16, 16, 8]


def test_fmnist_determinism_with_seed(tiny_fmnist):
    def first_batch(seed):
        torch.manual_seed(seed)  # augmentation draws from the global RNG (Lightning's seed_everything)
        dm = FashionMNISTDataModule(str(tiny_fmnist), batch_size=32, val_size=60, seed=seed)
        return next(iter(dm.train_dataloader())), dm.val_indices

    (xa, ya), va = first_batch(5)
    (xb, yb), vb = first_batch(5)
    assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(va, vb)
    (_, _), vc = first_batch(6)
    assert not torch.equal(va, vc)


def test_subsets_are_nested_in_their_split(tiny_fmnist):
    dm = FashionMNISTDataModule(str(tiny_fmnist), val_size=60, train_subset=100, val_subset=20, test_subset=10)
    dm.setup()
    full = FashionMNISTDataModule(str(tiny_fmnist), val_size=60)
    full.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (100, 20, 10)
    assert set(dm.train_indices.tolist()) <= set(full.train_indices.tolist())
    assert set(dm.val_indices.tolist()) <= set(full.val_indices.tolist())


def test_missing_data_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr("cimnas.data.fashion_mnist.DEBIAN_DIR", tmp_path / "nowhere")
    monkeypatch.delenv("CIMNAS_FASHION_MNIST_DIR", raising=False)
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist") as info:
        find_fashion_mnist(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(info.value)
    with pytest.raises(DataNotFoundError):
        FashionMNISTDataModule(str(tmp_path / "empty")).prepare_data()


def test_invalid_arguments_name_the_field(tiny_fmnist):
    with pytest.raises(ValueError, match="channels=2"):
        FashionMNISTDataModule(str(tiny_fmnist), channels=2)
    with pytest.raises(ValueError, match="val_size=400"):
        FashionMNISTDataModule(str(tiny_fmnist), val_size=400).setup()


def test_debian_fashion_mnist_is_real_when_installed():
    """The embedded default: 60,000 + 10,000 real images, balanced classes."""
    try:
        paths = find_fashion_mnist()
    except DataNotFoundError:
        pytest.fail("Fashion-MNIST must be installed for the test suite (.ci/run installs it)")
    labels = read_idx(paths["train_labels"])
    assert labels.shape == (60000,) and np.bincount(labels).tolist() == [6000] * 10
    assert read_idx(paths["test_images"]).shape == (10000, 28, 28)


def test_image_folder_module(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 4)):
        for cls in ("cat", "dog"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    dm = ImageFolderDataModule(str(tmp_path), batch_size=4, num_workers=0, resolution=32, val_size=6)
    dm.setup()
    assert dm.num_classes == 2
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (18, 6, 8)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32)
    xt, _ = next(iter(dm.test_dataloader()))
    assert xt.shape == (4, 3, 32, 32)
    with pytest.raises(FileNotFoundError, match="missing folder train/"):
        ImageFolderDataModule(str(tmp_path / "nope")).prepare_data()
