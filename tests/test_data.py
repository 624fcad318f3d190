"""Datasets: the embedded default, CIFAR pickles, ImageFolder trees, archives, and every bad input."""

from __future__ import annotations

import logging
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from nas import data as D
from nas.data import augment, load_dataset

SHARED_CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpg.tar.gz"


def test_embedded_default_is_real_digits():
    ds = load_dataset()
    assert ds.name == "digits" and ds.num_classes == 10 and ds.in_channels == 1 and ds.resolution == 32
    assert ds.train_x.dtype == torch.uint8 and len(ds.train_y) + len(ds.test_y) == 1797
    assert not ds.flip  # mirrored digits are other digits
    # stratified: every class in both splits
    assert set(ds.train_y.tolist()) == set(ds.test_y.tolist()) == set(range(10))
    again = load_dataset("digits")
    assert torch.equal(again.test_y, ds.test_y)
    assert not torch.equal(load_dataset(seed=1).test_y, ds.test_y)
    assert ds.resized(64).train_x.shape[2:] == (64, 64)


def _write_cifar10(root: Path, n: int = 20) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(root / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
                         "labels": list(rng.integers(0, 10, n))}, f)
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    return root


def test_cifar10_pickle_layout_by_path_and_name(tmp_path, monkeypatch):
    root = _write_cifar10(tmp_path / "cifar-10-batches-py")
    ds = load_dataset(root)
    assert ds.name == "cifar10" and ds.train_x.shape == (100, 3, 32, 32) and ds.test_x.shape == (20, 3, 32, 32)
    assert ds.classes[0] == "c0" and ds.flip
    monkeypatch.setenv("HARDNAS_DATA", str(tmp_path))
    assert load_dataset("cifar10").train_x.shape == (100, 3, 32, 32)


def test_cifar100_pickle_layout(tmp_path):
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("train", 30), ("test", 10)):
        with open(root / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
                         "fine_labels": list(rng.integers(0, 100, n))}, f)
    ds = load_dataset(root)
    assert ds.name == "cifar100" and ds.num_classes == 100 and len(ds.test_y) == 10


def test_named_dataset_missing_says_where(monkeypatch, tmp_path):
    monkeypatch.setenv("HARDNAS_DATA", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"data: 'cifar10' was not found at .*cifar-10-batches-py.*nothing is downloaded"):
        load_dataset("cifar10")


def _write_images(root: Path, classes: dict[str, int], size: int = 12, fmt: str = "png") -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, n in classes.items():
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.{fmt}")


def test_image_folder_with_train_test(tmp_path):
    _write_images(tmp_path / "set" / "train", {"cat": 6, "dog": 5}, fmt="jpg")
    _write_images(tmp_path / "set" / "test", {"cat": 2, "dog": 2})
    ds = load_dataset(tmp_path / "set")
    assert ds.classes == ["cat", "dog"] and ds.train_x.shape == (11, 3, 12, 12) and len(ds.test_y) == 4
    assert ds.train_y.tolist().count(1) == 5


def test_image_folder_split_and_decode_cache(tmp_path, monkeypatch):
    _write_images(tmp_path / "flat", {"a": 10, "b": 10, "c": 10})
    ds = load_dataset(tmp_path / "flat", seed=3)
    assert len(ds.train_y) + len(ds.test_y) == 30 and set(ds.test_y.tolist()) == {0, 1, 2}

    def boom(*_a, **_k):
        raise AssertionError("decoded again instead of using the cache")

    monkeypatch.setattr(D, "_decode", boom)
    cached = load_dataset(tmp_path / "flat", seed=3)
    assert torch.equal(cached.train_x, ds.train_x)


def test_archive_is_unpacked_once(tmp_path):
    _write_images(tmp_path / "src" / "tree" / "train", {"x": 3, "y": 3})
    _write_images(tmp_path / "src" / "tree" / "test", {"x": 1, "y": 1})
    archive = tmp_path / "tree.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tmp_path / "src" / "tree", arcname="tree")
    ds = load_dataset(archive)
    assert ds.train_x.shape[0] == 6 and ds.classes == ["x", "y"]
    assert load_dataset(archive).train_x.shape[0] == 6


def test_unreadable_files_are_counted_and_warned(tmp_path, caplog):
    _write_images(tmp_path / "d", {"a": 4, "b": 4})
    (tmp_path / "d" / "a" / "broken.jpg").write_bytes(b"not an image")
    with caplog.at_level(logging.WARNING, logger="nas.data"):
        ds = load_dataset(tmp_path / "d")
    assert ds.skipped == 1 and "1 unreadable image file(s)" in caplog.text
    assert len(ds.train_y) + len(ds.test_y) == 8


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: None, "is neither a known dataset (digits, cifar10, cifar100) nor an existing path"),
        (lambda p: p.mkdir(), "is an empty folder"),
        (lambda p: _write_images(p, {"only": 3}), "has one class only ('only'); expected at least 2 class folders"),
        (lambda p: [(p / "a").mkdir(parents=True), (p / "b").mkdir(), (p / "a" / "x.txt").write_text("hi")],
         "has class folders but no image files"),
        (lambda p: [(p / "a").mkdir(parents=True), (p / "b").mkdir(), (p / "a" / "x.jpg").write_bytes(b"bad"),
                    (p / "b" / "y.png").write_bytes(b"bad")], "none of the 2 images"),
        (lambda p: (p.parent / "file.txt").write_text("x"), "is a file; expected a folder or a .tar.gz"),
    ],
    ids=["missing", "empty", "one-class", "no-images", "all-unreadable", "plain-file"],
)
def test_bad_data_is_one_line(tmp_path, setup, message):
    target = tmp_path / "data"
    setup(target)
    spec = tmp_path / "file.txt" if "plain-file" in message or "is a file" in message else target
    with pytest.raises(ValueError) as err:
        load_dataset(spec)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_augment_crops_and_flips_deterministically():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.uint8).reshape(2, 1, 6, 6)
    a = augment(x, torch.Generator().manual_seed(0), pad=2)
    b = augment(x, torch.Generator().manual_seed(0), pad=2)
    assert torch.equal(a, b) and a.shape == x.shape
    none = augment(x, torch.Generator().manual_seed(0), pad=0, flip=False)
    assert torch.equal(none, x)
    flipped = [augment(x, torch.Generator().manual_seed(s), pad=0) for s in range(10)]
    assert any(torch.equal(f[0], x[0].flip(2)) for f in flipped)


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_CIFAR.exists(), reason="../shared/data/cifar10-jpg.tar.gz is not present")
def test_real_cifar10_jpeg_archive():
    ds = load_dataset(SHARED_CIFAR)
    assert ds.train_x.shape == (50000, 3, 32, 32) and ds.test_x.shape == (10000, 3, 32, 32)
    assert ds.num_classes == 10 and ds.skipped == 0
