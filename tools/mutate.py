#!/usr/bin/env python3
"""mutate.py - how strong are the tests? Puts hand-written, plausible bugs
(mutants) into libasyncload's sources one at a time, rebuilds into a scratch
build directory, runs the C suite (and, for the mutants that name them or
with --pytest, chosen pytest tests against an extension rebuilt from the
mutated sources) and says which mutants a test killed and which survived.

Each mutant finds its code by searching every libasyncload/src/*.c and *.h
for its exact snippet, not by file name, so it keeps working while code moves
between files; a snippet found nowhere (or more than once) is reported as such
rather than guessed at. The sources are restored after every mutant (also on
Ctrl-C or an error), and the script refuses to start while they have
uncommitted changes, so that it never overwrites someone's work.

Each test runs in its own session; when it ends (or times out) its whole
process group is killed, so no loader a broken test left behind slows the
mutants after it. A mutant's run stops at its first failing test unless
--all-tests is given.

    python3 tools/mutate.py                 # the hand-written mutants, C suite
    python3 tools/mutate.py --set fresh     # tools/mutants_fresh.py's list
    python3 tools/mutate.py --set fresh2    # tools/mutants_fresh2.py's (a third, blind list)
    python3 tools/mutate.py --set all --list
    python3 tools/mutate.py -m gen-check -t stale_gen   # one mutant, one test
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "libasyncload", "src")
# Tests too slow for a run per mutant, and that exercise the build, not the
# library's behaviour.
SKIP_TESTS = {"standalone-build"}
# Each test's meson timeout times --timeout-multiplier, times this for the
# tests that run long by design (reuse cycles the queue thousands of times,
# soak runs for seconds): with 0.34 alone they time out under load on code
# they cannot see, and a timeout counts as a kill.
SLOW_TESTS = {"reuse": 3.0, "soak": 3.0, "crashpoints": 2.0}
BASELINE_SKIPPED: set = set()  # tests that skip on the unmutated code here


class Mutant(NamedTuple):
    name: str
    original: str
    mutated: str
    desc: str
    # pytest node ids that see this mutant where the C suite cannot
    pytest: Tuple[str, ...] = ()


MUTANTS: List[Mutant] = [
    Mutant("gen-check",
           "if (e->gen != w->gen) { /* a request of the slot's previous holder */",
           "if (0) { /* a request of the slot's previous holder */",
           "completions of a dead holder's requests reach the slot's next holder"),
    Mutant("no-wake-waiter",
           "if (atomic_load(&ws->waiters))\n\t\t\tal_futex_wake(&ws->cmp_tail, INT_MAX);",
           "if (0)\n\t\t\tal_futex_wake(&ws->cmp_tail, INT_MAX);",
           "the loader never wakes a worker sleeping in wait_get"),
    # Since the step functions moved to steps.c, a refused O_DIRECT open (confined
    # or not) goes through on_open_failed, and one refused at the first read
    # through on_read: one mutant each.
    Mutant("no-direct-fallback",
           "if (err == -EINVAL && r->direct)\n\t\trestart_buffered(lp, idx);",
           "if (0 && err == -EINVAL && r->direct)\n\t\trestart_buffered(lp, idx);",
           "O_DIRECT refused at open (confined or not) is an error, no buffered fallback"),
    Mutant("no-direct-fallback-read",
           "if (res == -EINVAL && r->direct)\n\t\t\trestart_buffered(lp, idx);",
           "if (0 && res == -EINVAL && r->direct)\n\t\t\trestart_buffered(lp, idx);",
           "O_DIRECT refused at the read (EINVAL) is an error, no buffered fallback"),
    Mutant("shutdown-no-bell",
           "al_wake_all_workers(h);\n\tal_ring_all_bells(h);\n\treturn 0;",
           "al_wake_all_workers(h);\n\treturn 0;",
           "asyncload_loader_shutdown does not ring the loader's doorbell"),
    Mutant("wait-polls",
           "rc = al_futex_wait(&ws->cmp_tail, seen, slice);",
           "rc = usleep(100) + slice * 0;",
           "wait_get polls every 100 us instead of sleeping on the futex"),
    Mutant("loader-polls",
           "#define AL_SLEEP_MS 200 ",
           "#define AL_SLEEP_MS 1 ",
           "an idle loader wakes every millisecond instead of sleeping"),
    Mutant("stopping-not-watched",
           "if (state != AL_STATE_RUNNING && state != AL_STATE_STOPPING)\n\t\treturn state;",
           "if (state != AL_STATE_RUNNING)\n\t\treturn state;",
           "a loader that dies while stopping is never noticed"),
    Mutant("no-eof-check",
           "bool eof = res == 0 || direct_end;",
           "bool eof = direct_end;",
           "a 0-byte read is not taken as the end of the file"),
    Mutant("short-read-is-eof",
           "bool eof = res == 0 || direct_end;",
           "bool eof = res == 0 || direct_end || (uint64_t)res < r->last_ask;",
           "a short buffered read is taken as the end of the file",
           # only a filesystem that answers short reads (FUSE, NFS) shows it
           pytest=("tests/python/test_slowfs.py::test_asyncload_loops_on_short_reads",)),
    Mutant("wrong-errno-dir",
           "if (type == S_IFDIR)\n\t\treturn -EISDIR;",
           "if (type == S_IFDIR)\n\t\treturn -EINVAL;",
           "a directory fails with EINVAL instead of EISDIR"),
    Mutant("no-type-check",
           "if (type != S_IFREG)\n\t\treturn -EINVAL;",
           "if (type == S_IFSOCK)\n\t\treturn -EINVAL;",
           "FIFOs and devices are not refused by type (only sockets)"),
    Mutant("trim-not-awaited",
           "if (r->trim_pending) {\n\t\tr->done_err = err;",
           "if (0) {\n\t\tr->done_err = err;",
           "an entry is answered while a hole is still being punched in it"),
    Mutant("dispatch-and",
           "if (lp->new_q.len >= h->dispatch_n || lp->idle_polls >= h->idle_iters)",
           "if (lp->new_q.len >= h->dispatch_n && lp->idle_polls >= h->idle_iters)",
           "batching dispatches only when both thresholds are met"),
    Mutant("req-ring-mask",
           "uint32_t pulled = 0, mask = h->ring_size - 1;",
           "uint32_t pulled = 0, mask = h->ring_size;",
           "off-by-one in the loader's request ring mask"),
    Mutant("efbig-off-by-one",
           "if (to_end && avail > max)\n\t\t\treturn -EFBIG;",
           "if (to_end && avail > max + 1)\n\t\t\treturn -EFBIG;",
           "a file one byte over max_file_size is loaded"),
    Mutant("orphan-no-error",
           "e->error = -ESHUTDOWN;\n\t\te->size = 0;",
           "e->error = 0;\n\t\te->size = 0;",
           "requests the dead loader never took are answered as successes"),
    Mutant("submit-after-shutdown",
           "atomic_load_explicit(&h->shutdown_requested, memory_order_relaxed);\n}",
           "0;\n}",
           "requests are accepted after shutdown was asked, until the loader stops"),
    Mutant("reclaim-keeps-held",
           "uint32_t s = AL_ENTRY_HELD;\n\t\tif (!atomic_compare_exchange_strong(&e->state, &s, AL_ENTRY_FREE)",
           "uint32_t s = AL_ENTRY_HELD;\n\t\tif (!atomic_compare_exchange_strong(&e->state, &s, AL_ENTRY_HELD)",
           "a takeover does not free the entries the dead holder held"),
    Mutant("unknown-size-no-efbig",
           "if (!r->size_known && size > lp->h->max_file_size)",
           "if (0 && !r->size_known && size > lp->h->max_file_size)",
           "a /proc-style file longer than max_file_size is truncated silently"),
    Mutant("confined-abs-off",
           "e->open_off = h->root_len + 1;",
           "e->open_off = h->root_len;",
           "an absolute path inside root is opened as an absolute path"),
    Mutant("sleep-ignores-rings",
           "if ((!lp->stopping && !rings_empty(lp)) || stop_news) {",
           "if (stop_news) {",
           "the loader goes to sleep with requests waiting in a ring"),
    Mutant("submit-no-bell",
           "atomic_exchange(&w->bell->sleeping, 0))\n\t\tal_ring_bell(w->bell);",
           "atomic_exchange(&w->bell->sleeping, 0))\n\t\t(void)0;",
           "a request does not ring the sleeping loader's doorbell"),
]


def all_sets() -> Dict[str, List[Mutant]]:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from mutants_fresh import FRESH
    from mutants_fresh2 import FRESH2
    return {"hand": MUTANTS, "fresh": FRESH, "fresh2": FRESH2}


def sources() -> List[str]:
    return sorted(glob.glob(os.path.join(SRC, "*.c")) + glob.glob(os.path.join(SRC, "*.h")))


def locate(m: Mutant) -> Tuple[Optional[str], str]:
    """(file, status): the one file holding the snippet once, else None and why."""
    hits = []
    for path in sources():
        with open(path) as f:
            n = f.read().count(m.original)
        hits += [path] * n
    if not hits:
        return None, "snippet not found"
    if len(hits) > 1:
        return None, f"snippet ambiguous ({len(hits)} places)"
    return hits[0], "ok"


def dirty_sources() -> List[str]:
    out = subprocess.run(["git", "status", "--porcelain", "--", "libasyncload/src"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.strip()]


def killpg(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run(cmd: Sequence[str], timeout: Optional[float] = None, env: Optional[Dict[str, str]] = None,
        cwd: str = ROOT) -> Tuple[int, str]:
    """rc (124 on timeout) and output; the command's process group is killed
    when it ends, so nothing it started outlives it."""
    with tempfile.TemporaryFile() as out:
        p = subprocess.Popen(list(cmd), cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = 124
        killpg(p.pid)
        p.wait()
        out.seek(0)
        return rc, out.read().decode(errors="replace")


def setup_build(build: str) -> None:
    if not os.path.exists(os.path.join(build, "build.ninja")):
        rc, out = run(["meson", "setup", build, "-Dtools=false"])
        if rc:
            rc, out = run(["meson", "setup", build])
        if rc:
            sys.exit(f"meson setup failed:\n{out}")


class Test(NamedTuple):
    name: str
    cmd: List[str]
    env: Dict[str, str]
    timeout: float
    cwd: str


def suite_tests(build: str, only: Optional[List[str]], mult: float) -> List[Test]:
    rc, out = run(["meson", "introspect", "--tests", build])
    if rc:
        sys.exit(f"meson introspect --tests failed:\n{out}")
    tests = []
    for t in json.loads(out):
        name = t["name"]
        if name in SKIP_TESTS or (only and name not in only):
            continue
        env = dict(os.environ)
        env.update(t.get("env") or {})
        slow = SLOW_TESTS.get(name.split("-")[0], 1.0)
        # as meson runs them: in the build directory unless the test says otherwise
        tests.append(Test(name, t["cmd"], env, (t.get("timeout") or 30) * mult * slow,
                          t.get("workdir") or build))
    # short tests first: most mutants die in one, and a run stops at its first kill
    tests.sort(key=lambda t: t.timeout)
    return tests


def run_tests(tests: List[Test], jobs: int, stop_early: bool,
              times: Optional[Dict[str, float]] = None,
              skipped: Optional[List[str]] = None) -> List[str]:
    """Names of the failing tests (' (timeout)' added where it hung); the
    skipped ones (exit 77) go to `skipped`."""
    failed: List[str] = []

    def one(t: Test) -> None:
        if stop_early and failed:
            return
        t0 = time.monotonic()
        rc, _ = run(t.cmd, timeout=t.timeout, env=t.env, cwd=t.cwd)
        if times is not None:
            times[t.name] = time.monotonic() - t0
        if rc == 124:
            failed.append(f"{t.name} (timeout)")
        elif rc == 77 and skipped is not None:
            skipped.append(t.name)
        elif rc not in (0, 77):
            failed.append(t.name)

    with ThreadPoolExecutor(jobs) as ex:
        list(ex.map(one, tests))
    return failed


def build_extension() -> Tuple[int, str]:
    return run([sys.executable, os.path.join(ROOT, "python", "asyncload", "_build.py")], timeout=900)


def run_pytest(ids: Sequence[str], timeout: float) -> List[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(ROOT, "python") + os.pathsep + env.get("PYTHONPATH", "")
    rc, out = run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"] + list(ids),
                  timeout=timeout, env=env)
    if rc == 0:
        return []
    if rc == 124:
        return ["pytest (timeout)"]
    bad = [line.split()[1] for line in out.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    return [f"py:{b.split('::')[-1]}" for b in bad] or [f"pytest rc {rc}"]


def test_once(build: str, tests: List[Test], jobs: int, stop_early: bool, own_ids: Sequence[str],
              extra_ids: Sequence[str], pytest_timeout: float) -> Tuple[str, List[str]]:
    """('killed'|'survived'|'build failed', failing tests). own_ids (the mutant's
    own pytest tests, chosen because the C suite cannot see it) run first;
    extra_ids (--pytest, for every mutant) after the C suite, and with
    stop_early only where it found nothing."""
    rc, out = run(["meson", "compile", "-C", build], timeout=900)
    if rc:
        return "build failed", [out.strip().splitlines()[-1][:120] if out.strip() else ""]
    failed: List[str] = []
    built = False

    def pytest(ids: Sequence[str]) -> List[str]:
        nonlocal built
        if not built:
            rc, out = build_extension()
            if rc:
                return ["extension build failed"]
            built = True
        return run_pytest(ids, pytest_timeout)

    if own_ids:
        failed += pytest(own_ids)
    skipped: List[str] = []
    if not (failed and stop_early):
        failed += run_tests(tests, jobs, stop_early, skipped=skipped)
    # A test that passed on the unmutated code but skips now (another user of
    # the machine set kernel.io_uring_disabled, say) saw nothing: no verdict.
    if not failed and set(skipped) - BASELINE_SKIPPED:
        return "skipped", sorted(set(skipped) - BASELINE_SKIPPED)[:6]
    if extra_ids and not (failed and stop_early):
        failed += pytest(extra_ids)
    if any(f.startswith("extension build failed") for f in failed):
        return "build failed", failed
    return ("killed", failed) if failed else ("survived", [])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", choices=("hand", "fresh", "fresh2", "all"), default="hand",
                    help="which list: the hand-written one here, tools/mutants_fresh.py's, "
                         "tools/mutants_fresh2.py's, or all three")
    ap.add_argument("-m", "--mutant", action="append", help="only these mutants (by name)")
    ap.add_argument("-t", "--test", action="append", help="only these C tests (meson names)")
    ap.add_argument("--build", default=os.path.join(ROOT, "build-mutate"),
                    help="scratch build directory (default build-mutate)")
    ap.add_argument("--timeout-multiplier", type=float, default=0.34,
                    help="of each test's meson timeout (30-90 s): a hang is a kill, found sooner")
    ap.add_argument("--pytest", action="append", default=[],
                    help="a pytest node id (or file) to run against every mutant the C suite "
                    "missed (with --all-tests: every mutant); the extension is rebuilt from the mutant")
    ap.add_argument("--pytest-timeout", type=float, default=300)
    ap.add_argument("--all-tests", action="store_true", help="run every test, not up to the first kill")
    ap.add_argument("-j", "--jobs", type=int, default=2)
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()
    # Started in the background by a shell, this process has SIGINT ignored,
    # and so would every test it runs: the Ctrl-C tests would fail on any code.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    sets = all_sets()
    pool = [m for v in sets.values() for m in v] if args.set == "all" else sets[args.set]
    chosen = [m for m in pool if not args.mutant or m.name in args.mutant]
    if args.list:
        for m in chosen:
            where, status = locate(m)
            print(f"{m.name:28} {os.path.basename(where) if where else status:20} {m.desc}")
        return 0
    dirty = dirty_sources()
    if dirty:
        sys.exit("refusing to run: libasyncload/src has uncommitted changes:\n" + "\n".join(dirty))

    build = os.path.abspath(args.build)
    setup_build(build)
    tests = suite_tests(build, args.test, args.timeout_multiplier)
    if not tests:
        sys.exit("no tests selected")
    print(f"{len(tests)} tests: {' '.join(t.name for t in tests)}", flush=True)
    t0 = time.monotonic()
    rc, out = run(["meson", "compile", "-C", build], timeout=900)
    if rc:
        sys.exit(f"the unmutated build fails:\n{out[-3000:]}")
    times: Dict[str, float] = {}
    skipped: List[str] = []
    failed = run_tests(tests, args.jobs, False, times, skipped)
    BASELINE_SKIPPED.update(skipped)
    if skipped:
        print(f"unmutated: skipped {' '.join(skipped)}", flush=True)
    slowest = sorted(times.items(), key=lambda kv: -kv[1])[:5]
    print(f"unmutated: {len(failed)} failing in {time.monotonic() - t0:.0f} s; slowest: "
          + ", ".join(f"{n} {s:.0f} s" for n, s in slowest), flush=True)
    all_ids = sorted({i for m in chosen for i in m.pytest} | set(args.pytest))
    if all_ids:
        rc, out = build_extension()
        failed += [f"extension build: {out[-2000:]}"] if rc else run_pytest(all_ids, args.pytest_timeout)
        print(f"unmutated pytest: {len(failed)} failing", flush=True)
    if failed:
        sys.exit(f"the unmutated suite does not pass ({', '.join(failed)}); fix that first")

    results: Dict[str, Tuple[str, List[str]]] = {}
    try:
        for m in chosen:
            where, status = locate(m)
            if where is None:
                results[m.name] = (status, [])
                print(f"{m.name:28} {status}", flush=True)
                continue
            with open(where) as f:
                original = f.read()
            t0 = time.monotonic()
            try:
                with open(where, "w") as f:
                    f.write(original.replace(m.original, m.mutated, 1))
                results[m.name] = test_once(build, tests, args.jobs, not args.all_tests, m.pytest,
                                            args.pytest, args.pytest_timeout)
            finally:
                with open(where, "w") as f:
                    f.write(original)
            status, failed = results[m.name]
            print(f"{m.name:28} {status:9} {time.monotonic() - t0:5.0f} s  {os.path.basename(where)}  "
                  f"{', '.join(failed[:6])}", flush=True)
    finally:
        # The build dir and the extension hold the last mutant's code: rebuild clean.
        run(["meson", "compile", "-C", build], timeout=900)
        if any(m.pytest for m in chosen) or args.pytest:
            build_extension()
    if dirty_sources():
        print("WARNING: libasyncload/src differs from git after the run", file=sys.stderr)
        return 2

    judged = [r for r in results.values() if r[0] in ("killed", "survived")]
    killed = sum(1 for r in judged if r[0] == "killed")
    print(f"\nkilled {killed} of {len(judged)} mutants"
          + (f" ({100 * killed / len(judged):.0f}%)" if judged else ""))
    for name, (status, _) in results.items():
        if status != "killed":
            desc = next(m.desc for m in chosen if m.name == name)
            print(f"  {status}: {name}: {desc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
