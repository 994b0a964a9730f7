"""HTTP device-write load driven by C generators: wrk (HTTP/1.1) and h2load (HTTP/2 over TLS).

A generator in Python capped the peers it measured (bare hypercorn at 4.6k req/s where wrk
measures 8.8k on the same machine), so the HTTP scenarios use wrk and h2load from Debian's
packages (installed by scripts/bench) and report their own ceiling against nginx
(``peers.nginx_sink``) in the same run.

Both send ``POST /onep:v1/stack/alias`` with a 58-byte form body, one request outstanding
per connection (a device waits for each answer), and one identity per connection:

* wrk: ``-t devices -c connections`` with bench/wrk_device.lua, which gives wrk thread i
  token i (the value of ``HttpWrites.header``), so each device writes over
  connections/devices keep-alive connections (over TLS at most WRK_MAX_TLS_THREADS devices:
  see there).
* h2load: one h2load process per device (``-H x-exosite-cik`` is per process), each with
  connections/devices clients and ``-m 1`` (one stream at a time); the processes run at
  once and their counts are summed.

The URL host is the Host header / ``:authority`` and the TLS SNI (``<cid>.m2.<domain>`` for
the gateway); the address is always 127.0.0.1 (wrk: the Lua script's resolver; h2load:
``--connect-to``).  Results are ``LoadResult`` rows: ``acked`` = 2xx responses, ``sent`` =
all responses, latency percentiles from wrk's histogram or h2load's per-request log.
"""

from __future__ import annotations

import json
import re
import resource
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.loadcfg import LOOPBACK, LoadResult, weighted_percentiles

BENCH = Path(__file__).resolve().parent
WRK_SCRIPT = BENCH / "wrk_device.lua"
DEVICE_PATH = "/onep:v1/stack/alias"
DEVICE_BODY = "data_in=" + "0123456789" * 5
FORM = "application/x-www-form-urlencoded; charset=utf-8"


class GeneratorMissing(RuntimeError):
    """wrk or h2load is not installed (scripts/bench installs them)."""


@dataclass(frozen=True)
class HttpWrites:
    """One HTTP write load.  ``tokens``: one per device (empty for peers without auth), the
    value of the ``header`` each device sends (an ``X-Exosite-CIK`` token, or ``Basic …``
    for an ``Authorization`` with identity and password)."""

    port: int
    host: str  # Host header / :authority and TLS SNI; the address is 127.0.0.1 regardless
    connections: int
    devices: int
    duration: float
    tls: bool = False
    tokens: tuple[str, ...] = ()
    header: str = "X-Exosite-CIK"

    def __post_init__(self) -> None:
        if self.connections < 1 or self.devices < 1 or self.connections % self.devices:
            raise ValueError("connections must be a positive multiple of devices")
        if self.tokens and len(self.tokens) != self.devices:
            raise ValueError("tokens must be empty or one per device")

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}{DEVICE_PATH}"

    @property
    def seconds(self) -> int:
        """wrk and h2load take whole seconds."""
        return max(1, round(self.duration))


def _binary(name: str) -> str:
    found = shutil.which(name)
    if not found:
        raise GeneratorMissing(f"{name} is not installed (scripts/bench installs it)")
    return found


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# Devices (= wrk threads) over TLS: one wrk process degrades past ~16 threads on this
# machine's OpenSSL 3.0 and collapses past ~64 (measured against nginx: 16 threads 33-43k
# req/s, 64 threads 11-23k, 128 threads 321 with nginx idle; the generator's threads spin on
# locks and starve a Python server sharing the 2 cores; several wrk processes at once did no
# better), so TLS loads stay at or below this.
WRK_MAX_TLS_THREADS = 16


def wrk_command(load: HttpWrites, token_file: str) -> list[str]:
    if load.tls and load.devices > WRK_MAX_TLS_THREADS:
        raise ValueError(f"wrk over TLS drives at most {WRK_MAX_TLS_THREADS} devices here")
    return [
        _binary("wrk"),
        "-t",
        str(load.devices),
        "-c",
        str(load.connections),
        "-d",
        f"{load.seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(WRK_SCRIPT),
        load.url,
        "--",
        token_file,
        DEVICE_BODY,
        load.header,
    ]


def shown(cmd: list[str]) -> str:
    """A command as RESULTS.md shows it: repo-relative script, program names without their
    directory, and placeholders (TOKENS, BODY, LOG, TOKEN) for what each run generates."""
    tmp = re.escape(tempfile.gettempdir()) + r"/[^/\s]+/([a-z]+)\w*(\.txt)?"
    out = []
    for arg in cmd:
        arg = arg.replace(str(BENCH), "bench")
        arg = re.sub(tmp, lambda m: m[1].upper(), arg)
        if arg == DEVICE_BODY:
            arg = "data_in=0123456789…"
        elif arg.lower().startswith("x-exosite-cik:"):
            arg = "x-exosite-cik: TOKEN"
        elif arg.lower().startswith("authorization:"):
            arg = "authorization: Basic CREDENTIALS"
        out.append(Path(arg).name if arg.startswith("/usr/") else arg)
    return shlex.join(out)


def run_wrk(load: HttpWrites) -> tuple[LoadResult, str]:
    """Run wrk once; (result, the command as shown in RESULTS.md)."""
    with tempfile.TemporaryDirectory() as tmp:
        token_file = ""
        if load.tokens:
            token_file = str(Path(tmp) / "tokens.txt")
            Path(token_file).write_text("".join(t + "\n" for t in load.tokens))
        cmd = wrk_command(load, token_file)
        cpu0 = _children_cpu()
        proc = subprocess.run(
            cmd, capture_output=True, text=True, check=False, timeout=load.seconds + 60
        )
        cpu = _children_cpu() - cpu0
    line = next((x for x in proc.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if proc.returncode != 0 or line is None:
        tail = " / ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
        raise RuntimeError(f"wrk failed ({proc.returncode}): {tail}")
    d = json.loads(line.removeprefix("WRKJSON "))
    errors = {k: int(d[k]) for k in ("connect", "read", "write", "timeout") if d[k]}
    if d["status"]:
        errors["non-2xx"] = int(d["status"])
    res = LoadResult(
        connections=load.connections,
        sent=int(d["requests"]),
        acked=int(d["requests"]) - int(d["status"]),
        elapsed=d["duration_us"] / 1e6,
        p50_ms=d["p50_us"] / 1e3,
        p99_ms=d["p99_us"] / 1e3,
        cpu_seconds=cpu,
        errors=errors,
        qos=1,
    )
    return res, shown(cmd)


_H2_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed,"
    r" (\d+) errored, (\d+) timeout"
)
_H2_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
_H2_FINISHED = re.compile(r"finished in ([\d.]+)(m?s)")


def h2load_command(load: HttpWrites, token: str, body: str, log: str) -> list[str]:
    cmd = [
        _binary("h2load"),
        "-c",
        str(load.connections // load.devices),
        "-m",
        "1",
        "-D",
        str(load.seconds),
        "-d",
        body,
        "-H",
        f"content-type: {FORM}",
        f"--connect-to={LOOPBACK}:{load.port}",
        f"--log-file={log}",
    ]
    if token:
        cmd += ["-H", f"{load.header.lower()}: {token}"]
    return [*cmd, load.url]


def run_h2load(load: HttpWrites) -> tuple[LoadResult, str]:
    """One h2load per device, all at once; summed counts, latency from their request logs."""
    if not load.tls:
        raise ValueError("h2load runs HTTP/2 over TLS here (devices negotiate h2 by ALPN)")
    tokens = load.tokens or ("",) * load.devices
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / "body"
        body.write_text(DEVICE_BODY)
        cmds = [
            h2load_command(load, tok, str(body), str(Path(tmp) / f"log{i}"))
            for i, tok in enumerate(tokens)
        ]
        cpu0 = _children_cpu()
        procs = [
            subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for c in cmds
        ]
        outs = [p.communicate(timeout=load.seconds + 60)[0] for p in procs]
        cpu = _children_cpu() - cpu0
        lat: list[float] = []
        for i in range(len(cmds)):
            for row in (Path(tmp) / f"log{i}").read_text().splitlines():
                _start, status, micros = row.split("\t")
                if status.startswith("2"):
                    lat.append(int(micros) / 1e3)
    res = LoadResult(connections=load.connections, cpu_seconds=cpu, qos=1)
    seconds = []
    for proc, out in zip(procs, outs, strict=True):
        req, status, fin = (
            _H2_REQUESTS.search(out),
            _H2_STATUS.search(out),
            _H2_FINISHED.search(out),
        )
        if proc.returncode != 0 or not (req and status and fin):
            tail = " / ".join(out.strip().splitlines()[-3:])
            raise RuntimeError(f"h2load failed ({proc.returncode}): {tail}")
        ok, other = int(status[1]), sum(int(status[k]) for k in (2, 3, 4))
        res.sent += ok + other
        res.acked += ok
        for key, count in (("errored", req[6]), ("timeout", req[7])):  # failed = these + non-2xx
            if int(count):
                res.errors[key] = res.errors.get(key, 0) + int(count)
        if other:
            res.errors["non-2xx"] = res.errors.get("non-2xx", 0) + other
        seconds.append(float(fin[1]) / (1e3 if fin[2] == "ms" else 1.0))
    res.elapsed = max(seconds)
    res.p50_ms, res.p99_ms = weighted_percentiles(lat, [1] * len(lat), (0.50, 0.99))
    return res, f"{len(cmds)} at once: {shown(cmds[0])}"


__all__ = ["DEVICE_BODY", "GeneratorMissing", "HttpWrites", "run_h2load", "run_wrk"]
