"""``ecr-emulator``: the ECR emulator as a command of its own, with the options of
``ecr-gateway emulator`` (which uses ``add_arguments``); ``python -m ecr_emulator`` too."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

DESCRIPTION = "An Amazon ECR (and ECR Public) emulator that speaks the AWS JSON protocol."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", default="127.0.0.1:4566",
                        help="HOST:PORT (default %(default)s)")
    parser.add_argument("--data-dir", default="./.ecr-emulator", help="storage folder")
    parser.add_argument("--account-id", default="123456789012",
                        help="the emulated AWS account")
    parser.add_argument("--region", default="us-east-1", help="the emulated region")
    parser.add_argument("--policy-file",
                        help="JSON per-access-key allow/deny rules (see ecr_emulator/access.py)")
    parser.add_argument("--credentials", metavar="FILE",
                        help="AWS shared-credentials file: only its keys are accepted and "
                        "every request's SigV4 signature is verified (default: any key, "
                        "unchecked)")
    parser.add_argument("--throttle", metavar="FILE",
                        help="JSON per-action rates, e.g. {\"PutImage\": {\"rate\": 10, "
                        "\"burst\": 20}}: beyond, ThrottlingException (also "
                        "ECR_EMULATOR_THROTTLE)")
    parser.add_argument("--local-host-name", action="append", metavar="NAME",
                        help="without --credentials on loopback, requests must name the "
                        "emulator by address or localhost (a web page can point a name of its "
                        "own at 127.0.0.1): this name is accepted too (repeatable)")
    parser.add_argument("--admin", action="store_true",
                        help="turn on the /_emulator/ control endpoints (faults, policies, "
                        "request log); with --credentials they need a SigV4 signature")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ecr-emulator", description=DESCRIPTION)
    add_arguments(parser)
    args = parser.parse_args(argv)
    from ecr_emulator.server import run_from_args

    return run_from_args(args)
