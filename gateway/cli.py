"""The ``ecr-gateway`` command: ``serve`` (the registry), ``emulator`` (a stand-alone ECR)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ecr-gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the OCI registry gateway")
    serve.add_argument("--config", help="YAML configuration file")
    serve.add_argument("--listen", help="HOST:PORT to listen on (default 127.0.0.1:5000)")
    serve.add_argument("--data-dir", help="where local state lives (default ./.ecr-gateway)")

    emu = sub.add_parser("emulator", help="run the ECR emulator on its own")
    emu.add_argument("--listen", default="127.0.0.1:4566", help="HOST:PORT (default %(default)s)")
    emu.add_argument("--data-dir", default="./.ecr-emulator", help="storage folder")
    emu.add_argument("--account-id", default="123456789012", help="the emulated AWS account")
    emu.add_argument("--region", default="us-east-1", help="the emulated region")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    if args.command == "emulator":
        from gateway.emulator.server import run_from_args

        return run_from_args(args)
    if args.command == "serve":
        from gateway.serve import run_from_args as serve_from_args

        return serve_from_args(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
