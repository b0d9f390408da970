"""The loader's cache (cache_bytes) from Python, on both engines: cached bytes
equal the files (whole and ranges), a full cache keeps what it holds, errors
are not cached, the counters of Loader.stats() are exact, processes attached
to one loader (forked, spawned by handle) hit what another loaded, committed
memory stays within cache_bytes plus the entries, and a loader killed with a
full cache leaves workers with LoaderClosedError and nothing open; plus the
cache_bytes of FileDataset, `asyncload load --cache` and `asyncload bench --cache`."""

from __future__ import annotations

import errno
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
from typing import Any, Dict, List

import pytest

import asyncload
from al_testutil import engines_here, fd_count, load_and_check, make_files, memfd_mappings
from asyncload import _bench, _contenders, _sysinfo, cli

# io_uring is asked for by name only where a ring can be made (make test-py-threads
# runs this file with the sysctl that refuses it; the thread engine runs regardless)
ENGINES = engines_here()
COUNTERS = ("hits", "misses", "bytes_from_storage", "bytes_from_cache", "cache_bytes_used")


def counters(ld: asyncload.Loader) -> Dict[str, int]:
    st = ld.stats()
    return {k: st[k] for k in COUNTERS}


def region_bytes() -> int:
    """Bytes that hold pages in this process's loader region (its memfd)."""
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("/memfd:asyncload"):
                return os.fstat(int(name)).st_blocks * 512
        except OSError:
            continue
    raise AssertionError("no memfd of a loader among this process's descriptors")


@pytest.mark.parametrize("engine", ENGINES)
def test_epochs_hit_what_fits_and_keep_it(tmp_path: Any, engine: str) -> None:
    files = make_files(str(tmp_path / "d"), 40, seed=3, max_size=100_000)
    total = sum(len(b) for b in files.values())
    cache = total // 2
    with asyncload.Loader(queue_depth=2, max_file_size=128 << 10, n_workers=1,
                          cache_bytes=cache, engine=engine) as ld:
        assert ld.options["cache_bytes"] == cache and ld.stats()["cache_bytes"] == cache
        w = ld.get_worker_context(0)
        assert load_and_check(w, files) == []
        first = counters(ld)
        assert first["hits"] == 0 and first["misses"] == 40
        assert first["bytes_from_storage"] == total and first["bytes_from_cache"] == 0
        assert 0 < first["cache_bytes_used"] <= cache
        # entries: 2 buffers of 128 KiB (+ a page each) and the header pages
        entries = 2 * ((128 << 10) + 8192) + (256 << 10)
        assert region_bytes() <= cache + entries
        epochs: List[Dict[str, int]] = [first]
        for _ in range(2):
            assert load_and_check(w, files) == []   # every byte, hit or not
            epochs.append(counters(ld))
        d1 = {k: epochs[1][k] - epochs[0][k] for k in COUNTERS}
        d2 = {k: epochs[2][k] - epochs[1][k] for k in COUNTERS}
        # a full cache keeps its contents: the same hits each epoch
        assert d1 == d2
        assert d1["hits"] > 0 and d1["hits"] + d1["misses"] == 40
        assert d1["bytes_from_cache"] + d1["bytes_from_storage"] == total
        assert d1["bytes_from_cache"] <= cache and d1["cache_bytes_used"] == 0
        assert region_bytes() <= cache + entries


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("direct", [False, True])
def test_ranges_and_errors(tmp_path: Any, engine: str, direct: bool) -> None:
    data = os.urandom(50_000)
    path = str(tmp_path / "r.bin")
    with open(path, "wb") as f:
        f.write(data)
    late = str(tmp_path / "late.bin")
    with asyncload.Loader(queue_depth=4, max_file_size=1 << 20, n_workers=1,
                          cache_bytes=1 << 20, engine=engine, direct=direct) as ld:
        w = ld.get_worker_context(0)

        def get(p: str, off: int = 0, length: Any = None) -> bytes:
            assert w.request(p, off, length)
            with w.wait_get(timeout=10) as e:
                return e.get_data()

        for off, length in [(0, None), (123, 4567), (4096, 4096), (49_000, 5_000), (7, None)]:
            want = data[off:] if length is None else data[off:off + length]
            assert get(path, off, length) == want     # from storage
            assert get(path, off, length) == want     # from the cache
        st = ld.stats()
        assert st["hits"] == 5 and st["misses"] == 5
        with pytest.raises(asyncload.LoadError) as err:
            get(late)
        assert err.value.errno == errno.ENOENT
        with open(late, "wb") as f:
            f.write(b"now here")
        assert get(late) == b"now here"          # the error was not kept
        assert get(late) == b"now here"
        st = ld.stats()
        assert st["hits"] == 6 and st["misses"] == 7


def _child_load(w: asyncload.Worker, expected: Dict[str, bytes]) -> None:
    if load_and_check(w, expected):
        sys.exit(1)


def test_two_processes_hit_what_the_other_loaded(tmp_path: Any) -> None:
    files = make_files(str(tmp_path / "d"), 30, seed=5, max_size=50_000)
    paths = sorted(files)
    first = {p: files[p] for p in paths[:15]}
    second = {p: files[p] for p in paths[15:]}
    kept = lambda d: sum(1 for b in d.values() if b)  # noqa: E731 (empty files are not kept)
    with asyncload.Loader(queue_depth=8, max_file_size=1 << 20, n_workers=3,
                          cache_bytes=8 << 20) as ld:
        # a forked process loads the first half; this one then hits it
        p = mp.get_context("fork").Process(target=_child_load,
                                           args=(ld.get_worker_context(1), first))
        p.start()
        p.join(30)
        assert p.exitcode == 0
        h0 = ld.stats()["hits"]
        assert load_and_check(ld.get_worker_context(0), first) == []
        assert ld.stats()["hits"] - h0 == kept(first)
        # this one loads the second half; another program, attached by the handle,
        # hits it (a new interpreter, not a multiprocessing child: no resource
        # tracker is left behind for later tests that count this process's children)
        assert load_and_check(ld.get_worker_context(0), second) == []
        h1 = ld.stats()["hits"]
        script = textwrap.dedent(f"""
            import sys, asyncload
            from al_testutil import load_and_check
            ld = asyncload.Loader.attach({ld.handle!r})
            expected = {{p: open(p, "rb").read() for p in {sorted(second)!r}}}
            problems = load_and_check(ld.get_worker_context(2), expected)
            ld.close()
            sys.exit(1 if problems else 0)
        """)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        res = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=30,
                             env=env)
        assert res.returncode == 0, res.stderr.decode()
        assert ld.stats()["hits"] - h1 == kept(second)


@pytest.mark.parametrize("engine", ENGINES)
def test_loader_killed_with_a_full_cache(tmp_path: Any, engine: str) -> None:
    files = make_files(str(tmp_path / "d"), 30, seed=7, max_size=60_000)
    fds, maps = fd_count(), memfd_mappings()
    ld = asyncload.Loader(queue_depth=4, max_file_size=64 << 10, n_workers=1,
                          cache_bytes=256 << 10, engine=engine)
    pid = ld.spawn_loader()
    w = ld.get_worker_context(0)
    assert load_and_check(w, files) == []
    assert load_and_check(w, files) == []
    st = ld.stats()
    assert st["hits"] > 0 and st["cache_bytes_used"] > (256 << 10) - 60_000
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(asyncload.LoaderClosedError):
        w.wait_get(timeout=5)
    with pytest.raises(asyncload.LoaderClosedError):
        w.request(sorted(files)[3])
    ld.close()
    assert fd_count() == fds and memfd_mappings() == maps


def test_file_dataset_passes_cache_bytes(tmp_path: Any) -> None:
    from asyncload.torch import FileDataset
    files = make_files(str(tmp_path / "d"), 5, seed=9, max_size=20_000)
    paths = sorted(files)
    with FileDataset(paths, cache_bytes=1 << 20, n_workers=1) as ds:
        assert bytes(ds[3]) == files[paths[3]]
        assert bytes(ds[3]) == files[paths[3]]
        st = ds.loader.stats()
        assert st["cache_bytes"] == 1 << 20 and st["hits"] == 1 and st["misses"] == 1


def test_file_stream_passes_cache_bytes(tmp_path: Any) -> None:
    from asyncload.torch import FileStream
    files = make_files(str(tmp_path / "d"), 6, seed=10, max_size=20_000)
    paths = sorted(files)
    with FileStream(paths, shuffle=False, num_workers=0, cache_bytes=1 << 20) as fs:
        for epoch in range(2):
            fs.set_epoch(epoch)
            assert [bytes(b) for b in fs] == [files[p] for p in paths]
        st = fs.loader.stats()
        # the second epoch hit every file with bytes (requests made ahead across the
        # epoch boundary may already hit, so count by the loader's totals)
        kept = sum(1 for b in files.values() if b)
        assert st["cache_bytes"] == 1 << 20 and st["hits"] >= kept
        assert st["bytes_from_cache"] >= sum(len(b) for b in files.values())


def test_cli_cache_flags(tmp_path: Any) -> None:
    make_files(str(tmp_path / "d"), 10, seed=11, max_size=20_000)
    p = cli.build_parser()
    assert p.parse_args(["load", "x", "--cache", "64M"]).cache == 64 << 20
    assert p.parse_args(["bench", "x", "--cache", "1GiB"]).cache == 1 << 30
    assert p.parse_args(["load", "x"]).cache == 0
    with pytest.raises(SystemExit):
        p.parse_args(["load", "x", "--cache", "lots"])
    assert cli.main(["load", str(tmp_path / "d"), "--cache", "1M", "--verify",
                     "--start-method", "fork"]) == 0


def test_bench_cache_row_is_all_hits(tmp_path: Any) -> None:
    files = make_files(str(tmp_path / "d"), 20, seed=13, max_size=20_000)
    paths = sorted(files)
    spec = dict(kind="asyncload", procs=2, qd=8, max_file_size=32 << 10, engine=None,
                cache_bytes=1 << 20)
    r = _contenders.run_parallel(paths, spec)
    assert r["files"] == 20 and r["errors"] == 0
    assert r["bytes"] == sum(len(b) for b in files.values())
    nonempty = sum(1 for b in files.values() if b)
    # the untimed epoch filled the cache; the timed one hit every file that has bytes
    assert r["cache"]["hits"] == nonempty and r["cache"]["misses"] == 20 + 20 - nonempty
    names = [c["name"] for c in _bench.plan(2, [4], ["io_uring"], 8, 4096, cache_bytes=1 << 20)]
    assert "asyncload-cache" in names


@pytest.mark.parametrize("engine", ENGINES)
def test_failed_read_gives_back_only_its_own_room(tmp_path: Any, engine: str,
                                                  slowfs_factory: Any) -> None:
    # A load reserves its room in the cache once the file's size is known and
    # gives it back if its read then fails. Only the room at the end of what
    # is reserved can be taken back: here the failing file (its reads answer
    # EIO on slowfs) reserves first, the others while it is still being read,
    # so giving its room back must not hand out theirs again. Later loads of
    # other files would then be read over their cached bytes.
    src = tmp_path / "src"
    src.mkdir()
    first = {f"a{i}.bin": os.urandom(20_000 + 1000 * i) for i in range(6)}
    later = {f"b{i}.bin": os.urandom(20_000 + 1000 * i) for i in range(6)}
    for name, data in {**first, **later, "bad.bin": os.urandom(30_000)}.items():
        (src / name).write_bytes(data)
    fs = slowfs_factory(str(src), latency_ms=3, eio_read="bad.bin")
    with asyncload.Loader(queue_depth=16, max_file_size=1 << 20, n_workers=1,
                          cache_bytes=4 << 20, engine=engine) as ld:
        w = ld.get_worker_context(0)
        names = ["bad.bin"] + list(first)
        for e in w.load([fs.path(n) for n in names]):
            with e:
                if e.tag == 0:
                    assert e.error == errno.EIO
                else:
                    assert e.get_data() == first[names[e.tag]]
        for e in w.load([fs.path(n) for n in later]):
            with e:
                assert e.error == 0
        before = counters(ld)
        names = list(first) + list(later)
        for e in w.load([fs.path(n) for n in names]):
            with e:
                want = {**first, **later}[names[e.tag]]
                assert e.get_data() == want, f"{names[e.tag]}: cached bytes are not the file's"
        after = counters(ld)
        assert after["hits"] - before["hits"] == len(names)
