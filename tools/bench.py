#!/usr/bin/env python3
"""The asyncload benchmark: every way we know to get files into Python, on one shuffled list.

    python3 tools/bench.py            # 20,000 files (2.2 GB), cold and warm; also `make bench`
    python3 tools/bench.py --quick    # 2,000 files, for development

Contenders, all reading the same shuffled list in the same run:
  python-seq        open(p, 'rb').read() in a loop
  threads-T         ThreadPoolExecutor(T).map(read, ...) for T in --threads (best one is reported)
  procs-N           N multiprocessing readers, each reading its share (DataLoader-style workers)
  asyncload-qdQ     N worker processes, each keeping Q requests in flight through the Python API
  asyncload-proto   prototype-era settings: dispatch_n=8, idle_iters=100
  asyncload-direct  direct=True (O_DIRECT)
  ceiling-d1-statx  diagnostic: the ceiling with a STATX before each open, as the loader does
  ceiling-dD[-tT]   tools/uring_ceiling.c: C + io_uring, no IPC, no Python, queue depth D,
                    T threads with a ring each (one thread is capped by one core's memcpy when
                    the data is cached; T = --procs gives it the cores asyncload's workers get)

Cold runs drop the page cache before each contender; warm runs read every file first. Each
contender runs in a fresh child process, so peak RSS and CPU belong to it alone. Times cover only
the reading: starting processes and the loader happen before the clock starts, as they do once per
training job. CPU time is measured per process over that window (getrusage for Python processes,
/proc/<pid>/stat for the loader) and summed; memory is the peak of the summed Pss of every process
(Pss shares each shared-memory page among the processes mapping it, so nothing counts twice).

Writes bench-out/bench.json, bench-out/bench.md (tables) and bench-out/bench.png (chart), and
prints the tables. Ratios are always between rows of the same run.
"""

import argparse
import json
import os
import platform
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

MiB = 1 << 20

from asyncload._contenders import (PageCache, cpu_self, proc_cpu, pss_kb,  # noqa: E402
                                   read_file, run_parallel, run_seq, run_threads, status_kb)


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# measuring processes

def proc_runtime_ns(pid):
    """CPU time of the live threads of a process in ns (schedstat: finer than clock ticks)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError):
            pass
    return total


class MemSampler(threading.Thread):
    """Samples the summed Pss of a contender's processes every 20 ms; keeps the peak.

    The child names its processes in a file once they exist (pids_path); a pid can also be given
    up front (the C ceiling)."""

    def __init__(self, pids_path=None, pid=None):
        super().__init__(daemon=True)
        self.pids_path, self.pids = pids_path, [pid] if pid else []
        self.peak_kb = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            if self.pids_path and os.path.exists(self.pids_path):
                try:
                    with open(self.pids_path) as f:
                        self.pids = [int(x) for x in f.read().split()]
                except (OSError, ValueError):
                    pass
            if self.pids:
                self.peak_kb = max(self.peak_kb, sum(pss_kb(p) for p in self.pids))
            self.stop.wait(0.02)


# --------------------------------------------------------------------------------------------
# contenders: these run in a child process (bench.py --child SPEC)

# The contender runners are asyncload._contenders', shared with `asyncload bench`.

def idle_probe(seconds):
    """CPU of a loader that has nothing to do, as % of one core."""
    import asyncload
    loader = asyncload.Loader(64, 64 * MiB, 2)
    pid = loader.spawn_loader()
    time.sleep(0.2)     # let start-up finish
    ns0, t0, s0 = proc_runtime_ns(pid), time.perf_counter(), proc_cpu(pid)
    time.sleep(seconds)
    ns1, t1, s1 = proc_runtime_ns(pid), time.perf_counter(), proc_cpu(pid)
    loader.shutdown()
    loader.close()
    return dict(seconds=t1 - t0, cpu_s=(ns1 - ns0) / 1e9, pct_core=100 * (ns1 - ns0) / 1e9 / (t1 - t0),
                stat_cpu_s=s1 - s0)


def child_main(spec):
    with open(spec["list_path"]) as f:
        paths = f.read().splitlines()
    kind = spec["kind"]
    if kind == "idle":
        out = idle_probe(spec["seconds"])
    elif kind == "seq":
        out = run_seq(paths, spec)
    elif kind == "threads":
        out = run_threads(paths, spec)
    else:
        out = run_parallel(paths, spec)
    out["hwm_kb"] = status_kb(os.getpid(), "VmHWM")
    print(json.dumps(out), flush=True)


# --------------------------------------------------------------------------------------------
# the parent: cache control, the C ceiling, orchestration, report

def build_tool(out_dir, name, libs, why_not=""):
    """Compiles tools/NAME.c with -O2 into out_dir (rebuilt when the source changes) and
    returns its path, or None (logged) if it does not build. Always our own optimised build,
    never one from a build*/ folder: build-san's is instrumented and would lower a baseline."""
    src = os.path.join(HERE, name + ".c")
    exe = os.path.join(out_dir, name)
    if os.path.exists(exe) and os.path.getmtime(exe) >= os.path.getmtime(src):
        return exe
    cc = os.environ.get("CC", "cc")
    r = subprocess.run([cc, "-O2", "-Wall", "-o", exe, src, *libs], capture_output=True,
                       text=True)
    if r.returncode:
        log(f"cannot build {name}{why_not}:\n{r.stderr.strip()}")
        return None
    return exe


def build_ceiling(out_dir):
    """The C io_uring ceiling, tools/uring_ceiling.c, built into out_dir."""
    return build_tool(out_dir, "uring_ceiling", ["-luring", "-lpthread"],
                      " (the C ceiling; is liburing installed?)")


class Cache(PageCache):
    """asyncload._contenders.PageCache (fadvise per file, plus drop_caches=2 as root), filling
    the cache with the C ceiling when it is built (faster than Python on 20,000 files)."""

    def __init__(self, paths, ceiling=None, method="auto"):
        super().__init__(paths, method)
        self.ceiling = ceiling

    def fill(self, list_path=None, max_size=0):
        if self.ceiling and list_path:
            subprocess.run([self.ceiling, "-q", "-d", "1", "-m", str(max_size), list_path],
                           check=True, stdout=subprocess.DEVNULL)
        else:
            super().fill()


def run_child(spec, out_dir, timeout, sample_memory=True):
    """Runs one contender in a child process; its result, with the peak Pss unless
    sample_memory is False (reading smaps every 20 ms costs CPU the contender then lacks,
    which matters where the machine's CPU is what runs out)."""
    spec = dict(spec, pids_path=os.path.join(out_dir, f"pids.{os.getpid()}"))
    try:
        os.unlink(spec["pids_path"])
    except FileNotFoundError:
        pass
    sampler = MemSampler(pids_path=spec["pids_path"])
    if sample_memory:
        sampler.start()
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, 9)     # the child's own session: its workers and its loader
        p.communicate()
        out, err = "", f"timed out after {timeout} s"
    sampler.stop.set()
    if sample_memory:
        sampler.join()
    for leftover in (spec["pids_path"], spec["pids_path"] + ".tmp"):
        try:
            os.unlink(leftover)
        except FileNotFoundError:
            pass
    lines = out.strip().splitlines()
    if p.returncode or not lines:
        raise RuntimeError(err.strip()[-2000:] or f"exit status {p.returncode}")
    res = json.loads(lines[-1])
    res["peak_pss_kb"] = max(sampler.peak_kb, res.get("end_pss_kb", 0))
    return res


def run_ceiling(exe, depth, threads, list_path, max_size, timeout, flags=()):
    p = subprocess.Popen([exe, "-q", "-d", str(depth), "-t", str(threads), "-m", str(max_size),
                          *flags, list_path],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = MemSampler(pid=p.pid)
    sampler.start()
    timer = threading.Timer(timeout, p.kill)
    timer.start()
    # wait4 gives this process's own rusage; Popen.wait would throw it away
    _, status, ru = os.wait4(p.pid, 0)
    timer.cancel()
    p.returncode = os.waitstatus_to_exitcode(status)
    out, err = p.stdout.read(), p.stderr.read()
    sampler.stop.set()
    sampler.join()
    if p.returncode:
        raise RuntimeError(err.strip()[-2000:] or f"exit status {p.returncode}")
    r = json.loads(out)
    return dict(bytes=r["bytes"], files=r["files"], errors=r["errors"], wall=r["seconds"],
                cpu=ru.ru_utime + ru.ru_stime, hwm_kb=ru.ru_maxrss,
                peak_pss_kb=max(sampler.peak_kb, 0))


def contenders(args, have_asyncload, have_ceiling):
    out = [dict(name="python-seq", kind="seq", group="python")]
    for t in args.threads:
        out.append(dict(name=f"threads-{t}", kind="threads", threads=t, group="threads"))
    out.append(dict(name=f"procs-{args.procs}", kind="procs", procs=args.procs, group="python"))
    if have_asyncload:
        base = dict(kind="asyncload", procs=args.procs, max_file_size=args.max_file_size,
                    group="asyncload")
        for q in args.depths:
            out.append(dict(base, name=f"asyncload-qd{q}", qd=q))
        q = max(args.depths)
        # the thread engine (what runs where io_uring is refused), same depth
        out.append(dict(base, name=f"asyncload-threads-qd{q}", qd=q, engine="threads"))
        out.append(dict(base, name=f"asyncload-proto", qd=q, dispatch_n=8, idle_iters=100,
                        group="asyncload-extra"))
        out.append(dict(base, name=f"asyncload-direct", qd=q, direct=True,
                        group="asyncload-extra"))
    if have_ceiling:
        for t in sorted({1, args.procs}):
            for d in sorted({1, *args.depths}):
                out.append(dict(name=f"ceiling-d{d}" + (f"-t{t}" if t > 1 else ""),
                                kind="ceiling", depth=d, threads=t, group="ceiling"))
        # diagnostic, not a ceiling: what a STATX before every open costs (the loader does one)
        out.append(dict(name="ceiling-d1-statx", kind="ceiling", depth=1, threads=1,
                        flags=["-s"], group="ceiling-diag"))
    if args.only:
        rx = re.compile(args.only)
        out = [c for c in out if rx.search(c["name"])]
    return out


def asyncload_importable():
    r = subprocess.run([sys.executable, "-c", "import asyncload; asyncload.Loader"],
                       capture_output=True, text=True)
    if r.returncode:
        log("asyncload is not importable, its rows are skipped: "
            + (r.stderr.strip().splitlines() or ["?"])[-1])
    return r.returncode == 0


def machine_info(data_dir):
    info = dict(nproc=os.cpu_count(), kernel=platform.release(), python=platform.python_version())
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((l.split(":", 1)[1].strip() for l in f
                                if l.startswith("model name")), "?")
        with open("/proc/meminfo") as f:
            info["mem_gib"] = round(int(f.readline().split()[1]) / (1 << 20), 1)
    except OSError:
        pass
    try:
        st = os.stat(data_dir)
        dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
        blk = os.path.realpath(f"/sys/dev/block/{dev}")
        disk = os.path.basename(blk)
        if os.path.exists(os.path.join(blk, "partition")):
            disk = os.path.basename(os.path.dirname(blk))
        q = f"/sys/block/{disk}/queue"
        rot = open(f"{q}/rotational").read().strip()
        sched = re.search(r"\[(\S+)\]", open(f"{q}/scheduler").read())
        drv = os.path.basename(os.path.realpath(f"/sys/block/{disk}/device/driver"))
        model = ""
        for m in ("device/model", "device/name"):
            if os.path.exists(f"/sys/block/{disk}/{m}"):
                model = open(f"/sys/block/{disk}/{m}").read().strip()
        info["disk"] = (f"{disk} ({model or drv}, {'rotational' if rot == '1' else 'non-rotational'}"
                        f" flag, scheduler {sched.group(1) if sched else '?'})")
        fs = subprocess.run(["findmnt", "-no", "FSTYPE", "-T", data_dir], capture_output=True,
                            text=True).stdout.strip()
        info["fs"] = fs or "?"
    except (OSError, AttributeError):
        pass
    return info


def summarize(results):
    """Median of each metric over the repeats, per (mode, contender)."""
    summary = {}
    for (mode, name), rs in results.items():
        ok = [r for r in rs if "error" not in r]
        if not ok:
            summary.setdefault(mode, {})[name] = dict(error=rs[-1]["error"])
            continue
        med = lambda k: statistics.median(r[k] for r in ok)
        s = dict(group=ok[0]["group"], wall=med("wall"), files=ok[0]["files"],
                 bytes=ok[0]["bytes"], errors=max(r["errors"] for r in ok), repeats=len(ok))
        s["files_s"] = statistics.median(r["files"] / r["wall"] for r in ok)
        s["gb_s"] = statistics.median(r["bytes"] / r["wall"] / 1e9 for r in ok)
        s["cpu_s"] = med("cpu")
        s["cpu_s_per_gb"] = statistics.median(r["cpu"] / (r["bytes"] / 1e9) for r in ok)
        s["peak_mem_mb"] = statistics.median(r["peak_pss_kb"] for r in ok) / 1024
        for k in ("loader_cpu", "loader_shmem_kb", "loader_hwm_kb"):
            if k in ok[0]:
                s[k] = med(k)
        summary.setdefault(mode, {})[name] = s
    return summary


def best(rows, pred):
    cands = [(n, s) for n, s in rows.items() if "error" not in s and pred(n, s)]
    return max(cands, key=lambda x: x[1]["files_s"]) if cands else (None, None)


def repeat_ratios(results, mode, a_name, b_name, key="files_s"):
    """a ÷ b within each repeat (a repeat runs every contender back to back, so this cancels
    the machine's drift between repeats), as text: "0.81, 0.86, 0.84 (median 0.84)"."""
    def per(name):
        return {r["repeat"]: (r["files"] / r["wall"] if key == "files_s" else r["cpu"] / r["files"])
                for r in results.get((mode, name), []) if "error" not in r}
    a, b = per(a_name), per(b_name)
    rs = [a[k] / b[k] for k in sorted(a) if k in b and b[k]]
    if len(rs) < 2:
        return ""
    return ", ".join(f"{x:.2f}" for x in rs) + f" (median {statistics.median(rs):.2f})"


def evaluate(summary, ref, idle, cfg, results=None):
    """The issue's targets, each with the figures behind it; with the runs (results), the
    ratios against the best Python reader also repeat by repeat."""
    targets = []
    results = results or {}

    def add(what, value, goal, met, detail):
        targets.append(dict(target=what, value=value, goal=goal, met=met, detail=detail))

    for mode, need_ceiling, need_python in (("cold", 0.9, 1.3), ("warm", 0.7, 1.0)):
        rows = summary.get(mode, {})
        a = rows.get(ref)
        if not a or "error" in a:
            continue
        # the ceiling is one ring (one thread); a ring per core is stricter when the data
        # is cached, since one thread's memcpy caps a single ring: both are shown
        cn, c = best(rows, lambda n, s: s["group"] == "ceiling" and "-t" not in n)
        if c:
            r = a["files_s"] / c["files_s"]
            add(f"{mode}: {ref} vs the C ceiling (one ring)", round(r, 3), f">= {need_ceiling}",
                r >= need_ceiling, f"best one-ring row {cn}")
        tn, t = best(rows, lambda n, s: s["group"] == "ceiling" and "-t" in n)
        if t:
            r = a["files_s"] / t["files_s"]
            add(f"{mode}: {ref} vs the C ceiling with a ring per core (stricter)", round(r, 3),
                f">= {need_ceiling}", r >= need_ceiling, f"best row {tn}")
        pn, p = best(rows, lambda n, s: s["group"] in ("python", "threads"))
        if p:
            r = a["files_s"] / p["files_s"]
            each = repeat_ratios(results, mode, ref, pn)
            add(f"{mode}: {ref} vs the best Python reader", round(r, 3), f">= {need_python}",
                r >= need_python, f"best Python row {pn}" + (f"; each repeat {each}" if each else ""))
            if mode == "warm":
                # CPU per file: every contender reads the same files, so CPU s/GB compares it
                r = a["cpu_s_per_gb"] / p["cpu_s_per_gb"]
                each = repeat_ratios(results, mode, ref, pn, key="cpu_per_file")
                add(f"warm: CPU per file at most the best Python reader's ({pn})", round(r, 3),
                    "<= 1.0", r <= 1.0, f"{ref} ÷ {pn}" + (f"; each repeat {each}" if each else ""))
        if mode == "warm" and "python-seq" in rows and "error" not in rows["python-seq"]:
            r = a["files_s"] / rows["python-seq"]["files_s"]
            add("warm: never slower than plain reads", round(r, 3), ">= 1.0", r >= 1.0,
                "vs python-seq")
        tn, t = best(rows, lambda n, s: s["group"] == "threads")
        if t:
            add(f"{mode}: CPU s/GB below the thread pool's", round(a["cpu_s_per_gb"], 3),
                f"< {t['cpu_s_per_gb']:.3f} ({tn})", a["cpu_s_per_gb"] < t["cpu_s_per_gb"], "")
    if idle and "pct_core" in idle:
        add("idle loader CPU (% of a core)", round(idle["pct_core"], 3), "< 1",
            idle["pct_core"] < 1, f"over {idle['seconds']:.1f} s")
    for mode in ("cold", "warm"):
        a = summary.get(mode, {}).get(ref)
        if a and "loader_shmem_kb" in a:
            worst = cfg["procs"] * cfg["qd"] * cfg["max_file_size"]
            bound = cfg["procs"] * cfg["qd"] * cfg["largest_file"]
            mb = a["loader_shmem_kb"] / 1024
            add(f"{mode}: committed shared memory follows the bytes in flight", round(mb, 1),
                f"<= {bound / MiB:.0f} MB (workers x qd x largest file), not {worst / MiB:.0f} MB",
                mb * MiB <= bound * 1.05, "loader RssShmem after the run")
            break
    return targets


def fmt_table(summary, ref, modes):
    lines = []
    for mode in modes:
        rows = summary.get(mode)
        if not rows:
            continue
        a = rows.get(ref)
        lines.append(f"\n**{mode}** (ratio = files/s ÷ {ref})\n")
        lines.append("| contender | files/s | GB/s | ratio | CPU s/GB | CPU µs/file | peak mem MB "
                     "| errors |")
        lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, s in rows.items():
            if "error" in s:
                lines.append(f"| {name} | failed: {s['error'].splitlines()[-1][:80]} | | | | | | |")
                continue
            ratio = (f"{s['files_s'] / a['files_s']:.2f}" if a and "error" not in a else "-")
            shown = f"**{name}**" if name == ref else name
            lines.append(f"| {shown} | {s['files_s']:,.0f} | {s['gb_s']:.2f} | {ratio} | "
                         f"{s['cpu_s_per_gb']:.2f} | {1e6 * s['cpu_s'] / s['files']:.0f} | "
                         f"{s['peak_mem_mb']:.0f} | {s['errors']} |")
    return "\n".join(lines)


def fmt_targets(targets):
    lines = ["| target | value | goal | met |", "| --- | ---: | --- | --- |"]
    for t in targets:
        extra = f" ({t['detail']})" if t["detail"] else ""
        lines.append(f"| {t['target']}{extra} | {t['value']} | {t['goal']} | "
                     f"{'met' if t['met'] else '**missed**'} |")
    return "\n".join(lines)


def chart(summary, ref, modes, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = []
    for mode in modes:
        for n, s in summary.get(mode, {}).items():
            if n not in names and "error" not in s:
                names.append(n)
    if not names:
        return
    colors = {"cold": "#3b75af", "warm": "#ef8636"}
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.42 * len(names) + 1.8),
                             gridspec_kw=dict(width_ratios=[3, 2]))
    h = 0.8 / max(1, len(modes))
    for ax, key, label in ((axes[0], "gb_s", "GB/s (higher is better)"),
                           (axes[1], "cpu_s_per_gb", "CPU seconds per GB (lower is better)")):
        for k, mode in enumerate(modes):
            rows = summary.get(mode, {})
            ys = [i + (k - (len(modes) - 1) / 2) * h for i in range(len(names))]
            vals = [rows[n][key] if n in rows and "error" not in rows[n] else 0 for n in names]
            bars = ax.barh(ys, vals, height=h, color=colors.get(mode), label=mode)
            for b, v in zip(bars, vals):
                if v:
                    ax.text(b.get_width(), b.get_y() + b.get_height() / 2, f" {v:.2f}",
                            va="center", fontsize=8)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names)
        for t in ax.get_yticklabels():
            if t.get_text().startswith("asyncload"):
                t.set_fontweight("bold")
        ax.invert_yaxis()
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3)
        ax.margins(x=0.15)
    axes[0].legend(loc="lower right")
    axes[1].set_yticklabels([])
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="dataset folder (default data/bench-N, made if missing)")
    ap.add_argument("--n", type=int, default=20000, help="files in the dataset (default 20000)")
    ap.add_argument("--quick", action="store_true", help="2,000 files (same as --n 2000)")
    ap.add_argument("--seed", type=int, default=0, help="dataset and shuffle seed")
    ap.add_argument("--repeat", type=int, default=1, help="runs; the report shows medians")
    ap.add_argument("--modes", default="cold,warm", help="cold, warm or both (default)")
    ap.add_argument("--threads", default="2,4,8,16", help="thread counts (default 2,4,8,16)")
    ap.add_argument("--procs", type=int, default=2, help="worker processes (default 2)")
    ap.add_argument("--depths", default="32,64", help="asyncload/ceiling queue depths")
    ap.add_argument("--max-file-size", type=int, default=64 * MiB,
                    help="asyncload max_file_size (default 64 MiB, the library default)")
    ap.add_argument("--ref", help="the asyncload row others are compared to "
                                  "(default asyncload-qd<largest depth>)")
    ap.add_argument("--only", help="regex: run only matching contenders")
    ap.add_argument("--idle-seconds", type=float, default=2.0, help="idle loader probe length")
    ap.add_argument("--timeout", type=int, default=600, help="per contender, seconds")
    ap.add_argument("--out", default=os.path.join(REPO, "bench-out"), help="output folder")
    ap.add_argument("--json", help="JSON report path (default OUT/bench.json)")
    ap.add_argument("--png", help="chart path (default OUT/bench.png)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child_main(json.loads(args.child))

    import make_dataset
    if args.quick:
        args.n = 2000
    args.threads = [int(x) for x in args.threads.split(",") if x]
    args.depths = [int(x) for x in args.depths.split(",") if x]
    modes = [m for m in args.modes.split(",") if m]
    if not set(modes) <= {"cold", "warm"}:
        ap.error("--modes takes cold and/or warm")
    ref = args.ref or f"asyncload-qd{max(args.depths)}"
    data = args.data or os.path.join(REPO, "data", f"bench-{args.n}")
    os.makedirs(args.out, exist_ok=True)
    json_path = args.json or os.path.join(args.out, "bench.json")
    png_path = args.png or os.path.join(args.out, "bench.png")
    t_start = time.monotonic()

    load = os.getloadavg()[0]
    if load > 0.5 * (os.cpu_count() or 1):
        # other work on the machine takes cores from every contender unevenly: say so
        log(f"WARNING: load average {load:.1f} on {os.cpu_count()} cores; figures will be noisy")
    log(f"dataset {data} ({args.n} files, seed {args.seed})")
    manifest = make_dataset.make(data, args.n, args.seed)
    paths = [os.path.join(data, rel) for rel, _ in manifest["files"]]
    # the ceiling's buffer must exceed the largest file, or that read counts as an error
    ceil_max = (manifest["max_bytes"] + 4096) & ~4095
    ceiling = build_ceiling(args.out)
    have_asyncload = asyncload_importable()
    cache = Cache(paths, ceiling)
    log(f"cold runs drop the page cache with {cache.method}")
    plan = contenders(args, have_asyncload, ceiling is not None)
    if ref not in [c["name"] for c in plan]:
        log(f"reference row {ref} is not in this run: ratios are left out")
    list_path = os.path.join(args.out, "list.txt")
    results = {}
    total = args.repeat * len(modes) * len(plan)
    step = 0
    for rep in range(args.repeat):
        order = paths[:]
        random.Random(args.seed * 7919 + rep).shuffle(order)
        with open(list_path, "w") as f:
            f.write("\n".join(order) + "\n")
        for mode in modes:
            for c in plan:
                step += 1
                if mode == "cold":
                    cache.drop()
                else:
                    cache.fill(list_path, ceil_max)
                try:
                    if c["kind"] == "ceiling":
                        r = run_ceiling(ceiling, c["depth"], c["threads"], list_path, ceil_max,
                                        args.timeout, c.get("flags", ()))
                    else:
                        r = run_child(dict(c, list_path=list_path), args.out, args.timeout)
                    if r["bytes"] != manifest["total_bytes"] and not r["errors"]:
                        r["errors"] = 1
                        log(f"  {c['name']} read {r['bytes']} bytes, expected "
                            f"{manifest['total_bytes']}")
                    r["group"] = c["group"]
                    log(f"[{step}/{total}] {mode} {c['name']:18s} {r['files'] / r['wall']:9,.0f} "
                        f"files/s {r['bytes'] / r['wall'] / 1e9:6.2f} GB/s  cpu "
                        f"{r['cpu']:.2f} s  mem {r['peak_pss_kb'] / 1024:.0f} MB")
                except Exception as e:       # one broken contender must not sink the run
                    r = dict(error=str(e), group=c["group"])
                    log(f"[{step}/{total}] {mode} {c['name']}: FAILED: {str(e)[-300:]}")
                results.setdefault((mode, c["name"]), []).append(dict(r, repeat=rep))

    idle = None
    if have_asyncload:
        log(f"idle loader probe ({args.idle_seconds} s)")
        try:
            idle = run_child(dict(kind="idle", seconds=args.idle_seconds, list_path=list_path),
                             args.out, args.timeout)
        except Exception as e:
            idle = dict(error=str(e))
            log(f"idle probe FAILED: {e}")

    summary = summarize(results)
    cfg = dict(procs=args.procs, qd=max(args.depths), max_file_size=args.max_file_size,
               largest_file=manifest["max_bytes"])
    targets = evaluate(summary, ref, idle, cfg, results)
    command = "python3 tools/bench.py " + " ".join(sys.argv[1:])
    info = machine_info(data)
    info.update(loadavg_at_start=round(load, 2), loadavg_at_end=round(os.getloadavg()[0], 2))
    wall = time.monotonic() - t_start
    report = dict(command=command.strip(), machine=info, cache_drop=cache.method,
                  dataset=dict(path=data, n=args.n, seed=args.seed,
                               total_bytes=manifest["total_bytes"],
                               mean_bytes=manifest["mean_bytes"], min_bytes=manifest["min_bytes"],
                               max_bytes=manifest["max_bytes"]),
                  settings=dict(procs=args.procs, threads=args.threads, depths=args.depths,
                                max_file_size=args.max_file_size, repeat=args.repeat, ref=ref),
                  summary=summary, targets=targets, idle_loader=idle, wall_s=wall,
                  runs=[dict(mode=m, name=n, **r) for (m, n), rs in results.items() for r in rs])
    with open(json_path, "w") as f:
        json.dump(report, f, indent=1)
    title = (f"{args.n} files, {manifest['total_bytes'] / 1e9:.2f} GB, {info.get('nproc')} cores, "
             f"kernel {info.get('kernel')}; median of {args.repeat}; cold = {cache.method}")
    try:
        chart(summary, ref, modes, png_path, title)
    except ImportError:
        log("matplotlib is missing (pip install matplotlib): no chart")
    md = [f"Command: `{report['command']}`  ", f"Dataset: {title}  ",
          "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()),
          fmt_table(summary, ref, modes)]
    if idle and "pct_core" in idle:
        md.append(f"\nIdle loader: {idle['pct_core']:.3f} % of a core over {idle['seconds']:.1f} s")
    if targets:
        md += ["", fmt_targets(targets)]
    md.append(f"\nWall time of the whole benchmark: {wall:.0f} s")
    text = "\n".join(md) + "\n"
    with open(os.path.join(args.out, "bench.md"), "w") as f:
        f.write(text)
    print(text)
    log(f"wrote {json_path}, {png_path}, {os.path.join(args.out, 'bench.md')} in {wall:.0f} s")


if __name__ == "__main__":
    main()
