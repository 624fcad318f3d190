"""``python -m nas.describe``: tables, JSON, config files, and one-line usage errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import forked
import nas
from nas.describe import main


def test_table_compares_models(capsys):
    assert main(["hardnet68", "resnet50"]) == 0
    out = capsys.readouterr().out
    assert "hardnet68  arch_id=8b5e70783171" in out and "stages.4" in out
    assert "11.47M" in out and "21.78M" in out  # CIO
    assert "ratios vs resnet50" in out and "0.69 / 1.04 / 0.53" in out


def test_json_and_config_file(tmp_path, capsys):
    path = nas.get_config("tresnet_m").replace(name="").save(tmp_path / "m.yaml")
    assert main([str(path), "--json", "--resolution", "448", "--layers"]) == 0
    data = json.loads(capsys.readouterr().out)
    r = nas.analyze(nas.get_config("tresnet_m"), 448)
    assert data["cio"] == r.cio and data["params"] == r.params and data["thop_macs"] == r.thop_macs
    assert len(data["layers"]) == len(r.layers) and data["stages"][0]["name"] == "stem"


def test_table_states_both_mac_counts():
    proc = subprocess.run([sys.executable, "-m", "nas.describe", "hardnet39ds"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    r = nas.analyze(nas.get_config("hardnet39ds"))
    assert r.thop_macs > r.macs
    assert f"MACs: {r.macs / 1e9:,.3f}G conv+linear, {r.thop_macs / 1e9:,.3f}G as thop counts" in proc.stdout
    assert "MACs: 0.429G conv+linear, 0.445G as thop counts (+BatchNorm, pooling)" in proc.stdout


@pytest.mark.parametrize(("args", "read_first"), [(["--json", "--layers"], True), (["--json"], False), ([], False)])
def test_reader_closing_the_pipe_early_is_not_an_error(args, read_first):
    # `python -m nas.describe hardnet68 --json | head -1`: with --layers the output outgrows the pipe buffer
    # after the first line is read; the short --json output finds the pipe closed before it writes at all
    proc = subprocess.Popen([sys.executable, "-m", "nas.describe", "hardnet68", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline() if read_first else b"{"
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 0, stderr
    assert first.strip() and stderr == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["hardnet99"], "model: 'hardnet99' is not known; known models: hardnet39ds"),
        (["hardnet68", "--resolution", "16"], "resolution: 16 is not allowed; expected each side at least the network's stride 32"),
        (["hardnet68", "--resolution", "abc"], "argument --resolution: 'abc' is not allowed; expected a positive integer or HxW"),
        (["hardnet68", "--batch", "0"], "batch: 0 is not allowed"),
        (["missing.json"], "config: 'missing.json' does not exist or is not a file"),
    ],
)
def test_usage_errors_are_one_line_exit_2(args, message, tmp_path):
    proc = forked.run([sys.executable, "-m", "nas.describe", *args], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr


def test_bad_config_file_names_the_file_and_field(tmp_path):
    bad = nas.get_config("hardnet68").to_dict()
    bad["stages"][0]["link_rule"] = "fancy"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    proc = subprocess.run([sys.executable, "-m", "nas.describe", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"nas.describe: error: {path}: stages[0].link_rule: 'fancy' is not allowed; "
                                   "expected one of harmonic, log, dense, chain")
