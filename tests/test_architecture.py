"""The direction of imports, as the design fixes it, read from the code itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", ["storage", "notify", "intents"])
def test_lower_layers_import_nothing_of_bot(package):
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            m for m in imported_modules(path) if m.split(".")[0] == "bot"
        )
        for path in sources(package)
    }
    assert {k: v for k, v in offenders.items() if v} == {}


@pytest.mark.parametrize(
    ("package", "neighbours"),
    [
        ("storage", ["notify", "intents"]),
        ("notify", ["storage", "intents"]),
        ("intents", ["storage", "notify"]),
    ],
)
def test_lower_layers_do_not_import_each_other(package, neighbours):
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            m for m in imported_modules(path) if m.split(".")[0] in neighbours
        )
        for path in sources(package)
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_console_is_imported_only_by_the_app_factory():
    importers = sorted(
        str(path.relative_to(ROOT))
        for path in sources("bot")
        if not path.is_relative_to(ROOT / "bot" / "console")
        and any(m == "bot.console" or m.startswith("bot.console.") for m in imported_modules(path))
    )
    assert importers == ["bot/__init__.py"]


def test_nothing_outside_services_asks_which_notifier_it_got():
    asking = sorted(
        str(path.relative_to(ROOT))
        for path in sources("bot")
        if "Notifier)" in path.read_text(encoding="utf-8")
        and "isinstance(" in path.read_text(encoding="utf-8")
        and path.name != "services.py"
    )
    assert asking == []
