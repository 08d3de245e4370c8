"""docs/architecture.md is kept honest: no module imports across a line the
architecture draws, and the tree it lists is the package's tree."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "promptproxy"
ARCHITECTURE = ROOT / "docs" / "architecture.md"

APP_PARTS = ["promptproxy.proxy", "promptproxy.admin", "promptproxy.rest", "promptproxy.providers",
             "promptproxy.accounting", "promptproxy.auth", "promptproxy.serving", "promptproxy.services"]

# part -> what no module in it may import (a module, or anything below it)
FORBIDDEN = {
    "promptproxy.data": APP_PARTS + ["flask", "flask_admin", "flask_login", "wtforms", "markupsafe"],
    "promptproxy.collections": APP_PARTS + ["flask", "flask_admin", "wtforms"],
    "promptproxy.providers": ["promptproxy.admin", "promptproxy.rest", "promptproxy.proxy",
                              "promptproxy.accounting", "promptproxy.data.records", "flask_admin"],
    "promptproxy.accounting": ["promptproxy.proxy", "promptproxy.admin", "promptproxy.rest", "promptproxy.serving"],
    "promptproxy.auth": ["promptproxy.proxy", "promptproxy.admin", "promptproxy.rest"],
    "promptproxy.rest": ["promptproxy.proxy", "promptproxy.admin"],
    "promptproxy.admin": ["promptproxy.proxy", "promptproxy.rest"],
}


def module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path, top_level_only=False):
    """The absolute names `path` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from . import records`
    return found


def crosses(name, forbidden):
    return any(name == line or name.startswith(line + ".") for line in forbidden)


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_no_part_imports_across_its_lines(part):
    crossings = []
    for path in MODULES:
        if not crosses(module_name(path), [part]):
            continue
        for name in sorted(imports(path)):
            if crosses(name, FORBIDDEN[part]):
                crossings.append(f"{path.relative_to(ROOT)} imports {name}")
    assert crossings == []


def test_serving_imports_nothing_of_the_app_at_module_level():
    """gunicorn imports the worker class before gevent patches the standard library."""
    crossings = []
    for path in (PACKAGE / "serving").glob("*.py"):
        for name in imports(path, top_level_only=True):
            if name.startswith("promptproxy") and not name.startswith("promptproxy.serving"):
                crossings.append(f"{path.relative_to(ROOT)} imports {name}")
    assert crossings == []


def test_the_documented_tree_is_the_packages_tree():
    documented = set(re.findall(r"^(promptproxy/[\w/]+\.py)", ARCHITECTURE.read_text(), re.M))
    actual = {str(path.relative_to(ROOT)) for path in MODULES
              if not (path.name == "__init__.py" and path.parent != PACKAGE and path.stat().st_size == 0)}
    assert sorted(actual - documented) == [], "modules the architecture does not list"
    assert sorted(documented - actual) == [], "listed modules that do not exist"


def test_no_module_is_much_over_400_lines():
    long = {str(path.relative_to(ROOT)): n for path in MODULES
            if (n := len(path.read_text().splitlines())) > 450}
    assert long == {}
