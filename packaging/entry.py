"""Entry point of the single-file ``gateway`` binary (PyInstaller).

It is the ``gateway`` console script (``gateway.cli.main:main``) and nothing more, so that
``dist/gateway serve`` behaves exactly like ``scripts/serve`` and every operator command
works from the same file.  One deliberate difference: the binary is the compiled build.
It always loads the Cython modules from ``gateway/_ext``, so a ``GATEWAY_PURE_PYTHON``
left in an edge box's environment is dropped (with a note on stderr) instead of silently
switching the hot path to the pure-Python twins, which ship only because the value
Structs live in ``gateway._pure.dispatch``.
"""

from __future__ import annotations

import os
import sys


def _run() -> None:
    if os.environ.pop("GATEWAY_PURE_PYTHON", "") not in ("", "0"):
        sys.stderr.write("gateway: GATEWAY_PURE_PYTHON ignored: this binary is compiled-only\n")
    from gateway.cli.main import main

    main()


if __name__ == "__main__":
    _run()
