"""The ``ecr-gateway`` command and its subcommands."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib import metadata

from ecr_emulator import cli as emulator_cli
from gateway.tools import sync as sync_command

DESCRIPTION = "An OCI registry whose storage is Amazon ECR, with its own ECR emulator."


def version() -> str:
    try:
        return metadata.version("ecr-gateway")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


class _HelpFormatter(argparse.HelpFormatter):
    """argparse (3.11) measures subcommands without their extra indent, so the longest one
    would wrap its summary onto a line of its own; count the indent."""

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        if not isinstance(action, argparse._SubParsersAction) or action.help is argparse.SUPPRESS:
            return
        for sub in action._get_subactions():
            width = len(self._format_action_invocation(sub)) + self._current_indent
            self._action_max_length = max(self._action_max_length,
                                          width + self._indent_increment)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecr-gateway", description=DESCRIPTION,
        formatter_class=_HelpFormatter,
        epilog="Run 'ecr-gateway COMMAND --help' for the options of a command.")
    parser.add_argument("--version", action="version", version=f"ecr-gateway {version()}")
    sub = parser.add_subparsers(dest="command", required=True, title="commands",
                                metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the OCI registry gateway")
    serve.add_argument("--config", help="YAML configuration file")
    serve.add_argument("--listen", help="HOST:PORT to listen on (default 127.0.0.1:5000)")
    serve.add_argument("--data-dir", help="where local state lives (default ./.ecr-gateway)")

    emulator_cli.add_arguments(sub.add_parser("emulator",
                                              help="run the ECR emulator on its own"))

    check = sub.add_parser("check-config", help="validate a configuration file, print it "
                           "with secrets masked")
    check.add_argument("file", help="YAML configuration file")
    check.add_argument("--skip-file-checks", action="store_true",
                       help="do not require the files it names (htpasswd, TLS, signing key) "
                       "to exist here, for checking a configuration meant for another machine")
    schema = sub.add_parser("config-schema", help="print the configuration's JSON Schema")
    schema.add_argument("--write", action="store_true",
                        help="in a source checkout: regenerate docs/config.schema.json and "
                        "the Helm chart's values.schema.json instead")
    iam = sub.add_parser("iam-policy", help="print the IAM policy the configured routes "
                         "need")
    iam.add_argument("--config", help="YAML configuration file")
    iam.add_argument("--account-id", default="*",
                     help="AWS account of routes without registry_id (default: any)")
    doctor = sub.add_parser("doctor", help="check credentials, clock and repository "
                            "access")
    doctor.add_argument("--config", help="YAML configuration file")
    sync_command.add_parser(sub)
    demo = sub.add_parser("demo-image", help="write a tiny OCI image layout to push with "
                          "skopeo")
    demo.add_argument("folder", help="where to write it (oci:FOLDER:v1 for skopeo)")
    demo.add_argument("--config", help="the gateway's YAML configuration file: the push "
                      "suggested goes to its listen address")
    demo.add_argument("--listen", help="HOST:PORT the gateway listens on (default "
                      "127.0.0.1:5000, or the configuration's)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = _command(argv)
        sys.stdout.flush()  # here, where a reader gone is caught, rather than at exit
    except BrokenPipeError:
        # The reader stopped early (`ecr-gateway iam-policy | head`): nothing left to say
        # to it, and no traceback; stdout goes to /dev/null so the exit's flush is quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return code


def _command(argv: Sequence[str] | None) -> int:
    args = _build_parser().parse_args(argv)
    if args.command == "emulator":
        from ecr_emulator.server import run_from_args

        return run_from_args(args)
    if args.command == "serve":
        from gateway.serve import run_from_args as serve_from_args

        return serve_from_args(args)
    if args.command == "check-config":
        from gateway.tools import check_config

        return check_config.run(args.file, check_files=not args.skip_file_checks)
    if args.command == "config-schema":
        from gateway.config import schema

        return schema.main(["--write"] if args.write else [])
    if args.command == "iam-policy":
        from gateway.tools import iam_policy

        return iam_policy.run(args.config, args.account_id)
    if args.command == "sync":
        return sync_command.run(args)
    if args.command == "doctor":
        from gateway.tools import doctor

        return doctor.run(args.config)
    if args.command == "demo-image":
        from gateway.tools import demo_image

        return demo_image.run(args.folder, args.config, args.listen)
    return 2


if __name__ == "__main__":
    sys.exit(main())
