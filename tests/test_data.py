"""Datasets: the embedded default, CIFAR pickles, ImageFolder trees, archives, and every bad input."""

from __future__ import annotations

import logging
import os
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


class _Payload:
    """A pickle that runs a shell command when unpickled by plain `pickle.load`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalPayload(_Payload):
    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w')",))


@pytest.mark.parametrize("payload", [_Payload, _EvalPayload], ids=["os.system", "builtins.eval"])
@pytest.mark.parametrize("where", ["data_batch_1", "batches.meta"])
def test_a_pickle_that_runs_code_is_refused_unrun(tmp_path, payload, where):
    root = _write_cifar10(tmp_path / "cifar-10-batches-py")
    marker = tmp_path / "MARKER"
    (root / where).write_bytes(pickle.dumps(payload(marker)))
    with pytest.raises(ValueError) as err:
        load_dataset(root)
    msg = str(err.value)
    assert not marker.exists()
    assert f"{root / where}" in msg and "is refused" in msg and "\n" not in msg
    assert ("system" if payload is _Payload else "builtins.eval") in msg


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_restricted_reader_reads_numpy_pickles_of_every_protocol(tmp_path, protocol):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(protocol)
    want = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 255, (4, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, 4)
        want.append(x)
        with open(root / name, "wb") as f:
            pickle.dump({"batch_label": "b", "data": x, "labels": y if protocol == 5 else [int(v) for v in y],
                         "filenames": [f"{i}.png" for i in range(4)]}, f, protocol=protocol)
    ds = load_dataset(root)
    assert torch.equal(ds.train_x.reshape(20, -1), torch.from_numpy(np.concatenate(want[:5])))
    assert torch.equal(ds.test_x.reshape(4, -1), torch.from_numpy(want[5]))


def _write_binary(root: Path, files: list[str], label_bytes: int, n: int, classes: int) -> dict[str, np.ndarray]:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for name in files:
        rec = rng.integers(0, 255, (n, label_bytes + 3072), dtype=np.uint8)
        rec[:, :label_bytes] = rng.integers(0, classes, (n, label_bytes))
        rec.tofile(root / name)
        written[name] = rec
    return written


def test_cifar10_binary_layout(tmp_path, monkeypatch):
    files = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    rec = _write_binary(tmp_path / "cifar-10-batches-bin", files, 1, 7, 10)
    (tmp_path / "cifar-10-batches-bin" / "batches.meta.txt").write_text("\n".join(f"k{i}" for i in range(10)) + "\n\n")
    ds = load_dataset(tmp_path / "cifar-10-batches-bin")
    assert ds.name == "cifar10" and ds.train_x.shape == (35, 3, 32, 32) and ds.test_x.shape == (7, 3, 32, 32)
    assert ds.classes[3] == "k3" and ds.test_y.tolist() == rec["test_batch.bin"][:, 0].tolist()
    assert torch.equal(ds.train_x[0].reshape(-1), torch.from_numpy(rec["data_batch_1.bin"][0, 1:]))
    monkeypatch.setenv("HARDNAS_DATA", str(tmp_path))
    assert load_dataset("cifar10").train_x.shape == (35, 3, 32, 32)


def test_cifar100_binary_layout_uses_the_fine_label(tmp_path):
    rec = _write_binary(tmp_path / "cifar-100-binary", ["train.bin", "test.bin"], 2, 9, 20)
    ds = load_dataset(tmp_path / "cifar-100-binary")
    assert ds.name == "cifar100" and ds.num_classes == 100 and ds.train_x.shape == (9, 3, 32, 32)
    assert ds.train_y.tolist() == rec["train.bin"][:, 1].tolist()
    assert torch.equal(ds.test_x[-1].reshape(-1), torch.from_numpy(rec["test.bin"][-1, 2:]))


def _truncated_archive(tmp_path: Path) -> Path:
    _write_images(tmp_path / "src" / "tree", {"a": 20, "b": 20}, size=32)
    whole = tmp_path / "whole.tar.gz"
    with tarfile.open(whole, "w:gz") as tf:
        tf.add(tmp_path / "src" / "tree", arcname="tree")
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    return cut


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda root: (root / "data_batch_2").unlink(),
         "lacks data_batch_2 of the cifar-10-batches-py layout; expected all of data_batch_1"),
        (lambda root: (root / "test_batch").write_bytes(b"\x80\x04not a pickle"),
         "test_batch' is not a readable CIFAR batch"),
        (lambda root: (root / "data_batch_3").write_bytes(pickle.dumps([1, 2, 3])),
         "data_batch_3' is not a CIFAR batch; expected a dict with 'data' and 'labels'"),
        (lambda root: (root / "data_batch_4").write_bytes(pickle.dumps({"data": np.zeros((2, 10), np.uint8),
                                                                       "labels": [0, 1]})),
         "data_batch_4' has 'data' of (2, 10); expected a uint8 array of N x 3072"),
        (lambda root: (root / "data_batch_5").write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8),
                                                                       "labels": [0, 12]})),
         "data_batch_5' has label 12; expected labels in [0, 9] for cifar10"),
        (lambda root: (root / "batches.meta").write_bytes(pickle.dumps({"label_names": ["a"]})),
         "batches.meta' does not hold 10 class names"),
    ],
    ids=["missing-batch", "garbage", "not-a-dict", "wrong-shape", "label-range", "meta"],
)
def test_bad_cifar_python_folders_are_one_line(tmp_path, setup, message):
    root = _write_cifar10(tmp_path / "cifar-10-batches-py")
    setup(root)
    with pytest.raises(ValueError) as err:
        load_dataset(root)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_bad_cifar_binary_files_are_one_line(tmp_path):
    root = tmp_path / "cifar-10-batches-bin"
    _write_binary(root, [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"], 1, 3, 10)
    (root / "data_batch_3.bin").write_bytes(b"\0" * 5000)
    with pytest.raises(ValueError, match=r"data_batch_3\.bin' has 5,000 bytes; expected whole 3073-byte records"):
        load_dataset(root)
    (root / "data_batch_3.bin").unlink()
    with pytest.raises(ValueError, match="lacks data_batch_3.bin of the cifar-10-batches-bin layout"):
        load_dataset(root)


def test_a_truncated_archive_is_one_line_and_leaves_nothing(tmp_path, _isolated_runs):
    cut = _truncated_archive(tmp_path)
    with pytest.raises(ValueError) as err:
        load_dataset(cut)
    msg = str(err.value)
    assert msg.startswith(f"data: {str(cut)!r} could not be unpacked (") and "expected a complete .tar.gz" in msg
    assert "\n" not in msg
    assert [p for p in (_isolated_runs / "datasets").iterdir()] == []


def test_an_archive_of_a_malicious_cifar_folder_is_refused_and_not_kept(tmp_path, _isolated_runs):
    root = _write_cifar10(tmp_path / "src" / "cifar-10-batches-py")
    marker = tmp_path / "MARKER"
    (root / "data_batch_1").write_bytes(pickle.dumps(_Payload(marker)))
    archive = tmp_path / "cifar.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(root, arcname="cifar-10-batches-py")
    with pytest.raises(ValueError) as err:
        load_dataset(archive)
    assert not marker.exists()
    assert f"{archive}/cifar-10-batches-py/data_batch_1' is not a plain CIFAR batch" in str(err.value)
    assert list((_isolated_runs / "datasets").iterdir()) == []


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
