"""The layout shows the architecture, and this keeps it so: the client library and the
storage stand alone, the shared modules depend on none of the three packages, and no
module grows past MAX_MODULE_LINES.

Modules are parsed with ``ast``, never imported, so a violation is found even in code
that only runs at a lazy, function-local import.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "erqpy"

#: The longest a module may be (the developers' guide: "no module over ~400 lines").
MAX_MODULE_LINES = 400

#: The modules every part may use; they use none of the parts.
SHARED_MODULES = ("errors", "events", "fairness", "descriptors", "compat")

#: What each part must never import.
FORBIDDEN = {
    "erqpy.client": ("erqpy.server", "erqpy.storage"),
    "erqpy.storage": ("erqpy.server", "erqpy.client"),
    **{f"erqpy.{name}": ("erqpy.server", "erqpy.storage", "erqpy.client") for name in SHARED_MODULES},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, name: str, is_package: bool = False) -> set[str]:
    """Every module that ``source`` (module ``name``) imports, anywhere in it.

    ``from erqpy import server`` counts as importing ``erqpy.server``; relative imports
    are resolved against the module's package.
    """
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def _modules():
    paths = sorted(PACKAGE.rglob("*.py"))
    assert paths, f"no modules under {PACKAGE}"
    return paths


def _violations(name: str, imports: set[str]) -> list[str]:
    rules = [banned for owner, banned in FORBIDDEN.items() if name == owner or name.startswith(owner + ".")]
    return sorted(
        module for module in imports for banned in rules for prefix in banned
        if module == prefix or module.startswith(prefix + ".")
    )


def test_the_import_extractor_sees_every_form_of_import():
    source = (
        "import erqpy.storage.journal\n"
        "from erqpy.server import handlers\n"
        "from erqpy import client\n"
        "from ..server.state import ServerState\n"
        "def later():\n"
        "    from erqpy.server import control\n"
    )
    found = imported_modules(source, "erqpy.storage.pqueue")

    assert {"erqpy.storage.journal", "erqpy.server.handlers", "erqpy.client", "erqpy.server.state",
            "erqpy.server.control"} <= found
    assert ["erqpy.client", "erqpy.server", "erqpy.server.control", "erqpy.server.handlers",
            "erqpy.server.state", "erqpy.server.state.ServerState"] == _violations("erqpy.storage.pqueue", found)


def test_every_rule_applies_to_modules_that_exist():
    names = {module_name(path) for path in _modules()}
    for owner in FORBIDDEN:
        assert any(name == owner or name.startswith(owner + ".") for name in names), f"{owner} is gone"


@pytest.mark.parametrize("path", _modules(), ids=lambda path: str(path.relative_to(ROOT)))
def test_import_directions(path):
    """client never imports server or storage; storage never imports server or client;
    the shared modules import none of the three."""
    name = module_name(path)
    imports = imported_modules(path.read_text(), name, path.name == "__init__.py")

    assert [] == _violations(name, imports), f"{name} imports across the layout"


@pytest.mark.parametrize("path", _modules(), ids=lambda path: str(path.relative_to(ROOT)))
def test_no_module_is_over_the_line_limit(path):
    lines = len(path.read_text().splitlines())

    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(ROOT)} has {lines} lines; split it"
