"""Bad inputs as a user gives them: each command runs in a subprocess on real files, bounded in time, and must
end with one line naming the bad value and what is allowed, exit code 2, and nothing written or left behind.

`BAD_INPUTS` is the list the README's reliability table counts; docs/security.md explains the data and app parts.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

import forked

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny_space.yaml"
SETPRIV = shutil.which("setpriv")


class Payload:
    """Unpickled by plain `pickle.load`, this runs ``touch MARKER``."""

    def __reduce__(self):
        return (os.system, ("touch MARKER",))


def _cifar_py(root: Path, evil: str | None = None, skip: str | None = None) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        if name == skip:
            continue
        batch = Payload() if name == evil else {"data": rng.integers(0, 255, (8, 3072), dtype=np.uint8),
                                                "labels": [int(v) for v in rng.integers(0, 10, 8)]}
        (root / name).write_bytes(pickle.dumps(batch))
    return root


def _tar(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(folder, arcname=folder.name)
    return archive


def _truncated(tmp: Path) -> Path:
    whole = _tar(_cifar_py(tmp / "src" / "cifar-10-batches-py"), tmp / "whole.tar.gz")
    cut = tmp / "cut.tar.gz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    whole.unlink()
    return cut


def _space(tmp: Path, old: str, new: str) -> Path:
    text = TINY.read_text()
    assert old in text
    path = tmp / "space.yaml"
    path.write_text(text.replace(old, new))
    return path


def _garbage(tmp: Path, name: str) -> Path:
    path = tmp / name
    path.write_bytes(bytes([0xF9, 0x13, 0x00, 0xC3, 0xFF]) * 200)
    return path


def _huge(tmp: Path) -> Path:
    """A valid config of about 10 G parameters (width 4096 bottlenecks): some 40 GB of weights."""
    from nas import ArchConfig, StageConfig, StemConfig

    stages = tuple(StageConfig(block="bottleneck", width=4096, depth=8, downsample="conv" if i else "none")
                   for i in range(4))
    return ArchConfig(stem=StemConfig("resnet", (64,)), stages=stages, name="huge").save(tmp / "huge.json")


def _named_in_cwd(tmp: Path) -> list[str]:
    """``--data cifar10`` finds ./data/cifar-10-batches-py in the current folder."""
    _cifar_py(tmp / "data" / "cifar-10-batches-py", evil="data_batch_3")
    return SEARCH + ["--data", "cifar10"]


def _binary_wrong_size(tmp: Path) -> list[str]:
    root = tmp / "cifar-10-batches-bin"
    root.mkdir()
    for i in range(1, 6):
        (root / f"data_batch_{i}.bin").write_bytes(bytes(3073))
    (root / "test_batch.bin").write_bytes(bytes(3000))
    return SEARCH + ["--data", str(root)]


def _read_only(tmp: Path) -> Path:
    folder = tmp / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


def _cifar_raw(root: Path, raw: dict[str, bytes]) -> Path:
    """A cifar-10-batches-py folder whose named batches hold ``raw`` bytes (the others are good batches)."""
    _cifar_py(root)
    for name, data in raw.items():
        (root / name).write_bytes(data)
    return root


# a 59-byte pickle asking numpy for a 6 GiB array (no data): numpy.ndarray((2**21, 3072), 'u1') called directly
_NDARRAY_CLAIM = (b"\x80\x02}q\x00(X\x04\x00\x00\x00datacnumpy\nndarray\nJ\x00\x00\x20\x00M\x00\x0c\x86X\x02\x00\x00\x00"
                  b"u1\x86RX\x06\x00\x00\x00labelscnumpy\nndarray\nJ\x00\x00\x20\x00\x85X\x02\x00\x00\x00u1\x86Ru.")
# builtins.bytearray(1 GiB) three times: 3 GiB of zeroed memory held by the loader
_BYTEARRAY_CLAIM = (b"\x80\x02cbuiltins\nbytearray\nq\x00"
                    + b"h\x00J\x00\x00\x00\x40\x85R" * 3 + b"\x87.")


def _batch(**changes) -> bytes:
    batch = {"data": np.zeros((8, 3072), np.uint8), "labels": list(range(8))}
    batch.update(changes)
    return pickle.dumps(batch)


def _text(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def _alias_bomb(key: str) -> str:
    """A 'billion laughs' flow list: ten anchors, each nine aliases of the one before (9^9 values)."""
    levels = ["&a0 [" + ", ".join(["1"] * 9) + "]"]
    levels += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    return f"{key}: [{', '.join(levels)}]\n"


def _fifo(tmp: Path, name: str) -> Path:
    path = tmp / name
    os.mkfifo(path)
    return path


SEARCH = ["-m", "nas.search", "--budget", "30ms", "--latency", "predicted:v100", "--no-progress"]
EXPORT = ["-m", "nas.export"]


@dataclass(frozen=True)
class Bad:
    """One bad input: the command line (built in a fresh folder) and what its one error line must say."""

    id: str
    argv: Callable[[Path], list[str]]
    says: tuple[str, ...]
    unprivileged: bool = False  # run without root's power to write anywhere (a real read-only folder)


BAD_INPUTS: list[Bad] = [
    Bad("data-pickle-payload-folder", lambda t: SEARCH + ["--data", str(_cifar_py(t / "c10", evil="data_batch_1"))],
        ("data_batch_1' is not a plain CIFAR batch: its pickle asks for 'posix.system', which is refused",)),
    Bad("data-pickle-payload-tar.gz",
        lambda t: SEARCH + ["--data", str(_tar(_cifar_py(t / "cifar-10-batches-py", evil="test_batch"),
                                               t / "c10.tar.gz"))],
        ("c10.tar.gz/cifar-10-batches-py/test_batch' is not a plain CIFAR batch", "'posix.system'")),
    Bad("data-pickle-payload-named-in-./data", _named_in_cwd,
        ("data/cifar-10-batches-py/data_batch_3' is not a plain CIFAR batch",)),
    Bad("data-truncated-tar.gz", lambda t: SEARCH + ["--data", str(_truncated(t))],
        ("cut.tar.gz' could not be unpacked (", "expected a complete .tar.gz")),
    Bad("data-cifar-missing-batch",
        lambda t: SEARCH + ["--data", str(_cifar_py(t / "cifar-10-batches-py", skip="data_batch_2"))],
        ("lacks data_batch_2 of the cifar-10-batches-py layout; expected all of data_batch_1",)),
    Bad("data-cifar-binary-wrong-size", _binary_wrong_size,
        ("test_batch.bin' has 3,000 bytes; expected whole 3073-byte records",)),
    Bad("space-folder", lambda t: SEARCH + ["--space", str(t)], ("is a folder; expected a built-in space",)),
    Bad("space-binary-garbage", lambda t: SEARCH + ["--space", str(_garbage(t, "space.yaml"))],
        ("space.yaml': not UTF-8 text (byte 0xf9 at offset 0); expected a YAML space file",)),
    Bad("space-growth-rate-low-negative",
        lambda t: SEARCH + ["--space", str(_space(t, "low: 4, high: 12", "low: -8, high: 12"))],
        ("space stages[0].hard.growth_rate.low: -8 is not allowed; expected an integer in [1, 4096]",)),
    Bad("space-unused-shared-key",
        lambda t: SEARCH + ["--space", str(_space(t, "  link_rule: [harmonic, dense]\n",
                                                   "  link_rule: [harmonic, dense]\n  transition: [8]\n"))],
        ("space shared.transition: [8] is not allowed; expected a key that some field refers to with 'shared'",)),
    Bad("config-binary-garbage-yaml", lambda t: EXPORT + [str(_garbage(t, "config.yaml")), "-o", str(t / "m.py")],
        ("config.yaml': not UTF-8 text (byte 0xf9 at offset 0); expected a JSON or YAML config file",)),
    Bad("config-binary-garbage-json", lambda t: EXPORT + [str(_garbage(t, "config.json")), "-o", str(t / "m.py")],
        ("config.json': not UTF-8 text",)),
    Bad("export-out-read-only-folder",
        lambda t: EXPORT + ["hardnet39ds", "--format", "json", "-o", str(_read_only(t))],
        ("read-only' is not writable (Permission denied); expected a folder this user may write to",),
        unprivileged=True),
    Bad("export-out-under-/proc", lambda t: EXPORT + ["hardnet39ds", "--format", "json", "-o", "/proc/model.json"],
        ("out: '/proc' is not writable",)),
    Bad("export-torchscript-huge-config",
        lambda t: EXPORT + [str(_huge(t)), "--format", "torchscript", "--latency", "none", "-o", str(t / "h.pt")],
        ("config: huge needs about ", "GiB of memory to export as torchscript", "over the limit of")),
    # found by QA after the first round: allocation claims, float/empty labels, alias bombs, nesting, special files
    Bad("data-pickle-ndarray-allocation-claim",
        lambda t: SEARCH + ["--data", str(_cifar_raw(t / "c10", {"data_batch_1": _NDARRAY_CLAIM}))],
        ("data_batch_1' is not a plain CIFAR batch", "numpy.ndarray called directly")),
    Bad("data-pickle-bytearray-allocation-claim",
        lambda t: SEARCH + ["--data", str(_cifar_raw(t / "c10", {"test_batch": _BYTEARRAY_CLAIM}))],
        ("test_batch' is not a plain CIFAR batch", "builtins.bytearray of int")),
    Bad("data-cifar-float-labels",
        lambda t: SEARCH + ["--data", str(_cifar_raw(t / "c10", {"data_batch_2": _batch(labels=[0.7] * 8)}))],
        ("data_batch_2' has 8 images but labels of another length or kind; expected 8 integer labels",)),
    Bad("data-cifar-empty-batch",
        lambda t: SEARCH + ["--data", str(_cifar_raw(t / "c10", {"data_batch_1": _batch(
            data=np.zeros((0, 3072), np.uint8), labels=[])}))],
        ("data_batch_1' holds no images; expected a batch of at least one image",)),
    Bad("space-yaml-alias-bomb",
        lambda t: SEARCH + ["--space", str(_text(t, "s.yaml", "layouts: ['.R']\nstages: [{block: hard}]\n"
                                                  + _alias_bomb("description")))],
        ("s.yaml: holds more than 100,000 values", "expected a YAML space file")),
    Bad("space-deep-nesting",
        lambda t: SEARCH + ["--space", str(_text(t, "s.yaml", "layouts: " + "[" * 20000 + "]" * 20000 + "\n"))],
        ("s.yaml: not valid YAML (nested too deeply); expected a YAML space file",)),
    Bad("space-log-range-from-zero",
        lambda t: SEARCH + ["--space", str(_text(t, "s.yaml", TINY.read_text()
                                                  + "head:\n  dropout: {low: 0.0, high: 0.5, log: true}\n"))],
        ("space head.dropout.low: 0.0 is not allowed; expected a number > 0 with log: true",)),
    Bad("space-step-nan",
        lambda t: SEARCH + ["--space", str(_text(t, "s.yaml", TINY.read_text()
                                                  + "head:\n  dropout: {low: 0.0, high: 0.5, step: .nan}\n"))],
        ("space head.dropout: ", "expected finite numbers with low <= high")),
    Bad("space-fifo", lambda t: SEARCH + ["--space", str(_fifo(t, "s.yaml"))],
        ("s.yaml' is not a regular file (a pipe, socket or device); expected a built-in space",)),
    Bad("config-json-deep-nesting",
        lambda t: EXPORT + [str(_text(t, "c.json", "[" * 100000 + "]" * 100000)), "-o", str(t / "m.json")],
        ("c.json: config: not valid JSON (nested too deeply)",)),
    Bad("config-yaml-5000-digit-int",
        lambda t: EXPORT + [str(_text(t, "c.yaml", "stages: [{block: hard, depth: " + "9" * 5000 + "}]\n")),
                            "-o", str(t / "m.json")],
        ("c.yaml: config: not valid YAML (an integer has more than 4300 digits)",)),
    Bad("config-yaml-alias-bomb",
        lambda t: EXPORT + [str(_text(t, "c.yaml", "stages: [{block: hard}]\n" + _alias_bomb("name"))),
                            "-o", str(t / "m.json")],
        ("c.yaml: config: holds more than 100,000 values",)),
    Bad("export-out-parent-is-a-file",
        lambda t: EXPORT + ["hardnet39ds", "--format", "json", "-o", str(_text(t, "f", "keep") / "m.json")],
        ("f' is not a folder; expected an existing folder",)),
    Bad("export-force-over-a-fifo",
        lambda t: EXPORT + ["hardnet39ds", "--format", "json", "--force", "-o", str(_fifo(t, "m.json"))],
        ("m.json' is not a regular file (a pipe, socket or device)",)),
]


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if not p.is_dir()}


MEMORY_LIMIT = 16 * 2**30
"""The child's address space: before the memory check, the huge export tried to take 40 GB."""


def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=[b.id for b in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(bad, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    runs = tmp_path / "runs"
    argv = bad.argv(work)
    prefix: list[str] = []
    if bad.unprivileged and os.geteuid() == 0:
        if SETPRIV is None:
            pytest.skip("root writes into read-only folders; needs setpriv to drop that power")
        prefix = [SETPRIV, "--bounding-set=-dac_override,-dac_read_search"]
    before = _files(work)
    env = {**os.environ, "HARDNAS_RUNS": str(runs), "HARDNAS_DATA": str(tmp_path / "no-data")}
    if prefix:  # setpriv must exec the interpreter
        result = subprocess.run(prefix + [sys.executable, *argv], cwd=work, env=env, capture_output=True, text=True,
                                timeout=180, preexec_fn=_limit_memory)
    else:
        result = forked.run([sys.executable, *argv], cwd=work, env=env, timeout=180, memory_limit=MEMORY_LIMIT)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1, result.stderr[-3000:]
    module = argv[1]
    assert lines[0].startswith(f"{module}: error: "), lines[0]
    for text in bad.says:
        assert text in lines[0], lines[0]
    assert not (work / "MARKER").exists(), "the pickle's payload ran"
    assert _files(work) == before, "files appeared in or vanished from the working folder"
    assert not runs.exists() or _files(runs) == set(), sorted(map(str, _files(runs)))
