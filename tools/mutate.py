#!/usr/bin/env python3
"""mutate.py - how strong are the C tests? Puts hand-written, plausible bugs
(mutants) into libasyncload's sources one at a time, rebuilds into a scratch
build directory, runs the C suite and says which mutants a test killed and
which survived.

Each mutant finds its code by searching every libasyncload/src/*.c and *.h
for its exact snippet, not by file name, so it keeps working while code moves
between files; a snippet found nowhere (or more than once) is reported as such
rather than guessed at. The sources are restored after every mutant (also on
Ctrl-C or an error), and the script refuses to start while they have
uncommitted changes, so that it never overwrites someone's work.

    python3 tools/mutate.py                 # every mutant, C suite
    python3 tools/mutate.py --list
    python3 tools/mutate.py -m gen-check -t stale_gen   # one mutant, one test
"""
from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import time
from typing import Dict, List, NamedTuple, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "libasyncload", "src")
# Tests too slow for a run per mutant, and that exercise the build, not the
# library's behaviour.
SKIP_TESTS = {"standalone-build"}


class Mutant(NamedTuple):
    name: str
    original: str
    mutated: str
    desc: str


MUTANTS: List[Mutant] = [
    Mutant("gen-check",
           "if (e->gen != w->gen) { /* a request of the slot's previous holder */",
           "if (0) { /* a request of the slot's previous holder */",
           "completions of a dead holder's requests reach the slot's next holder"),
    Mutant("no-wake-waiter",
           "if (atomic_load(&ws->waiters))\n\t\t\tal_futex_wake(&ws->cmp_tail, INT_MAX);",
           "if (0)\n\t\t\tal_futex_wake(&ws->cmp_tail, INT_MAX);",
           "the loader never wakes a worker sleeping in wait_get"),
    Mutant("no-direct-fallback",
           "if (r->err == -EINVAL && r->direct)\n\t\t\t\trestart_buffered(lp, idx);",
           "if (0 && r->err == -EINVAL && r->direct)\n\t\t\t\trestart_buffered(lp, idx);",
           "O_DIRECT refused at open (unconfined) is an error, no buffered fallback"),
    Mutant("no-direct-fallback-confined",
           "release_slot(lp, r->slot);\n\t\t\t\tr->slot = -1;\n\t\t\t\tif (res == -EINVAL && r->direct)",
           "release_slot(lp, r->slot);\n\t\t\t\tr->slot = -1;\n\t\t\t\tif (0 && res == -EINVAL && r->direct)",
           "O_DIRECT refused at openat2 (confined) is an error, no buffered fallback"),
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
           "bool eof = res == 0 || (r->direct && (uint64_t)res < r->last_ask);",
           "bool eof = r->direct && (uint64_t)res < r->last_ask;",
           "a 0-byte read is not taken as the end of the file"),
    Mutant("short-read-is-eof",
           "bool eof = res == 0 || (r->direct && (uint64_t)res < r->last_ask);",
           "bool eof = res == 0 || (uint64_t)res < r->last_ask;",
           "a short buffered read is taken as the end of the file"),
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
           "uint32_t held = AL_ENTRY_HELD;\n\t\tatomic_compare_exchange_strong(&e->state, &held, AL_ENTRY_FREE);\n\t}\n\tuint64_t deadline",
           "uint32_t held = AL_ENTRY_HELD;\n\t\t(void)held;\n\t}\n\tuint64_t deadline",
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


def run(cmd: List[str], timeout: Optional[float] = None) -> Tuple[int, str]:
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"") + (e.stderr or b"")
        return 124, out.decode(errors="replace") if isinstance(out, bytes) else out


def setup_build(build: str) -> None:
    if not os.path.exists(os.path.join(build, "build.ninja")):
        rc, out = run(["meson", "setup", build, "-Dtools=false"])
        if rc:
            rc, out = run(["meson", "setup", build])
        if rc:
            sys.exit(f"meson setup failed:\n{out}")


def suite_tests(build: str, only: Optional[List[str]]) -> List[str]:
    rc, out = run(["meson", "test", "-C", build, "--list"])
    if rc:
        sys.exit(f"meson test --list failed:\n{out}")
    # lines read "c - asyncload:NAME" (newer meson) or "asyncload:c / NAME"
    names = [line.replace(" / ", ":").split(":")[-1].strip() for line in out.splitlines()
             if ":" in line]
    names = [n for n in names if n not in SKIP_TESTS]
    if only:
        names = [n for n in names if n in only]
    return names


def test_once(build: str, tests: List[str], mult: float, jobs: int) -> Tuple[str, List[str]]:
    """('killed'|'survived'|'build failed', failing tests)."""
    rc, out = run(["meson", "compile", "-C", build], timeout=600)
    if rc:
        return "build failed", []
    rc, out = run(["meson", "test", "-C", build, "--no-rebuild", "--timeout-multiplier", str(mult),
                   "--num-processes", str(jobs)] + tests, timeout=3600)
    failed = []
    for line in out.splitlines():
        for word in ("FAIL", "TIMEOUT", "ERROR"):
            if f" {word} " in line and "asyncload:" in line:
                failed.append(line.split("asyncload:")[1].split()[0] + f" ({word.lower()})")
    if rc == 0:
        return "survived", []
    return "killed", failed or ["meson test failed"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--mutant", action="append", help="only these mutants (by name)")
    ap.add_argument("-t", "--test", action="append", help="only these C tests (meson names)")
    ap.add_argument("--build", default=os.path.join(ROOT, "build-mutate"),
                    help="scratch build directory (default build-mutate)")
    ap.add_argument("--timeout-multiplier", type=float, default=0.34,
                    help="of each test's meson timeout (30-90 s): a hang is a kill, found sooner")
    ap.add_argument("-j", "--jobs", type=int, default=2)
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()

    chosen = [m for m in MUTANTS if not args.mutant or m.name in args.mutant]
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
    tests = suite_tests(build, args.test)
    if not tests:
        sys.exit("no tests selected")
    print(f"{len(tests)} tests: {' '.join(tests)}", flush=True)
    t0 = time.monotonic()
    status, failed = test_once(build, tests, args.timeout_multiplier, args.jobs)
    print(f"unmutated: {status} in {time.monotonic() - t0:.0f} s", flush=True)
    if status != "survived":
        sys.exit(f"the unmutated suite does not pass ({status}: {', '.join(failed)}); fix that first")

    results: Dict[str, Tuple[str, List[str]]] = {}
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
            results[m.name] = test_once(build, tests, args.timeout_multiplier, args.jobs)
        finally:
            with open(where, "w") as f:
                f.write(original)
        status, failed = results[m.name]
        print(f"{m.name:28} {status:9} {time.monotonic() - t0:5.0f} s  {os.path.basename(where)}  "
              f"{', '.join(failed[:6])}", flush=True)
    # The build dir now holds the last mutant's objects: rebuild clean code.
    run(["meson", "compile", "-C", build], timeout=600)
    if dirty_sources():
        print("WARNING: libasyncload/src differs from git after the run", file=sys.stderr)
        return 2

    judged = [r for r in results.values() if r[0] in ("killed", "survived")]
    killed = sum(1 for r in judged if r[0] == "killed")
    print(f"\nkilled {killed} of {len(judged)} mutants"
          + (f" ({100 * killed / len(judged):.0f}%)" if judged else ""))
    for name, (status, _) in results.items():
        if status not in ("killed",):
            desc = next(m.desc for m in MUTANTS if m.name == name)
            print(f"  {status}: {name}: {desc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
