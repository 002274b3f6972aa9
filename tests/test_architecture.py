"""The house rules the design doc states, checked on the source: the platform names no method, imports no
method module, and its modules import each other without a circle."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "actionray"
PLATFORM = PACKAGE / "platform"
METHOD_PACKAGES = ("actionray.trainables", "actionray.config", "actionray.cli")


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:`` (annotations only: never imported at run time)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


def imports_of(path: Path) -> set[str]:
    """Every module a file imports at run time, at module level or inside functions."""
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")


PLATFORM_MODULES = {module_name(p): p for p in PLATFORM.rglob("*.py")}


def test_platform_imports_no_method_module_nor_the_catalog():
    offenders = {name: sorted(m for m in imports_of(path) if m.startswith(METHOD_PACKAGES))
                 for name, path in PLATFORM_MODULES.items()}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_platform_names_no_method():
    names = ("tsn", "tdn", "gcnet", "tcp", "dclr", "ftcl", "acmnet")
    for name, path in PLATFORM_MODULES.items():
        strings = [n.value.lower() for n in ast.walk(ast.parse(path.read_text()))
                   if isinstance(n, ast.Constant) and isinstance(n.value, str) and not n.value.startswith(("\"", " "))]
        code_strings = [s for s in strings if "\n" not in s and len(s) < 40]  # literals, not docstrings
        assert not [s for s in code_strings if s in names], name


def test_platform_modules_import_each_other_without_a_circle():
    graph = {name: {m for m in imports_of(path) if m in PLATFORM_MODULES and m != name}
             for name, path in PLATFORM_MODULES.items()}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for child in graph[node]:
            if state.get(child) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(child):] + [child]))
            if child not in state:
                visit(child, stack + [child])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])


def _is_ray_private(module: str) -> bool:
    """``ray._private``, ``ray.train.v2._internal``, or an underscore name imported from a Ray module."""
    parts = module.split(".")
    return parts[0] == "ray" and any(part.startswith("_") for part in parts[1:])


def test_only_ray_compat_imports_rays_private_modules():
    allowed = PACKAGE / "platform" / "ray_compat.py"
    offenders = {module_name(path): sorted(m for m in imports_of(path) if _is_ray_private(m))
                 for path in PACKAGE.rglob("*.py") if path != allowed}
    assert {k: v for k, v in offenders.items() if v} == {}
    assert _is_ray_private("ray.train.torch.config._TorchBackend") and not _is_ray_private("ray.train.torch")
