"""Datasets for proxy training, decoded once and kept in memory as uint8 tensors.

`load_dataset(spec)` accepts:

* ``None`` / ``"digits"`` — the embedded default: scikit-learn's handwritten digits (1,797 real
  8x8 scans, 10 classes, shipped inside the scikit-learn wheel), upscaled to 32x32, one channel,
  split 80/20 with a seeded stratified split. Works offline with nothing to download.
* ``"cifar10"`` / ``"cifar100"`` — the standard python-pickle layout, looked up under
  ``$HARDNAS_DATA`` and ``./data``; or a path to such a folder.
* a path to an ImageFolder tree: ``root/train/<class>/*.jpg`` and ``root/test/<class>/...``
  (or ``val/``), or ``root/<class>/...`` split with a seeded stratified split; a ``.tar.gz``
  of such a tree is unpacked once under ``runs/datasets``.

Decoding happens once: decoded folders are cached as uint8 tensors in ``runs/datasets`` (keyed
by the files' paths, sizes and times), so a search with many processes decodes nothing twice.
Augmentation (random crop with padding, horizontal flip) runs batched on tensors.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .paths import runs_dir

__all__ = ["DATASET_NAMES", "Dataset", "augment", "load_dataset"]

log = logging.getLogger("nas.data")

DATASET_NAMES: tuple[str, ...] = ("digits", "cifar10", "cifar100")
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff"}


@dataclass
class Dataset:
    """A classification dataset held in memory: uint8 NCHW images and int64 labels."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    flip: bool = True  # horizontal flips are a valid augmentation (not for digits)
    skipped: int = 0  # unreadable files skipped while loading
    mean: torch.Tensor = field(init=False)
    std: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        x = self.train_x.float() / 255.0
        self.mean = x.mean((0, 2, 3))
        self.std = x.std((0, 2, 3)).clamp_min(1e-3)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def resolution(self) -> int:
        return int(self.train_x.shape[2])

    def resized(self, resolution: int) -> "Dataset":
        """A copy at another square resolution (bilinear, done once, kept as uint8)."""
        if resolution == self.resolution:
            return self

        def rs(x: torch.Tensor) -> torch.Tensor:
            out = F.interpolate(x.float(), size=(resolution, resolution), mode="bilinear", align_corners=False,
                                antialias=resolution < x.shape[2])
            return out.round().clamp(0, 255).to(torch.uint8)

        return Dataset(self.name, rs(self.train_x), self.train_y, rs(self.test_x), self.test_y, self.classes,
                       self.flip, self.skipped)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 batch -> float, standardised with the training set's channel statistics."""
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        return (x.float().div_(255.0) - mean[:, None, None]) / std[:, None, None]

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train {tuple(self.train_x.shape)}, test {tuple(self.test_x.shape)}, "
                f"{self.num_classes} classes)")


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = 4, flip: bool = True) -> torch.Tensor:
    """Random crop (zero padding ``pad``) and random horizontal flip of a uint8 batch, vectorised."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device="cpu").to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device="cpu").to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    out = padded[torch.arange(n, device=x.device)[:, None, None, None], torch.arange(x.shape[1], device=x.device)[None, :, None, None], rows, cols]
    if flip:
        mask = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        out = torch.where(mask[:, None, None, None], out.flip(3), out)
    return out


def _stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = max(1, int(round(len(idx) * test_fraction))) if len(idx) > 1 else 0
        test.extend(idx[:k])
        train.extend(idx[k:])
    return np.sort(np.asarray(train, int)), np.sort(np.asarray(test, int))


def _digits(seed: int) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) * (255.0 / 16.0))[:, None]
    images = F.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False)
    x = images.round().clamp(0, 255).to(torch.uint8)
    y = bunch.target.astype(np.int64)
    tr, te = _stratified_split(y, 0.2, seed)
    return Dataset("digits", x[tr], torch.from_numpy(y[tr]), x[te], torch.from_numpy(y[te]),
                   [str(i) for i in range(10)], flip=False)


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def _cifar(root: Path) -> Dataset:
    if (root / "data_batch_1").exists():
        batches = [_unpickle(root / f"data_batch_{i}") for i in range(1, 6)]
        test = _unpickle(root / "test_batch")
        xs = np.concatenate([b["data"] for b in batches])
        ys = np.concatenate([b["labels"] for b in batches])
        meta = root / "batches.meta"
        classes = _unpickle(meta)["label_names"] if meta.exists() else [str(i) for i in range(10)]
        tx, ty, name = test["data"], np.asarray(test["labels"]), "cifar10"
    else:
        train, test = _unpickle(root / "train"), _unpickle(root / "test")
        xs, ys, tx, ty = train["data"], np.asarray(train["fine_labels"]), test["data"], np.asarray(test["fine_labels"])
        meta = root / "meta"
        classes = _unpickle(meta)["fine_label_names"] if meta.exists() else [str(i) for i in range(100)]
        name = "cifar100"

    def to_tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a.reshape(-1, 3, 32, 32), dtype=np.uint8))

    return Dataset(name, to_tensor(xs), torch.from_numpy(np.asarray(ys, np.int64)), to_tensor(tx),
                   torch.from_numpy(np.asarray(ty, np.int64)), list(classes))


def _find_named(name: str) -> Path:
    folder = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}[name]
    candidates = [Path(os.environ["HARDNAS_DATA"]) / folder] if os.environ.get("HARDNAS_DATA") else []
    candidates.append(Path("data") / folder)
    for c in candidates:
        if c.is_dir():
            return c
    where = " or ".join(str(c) for c in candidates)
    raise ValueError(f"data: {name!r} was not found at {where}; nothing is downloaded: put the python-pickle "
                     f"'{folder}' folder there (or set HARDNAS_DATA), or pass a path")


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES and p.is_file())


def _decode(files: list[Path], size: int | None) -> tuple[list[np.ndarray], list[int], int]:
    from PIL import Image, UnidentifiedImageError

    out, keep, bad = [], [], 0
    for i, f in enumerate(files):
        try:
            with Image.open(f) as im:
                im = im.convert("RGB")
                if size is not None and im.size != (size, size):
                    im = im.resize((size, size), Image.BILINEAR)
                out.append(np.asarray(im, dtype=np.uint8))
                keep.append(i)
        except (OSError, UnidentifiedImageError, ValueError):
            bad += 1
    return out, keep, bad


def _first_size(files: list[Path]) -> int | None:
    """Side of the first readable image (non-square images are resized to their shorter side)."""
    from PIL import Image, UnidentifiedImageError

    for f in files:
        try:
            with Image.open(f) as im:
                return min(im.size)
        except (OSError, UnidentifiedImageError, ValueError):
            continue
    return None


def _image_folder(root: Path, resolution: int | None, seed: int) -> Dataset:
    splits = {s: root / s for s in ("train", "test", "val") if (root / s).is_dir()}
    if "train" in splits and ("test" in splits or "val" in splits):
        train_root, test_root = splits["train"], splits.get("test", splits.get("val"))
    else:
        train_root, test_root = root, None
    classes = sorted(d.name for d in train_root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ValueError(f"data: {str(root)!r} has no class folders; expected root/<class>/*.jpg or "
                         "root/train/<class>/... with root/test/<class>/...")
    if len(classes) < 2:
        raise ValueError(f"data: {str(root)!r} has one class only ({classes[0]!r}); expected at least 2 class folders")
    index = {c: i for i, c in enumerate(classes)}

    def gather(base: Path) -> tuple[list[Path], list[int]]:
        files, labels = [], []
        for c in classes:
            imgs = _list_images(base / c) if (base / c).is_dir() else []
            files += imgs
            labels += [index[c]] * len(imgs)
        return files, labels

    train_files, train_labels = gather(train_root)
    test_files, test_labels = gather(test_root) if test_root else ([], [])
    if not train_files:
        raise ValueError(f"data: {str(root)!r} has class folders but no image files "
                         f"({', '.join(sorted(_IMAGE_SUFFIXES))})")
    stamp = hashlib.sha256()
    for f in train_files + test_files:
        st = f.stat()
        stamp.update(f"{f}|{st.st_size}|{st.st_mtime_ns}".encode())
    stamp.update(f"{resolution}|{seed}".encode())
    cache = runs_dir() / "datasets" / f"{root.name}-{stamp.hexdigest()[:16]}.pt"
    if cache.exists():
        try:
            d = torch.load(cache, weights_only=True)
            return Dataset(d["name"], d["train_x"], d["train_y"], d["test_x"], d["test_y"], list(d["classes"]),
                           skipped=int(d["skipped"]))
        except Exception as err:  # a broken cache is rebuilt, never trusted
            log.warning("dataset cache %s unreadable (%s); decoding again", cache, err)

    size = resolution or _first_size(train_files)
    arrays, keep, bad = _decode(train_files, size)
    t_arrays, t_keep, t_bad = _decode(test_files, size)
    skipped = bad + t_bad
    if not arrays:
        raise ValueError(f"data: none of the {len(train_files)} images under {str(root)!r} could be read")
    if skipped:
        log.warning("%d unreadable image file(s) under %s were skipped", skipped, root)
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    y = torch.tensor([train_labels[i] for i in keep], dtype=torch.int64)
    if t_arrays:
        tx = torch.from_numpy(np.stack(t_arrays)).permute(0, 3, 1, 2).contiguous()
        ty = torch.tensor([test_labels[i] for i in t_keep], dtype=torch.int64)
    else:
        tr, te = _stratified_split(y.numpy(), 0.2, seed)
        x, tx, y, ty = x[tr], x[te], y[tr], y[te]
    if len(torch.unique(y)) < 2:
        raise ValueError(f"data: {str(root)!r} has readable images of one class only; expected at least 2 classes")
    ds = Dataset(root.name, x, y, tx, ty, classes, skipped=skipped)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    torch.save({"name": ds.name, "train_x": x, "train_y": y, "test_x": tx, "test_y": ty, "classes": classes,
                "skipped": skipped}, tmp)
    tmp.replace(cache)
    return ds


def _extract(archive: Path) -> Path:
    st = archive.stat()
    key = hashlib.sha256(f"{archive.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    dest = runs_dir() / "datasets" / f"{archive.name.split('.')[0]}-{key}"
    done = dest / ".complete"
    if not done.exists():
        tmp = dest.with_name(dest.name + ".partial")
        tmp.mkdir(parents=True, exist_ok=True)
        try:
            with tarfile.open(archive) as tf:
                for member in tf.getmembers():
                    if member.name.startswith(("/", "..")) or "/../" in member.name or member.issym() or member.islnk():
                        raise ValueError(f"unsafe member {member.name!r}")
                tf.extractall(tmp)
        except (tarfile.TarError, OSError, ValueError) as err:
            raise ValueError(f"data: {str(archive)!r} could not be unpacked ({err})") from None
        if dest.exists():
            import shutil

            shutil.rmtree(dest)
        tmp.replace(dest)
        done.touch()
    entries = [p for p in dest.iterdir() if not p.name.startswith(".")]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else dest


def load_dataset(spec: str | Path | None = None, *, resolution: int | None = None, seed: int = 0) -> Dataset:
    """Load a dataset by name or path (see the module docstring); errors are one line naming the problem."""
    if spec is None or spec == "digits":
        ds = _digits(seed)
    elif spec in ("cifar10", "cifar100"):
        ds = _cifar(_find_named(str(spec)))
    else:
        path = Path(spec)
        if not path.exists():
            raise ValueError(f"data: {str(spec)!r} is neither a known dataset ({', '.join(DATASET_NAMES)}) "
                             "nor an existing path")
        if path.is_file():
            if not path.name.endswith((".tar.gz", ".tgz", ".tar")):
                raise ValueError(f"data: {str(spec)!r} is a file; expected a folder or a .tar.gz of one")
            path = _extract(path)
        if not any(path.iterdir()):
            raise ValueError(f"data: {str(spec)!r} is an empty folder")
        if (path / "data_batch_1").exists() or ((path / "train").is_file() and (path / "test").is_file()):
            ds = _cifar(path)
        else:
            ds = _image_folder(path, resolution, seed)
    return ds.resized(resolution) if resolution else ds
