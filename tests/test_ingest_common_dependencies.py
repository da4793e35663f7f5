"""ingest-common declares only what its modules import: both Lambda images install it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "packages" / "ingest-common"


def _imported_top_levels() -> set[str]:
    names = set()
    for source in (PACKAGE / "src").rglob("*.py"):
        for line in source.read_text().splitlines():
            match = re.match(r"\s*(?:from|import)\s+([A-Za-z_][A-Za-z0-9_]*)", line)
            if match:
                names.add(match.group(1))
    return names


def test_every_declared_dependency_is_imported():
    declared = tomllib.loads((PACKAGE / "pyproject.toml").read_text())["project"]["dependencies"]
    modules = {
        re.match(r"[A-Za-z0-9_.\-]+", spec).group(0).lower().replace("-", "_"): spec
        for spec in declared
    }
    assert sorted(set(modules) - _imported_top_levels()) == []
    # Only the batch utility and SQS data classes are used, never the pydantic parser.
    assert not any("[parser]" in spec for spec in declared)
