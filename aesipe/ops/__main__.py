"""``python -m aesipe.ops build [--cuda|--cpu-only] [--verbose]`` and ``python -m aesipe.ops info``.

``build`` compiles the PAMR op library ahead of time into the cache (e.g. in a Docker image or on a login
node before GPU jobs start; ninja recompiles only what changed); later processes load it without a
compiler. ``info`` shows what a build would do here and whether it is cached, without building.
"""
from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aesipe.ops", description="Build ahead of time, or inspect, the compiled PAMR op library."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="compile the op library into the cache (up-to-date parts are reused)")
    which = build.add_mutually_exclusive_group()
    which.add_argument("--cuda", action="store_true", help="include the CUDA kernels (no GPU needed)")
    which.add_argument("--cpu-only", action="store_true", help="skip the CUDA kernels even if a GPU is visible")
    build.add_argument("--verbose", action="store_true", help="stream the compiler output")
    commands.add_parser("info", help="show the build configuration and cache state as JSON")
    args = parser.parse_args(argv)

    from . import _build  # imports torch: keep --help fast

    if args.command == "info":
        print(json.dumps(_build.info(), indent=2))
        return 0
    cuda = True if args.cuda else (False if args.cpu_only else None)
    try:
        path = _build.build(cuda=cuda, verbose=args.verbose)
    except _build.BuildError as exc:
        print(f"python -m aesipe.ops build: error: {exc}", file=sys.stderr)
        return 1
    kernels = "CPU"
    if _build._STATE.cuda:  # which GPUs it has code for: cubins (sm_XY) and PTX for newer ones (compute_XY)
        from ._fatbin import cuda_code

        kernels = f"CPU+CUDA; GPU code {', '.join(cuda_code(path)) or 'none'}"
    print(f"aesipe::pamr library ({kernels}): {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
