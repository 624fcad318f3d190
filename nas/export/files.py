"""Writing export files: never over an existing file unless asked, never half a file.

Each file is written to a temporary file in the destination folder, flushed to disk, then moved
into place with `os.replace` (atomic on one filesystem). A crash or an exception while writing
leaves the destination as it was, and the temporary file is removed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable

__all__ = ["check_writable", "write_atomic"]

_CHUNK = 1 << 20


def check_writable(paths: Iterable[Path], force: bool) -> None:
    """Raise `ValueError` if a path exists (and ``force`` is off) or its folder does not exist."""
    for path in paths:
        if path.exists() and not force:
            raise ValueError(f"out: {str(path)!r} already exists; pass --force (force=True) to overwrite it")
        if path.is_dir():
            raise ValueError(f"out: {str(path)!r} is a folder; expected a file path")
        if path.exists() and not path.is_file():  # --force overwrites files, never a pipe, socket or device
            raise ValueError(f"out: {str(path)!r} is not a regular file (a pipe, socket or device); expected a "
                             "file path")
        if not path.parent.is_dir():
            what = "is not a folder" if path.parent.exists() else "does not exist"
            raise ValueError(f"out: {str(path.parent)!r} {what}; expected an existing folder")
        _probe(path.parent)


def _probe(folder: Path) -> None:
    """Create and remove a temporary file in ``folder``: the one honest test of writability (root, ACLs, mounts)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".hardnas-probe.", dir=folder)
    except OSError as err:
        raise ValueError(f"out: {str(folder)!r} is not writable ({err.strerror or err}); expected a folder "
                         "this user may write to") from None
    os.close(fd)
    _unlink_quietly(name)


def _chunks(data: bytes | Iterable[bytes]) -> Iterable[bytes]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        view = memoryview(data)
        for i in range(0, len(view), _CHUNK):
            yield bytes(view[i:i + _CHUNK])
    else:
        yield from data


def write_atomic(path: Path, data: bytes | Iterable[bytes], *, force: bool = False) -> Path:
    """Write ``data`` (bytes, or an iterable of byte chunks) to ``path`` atomically.

    Refuses an existing ``path`` unless ``force``. If anything fails before the final rename,
    ``path`` is untouched (absent, or its old content) and no temporary file is left behind.
    """
    path = Path(path)
    check_writable([path], force)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise _not_written(path, err) from None
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in _chunks(data):
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would surprise whoever reads the export
        os.replace(tmp, path)
    except OSError as err:
        _unlink_quietly(tmp)
        raise _not_written(path, err) from None
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return path


def _not_written(path: Path, err: OSError) -> ValueError:
    return ValueError(f"out: {str(path)!r} could not be written ({err.strerror or err}); nothing was written; "
                      "expected a writable folder with free space")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
