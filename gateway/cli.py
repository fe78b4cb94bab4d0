"""The ``ecr-gateway`` command: ``serve`` (the registry), ``emulator`` (a stand-alone ECR)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gateway.tools import sync as sync_command


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
    emu.add_argument("--policy-file",
                     help="JSON per-access-key allow/deny rules (see gateway/emulator/access.py)")

    check = sub.add_parser("check-config", help="validate a configuration file and print the "
                           "effective configuration (secrets masked)")
    check.add_argument("file", help="YAML configuration file")
    iam = sub.add_parser("iam-policy", help="print the least-privilege IAM policy the "
                         "configured routes need")
    iam.add_argument("--config", help="YAML configuration file")
    iam.add_argument("--account-id", default="*",
                     help="AWS account of routes without registry_id (default: any)")
    doctor = sub.add_parser("doctor", help="check credentials, clock and every route's "
                            "repository access")
    doctor.add_argument("--config", help="YAML configuration file")
    sync_command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    if args.command == "emulator":
        from gateway.emulator.server import run_from_args

        return run_from_args(args)
    if args.command == "serve":
        from gateway.serve import run_from_args as serve_from_args

        return serve_from_args(args)
    if args.command == "check-config":
        from gateway.tools import check_config

        return check_config.run(args.file)
    if args.command == "iam-policy":
        from gateway.tools import iam_policy

        return iam_policy.run(args.config, args.account_id)
    if args.command == "sync":
        return sync_command.run(args)
    if args.command == "doctor":
        from gateway.tools import doctor

        return doctor.run(args.config)
    return 2


if __name__ == "__main__":
    sys.exit(main())
