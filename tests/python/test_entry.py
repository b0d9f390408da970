"""Loading whole files and the Entry object: data, views, release rules."""

from __future__ import annotations

import os
import pathlib
import pickle
from typing import Dict

import pytest

import asyncload
from al_testutil import load_and_check


def test_load_all_bytes_exact(worker: asyncload.Worker, files: Dict[str, bytes]) -> None:
    assert load_and_check(worker, files) == []
    assert worker.in_flight == 0


def test_entry_metadata(worker: asyncload.Worker, files: Dict[str, bytes]) -> None:
    path = sorted(files)[5]
    assert worker.request(path) is True
    with worker.wait_get(timeout=5) as e:
        assert e.path == path and e.get_filepath() == path
        assert e.size == len(files[path]) == len(e)
        assert e.offset == 0
        assert e.error == 0 and e.ok
        assert e.get_data() == files[path]
        assert isinstance(e.get_data(), bytes)
    assert e.released


def test_empty_and_one_page_files(worker: asyncload.Worker, files: Dict[str, bytes]) -> None:
    paths = sorted(files)[:3]  # sizes 0, 1, 4096
    for i, p in enumerate(paths):
        assert worker.request(p, tag=i)
    got = {}
    for _ in paths:
        with worker.wait_get(timeout=5) as e:
            assert e.path == paths[e.tag]
            got[paths[e.tag]] = e.get_data()
            assert len(e.data) == e.size
    assert got == {p: files[p] for p in paths}
    assert [len(got[p]) for p in paths] == [0, 1, 4096]


@pytest.mark.parametrize("kind", ["str", "bytes", "pathlib"])
def test_path_types(worker: asyncload.Worker, files: Dict[str, bytes], kind: str) -> None:
    path = sorted(files)[7]
    arg = {"str": path, "bytes": os.fsencode(path), "pathlib": pathlib.Path(path)}[kind]
    assert worker.request(arg)
    with worker.wait_get(timeout=5) as e:
        assert e.path == path  # always str
        assert e.get_data() == files[path]


def test_non_utf8_name_round_trips(worker: asyncload.Worker, tmp_path: pathlib.Path) -> None:
    raw = os.fsencode(str(tmp_path)) + b"/caf\xe9.bin"
    with open(raw, "wb") as f:
        f.write(b"latin-1 name")
    assert worker.request(raw)
    with worker.wait_get(timeout=5) as e:
        assert os.fsencode(e.path) == raw
        assert e.get_data() == b"latin-1 name"


def test_relative_path_uses_callers_cwd(worker: asyncload.Worker, tmp_path: pathlib.Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "rel.bin").write_bytes(b"relative")
    monkeypatch.chdir(tmp_path)
    assert worker.request("rel.bin")
    with worker.wait_get(timeout=5) as e:
        assert e.error == 0, os.strerror(e.error)
        assert e.path == "rel.bin"
        assert e.get_data() == b"relative"


def test_data_is_readonly_zero_copy_view(worker: asyncload.Worker, files: Dict[str, bytes]) -> None:
    path = sorted(files)[10]
    worker.request(path)
    e = worker.wait_get(timeout=5)
    view = e.data
    assert isinstance(view, memoryview)
    assert view.readonly
    assert view is e.data  # one view per entry
    assert view == files[path]
    with pytest.raises(TypeError):
        view[0] = 1  # type: ignore[index]
    e.release()
    with pytest.raises(ValueError):
        view.tobytes()  # revoked by release()
    with pytest.raises(ValueError):
        e.data
    with pytest.raises(ValueError):
        e.get_data()


def test_release_twice_and_with(worker: asyncload.Worker, files: Dict[str, bytes]) -> None:
    worker.request(sorted(files)[3])
    e = worker.wait_get(timeout=5)
    with e:
        assert not e.released
    assert e.released
    e.release()
    e.release()


def test_release_refuses_while_slice_alive(worker: asyncload.Worker,
                                           files: Dict[str, bytes]) -> None:
    path = sorted(files)[12]
    worker.request(path)
    e = worker.wait_get(timeout=5)
    part = e.data[1:10]
    with pytest.raises(BufferError):
        e.release()
    assert not e.released
    assert part.tobytes() == files[path][1:10]  # still valid: entry still held
    del part
    e.release()
    assert e.released


def test_release_refuses_while_exported(worker: asyncload.Worker, files: Dict[str, bytes]) -> None:
    path = sorted(files)[13]
    worker.request(path)
    e = worker.wait_get(timeout=5)
    pb = pickle.PickleBuffer(e.data)  # holds a buffer export of the view
    with pytest.raises(BufferError):
        e.release()
    assert bytes(pb.raw()) == files[path]
    pb.release()
    e.release()
    assert e.released


def test_with_block_exception_is_not_masked(worker: asyncload.Worker,
                                            files: Dict[str, bytes]) -> None:
    worker.request(sorted(files)[14])
    e = worker.wait_get(timeout=5)
    with pytest.raises(KeyError):
        with e:
            part = e.data[:4]
            raise KeyError("boom")
    del part
    e.release()
    assert e.released


def test_entries_are_reused_after_release(loader: asyncload.Loader,
                                          files: Dict[str, bytes]) -> None:
    # 8 entries per worker, 40 files: only works if released slots come back
    w = loader.get_worker_context(1)
    for p in sorted(files):
        while not w.request(p):
            w.wait_get(timeout=5).release()
    while w.in_flight:
        w.wait_get(timeout=5).release()
    assert w.try_get() is None


def test_load_iterator_raises_when_caller_hoards(worker: asyncload.Worker,
                                                 files: Dict[str, bytes]) -> None:
    held = []
    with pytest.raises(RuntimeError, match="release"):
        for e in worker.load(sorted(files)):
            held.append(e)  # never released: queue depth 8 runs out
    assert len(held) == 8
    for e in held:
        e.release()
    assert worker.in_flight == 0


def test_load_iterator_early_break_drains(worker: asyncload.Worker, files: Dict[str, bytes]) -> None:
    it = worker.load(sorted(files))
    first = next(it)
    first.release()
    it.close()  # the requests it still had queued are waited for and released
    assert worker.in_flight == 0
    assert worker.try_get() is None
    assert load_and_check(worker, files) == []


def test_load_iterator_with_ranges(worker: asyncload.Worker, files: Dict[str, bytes]) -> None:
    path = sorted(files)[20]
    got = {}
    for e in worker.load([(path, 0, 10), (path, 100, 50), path]):
        with e:
            got[(e.offset, e.size)] = e.get_data()
    content = files[path]
    assert got == {(0, 10): content[:10], (100, 50): content[100:150],
                   (0, len(content)): content}


def test_entry_after_loader_close_is_invalidated(files: Dict[str, bytes]) -> None:
    path = sorted(files)[4]
    ld = asyncload.Loader(4, 1 << 20, 1)
    ld.spawn_loader()
    w = ld.get_worker_context(0)
    w.request(path)
    e = w.wait_get(timeout=5)
    view = e.data
    ld.close()
    with pytest.raises(ValueError):
        view.tobytes()
    with pytest.raises(ValueError):
        e.get_data()
    e.release()  # harmless


def test_exported_view_survives_loader_close(files: Dict[str, bytes]) -> None:
    # A view that close() cannot revoke keeps the mapping alive: reading it
    # must not crash the interpreter.
    path = sorted(files)[6]
    ld = asyncload.Loader(4, 1 << 20, 1)
    ld.spawn_loader()
    pid = ld.pid
    w = ld.get_worker_context(0)
    w.request(path)
    e = w.wait_get(timeout=5)
    part = e.data[:100]
    ld.close()
    assert ld.closed
    assert part.tobytes() == files[path][:100]
    del part, e, w
    import gc

    gc.collect()
    # the deferred free has reaped the loader process by now
    assert pid is not None
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
