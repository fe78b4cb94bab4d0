"""``ecr-gateway sync``: the command around gateway/pullthrough/sync.py — the configuration,
the embedded emulator when that is the upstream, and the ECR backend without a server."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the command's own modules load only when it runs
    from gateway.config import Config
    from gateway.pullthrough.sync import Job


def add_parser(sub: Any) -> None:
    sync = sub.add_parser("sync", help="copy images from any OCI registry into ECR")
    sync.add_argument("source", nargs="?",
                      help="[http(s)://]host/name[:tag], e.g. docker.io/library/alpine")
    sync.add_argument("destination", nargs="?", help="the repository name as clients see it")
    sync.add_argument("--config", help="YAML configuration file (routes, upstream)")
    sync.add_argument("--file", help="YAML list of images: images: [{source, destination, "
                      "tags: {regex, semver, last}, username, password_file}]")
    sync.add_argument("--regex", help="tags matching this regular expression (whole tag)")
    sync.add_argument("--semver", help="tags in this semver range, e.g. '>=1.2 <2'")
    sync.add_argument("--last", type=_at_least_one, help="only the last N tags (in version order)")
    sync.add_argument("--username", help="a user at the source registry")
    sync.add_argument("--password-file", help="that user's password, in a file")
    sync.add_argument("--parallel", type=_at_least_one, default=4, help="images copied at once")
    sync.add_argument("--blob-grace-seconds", type=_not_negative, default=20.0,
                      help="seconds a blob's body may take before --blob-min-rate applies")
    sync.add_argument("--blob-min-rate", type=_not_negative, default=64 * 1024,
                      help="bytes a second a blob's body must keep up with on average after "
                           "the grace, or its copy fails (0: no floor)")


def _at_least_one(value: str) -> int:
    """A whole number of at least 1 (``--parallel 0`` would copy nothing and never end)."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of at least 1")
    return number


def _not_negative(value: str) -> float:
    number = float(value)
    if not number >= 0 or number == float("inf"):  # NaN too
        raise argparse.ArgumentTypeError(f"{value!r} is not a finite number of at least 0")
    return number


def run(args: argparse.Namespace) -> int:
    from gateway.config import ConfigError, load_config
    from gateway.serve import start_embedded

    try:
        config = load_config(args.config)
        jobs = _jobs(args)
        emulator = start_embedded(config)  # NotPrivate (an OSError): its folder is not ours
    except (ConfigError, ValueError, OSError) as exc:
        shown = exc.located() if isinstance(exc, ConfigError) else exc
        print(f"ecr-gateway sync: {shown}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(config, jobs, args.parallel, args.blob_grace_seconds,
                                args.blob_min_rate))
    finally:
        if emulator is not None:
            emulator.stop()


def _jobs(args: argparse.Namespace) -> list[Job]:
    from gateway.pullthrough.sync import job, jobs_from_file

    if args.file:
        if args.source or args.destination:
            raise ValueError("give either --file or SOURCE DESTINATION")
        return jobs_from_file(args.file)
    if not (args.source and args.destination):
        raise ValueError("needs SOURCE and DESTINATION (or --file)")
    password = None
    if args.password_file:
        from gateway.config.secret_files import read_secret_file

        password = read_secret_file(args.password_file, "--password-file")
    return [job(args.source, args.destination, args.regex, args.semver, args.last,
                args.username, password)]


async def _run(config: Config, jobs: list[Job], parallel: int, blob_grace: float,
               blob_min_rate: float) -> int:
    from aiohttp import web

    from gateway.app import STORAGE, build_app
    from gateway.pullthrough.sync import run_sync

    app = build_app(config)
    runner = web.AppRunner(app)
    await runner.setup()  # the backend's clients and stores, no listening socket
    try:
        # Straight into storage: a destination is ECR's, never filled from an upstream.
        return await run_sync(app[STORAGE], jobs, sys.stdout, parallel,
                              blob_grace=blob_grace, blob_min_rate=blob_min_rate)
    finally:
        await runner.cleanup()
