"""A regular (non-editable) install carries the data files the code reads at run time."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _setuptools_major() -> int:
    if importlib.util.find_spec("setuptools") is None:
        return 0
    from importlib.metadata import version

    return int(version("setuptools").split(".")[0])


@pytest.mark.skipif(_setuptools_major() < 68, reason="building the wheel offline needs setuptools >= 68 installed")
def test_wheel_ships_search_spaces_and_official_key_lists(tmp_path):
    src = tmp_path / "src"  # a copy, so the build leaves nothing in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for package in ("nas", "search_spaces"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("hardnas-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for data in sorted((ROOT / "search_spaces").glob("*.yaml")) + [ROOT / "search_spaces" / "official_keys.json.gz"]:
        assert f"search_spaces/{data.name}" in names, f"{data.name} is missing from the wheel"
    assert "nas/latency/measure.py" in names and "search_spaces/canonical.py" in names
