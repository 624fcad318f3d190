"""Datasets for proxy training, decoded once and kept in memory as uint8 tensors.

`load_dataset(spec)` accepts:

* ``None`` / ``"digits"`` — the embedded default: scikit-learn's handwritten digits (1,797 real
  8x8 scans, 10 classes, shipped inside the scikit-learn wheel), upscaled to 32x32, one channel,
  split 80/20 with a seeded stratified split. Works offline with nothing to download.
* ``"cifar10"`` / ``"cifar100"`` — CIFAR's python layout (``cifar-10-batches-py``,
  ``cifar-100-python``) or binary layout (``cifar-10-batches-bin``, ``cifar-100-binary``), looked
  up under ``$HARDNAS_DATA`` and ``./data``; or a path to such a folder. The python batches are
  read by a restricted unpickler that admits numpy arrays and plain containers only: a pickle
  that asks for anything else (``os.system``, any class) is refused before it runs.
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
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import first_line
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


class _Refused(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list."""


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """What protocol-2 pickles call to rebuild bytes; only the latin-1 codec is admitted."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise _Refused(f"_codecs.encode with {encoding!r}")
    return text.encode("latin1")


class _ArrayType:
    """``numpy.ndarray`` as a pickle names it: only an argument of ``_reconstruct``. Called (or built with
    NEWOBJ), numpy would allocate an array of any claimed size, so a 100-byte file could take gigabytes."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise _Refused("numpy.ndarray called directly (an array of any size, without its data)")


_NDARRAY = _ArrayType()


def _guarded_rebuilders() -> dict[str, Any]:
    """numpy's ``_reconstruct`` and ``scalar`` as CIFAR's pickles call them: an empty array whose data the
    pickle then sets (and pays for in bytes), a scalar with its bytes. Other calls would allocate what a
    tiny file claims (``_reconstruct(ndarray, (10**9,), ...)``, ``scalar(dtype('V2000000000'))``)."""
    array, number = np.zeros(1, np.uint8), np.int64(0)
    reconstruct, scalar = array.__reduce__()[0], number.__reduce__()[0]

    def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        empty = isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape) and 0 in shape
        if subtype is not _NDARRAY or not empty:
            raise _Refused(f"numpy _reconstruct of shape {shape!r}" if subtype is _NDARRAY else
                           "numpy _reconstruct of a type other than numpy.ndarray")
        return reconstruct(np.ndarray, shape, dtype)

    def _scalar(dtype: Any, *data: Any) -> Any:
        if len(data) != 1:
            raise _Refused("numpy scalar without its data")
        return scalar(dtype, *data)

    return {"_reconstruct": _reconstruct, "scalar": _scalar}


def _bytearray(*args: Any) -> bytearray:
    """``bytearray(data)`` as older protocols pickle one; ``bytearray(n)`` (n zero bytes, any n) is refused."""
    if args and not isinstance(args[0], (bytes, str)):
        raise _Refused(f"builtins.bytearray of {type(args[0]).__name__}")
    return bytearray(*args)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """Exactly what CIFAR's pickles need: numpy array, scalar and dtype reconstruction, plain containers.
    Nothing admitted allocates more than the bytes the file itself holds."""
    array = np.zeros(1, np.uint8)
    rebuild = _guarded_rebuilders()
    found: dict[tuple[str, str], Any] = {("numpy", "ndarray"): _NDARRAY, ("numpy", "dtype"): np.dtype,
                                         ("_codecs", "encode"): _latin1_encode}
    for package in ("numpy.core", "numpy._core"):
        for name, fn in rebuild.items():
            found[(f"{package}.multiarray", name)] = fn
        found[(f"{package}.numeric", "_frombuffer")] = array.__reduce_ex__(5)[0]
    for module in ("builtins", "__builtin__"):
        for kind in (set, frozenset, complex):
            found[(module, kind.__name__)] = kind
        found[(module, "bytearray")] = _bytearray
    return found


_ALLOWED_GLOBALS = _allowed_globals()


class _CifarUnpickler(pickle.Unpickler):
    """Reads CIFAR's python batches; any other global (``os.system``, a class, ...) is refused unrun."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None


def _unpickle(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            return _CifarUnpickler(f, encoding="latin1").load()
    except _Refused as err:
        raise ValueError(f"data: {str(path)!r} is not a plain CIFAR batch: its pickle asks for {str(err)!r}, which "
                         "is refused; only numpy arrays, numbers, strings, lists and dicts are read") from None
    except (pickle.UnpicklingError, EOFError, MemoryError, OSError, ValueError, TypeError, KeyError,
            AttributeError, IndexError, RecursionError) as err:
        raise ValueError(f"data: {str(path)!r} is not a readable CIFAR batch ({type(err).__name__}: "
                         f"{first_line(err)}); expected the python-pickle layout of cifar-10/100") from None


@dataclass(frozen=True)
class _CifarLayout:
    """One on-disk CIFAR layout: its files, where the labels are, and how class names are stored."""

    name: str
    folder: str
    train: tuple[str, ...]
    test: str
    classes: int
    meta: str
    label_key: str = ""  # python layouts: the dict key of the labels
    meta_key: str = ""  # python layouts: the key of the class names in the meta pickle
    label_bytes: int = 0  # binary layouts: label bytes before each image; the last one is used

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train, self.test)

    @property
    def binary(self) -> bool:
        return self.label_bytes > 0

    def describe(self) -> str:
        return f"{self.folder} ({', '.join(self.files)})"


_IMAGE_BYTES = 3 * 32 * 32
_CIFAR_LAYOUTS: tuple[_CifarLayout, ...] = (
    _CifarLayout("cifar10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch", 10,
                 "batches.meta", label_key="labels", meta_key="label_names"),
    _CifarLayout("cifar10", "cifar-10-batches-bin", tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
                 "test_batch.bin", 10, "batches.meta.txt", label_bytes=1),
    _CifarLayout("cifar100", "cifar-100-python", ("train",), "test", 100, "meta", label_key="fine_labels",
                 meta_key="fine_label_names"),
    _CifarLayout("cifar100", "cifar-100-binary", ("train.bin",), "test.bin", 100, "fine_label_names.txt",
                 label_bytes=2),
)


def _cifar_layout(root: Path) -> _CifarLayout | None:
    """The CIFAR layout ``root`` holds files of (a folder named ``train`` is an ImageFolder split, not CIFAR)."""
    for layout in _CIFAR_LAYOUTS:
        if any((root / f).is_file() for f in layout.files):
            return layout
    return None


def _python_batch(path: Path, layout: _CifarLayout) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    if not isinstance(batch, dict) or "data" not in batch or layout.label_key not in batch:
        raise ValueError(f"data: {str(path)!r} is not a CIFAR batch; expected a dict with 'data' and "
                         f"{layout.label_key!r}")
    x, y = batch["data"], batch[layout.label_key]
    if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != _IMAGE_BYTES or x.dtype != np.uint8:
        shape = tuple(x.shape) if isinstance(x, np.ndarray) else type(x).__name__
        raise ValueError(f"data: {str(path)!r} has 'data' of {shape}; expected a uint8 array of N x {_IMAGE_BYTES}")
    if not len(x):
        raise ValueError(f"data: {str(path)!r} holds no images; expected a batch of at least one image")
    try:
        labels = np.asarray(y)
    except (TypeError, ValueError, OverflowError):
        labels = np.zeros(0, np.int64)
    if labels.shape != (len(x),) or labels.dtype.kind not in "iu":  # 0.7 must not silently become class 0
        raise ValueError(f"data: {str(path)!r} has {len(x)} images but labels of another length or kind; "
                         f"expected {len(x)} integer labels")
    return x, labels.astype(np.int64)


def _binary_batch(path: Path, layout: _CifarLayout) -> tuple[np.ndarray, np.ndarray]:
    record = layout.label_bytes + _IMAGE_BYTES
    size = path.stat().st_size
    if size == 0 or size % record:
        raise ValueError(f"data: {str(path)!r} has {size:,} bytes; expected whole {record}-byte records "
                         f"({layout.label_bytes} label byte(s) + {_IMAGE_BYTES} pixel bytes each)")
    raw = np.fromfile(path, dtype=np.uint8).reshape(-1, record)
    return raw[:, layout.label_bytes:], raw[:, layout.label_bytes - 1].astype(np.int64)


def _class_names(root: Path, layout: _CifarLayout) -> list[str]:
    meta = root / layout.meta
    names: Any = None
    if meta.is_file():
        if layout.binary:
            try:
                names = [line.strip() for line in meta.read_text().splitlines() if line.strip()]
            except (OSError, UnicodeDecodeError) as err:
                raise ValueError(f"data: {str(meta)!r} is not readable ({first_line(err)}); expected one class "
                                 "name per line") from None
        else:
            content = _unpickle(meta)
            names = content.get(layout.meta_key) if isinstance(content, dict) else None
    if names is None:
        return [str(i) for i in range(layout.classes)]
    if not isinstance(names, list) or len(names) != layout.classes or not all(isinstance(n, str) for n in names):
        raise ValueError(f"data: {str(meta)!r} does not hold {layout.classes} class names; expected "
                         f"{layout.meta_key or 'one name a line'} with {layout.classes} strings")
    return names


def _cifar(root: Path) -> Dataset:
    layout = _cifar_layout(root)
    if layout is None:
        known = "; ".join(lay.describe() for lay in _CIFAR_LAYOUTS)
        raise ValueError(f"data: {str(root)!r} holds no CIFAR files; expected one of: {known}")
    missing = [f for f in layout.files if not (root / f).is_file()]
    if missing:
        raise ValueError(f"data: {str(root)!r} lacks {', '.join(missing)} of the {layout.folder} layout; expected "
                         f"all of {', '.join(layout.files)}")
    read = _binary_batch if layout.binary else _python_batch
    parts = [read(root / f, layout) for f in layout.train]
    tx, ty = read(root / layout.test, layout)
    xs, ys = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    for f, labels in [*zip(layout.train, (p[1] for p in parts)), (layout.test, ty)]:
        if len(labels) and (labels.min() < 0 or labels.max() >= layout.classes):
            bad = int(labels.min() if labels.min() < 0 else labels.max())
            raise ValueError(f"data: {str(root / f)!r} has label {bad}; expected labels in [0, {layout.classes - 1}] "
                             f"for {layout.name}")

    def to_tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a.reshape(-1, 3, 32, 32), dtype=np.uint8))

    return Dataset(layout.name, to_tensor(xs), torch.from_numpy(ys), to_tensor(tx), torch.from_numpy(ty),
                   _class_names(root, layout))


def _find_named(name: str) -> Path:
    folders = [lay.folder for lay in _CIFAR_LAYOUTS if lay.name == name]
    bases = [Path(os.environ["HARDNAS_DATA"])] if os.environ.get("HARDNAS_DATA") else []
    bases.append(Path("data"))
    candidates = [b / f for b in bases for f in folders]
    for c in candidates:
        if c.is_dir():
            return c
    where = " or ".join(str(c) for c in candidates)
    raise ValueError(f"data: {name!r} was not found at {where}; nothing is downloaded: put CIFAR's "
                     f"{' or '.join(repr(f) for f in folders)} folder there (or set HARDNAS_DATA), or pass a path")


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
    _save_cache(cache, {"name": ds.name, "train_x": x, "train_y": y, "test_x": tx, "test_y": ty,
                        "classes": classes, "skipped": skipped})
    return ds


def _save_cache(cache: Path, payload: dict[str, Any]) -> None:
    """Write the decode cache atomically; a cache that cannot be written only costs a decode next time."""
    tmp = None
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{cache.name}.", suffix=".tmp", dir=cache.parent)
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, cache)
    except OSError as err:
        log.warning("dataset cache %s not written (%s)", cache, first_line(err))
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def _unpack(archive: Path, into: Path) -> None:
    try:
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for member in members:
                if member.name.startswith(("/", "..")) or "/../" in member.name or member.issym() or member.islnk():
                    raise ValueError(f"unsafe member {member.name!r}")
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tf.extractall(into, members, **safe)
    except (tarfile.TarError, OSError, EOFError, zlib.error, ValueError) as err:
        raise ValueError(f"data: {str(archive)!r} could not be unpacked ({first_line(err)}); expected a complete "
                         ".tar.gz or .tar of a dataset folder") from None


def _extract(archive: Path) -> tuple[Path, Path]:
    """Unpack ``archive`` once under ``runs/datasets``: (that folder, the dataset root in it).
    A failed unpack leaves nothing behind."""
    st = archive.stat()
    key = hashlib.sha256(f"{archive.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    dest = runs_dir() / "datasets" / f"{archive.name.split('.')[0]}-{key}"
    if not (dest / ".complete").exists():
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f"{dest.name}.", suffix=".partial", dir=dest.parent))
        except OSError as err:
            raise ValueError(f"data: {str(dest.parent)!r} is not writable ({first_line(err)}); expected a "
                             "writable runs folder (HARDNAS_RUNS) to unpack the archive into") from None
        try:
            _unpack(archive, tmp)
            (tmp / ".complete").touch()
            if dest.exists() and not (dest / ".complete").exists():
                shutil.rmtree(dest)  # left unfinished by an older version
            try:
                os.replace(tmp, dest)
            except OSError:
                if not (dest / ".complete").exists():  # another process published it first: use theirs
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    entries = [p for p in dest.iterdir() if not p.name.startswith(".")]
    return dest, entries[0] if len(entries) == 1 and entries[0].is_dir() else dest


def _from_folder(path: Path, spec: str, resolution: int | None, seed: int) -> Dataset:
    if not any(path.iterdir()):
        raise ValueError(f"data: {spec!r} is an empty folder")
    if _cifar_layout(path) is not None:
        return _cifar(path)
    return _image_folder(path, resolution, seed)


def _from_archive(archive: Path, resolution: int | None, seed: int) -> Dataset:
    """A dataset from an archive; errors name the file inside the archive, and a bad one is not kept unpacked."""
    dest, root = _extract(archive)
    try:
        return _from_folder(root, str(archive), resolution, seed)
    except ValueError as err:
        shutil.rmtree(dest, ignore_errors=True)
        raise ValueError(str(err).replace(str(dest), str(archive))) from None


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
        if path.is_file() and not path.name.endswith((".tar.gz", ".tgz", ".tar")):
            raise ValueError(f"data: {str(spec)!r} is a file; expected a folder or a .tar.gz of one")
        try:
            ds = _from_archive(path, resolution, seed) if path.is_file() else _from_folder(path, str(spec), resolution,
                                                                                           seed)
        except OSError as err:
            raise ValueError(f"data: {str(spec)!r} could not be read ({first_line(err)}); expected a readable "
                             "dataset folder or archive") from None
    return ds.resized(resolution) if resolution else ds
