"""The benchmark tools' own arithmetic: ratios taken within each round (bench_slow.py) or
repeat (bench.py), `bench_slow.py --report` re-rendering a saved run, and the baselines built
by the tools themselves (-O2, never a sanitizer build's binary). The benchmarks print figures
that the docs quote; these tests check the code that derives them, not any speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Dict, List

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TOOLS = os.path.join(os.path.dirname(os.path.dirname(HERE)), "tools")
sys.path.insert(0, TOOLS)

import bench  # noqa: E402
import bench_slow  # noqa: E402


def _run(name: str, lat: float, rnd: int, files_s: float, **extra: Any) -> Dict[str, Any]:
    return dict(name=name, latency_ms=lat, round=rnd, files_s=files_s, files=1000,
                wall=1000 / files_s, bytes=1, errors=0, inflight=64, ops=3450,
                ops_per_file=3.45, per_file_ms=6.9, little_bound=9288.0,
                pct_of_bound=50.0, cpu_us_per_file=300.0, **extra)


def _rounds() -> List[Dict[str, Any]]:
    # round 0: the reference 100 files/s; round 1: the machine is twice as fast for everyone
    runs = []
    for rnd, speed in ((0, 1.0), (1, 2.0), (2, 1.5)):
        runs += [_run("asyncload-qd64", 2.0, rnd, 100 * speed),
                 _run("threads-16", 2.0, rnd, 80 * speed),
                 _run("threads-64", 2.0, rnd, 50 * speed),
                 _run("cpool-64", 2.0, rnd, 200 * speed),
                 _run("python-seq", 2.0, rnd, 10 * speed)]
    runs.append(dict(name="threads-256", latency_ms=2.0, round=0, error="timed out"))
    return runs


def test_round_ratios_are_taken_against_each_rounds_best() -> None:
    text = bench_slow.fmt_round_summary(_rounds(), "asyncload-qd64")
    row = next(line for line in text.splitlines() if line.startswith("| 2 ms"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # best Python pool in every round is threads-16 (80 %): 1.25 each time, whatever the speed
    assert cells[1] == "1.25, 1.25, 1.25: **1.25**"
    assert cells[2] == "0.50, 0.50, 0.50: **0.50**"
    assert cells[3] == "10.00, 10.00, 10.00: **10.00**"


def test_round_ratios_follow_a_round_that_differs() -> None:
    runs = _rounds()
    # in round 1 only, asyncload is slow: its ratio there is low, the median is not
    for r in runs:
        if r["name"] == "asyncload-qd64" and r["round"] == 1:
            r["files_s"] = 40.0
    text = bench_slow.fmt_round_summary(runs, "asyncload-qd64")
    assert "1.25, 0.25, 1.25: **1.25**" in text


def test_report_reprints_a_saved_run(tmp_path: Any) -> None:
    runs = _rounds()
    report = dict(command="python3 tools/bench_slow.py --latencies 2", repeat=3,
                  machine=dict(nproc=2, kernel="test"),
                  dataset=dict(n=1000, total_bytes=10 ** 8),
                  settings=dict(ref="asyncload-qd64"), runs=runs,
                  rows=bench_slow.median_rows(runs), wall_s=12.0)
    path = tmp_path / "bench_slow.json"
    path.write_text(json.dumps(report))
    r = subprocess.run([sys.executable, os.path.join(TOOLS, "bench_slow.py"), "--report", str(path)],
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert r.returncode == 0, r.stderr
    assert "Each round's own ratios" in r.stdout
    assert "1.25, 1.25, 1.25: **1.25**" in r.stdout
    # the median round's figures, and the failed contender shown as failed
    assert "| **asyncload-qd64** | 150 |" in r.stdout
    assert "| threads-256 | failed: timed out" in r.stdout


def test_repeat_ratios_pair_the_repeats() -> None:
    results = {
        ("warm", "asyncload-qd64"): [dict(repeat=0, files=100, wall=1.0, cpu=0.004),
                                     dict(repeat=1, files=100, wall=0.5, cpu=0.003)],
        ("warm", "procs-2"): [dict(repeat=0, files=100, wall=0.8, cpu=0.003),
                              dict(repeat=1, files=100, wall=0.4, cpu=0.003),
                              dict(repeat=2, error="failed")],
    }
    assert bench.repeat_ratios(results, "warm", "asyncload-qd64", "procs-2") == \
        "0.80, 0.80 (median 0.80)"
    assert bench.repeat_ratios(results, "warm", "asyncload-qd64", "procs-2",
                               key="cpu_per_file") == "1.33, 1.00 (median 1.17)"
    # fewer than two paired repeats: nothing to say
    assert bench.repeat_ratios(results, "cold", "asyncload-qd64", "procs-2") == ""


@pytest.mark.parametrize("name", ["threadread"])
def test_baselines_are_our_own_optimised_build(name: str, tmp_path: Any) -> None:
    exe = bench.build_tool(str(tmp_path), name, ["-lpthread"])
    assert exe == os.path.join(str(tmp_path), name)
    assert os.access(exe, os.X_OK)
    with open(exe, "rb") as f:
        body = f.read()
    assert b"__asan_init" not in body and b"libasan" not in body
    # kept while newer than its source: a second call builds nothing
    mtime = os.path.getmtime(exe)
    assert bench.build_tool(str(tmp_path), name, ["-lpthread"]) == exe
    assert os.path.getmtime(exe) == mtime


def test_bench_entry_splits_cpu_per_file_within_each_round() -> None:
    import bench_entry
    rounds = [dict(plain=30.0, load_worker=10.0, load_loader=25.0, floor_worker=2.0, floor_loader=24.0),
              dict(plain=60.0, load_worker=20.0, load_loader=50.0, floor_worker=4.0, floor_loader=48.0),
              dict(plain=40.0, load_worker=8.0, load_loader=28.0, floor_worker=3.0, floor_loader=26.0)]
    rows = bench_entry.summarize(rounds)
    by_name = {name: (vals, med) for name, vals, med in rows}
    # a round twice as slow for everyone gives the same ratio: ratios are taken within rounds
    vals, med = by_name["load: (worker + loader) ÷ plain"]
    assert [round(v, 4) for v in vals] == [1.1667, 1.1667, 0.9]
    assert round(med, 4) == 1.1667
    vals, med = by_name["load - c-floor: our Python per entry, µs"]
    assert vals == [8.0, 16.0, 5.0] and med == 8.0
    text = bench_entry.fmt_rows(rows)
    assert "| load: (worker + loader) ÷ plain | 1.17, 1.17, 0.90 | **1.17** |" in text


def test_bench_entry_runs_end_to_end(tmp_path: Any) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.join(os.path.dirname(TOOLS), "python"), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, os.path.join(TOOLS, "bench_entry.py"), "--n", "300",
                          "--rounds", "1", "--data", str(tmp_path / "data")],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith("| c-floor: worker"))
    floor = float(row.rsplit("**", 2)[1])
    row = next(line for line in out.stdout.splitlines() if line.startswith("| load: worker"))
    load = float(row.rsplit("**", 2)[1])
    # the C calls alone cost less than the same loads with an Entry per file
    assert 0 < floor < load
