"""setup.py - the part of the packaging that pyproject.toml cannot express.

cffi's setuptools hook reads `cffi_modules` only from setup(); it runs
python/asyncload/_build.py, which compiles libasyncload's C sources into
the extension module asyncload._asyncload. Metadata lives in pyproject.toml.
"""

from setuptools import setup

setup(
    package_dir={"": "python"},
    packages=["asyncload"],
    py_modules=["AsyncLoader"],
    package_data={"asyncload": ["py.typed", "_asyncload_cdef.h"]},
    cffi_modules=["python/asyncload/_build.py:ffibuilder"],
    zip_safe=False,
    # build/ belongs to meson (the C library and its tests): keep setuptools'
    # intermediate files out of it.
    options={"build": {"build_base": "build-py"}},
)
