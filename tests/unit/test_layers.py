"""The package boundaries the README's code layout describes, checked on every module's
imports: the OCI surface knows nothing of ECR, and the gateway and the emulator know nothing
of each other beyond the command that starts one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _imports(package: str) -> dict[str, set[str]]:
    """Module file (relative to the repository) → the modules it imports, absolute."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = names
    return found


def _reaching(package: str, forbidden: tuple[str, ...],
              allowed: frozenset[str] = frozenset()) -> list[str]:
    return [f"{module} imports {name}" for module, names in _imports(package).items()
            if module not in allowed
            for name in sorted(names) if name.startswith(forbidden)]


def test_the_oci_surface_knows_nothing_of_ecr() -> None:
    assert _reaching("gateway/oci", ("gateway.ecr", "gateway.backends", "gateway.pullthrough",
                                     "botocore", "aiobotocore", "ecr_emulator")) == []


@pytest.mark.parametrize(("package", "forbidden", "allowed"), [
    # Only the command line starts the emulator (``ecr-gateway emulator``, embedded serve).
    ("gateway", ("ecr_emulator",), frozenset({"gateway/cli.py"})),
    ("ecr_emulator", ("gateway",), frozenset()),
    ("ecr_model", ("gateway", "ecr_emulator"), frozenset()),
])
def test_gateway_and_emulator_stay_apart(package: str, forbidden: tuple[str, ...],
                                         allowed: frozenset[str]) -> None:
    assert _reaching(package, forbidden, allowed) == []
