# Makefile - one-word entry points for building and testing asyncload.
#   make setup     install system and Python dependencies (idempotent)
#   make build     configure + compile the C library, tools and C tests
#   make test-c    C tests, plain and under ASan+UBSan (build-san/)
#   make test-py   pytest suite
#   make test-py-threads  pytest again with io_uring disabled by the sysctl
#                  (root; restored afterwards): the thread engine's pass
#   make test      all of the above (this is what .ci/run and the README run)
#   make demo      a short demonstration through the Python package (installs only
#                  what the demo needs; `make` itself must be installed)
#   make bench     benchmarks (tools/bench.py)

PYTHON ?= python3
# meson/ninja come from pip; fall back to the module when the script is not on PATH
MESON  ?= $(shell command -v meson 2>/dev/null || echo "$(PYTHON) -m mesonbuild.mesonmain")
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian's system python refuses pip installs without this (PEP 668); a
# pyenv or venv python ignores it.
export PIP_BREAK_SYSTEM_PACKAGES := 1

.PHONY: setup build test-c test-py test-py-threads test demo bench clean

setup:
	@if ! dpkg -s liburing-dev >/dev/null 2>&1; then \
		echo "installing liburing-dev pkg-config gcc"; \
		$(SUDO) apt-get update && \
		$(SUDO) apt-get install -y liburing-dev pkg-config gcc; \
	fi
	@# fuse3 (fusermount3) and libfuse3-dev: tools/slowfs, the slow network-storage
	@# stand-in that tests/python/test_slowfs.py and tools/bench_slow.py mount
	@if ! dpkg -s libfuse3-dev >/dev/null 2>&1 || ! command -v fusermount3 >/dev/null 2>&1; then \
		echo "installing fuse3 libfuse3-dev"; \
		$(SUDO) apt-get update && \
		$(SUDO) apt-get install -y fuse3 libfuse3-dev; \
	fi
	@# fincore (util-linux-extra): the page-cache eviction test counts resident pages
	@if ! command -v fincore >/dev/null 2>&1; then \
		$(SUDO) apt-get update && $(SUDO) apt-get install -y util-linux-extra; \
	fi
	@[ -e /dev/fuse ] || $(SUDO) modprobe fuse || echo "setup: no /dev/fuse: the slowfs tests will fail"
	@if ! $(PYTHON) -m pip --version >/dev/null 2>&1; then \
		$(SUDO) apt-get update && $(SUDO) apt-get install -y python3-pip python3-dev; \
	fi
	$(PYTHON) -m pip install meson ninja cffi pytest hypothesis pillow matplotlib
	$(PYTHON) -m pip install torch==2.13.0
	@# StatefulDataLoader (FileStream's resume test); its own deps would pull a newer torch
	$(PYTHON) -m pip install --no-deps torchdata==0.11.0
	$(PYTHON) -m pip install -e .

# a build folder configured before libfuse3-dev was installed has no slowfs: reconfigure it
build:
	@if [ ! -f build/build.ninja ]; then $(MESON) setup build; \
	elif pkg-config --exists fuse3 && ! grep -q slowfs build/build.ninja; then \
		$(MESON) setup --reconfigure build; fi
	$(MESON) compile -C build

# -Db_lundef=false: the sanitizer runtimes are linked into the executables,
# not into libasyncload.so, so the library may not insist on defined symbols.
build-san/build.ninja:
	$(MESON) setup build-san -Db_sanitize=address,undefined -Db_lundef=false

test-c: build build-san/build.ninja
	$(MESON) test -C build --print-errorlogs
	$(MESON) test -C build-san --print-errorlogs

test-py:
	$(PYTHON) -m pytest -q tests/python

# kernel.io_uring_disabled=2 refuses io_uring_setup to everyone, as container
# seccomp profiles do; engine="auto" must then pick the thread engine and
# every test must still pass. Skipped (with a message) where the sysctl is
# missing or not ours to set.
test-py-threads:
	@if [ ! -w /proc/sys/kernel/io_uring_disabled ]; then \
		echo "test-py-threads: kernel.io_uring_disabled not writable here; skipped"; exit 0; fi; \
	old=$$(cat /proc/sys/kernel/io_uring_disabled); \
	trap 'echo $$old > /proc/sys/kernel/io_uring_disabled' EXIT; \
	echo 2 > /proc/sys/kernel/io_uring_disabled; \
	$(PYTHON) -m pytest -q tests/python

test:
	$(MAKE) setup
	$(MAKE) test-c
	$(MAKE) test-py
	$(MAKE) test-py-threads

# The demo needs only what `python -m asyncload demo` imports (asyncload and
# cffi) and what builds the extension: apt and pip run only for what is missing,
# and the extension is built inside the checkout, not installed.
demo:
	@if ! dpkg -s liburing-dev pkg-config gcc python3-dev >/dev/null 2>&1; then \
		echo "installing liburing-dev pkg-config gcc python3-dev"; \
		$(SUDO) apt-get update && \
		$(SUDO) apt-get install -y liburing-dev pkg-config gcc python3-dev; \
	fi
	@if ! $(PYTHON) -c "import cffi, setuptools" >/dev/null 2>&1; then \
		if ! $(PYTHON) -m pip --version >/dev/null 2>&1; then \
			$(SUDO) apt-get update && $(SUDO) apt-get install -y python3-pip; fi; \
		$(PYTHON) -m pip install cffi setuptools; \
	fi
	$(PYTHON) python/asyncload/_build.py
	PYTHONPATH=$(CURDIR)/python $(PYTHON) -m asyncload demo

bench:
	$(PYTHON) tools/bench.py

clean:
	rm -rf build build-san
