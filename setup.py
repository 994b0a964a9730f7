"""Build the compiled hot path: every ``ext/*.pyx`` becomes ``gateway._ext.<stem>``.

Directives live here, in one place, so that no ``.pyx`` can quietly switch bounds checking
off.  ``GATEWAY_EXT_DEBUG=1`` turns bounds checks, line tracing and the annotate HTML back on
(asyncpg's pattern) for debugging and for reviewing the hot loop before a benchmark claim.
"""

from __future__ import annotations

import os
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent
DEBUG = os.environ.get("GATEWAY_EXT_DEBUG") == "1"

directives = {
    "language_level": "3",
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
    "linetrace": DEBUG,
    "profile": DEBUG,
}

macros = [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")] if DEBUG else []
cflags = ["-O0", "-g"] if DEBUG else ["-O2"]

extensions = [
    Extension(
        f"gateway._ext.{pyx.stem}",
        [str(pyx.relative_to(HERE))],
        define_macros=macros,
        extra_compile_args=cflags,
    )
    for pyx in sorted((HERE / "ext").glob("*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        annotate=DEBUG,
        include_path=[str(HERE / "ext")],
    ),
)
