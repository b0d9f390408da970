"""The command line: `python -m asyncload load DIR --verify` and its failure paths."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from asyncload import cli
from al_testutil import make_files


def test_load_verify_subprocess(tmp_path: pathlib.Path) -> None:
    make_files(str(tmp_path / "a"), 30, seed=3, max_size=60_000)
    make_files(str(tmp_path / "b"), 20, seed=4, max_size=60_000)
    (tmp_path / "a" / "skip.txt").write_text("not loaded")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    res = subprocess.run(
        [sys.executable, "-m", "asyncload", "load", str(tmp_path), "--ext", "bin",
         "--workers", "2", "--queue-depth", "4", "--verify"],
        capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 0, res.stderr
    assert "loaded 50 files" in res.stdout
    assert "files/s" in res.stdout and "MB/s" in res.stdout
    assert "verify: 50/50 files identical: OK" in res.stdout
    assert "50/50 files" in res.stderr  # the progress bar's last state


def test_find_files_filters_extension(tmp_path: pathlib.Path) -> None:
    (tmp_path / "x.JPEG").write_bytes(b"1")
    (tmp_path / "y.jpeg").write_bytes(b"2")
    (tmp_path / "z.png").write_bytes(b"3")
    os.mkfifo(tmp_path / "fifo.jpeg")
    found = cli.find_files(str(tmp_path), "JPEG")
    assert [os.path.basename(p) for p in found] == ["x.JPEG", "y.jpeg"]
    assert len(cli.find_files(str(tmp_path), ".png")) == 1
    assert len(cli.find_files(str(tmp_path), None)) == 3


def test_verify_detects_mismatch(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    files = make_files(str(tmp_path), 10, seed=5, max_size=10_000)
    victim = sorted(files)[4]
    real = cli.read_plain

    def lying_read(path: str) -> bytes:
        data = real(path)
        return data + b"!" if path == victim else data

    # fork workers inherit the patched function
    monkeypatch.setattr(cli, "read_plain", lying_read)
    rc = cli.run_load(str(tmp_path), "bin", 2, 4, direct=False, verify=True,
                      start_method="fork")
    out, err = capsys.readouterr()
    assert rc != 0
    assert f"MISMATCH: {victim}" in err
    assert "FAILED" in out


def test_load_missing_dir_and_empty(tmp_path: pathlib.Path) -> None:
    assert cli.main(["load", str(tmp_path / "nope")]) == 2
    assert cli.main(["load", str(tmp_path), "--ext", "JPEG"]) == 1
