"""``python -m ecr_emulator``: the same as ``ecr-emulator``."""

from ecr_emulator.cli import main

raise SystemExit(main())
