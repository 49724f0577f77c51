"""Imports run one way (reds -> channels -> proto); proto is sans-IO. Checked on the AST."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "spiceserver"
IO_MODULES = {"asyncio", "socket", "ssl", "threading", "selectors"}


def imports_of(path: Path) -> set[str]:
    """Absolute module names imported by ``path`` (relative imports resolved)."""
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    package = parts if path.name == "__init__.py" else parts[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
                out.add(mod)
                if node.module is None:
                    out.update(f"{mod}.{a.name}" for a in node.names)
            elif node.module:
                out.add(node.module)
    return out


def modules(sub: str) -> list[Path]:
    return sorted((PKG / sub).rglob("*.py")) if (PKG / sub).is_dir() else [PKG / f"{sub}.py"]


def test_proto_is_sans_io_and_self_contained() -> None:
    for path in modules("proto"):
        for imp in imports_of(path):
            top = imp.split(".")[0]
            assert top not in IO_MODULES, f"{path.name} imports {imp}"
            if top == "spiceserver":
                assert imp.startswith(("spiceserver.proto", "spiceserver.errors")), f"{path.name} imports {imp}"


def test_nothing_imports_reds_but_the_package_face() -> None:
    allowed = {"__init__.py", "__main__.py", "demo.py", "reds.py"}
    for path in PKG.rglob("*.py"):
        if path.name in allowed and path.parent == PKG:
            continue
        assert "spiceserver.reds" not in imports_of(path), f"{path} imports reds"


def test_channels_do_no_socket_io() -> None:
    for path in modules("channels"):
        for imp in imports_of(path):
            assert imp.split(".")[0] not in {"socket", "ssl", "selectors"}, f"{path.name} imports {imp}"
            assert not imp.startswith("spiceserver.reds"), f"{path.name} imports {imp}"
