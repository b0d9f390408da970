"""The doc test: README.md and docs/*.md must stay true as the code changes.

Runs every ```python and ```c block and every ```sh block marked to run (in a
temporary folder holding a few sample files), checks that every block that is
not run says why (``<!-- doctest: skip (reason) -->`` on the line before it),
that the C example is examples/hello.c, that the option list of
docs/c-library.md is the generated one, that the test ids docs/reliability.md
names exist, that the figures quoted in the prose of docs/benchmarks.md come
from its own tables, and that no text speaks of the project's internal
bookkeeping.

Directives (an HTML comment on the line right before a fence):
  skip (reason)         not run; the reason is required
  run (note)            a ```sh block that is safe and fast: run it
  with-loader (note)    a ```python block that continues an example: run it
                        with ``loader`` (1 worker, depth 8), its worker ``w``
                        and an empty dict ``out`` made first
A ```python or ```c block without a directive runs as it stands; a ```sh
block needs one (commands may install or take minutes).
"""

from __future__ import annotations

import ast
import glob
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap
from decimal import Decimal
from typing import Dict, Iterator, List, NamedTuple, Optional, Set, Tuple

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCS = ["README.md"] + sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))
DIRECTIVE = re.compile(r"^<!-- doctest: (skip|run|with-loader)(?: \((.+)\))? -->$")

pytestmark = pytest.mark.deadline(120)


class Block(NamedTuple):
    doc: str
    line: int           # 1-based line of the opening fence
    lang: str
    code: str
    directive: Optional[str]
    reason: Optional[str]

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}:{self.lang}"


def blocks(doc: str) -> Iterator[Block]:
    lines = (ROOT / doc).read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^```(\S*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        lang = {"bash": "sh", "shell": "sh", "console": "sh"}.get(m.group(1), m.group(1))
        start = i
        j = i + 1
        while j < len(lines) and lines[j].rstrip() != "```":
            j += 1
        prev = lines[start - 1].strip() if start > 0 else ""
        d = DIRECTIVE.match(prev)
        yield Block(doc, start + 1, lang, "\n".join(lines[start + 1:j]) + "\n",
                    d.group(1) if d else None, d.group(2) if d else None)
        i = j + 1


ALL_BLOCKS = [b for doc in DOCS for b in blocks(doc)]
RUNNABLE = [b for b in ALL_BLOCKS if (b.lang in ("python", "c") and b.directive != "skip")
            or (b.lang == "sh" and b.directive == "run")]


# -- the files an example may use ----------------------------------------

def _sample_dir(tmp: pathlib.Path) -> pathlib.Path:
    """A working folder with the files the examples name."""
    import random
    rng = random.Random(18)
    (tmp / "data").mkdir()
    for i in range(6):
        (tmp / "data" / f"img{i}.JPEG").write_bytes(rng.randbytes(rng.randrange(100, 50_000)))
    (tmp / "img.JPEG").write_bytes(rng.randbytes(3000))
    (tmp / "a.bin").write_bytes(rng.randbytes(1000))
    (tmp / "shard.tar").write_bytes(rng.randbytes(8192))
    (tmp / "notes.txt").write_text("line one\nline two\n")
    return tmp


def _env() -> Dict[str, str]:
    """This tree's package first; `python3` is the interpreter running the tests."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT / "python")] + [p for p in sys.path if p]))
    bindir = pathlib.Path(sys.executable).parent
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    return env


def _build_dir() -> pathlib.Path:
    """The meson build folder (CI: build/, made by `make test-c` before pytest)."""
    cands = [os.environ.get("ASYNCLOAD_BUILD_DIR", "")] + ["build", "build-h", "builddir"]
    for c in cands:
        if c and (ROOT / c / "build.ninja").exists() and glob.glob(str(ROOT / c / "libasyncload.so*")):
            return ROOT / c
    pytest.fail("no meson build folder with libasyncload.so (run `make build`, or set "
                "ASYNCLOAD_BUILD_DIR): the C examples are compiled against it")


WITH_LOADER_PRE = """\
import asyncload
loader = asyncload.Loader(queue_depth=8, max_file_size=1 << 20, n_workers=1)
loader.spawn_loader()
w = loader.get_worker_context(0)
out = {}
"""
WITH_LOADER_POST = """\
w.close()
loader.close()
"""


def _run(cmd: List[str], cwd: pathlib.Path, what: str, timeout: float = 45) -> str:
    res = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True,
                         timeout=timeout)
    assert res.returncode == 0, (f"{what} failed with status {res.returncode}\n"
                                 f"stdout:\n{res.stdout}\nstderr:\n{res.stderr}")
    return res.stdout


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.id for b in RUNNABLE])
def test_block_runs(block: Block, tmp_path: pathlib.Path) -> None:
    cwd = _sample_dir(tmp_path)
    if block.lang == "python":
        code = block.code
        if block.directive == "with-loader":
            code = WITH_LOADER_PRE + code + WITH_LOADER_POST
        (cwd / "example.py").write_text(code)
        res = subprocess.run([sys.executable, "example.py"], cwd=cwd, env=_env(),
                             capture_output=True, text=True, timeout=45)
        # worker processes' tracebacks do not change the parent's status
        assert res.returncode == 0 and "Traceback" not in res.stderr, (
            f"{block.id} failed with status {res.returncode}\nstdout:\n{res.stdout}\n"
            f"stderr:\n{res.stderr}")
    elif block.lang == "c":
        build = _build_dir()
        (cwd / "example.c").write_text(block.code)
        cc = os.environ.get("CC", "cc")
        _run([cc, "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-o", "example", "example.c",
              f"-I{ROOT / 'libasyncload' / 'include'}", f"-L{build}", "-lasyncload",
              f"-Wl,-rpath,{build}", "-pthread"], cwd, f"compiling {block.id}")
        # a C example loads the files named on its command line
        out = _run(["./example", "a.bin", "notes.txt"], cwd, block.id)
        assert "a.bin" in out and "notes.txt" in out, out
    else:
        assert block.directive == "run"
        (cwd / "build").symlink_to(_build_dir())
        _run(["bash", "-euo", "pipefail", "-c", block.code], cwd, block.id)


def test_every_block_is_run_or_says_why_not() -> None:
    problems = []
    for b in ALL_BLOCKS:
        if b.directive == "skip" and not (b.reason and b.reason.strip()):
            problems.append(f"{b.id}: skip without a reason")
        if b.lang == "sh" and b.directive is None:
            problems.append(f"{b.id}: a sh block needs <!-- doctest: run (...) --> or "
                            "<!-- doctest: skip (reason) -->")
        if b.directive == "with-loader" and b.lang != "python":
            problems.append(f"{b.id}: with-loader is for python blocks")
    # a directive must sit right before a fence, or it silently does nothing
    for doc in DOCS:
        lines = (ROOT / doc).read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines):
            if line.startswith("<!-- doctest:"):
                if not DIRECTIVE.match(line.strip()):
                    problems.append(f"{doc}:{n + 1}: malformed directive {line!r}")
                elif n + 1 >= len(lines) or not lines[n + 1].startswith("```"):
                    problems.append(f"{doc}:{n + 1}: directive not followed by a code block")
    assert not problems, "\n".join(problems)
    # the doc test must actually cover something of each kind
    langs = {b.lang for b in RUNNABLE}
    assert {"python", "c", "sh"} <= langs, langs


def test_readme_c_example_is_examples_hello() -> None:
    c_blocks = [b for b in blocks("README.md") if b.lang == "c"]
    assert len(c_blocks) == 1
    assert c_blocks[0].code == (ROOT / "examples" / "hello.c").read_text(encoding="utf-8")


def test_option_list_is_generated_from_the_table() -> None:
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_options_doc.py"), "--check"],
                         env=_env(), capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    from asyncload import _options
    text = (ROOT / "docs" / "c-library.md").read_text(encoding="utf-8")
    block = text[text.index("<!-- options:begin -->"):text.index("<!-- options:end -->")]
    rows = re.findall(r"^\| `(\w+)` \|", block, re.M)
    assert rows == [o.name for o in _options.OPTIONS]


# -- words a reader of the project cannot follow ----------------------------

INTERNAL = [r"\bissue \d+", r"\bissue defines\b", r"\bthe lead\b", r"\binbox\b", r"SPEC\.md",
            r"\bdefect \d\b"]
# Text owned by others that still says so; each entry must still match (so
# it is dropped here when fixed there).
KNOWN_INTERNAL: Set[Tuple[str, str]] = set()


def test_no_project_internal_words() -> None:
    files = DOCS + [str(p.relative_to(ROOT)) for p in (ROOT / "python").rglob("*.py")]
    found: Set[Tuple[str, str]] = set()
    where = []
    for f in files:
        text = (ROOT / f).read_text(encoding="utf-8")
        for pat in INTERNAL:
            for m in re.finditer(pat, text, re.IGNORECASE):
                found.add((f, pat))
                if (f, pat) not in KNOWN_INTERNAL:
                    line = text.count("\n", 0, m.start()) + 1
                    where.append(f"{f}:{line}: {m.group(0)!r}")
    assert not where, "\n".join(where)
    assert KNOWN_INTERNAL <= found, f"fixed, drop from KNOWN_INTERNAL: {KNOWN_INTERNAL - found}"


# -- test ids named in the docs --------------------------------------------

def _test_functions() -> Dict[str, pathlib.Path]:
    out = {}
    for p in (ROOT / "tests" / "python").glob("test_*.py"):
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                out[node.name] = p
    return out


def test_named_test_ids_exist() -> None:
    funcs = _test_functions()
    named: Dict[str, Set[str]] = {}
    for doc in DOCS:
        text = (ROOT / doc).read_text(encoding="utf-8")
        for m in re.finditer(r"`(?:[\w/.]*\.py::)?(test_\w+)(?:\[([^\]`]+)\])?`", text):
            named.setdefault(m.group(1), set())
            if m.group(2):
                named[m.group(1)].update(m.group(2).split(","))
        # test_x, test_y in one backtick pair lists
        for m in re.finditer(r"`test_[^`]*`", text):
            for name in re.findall(r"(?<![\w\[/])test_\w+(?![\w.])", m.group(0)):
                named.setdefault(name, set())
    missing = sorted(n for n in named if n not in funcs)
    assert not missing, f"named in the docs, no such test: {missing}"
    with_params = {n: ids for n, ids in named.items() if ids}
    files = sorted({str(funcs[n]) for n in with_params})
    res = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p",
                          "no:cacheprovider", *files], cwd=ROOT, env=_env(),
                         capture_output=True, text=True, timeout=60)
    collected = set(re.findall(r"::(test_\w+\[[^\]]+\])", res.stdout))
    bad = sorted(f"{n}[{i}]" for n, ids in with_params.items() for i in ids
                 if f"{n}[{i}]" not in collected)
    assert not bad, f"named in the docs, pytest has no such id: {bad}"


# -- figures in the prose of docs/benchmarks.md -----------------------------

# a figure with its unit; "~5 µs" and the "20" of "15–20 µs" are estimates, not table figures
FIGURE = re.compile(
    r"(?<![\w.,~–])(\d[\d,]*(?:\.\d+)?)(k)?\s*(×|files/s|GB/s|CPU s/GB|s/GB|µs|% of a core)")


def _table_numbers(text: str) -> List[Decimal]:
    nums = []
    for line in text.splitlines():
        if line.startswith("|"):
            for cell in line.strip("|").split("|"):
                for n in re.findall(r"\d[\d,]*(?:\.\d+)?", cell):
                    nums.append(Decimal(n.replace(",", "")))
    return nums


OTHER_RUNS = "<!-- figures: other runs"


def _prose(text: str) -> str:
    """What a reader takes as this run's figures: every paragraph but tables,
    code, the PyTorch section (its figures live in benchmarks-torch.md), the
    paragraphs marked as other runs', and remarks about the previous run."""
    text = text.split("## PyTorch DataLoader epochs")[0]
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    paras = [p for p in re.split(r"\n\s*\n", text)
             if not p.lstrip().startswith(("|", OTHER_RUNS))]
    text = "\n\n".join(paras)
    # parenthesised remarks about another run ("1.00 × in the previous run")
    return re.sub(r"\([^()]*(?:previous run|before)[^()]*\)", "", text)


def _matches(value: Decimal, places: int, unit: str, table: List[Decimal]) -> bool:
    half = Decimal(5) / (Decimal(10) ** (places + 1))
    for t in table:
        if abs(t - value) <= half:
            return True
        # a ratio quoted the other way round ("1.8 × plain reads" for 0.54)
        if unit == "×" and t != 0 and abs(1 / t - value) <= half:
            return True
    return False


def test_benchmark_prose_figures_come_from_the_tables() -> None:
    text = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    table = _table_numbers(text)
    checked = []
    bad = []
    for m in FIGURE.finditer(_prose(text)):
        raw, k, unit = m.groups()
        value = Decimal(raw.replace(",", ""))
        places = len(raw.split(".")[1]) if "." in raw else 0
        if k:
            value *= 1000
            places -= 3
        checked.append(m.group(0))
        if not _matches(value, places, unit, table):
            bad.append(m.group(0))
    assert len(checked) >= 20, checked  # the check must see the figures at all
    assert not bad, f"figures in the prose of docs/benchmarks.md not in its tables: {bad}"


def test_readme_benchmark_figures_come_from_benchmarks_md() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Benchmarks"):readme.index("## C library")]
    table = _table_numbers((ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8"))
    bad = []
    for line in section.splitlines():
        if line.startswith("|"):   # the README's own table: each cell in benchmarks.md's
            for n in re.findall(r"\d[\d,]*\.?\d*", line.split("|", 2)[2]):
                v = Decimal(n.replace(",", ""))
                places = len(n.split(".")[1]) if "." in n else 0
                if not _matches(v, places, "", table):
                    bad.append(n)
    for m in FIGURE.finditer(re.sub(r"```.*?```", "", section, flags=re.S)):
        raw, k, unit = m.groups()
        v = Decimal(raw.replace(",", ""))
        places = len(raw.split(".")[1]) if "." in raw else 0
        if not _matches(v, places, unit, table):
            bad.append(m.group(0))
    assert not bad, f"README benchmark figures not in docs/benchmarks.md's tables: {bad}"


def test_required_versions_are_one_truth() -> None:
    # liburing and meson versions the docs name are the ones the build asks for
    meson = (ROOT / "meson.build").read_text(encoding="utf-8")
    uring = re.search(r"liburing_min = '([\d.]+)'", meson).group(1)
    meson_min = re.search(r"meson_version: '>= ([\d.]+)'", meson).group(1)
    build_py = (ROOT / "python" / "asyncload" / "_build.py").read_text(encoding="utf-8")
    assert re.search(r'LIBURING_MIN = "([\d.]+)"', build_py).group(1) == uring
    seen_uring = seen_meson = 0
    for doc in DOCS:
        text = (ROOT / doc).read_text(encoding="utf-8")
        for v in re.findall(r"liburing ([\d.]+) or newer", text):
            assert v == uring, f"{doc} names liburing {v}, the build needs {uring}"
            seen_uring += 1
        for v in re.findall(r"meson\]?(?:\([^)]*\))? ([\d.]+) or newer", text):
            assert v == meson_min, f"{doc} names meson {v}, meson.build needs {meson_min}"
            seen_meson += 1
    assert seen_uring >= 2 and seen_meson >= 2, (seen_uring, seen_meson)
