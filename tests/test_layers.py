"""The package layering holds: imports flow signaling -> media_server -> synthesis, and
only ``media_server/rtc`` touches aiortc (read from the source, not from a running import)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("signaling", "media_server", "synthesis")
"""Each package may import only those after it."""


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", LAYERS)
def test_imports_flow_one_way(package: str) -> None:
    forbidden = LAYERS[: LAYERS.index(package)]
    wrong = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sources(package)
        for name in imported_modules(path)
        if name.split(".")[0] in forbidden
    }
    assert not wrong


def test_only_media_server_rtc_imports_aiortc() -> None:
    rtc = ROOT / "media_server" / "rtc"
    wrong = {
        f"{path.relative_to(ROOT)} imports {name}"
        for package in (*LAYERS, "voice_bot")
        for path in sources(package)
        if rtc not in path.parents
        for name in imported_modules(path)
        if name.split(".")[0] in ("aiortc", "aioice")
    }
    assert not wrong


def test_the_check_sees_imports() -> None:
    """Guard against a check that cannot fail: the rtc package does import aiortc."""
    found = {n for p in sources("media_server/rtc") for n in imported_modules(p)}
    assert any(name.startswith("aiortc") for name in found)
    assert "media_server.speech.events" in imported_modules(
        ROOT / "media_server" / "rooms" / "room.py"
    )


@pytest.mark.parametrize("package", ("media_server", "signaling", "synthesis"))
def test_no_product_module_is_over_450_lines(package: str) -> None:
    """Small modules named after nouns: a module past this has two jobs."""
    long = {
        f"{path.relative_to(ROOT)}: {n} lines"
        for path in sources(package)
        if (n := len(path.read_text().splitlines())) > 450
    }
    assert not long
