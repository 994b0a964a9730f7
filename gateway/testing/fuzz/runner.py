"""Drive one fuzz target under atheris (libFuzzer): ``python -m gateway.testing.fuzz.runner``.

``fuzz TARGET --seconds N --corpus DIR --crashes DIR`` fuzzes from the inputs in ``DIR``
(adding the new ones there) for ``N`` seconds; an input that breaks an invariant or raises
an unexpected exception is written to the crashes directory (``crash-<sha1>``) and ends the
run with status 1.  ``merge TARGET --corpus DIR INPUT_DIR...`` writes the minimal subset
of the inputs that keeps their coverage into the empty ``DIR`` (libFuzzer's ``-merge=1``).
``seed TARGET --corpus DIR`` writes the target's seeds, named by their SHA-1.
``libfuzzer TARGET FLAGS...`` hands libFuzzer flags through unchanged (what libFuzzer's child
processes run).

Coverage comes from atheris' bytecode instrumentation of the gateway's Python modules (and
PyYAML's) as the target imports them (the pure twins, the validator, the services); the
compiled twins are called
uninstrumented, as the other half of each differential check.  atheris is not a runtime
dependency: ``scripts/fuzz`` installs it (the ``fuzz`` extra) when it is missing.
"""

from __future__ import annotations

import argparse
import hashlib
import shlex
import sys
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from gateway.testing.fuzz import TARGETS, load

__all__ = ["main"]

MAX_LEN = 16384  # bytes per input; the size checks of the code under test start far below
PER_INPUT_TIMEOUT_S = 10  # an input slower than this is a finding (a denial of service)


def _seed(name: str, corpus: Path) -> int:
    corpus.mkdir(parents=True, exist_ok=True)
    n = 0
    for data in load(name).seeds():
        path = corpus / hashlib.sha1(data).hexdigest()
        if not path.exists():
            path.write_bytes(data)
            n += 1
    return n


def _libfuzzer(name: str, flags: list[str]) -> None:
    import atheris  # optional: only the fuzzing run needs it

    # instrument the gateway's modules (and PyYAML's, for the documents) as they import
    with atheris.instrument_imports(include=["gateway", "yaml"]):
        module = load(name)
    prepared: AbstractContextManager[None] = getattr(module, "prepared", nullcontext)()
    # libFuzzer runs argv[0] through the shell for its child processes (-merge=1 does):
    # make it this very command, so the child fuzzes the same target
    argv0 = f"{shlex.quote(sys.executable)} -m gateway.testing.fuzz.runner libfuzzer {name}"
    with prepared:
        atheris.Setup([argv0, *flags], module.check)
        atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["libfuzzer"]:  # libFuzzer's own child processes: flags as they are
        _libfuzzer(argv[1], argv[2:])
        return 0
    parser = argparse.ArgumentParser(prog="python -m gateway.testing.fuzz.runner")
    parser.add_argument("action", choices=["fuzz", "merge", "seed"])
    parser.add_argument("target", choices=TARGETS)
    parser.add_argument("inputs", nargs="*", type=Path, help="merge: the directories to merge")
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--crashes", type=Path)
    parser.add_argument("--seconds", type=int, default=60)
    args = parser.parse_intermixed_args(argv)
    if args.action == "seed":
        print(f"{args.target}: {_seed(args.target, args.corpus)} seeds written")  # noqa: T201
        return 0
    common = [f"-max_len={MAX_LEN}", f"-timeout={PER_INPUT_TIMEOUT_S}", "-rss_limit_mb=4096"]
    if args.action == "merge":
        args.corpus.mkdir(parents=True, exist_ok=True)
        _libfuzzer(args.target, [*common, "-merge=1", str(args.corpus), *map(str, args.inputs)])
        return 0
    crashes = args.crashes or args.corpus.parent / "crashes"
    crashes.mkdir(parents=True, exist_ok=True)
    _libfuzzer(
        args.target,
        [
            *common,
            f"-max_total_time={args.seconds}",
            f"-artifact_prefix={crashes}/",
            "-print_final_stats=1",
            str(args.corpus),
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
