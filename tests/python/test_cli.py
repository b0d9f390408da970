"""The command line: `python -m asyncload load DIR --verify` and its failure paths."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import time

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
    assert "loaded: 50 of 50 files" in res.stdout
    assert "failed: 0 of 50 files" in res.stdout
    assert "files/s" in res.stdout and "MB/s" in res.stdout
    assert "verify: 50 of 50 files identical to a plain read (0 differ, 0 failed to load): OK" \
        in res.stdout
    assert "50/50 files" in res.stderr  # the progress bar's last state


def _load_lines(stdout: str) -> dict:
    """The summary lines of `load`, by their leading word."""
    return {line.split(":", 1)[0]: line for line in stdout.splitlines() if ":" in line}


def test_load_verify_counts_failures(tmp_path: pathlib.Path) -> None:
    # Files over --max-file-size fail with EFBIG: they must be counted as
    # failed, not as loaded or identical, and the exit status must say so.
    files = make_files(str(tmp_path), 40, seed=6, max_size=30_000)
    limit = 10_000
    too_big = sum(1 for data in files.values() if len(data) > limit)
    fits = 40 - too_big
    assert 0 < too_big < 40
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    res = subprocess.run(
        [sys.executable, "-m", "asyncload", "load", str(tmp_path), "--workers", "2",
         "--max-file-size", str(limit), "--verify", "--start-method", "fork"],
        capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 1, res.stdout + res.stderr
    lines = _load_lines(res.stdout)
    assert lines["loaded"].startswith(f"loaded: {fits} of 40 files,"), res.stdout
    assert lines["failed"] == f"failed: {too_big} of 40 files (EFBIG {too_big})"
    assert lines["verify"] == (f"verify: {fits} of 40 files identical to a plain read "
                               f"(0 differ, {too_big} failed to load): FAILED")
    assert "EFBIG (File too large)" in res.stderr


def test_load_times_loading_apart_from_startup(tmp_path: pathlib.Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    # A worker start-up made slow on purpose must show on the start-up line
    # and stay out of the timed loading (and so out of files/s).
    make_files(str(tmp_path), 20, seed=7, max_size=5_000)
    real_claim = cli.Worker.claim

    def slow_claim(self: cli.Worker) -> None:
        time.sleep(1.0)
        real_claim(self)

    monkeypatch.setattr(cli.Worker, "claim", slow_claim)  # fork children inherit it
    rc = cli.run_load(str(tmp_path), None, 2, 4, direct=False, verify=False,
                      start_method="fork")
    out = capsys.readouterr().out
    assert rc == 0, out
    lines = _load_lines(out)
    m = re.match(r"start-up: 2 worker processes \(fork\) started and attached in "
                 r"([0-9.]+) s, not timed below$", lines["start-up"])
    assert m and float(m.group(1)) >= 1.0, out
    m = re.match(r"loaded: 20 of 20 files, .* in ([0-9.]+) s: ([0-9]+) files/s",
                 lines["loaded"])
    assert m and float(m.group(1)) < 0.9, out
    assert int(m.group(2)) > 20 / 0.9
    assert lines["timed"] == "timed: first request to last completion over all workers"


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
