"""Imports run one way, as docs/architecture.md draws them; proto is sans-IO. Checked on the AST.

Every module of the package belongs to a unit (a subpackage, or a top-level module); each unit may
import only the units listed for it in ``ALLOWED`` (type-checking-only imports included). A unit
missing from the table fails the test, so a new package has to be placed in the layering first.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

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


#: unit -> the package units it may import (besides itself and the standard library)
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "_jit": set(),
    "proto": {"errors"},
    "codecs": {"_jit", "errors", "proto"},
    "region": {"proto"},
    "region_kernels": {"_jit"},
    "interfaces": {"proto"},
    "config": {"codecs", "errors", "proto"},
    "ticket": {"proto"},
    "metrics": set(),
    "mmtime": {"errors"},
    "web": {"config", "errors", "proto"},
    "events": {"proto"},
    "roles": {"proto"},
    "role_tickets": {"roles", "ticket"},
    "server_sessions": {"channels", "errors", "events", "roles"},
    "canvas": {"_jit", "codecs", "errors", "proto", "region"},
    "qxl": {"errors", "proto"},
    "worker": {"canvas", "codecs", "config", "errors", "metrics", "mmtime", "proto", "qxl", "region", "region_kernels"},
    "framebuffer": {"errors", "proto", "worker"},
    "transport": {"config", "errors", "events", "metrics", "web"},
    # channels build the display devices the host drives (framebuffer, QXL device) on a worker
    "channels": {"codecs", "config", "errors", "events", "framebuffer", "interfaces", "metrics", "mmtime", "proto", "qxl", "roles", "transport", "worker"},
    "admission": {"errors", "transport"},
    "linkcrypto": {"ticket"},
    "auth": {"errors", "linkcrypto", "proto", "ticket", "transport"},
    "server_devices": {"channels", "errors", "interfaces", "proto"},
    "reds": {"admission", "auth", "channels", "config", "errors", "events", "linkcrypto", "metrics", "proto", "role_tickets", "roles", "server_devices", "server_sessions", "ticket", "transport", "web"},
    # the package face, the command line and the demo sit on top of everything
    "__init__": {"auth", "config", "errors", "events", "interfaces", "metrics", "reds", "channels", "framebuffer", "qxl", "worker", "proto", "roles", "server_sessions"},
    "__main__": {"demo", "errors", "worker", "config", "qemu", "reds"},
    "demo": {"channels", "codecs", "config", "demo_smartcard", "demo_sound", "demo_usb", "desktop", "errors", "framebuffer", "interfaces", "proto", "reds", "synthetic_guest", "worker"},
    "demo_sound": set(),
    "demo_smartcard": {"channels"},
    "demo_usb": {"channels"},
    "desktop": {"proto"},
    "synthetic_guest": {"desktop", "proto", "qxl"},
    # the QEMU D-Bus display bridge (worker: CursorShape); __main__ hands its command the SpiceServer class
    "qemu": {"channels", "config", "errors", "framebuffer", "interfaces", "proto", "server_devices", "worker"},
}


def unit_of(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


@pytest.mark.parametrize("unit", sorted(ALLOWED))
def test_every_unit_imports_only_what_the_layering_allows(unit: str) -> None:
    for path in sorted(PKG.rglob("*.py")):
        if unit_of(path) != unit:
            continue
        for imp in imports_of(path):
            parts = imp.split(".")
            if parts[0] != "spiceserver" or len(parts) < 2 or parts[1] == unit:
                continue
            assert parts[1] in ALLOWED[unit], f"{path.relative_to(PKG)} imports {imp} ({unit} may import {sorted(ALLOWED[unit])})"


def test_every_unit_is_placed_in_the_layering() -> None:
    units = {unit_of(p) for p in PKG.rglob("*.py")}
    assert units <= set(ALLOWED), f"not in ALLOWED: {sorted(units - set(ALLOWED))}"


def test_reds_is_a_thin_face() -> None:
    for face in (PKG / "reds.py", PKG / "server_devices.py"):
        for imp in imports_of(face):
            assert not imp.startswith(("spiceserver.worker", "spiceserver.qxl", "spiceserver.codecs")), f"{face.name} imports {imp}"
        assert len(face.read_text().splitlines()) < 500
