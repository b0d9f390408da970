"""Short soak for CI: tools/soak.py for a few seconds, 8 worker processes
x queue depth 128 against one loader, a random mix of good, missing and
oversize paths and ranges, each answer checksummed. Run the long version by
hand: `python3 tools/soak.py --seconds 600`.

ASYNCLOAD_SOAK_SECONDS overrides the length (default 10 s).
"""

from __future__ import annotations

import importlib
import json
import os
import pathlib
import sys
from typing import Any

import pytest

_TOOL = pathlib.Path(__file__).resolve().parents[2] / "tools" / "soak.py"
SECONDS = float(os.environ.get("ASYNCLOAD_SOAK_SECONDS", "10"))


def _soak_module() -> Any:
    # imported by its name from tools/, so that spawn children (which get
    # this sys.path) can unpickle its worker function
    if str(_TOOL.parent) not in sys.path:
        sys.path.insert(0, str(_TOOL.parent))
    return importlib.import_module("soak")


@pytest.mark.deadline(int(SECONDS) + 120)
def test_soak_8_workers_qd128(tmp_path: pathlib.Path) -> None:
    soak = _soak_module()
    s = soak.run(SECONDS, workers=8, queue_depth=128, n_files=128,
                 max_file_size=128 * 1024, directory=str(tmp_path / "data"))
    (tmp_path / "soak.json").write_text(json.dumps(s, indent=2))
    print(json.dumps({k: s[k] for k in ("requested", "answered", "data_ok", "enoent", "efbig",
                                        "mismatches", "duplicates", "lost", "seconds")}))
    assert s["problems"] == []
    assert s["mismatches"] == 0 and s["duplicates"] == 0 and s["lost"] == 0
    assert s["requested"] == s["answered"] > 1000
    # the mix really exercised every kind of answer
    assert s["data_ok"] > 0 and s["enoent"] > 0 and s["efbig"] > 0
    for g in s["growth"]:
        assert g["fds"] == 0, g


@pytest.mark.deadline(120)
def test_soak_spawned_workers(tmp_path: pathlib.Path) -> None:
    """The same with spawn-started workers (pickled Worker, attach by handle)."""
    soak = _soak_module()
    s = soak.run(min(SECONDS, 4.0), workers=2, queue_depth=32, n_files=32,
                 max_file_size=64 * 1024, directory=str(tmp_path / "data"),
                 start_method="spawn")
    assert s["problems"] == [] and s["ok"], s
