"""The engine option from Python: each engine asked for runs and says so, auto says
why it chose, a bad name is refused, and where io_uring is refused (a seccomp filter
as Docker 25+ installs, in a child process) auto takes the thread engine and loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Dict

import pytest

import asyncload
from al_testutil import engines_here, load_and_check


@pytest.mark.parametrize("engine", engines_here())
def test_asked_for_engine_runs(files: Dict[str, bytes], engine: str) -> None:
    ld = asyncload.Loader(queue_depth=8, max_file_size=1 << 20, n_workers=1, engine=engine)
    said = lambda: {k: ld.stats()[k] for k in ("engine", "engine_reason")}  # noqa: E731
    assert ld.engine == engine and said() == {"engine": engine, "engine_reason": ""}
    with ld:
        assert said() == {"engine": engine, "engine_reason": "asked for"}
        assert ld.options["engine"] == engine
        assert load_and_check(ld.get_worker_context(0), files) == []


def test_auto_says_why(files: Dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASYNCLOAD_ENGINE", raising=False)  # spawn_loader forks: read then
    with asyncload.Loader(queue_depth=8, max_file_size=1 << 20, n_workers=1) as ld:
        st = ld.stats()
        assert st["engine"] in ("io_uring", "threads")
        assert st["engine_reason"].startswith("auto: ")
        assert load_and_check(ld.get_worker_context(0), files) == []


def test_bad_engine_name() -> None:
    with pytest.raises(ValueError, match="engine"):
        asyncload.Loader(queue_depth=8, max_file_size=1 << 20, n_workers=1, engine="uring")


_CHILD = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    from al_testutil import deny_io_uring
    deny_io_uring()
    import asyncload
    with asyncload.Loader(queue_depth=8, max_file_size=1 << 20, n_workers=1) as ld:
        data = [bytes(e.data) for e in ld.get_worker_context(0).load([sys.argv[2]])]
        print(json.dumps({"stats": ld.stats(), "size": len(data[0])}))
""")


def test_auto_takes_threads_where_io_uring_is_refused(tmp_path: "os.PathLike[str]") -> None:
    path = os.path.join(str(tmp_path), "f")
    with open(path, "wb") as f:
        f.write(b"x" * 12345)
    env = {k: v for k, v in os.environ.items() if k != "ASYNCLOAD_ENGINE"}
    out = subprocess.run([sys.executable, "-c", _CHILD, os.path.dirname(__file__), path],
                         capture_output=True, text=True, timeout=30, env=env)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["size"] == 12345
    assert res["stats"]["engine"] == "threads"
    assert "io_uring" in res["stats"]["engine_reason"] and "threads" in res["stats"]["engine_reason"]
