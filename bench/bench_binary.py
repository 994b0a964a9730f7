"""Single-file binary figures: size, and cold-start time to the first accepted connection.

``.venv/bin/python -m bench.bench_binary [--binary dist/gateway] [--runs 5] [--json FILE]``

Builds ``dist/gateway`` first when it is stale (``scripts/build-binary --if-stale``), copies it
outside the repository and runs it with a clean environment, as an edge box would.  For each
run the clock starts just before ``exec`` and stops when a device connection is *served*: a
``GET /timestamp`` on the dev HTTP port (Host ``demo.devmode-m2.localhost``) answered 200.
That includes everything a real start does: the one-file bootloader unpacking Python and the
libraries into a temporary directory, imports, the data directory (first start: development
CA, SQLite schema migrations, admin token, demo connector), and the listeners.

Scenarios (median, min, max over ``--runs``):

- ``binary first start``: empty data directory each run (CA and schema created);
- ``binary restart``: the same data directory again (what a reboot or an upgrade does);
- ``venv restart``: ``.venv/bin/python -m gateway serve`` on the same kind of directory, the
  reference without the unpacking step;
- ``binary --version`` / ``venv --version``: process start to exit, the fixed cost of the
  bootloader and imports alone.

Ports are chosen up front (bound to 127.0.0.1:0, then released) so the probe knows where to
connect before the gateway writes ``run.json``.  Results depend on the disk and the page cache;
run on a quiet machine (the figures go into bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from gateway.testing.ports import free_port as _free_port

ROOT = Path(__file__).resolve().parent.parent
CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin"


def _served(port: int) -> bool:
    """One device request on the dev HTTP port; True when it was answered 200."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(
                b"GET /timestamp HTTP/1.1\r\nHost: demo.devmode-m2.localhost\r\n"
                b"Connection: close\r\n\r\n"
            )
            head = s.recv(64)
    except OSError:
        return False
    return head.startswith(b"HTTP/1.1 200")


def time_to_first_connection(
    cmd: list[str], data: Path, env: dict[str, str], timeout: float = 60.0
) -> float:
    """Seconds from exec to the first served device request; stops the gateway after."""
    http = _free_port()
    args = [
        *cmd,
        "serve",
        "--data",
        str(data),
        "--host",
        "127.0.0.1",
        "--dev",
        "--dev-http-port",
        str(http),
        "--dev-mqtt-port",
        str(_free_port()),
        "--tls-port",
        str(_free_port()),
        "--mqtt-tls-port",
        str(_free_port()),
        "--api-port",
        str(_free_port()),
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=data.parent
    )
    try:
        while True:
            if _served(http):
                return time.perf_counter() - t0
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"gateway exited with {proc.returncode}: {err[-2000:]}")
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError("no connection served")
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


def time_version(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(
        [*cmd, "--version"], capture_output=True, text=True, env=env, cwd=cwd, check=True
    ).stdout
    elapsed = time.perf_counter() - t0
    if "compiled" not in out:
        raise RuntimeError(f"not the compiled build: {out!r}")
    return elapsed


def _stats(name: str, samples: list[float]) -> dict[str, object]:
    return {
        "scenario": name,
        "runs": len(samples),
        "median_s": statistics.median(samples),
        "min_s": min(samples),
        "max_s": max(samples),
    }


def _repeat(runs: int, fn: Callable[[int], float]) -> list[float]:
    return [fn(i) for i in range(runs)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", type=Path, help="binary to measure [build dist/gateway]")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    opts = parser.parse_args(argv)

    if opts.binary is None:
        build = subprocess.run(
            [str(ROOT / "scripts" / "build-binary"), "--if-stale"],
            capture_output=True,
            text=True,
            check=False,
        )
        if build.returncode != 0:
            sys.stderr.write(build.stderr[-4000:])
            return 1
        opts.binary = Path(build.stdout.strip().splitlines()[-1])

    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-binary-") as tmp_name:
        tmp = Path(tmp_name)
        binary = tmp / "gateway"
        shutil.copy2(opts.binary, binary)
        env = {"HOME": str(tmp), "PATH": CLEAN_PATH, "LANG": "C.UTF-8"}
        size = binary.stat().st_size
        venv = [str(ROOT / ".venv" / "bin" / "python"), "-m", "gateway"]
        venv_env = {**env, "PYTHONPATH": str(ROOT)}

        def first(i: int) -> float:
            return time_to_first_connection([str(binary)], tmp / f"fresh{i}" / "data", env)

        def warm(data: Path, cmd: list[str], e: dict[str, str]) -> Callable[[int], float]:
            time_to_first_connection(cmd, data, e)  # create the data directory once
            return lambda _i: time_to_first_connection(cmd, data, e)

        for p in ("fresh", "warm", "venv"):
            for i in range(opts.runs + 1):
                (tmp / f"{p}{i}").mkdir()
        rows.append(_stats("binary first start", _repeat(opts.runs, first)))
        rows.append(
            _stats(
                "binary restart",
                _repeat(opts.runs, warm(tmp / "warm0" / "data", [str(binary)], env)),
            )
        )
        rows.append(
            _stats("venv restart", _repeat(opts.runs, warm(tmp / "venv0" / "data", venv, venv_env)))
        )
        rows.append(
            _stats(
                "binary --version",
                _repeat(opts.runs, lambda _i: time_version([str(binary)], env, tmp)),
            )
        )
        rows.append(
            _stats(
                "venv --version", _repeat(opts.runs, lambda _i: time_version(venv, venv_env, tmp))
            )
        )

    print(f"binary: {opts.binary} ({size / 1e6:.1f} MB, {size} bytes)")
    print("| scenario | runs | median s | min s | max s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['scenario']} | {r['runs']} | {r['median_s']:.2f} | {r['min_s']:.2f} "
            f"| {r['max_s']:.2f} |"
        )
    if opts.json:
        opts.json.write_text(json.dumps({"size_bytes": size, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
