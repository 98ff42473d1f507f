"""The tree is the architecture: layers import downward only, modules form no cycle,
and the CLI uses nothing but the public API.

Layers, lowest first (docs/architecture.md): base <- oci <- storage <- registry <-
signing <- model <- top <- gateway <- cli.  Any import, also one inside a function,
that reaches a higher layer is a back-edge; module-level imports form no cycle.

Inside the gateway, its sub-packages are layers the same way, lowest first:
core <- state <- read <- (writes | upstream | web) <- git <- app.  ``core`` is the protocol and
configuration, ``state`` what the gateway keeps between requests, ``read`` a resolved
model and its files; ``writes``, ``upstream`` and ``web`` each build on those and import
none of each other; ``git`` (git over HTTP) builds on reads and writes; ``app`` is the modules directly in ``modelpack/gateway/`` (the
package itself, ``app``, ``server``, ``worker``), the wiring on top.  Every sub-package
must have its place in GATEWAY_LAYERS.
"""

from __future__ import annotations

import ast
import inspect
import typing
from pathlib import Path

import pytest

import modelpack
import modelpack.gateway

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ["base", "oci", "storage", "registry", "signing", "model", "top", "gateway", "cli"]
BASE_MODULES = {"errors", "_version", "settings", "extras", "progress", "schemas"}
# The CLI may import these, and from each only the names in its __all__.
PUBLIC_MODULES = {"modelpack": modelpack, "modelpack.gateway": modelpack.gateway}
PUBLIC_DATA_MODULES = {"modelpack.schemas"}  # the JSON Schemas of every --json output
# The gateway's sub-packages, lowest first; packages in one tuple are siblings.
GATEWAY_LAYERS = [
    ("core",), ("state",), ("read",), ("writes", "upstream", "web"), ("git",), ("app",)
]  # fmt: skip
GATEWAY = ROOT / "modelpack" / "gateway"


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "modelpack_cli" or module == "modelpack.__main__":
        return "cli"
    if len(parts) == 1:
        return "top"  # modelpack/__init__.py: the public API
    if parts[1] in BASE_MODULES:
        return "base"
    if parts[1] in {"oci", "storage", "registry", "signing", "model", "gateway"}:
        return parts[1]
    if parts[1] == "testing":
        return "top"  # the registry launcher and tiny model for users' tests
    return "top"


def gateway_part(module: str) -> str | None:
    """The gateway sub-package ``module`` belongs to ("app" for the gateway's own
    modules); None outside the gateway."""
    parts = module.split(".")
    if parts[:2] != ["modelpack", "gateway"]:
        return None
    if len(parts) > 2 and (GATEWAY / parts[2] / "__init__.py").exists():
        return parts[2]
    return "app"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files() -> list[Path]:
    return sorted([*(ROOT / "modelpack").rglob("*.py"), *(ROOT / "modelpack_cli").rglob("*.py")])


def imports_of(path: Path, tree: ast.Module | None = None) -> list[tuple[str, list[str], bool]]:
    """(absolute module, imported names, at module level) for each modelpack import."""
    tree = tree or ast.parse(path.read_text(encoding="utf-8"))
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    top_level = {id(node) for node in tree.body}
    top_level |= {  # `if TYPE_CHECKING:` blocks count as module level
        id(inner) for node in tree.body if isinstance(node, ast.If) for inner in node.body
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in {"modelpack", "modelpack_cli"}:
                    found.append((alias.name, [], id(node) in top_level))
            continue
        else:
            continue
        if module.split(".")[0] in {"modelpack", "modelpack_cli"}:
            found.append((module, names, id(node) in top_level))
    return found


def resolve_module(module: str, names: list[str], known: set[str]) -> list[str]:
    """``from pkg import sub`` imports the submodule ``pkg.sub``; else the module itself."""
    subs = [f"{module}.{n}" for n in names if f"{module}.{n}" in known]
    return subs or [module]


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module-level edges, all edges) between modelpack modules."""
    files = {module_name(p): p for p in source_files()}
    known = set(files)
    top: dict[str, set[str]] = {m: set() for m in files}
    every: dict[str, set[str]] = {m: set() for m in files}
    for name, path in files.items():
        for module, names, at_top in imports_of(path):
            for target in resolve_module(module, names, known):
                every[name].add(target)
                if at_top:
                    top[name].add(target)
    return top, every


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt == node or nxt not in graph:
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def back_edges(graph: dict[str, set[str]]) -> list[str]:
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    return sorted(
        f"{src} ({layer_of(src)}) imports {dst} ({layer_of(dst)})"
        for src, targets in graph.items()
        for dst in targets
        if rank[layer_of(dst)] > rank[layer_of(src)]
    )


def gateway_back_edges(graph: dict[str, set[str]]) -> list[str]:
    """Imports between gateway sub-packages that go up, or sideways to a sibling."""
    rank = {part: i for i, parts in enumerate(GATEWAY_LAYERS) for part in parts}
    found = []
    for src, targets in graph.items():
        for dst in targets:
            low, high = gateway_part(dst), gateway_part(src)
            if low is None or high is None or low == high:
                continue
            if rank[low] >= rank[high]:
                found.append(f"{src} ({high}) imports {dst} ({low})")
    return sorted(found)


def test_no_import_reaches_a_higher_layer():
    _, every = import_graph()
    assert back_edges(every) == []


def test_module_level_imports_form_no_cycle():
    top, _ = import_graph()
    assert find_cycle(top) is None, " -> ".join(find_cycle(top) or [])


def test_gateway_imports_point_down():
    _, every = import_graph()
    assert gateway_back_edges(every) == []


def test_every_gateway_package_has_a_place():
    placed = {part for parts in GATEWAY_LAYERS for part in parts}
    found = {gateway_part(module_name(p)) for p in GATEWAY.rglob("*.py")}
    assert found == placed


def test_the_checks_catch_a_back_edge_and_a_cycle():
    """The checks above can fail: a hand-made back-edge and cycle are found, and in the
    gateway an upward and a sideways import."""
    top, every = import_graph()
    every["modelpack.oci.spec"] = every["modelpack.oci.spec"] | {"modelpack.storage.store"}
    assert back_edges(every) == [
        "modelpack.oci.spec (oci) imports modelpack.storage.store (storage)"
    ]
    top["modelpack.oci.digests"] = top["modelpack.oci.digests"] | {"modelpack.oci.spec"}
    assert find_cycle(top) is not None
    every["modelpack.gateway.core.hub"] = every["modelpack.gateway.core.hub"] | {
        "modelpack.gateway.read.models"
    }
    every["modelpack.gateway.writes.uploads"] = every["modelpack.gateway.writes.uploads"] | {
        "modelpack.gateway.web.pages",
        "modelpack.gateway.app",
    }
    assert gateway_back_edges(every) == [
        "modelpack.gateway.core.hub (core) imports modelpack.gateway.read.models (read)",
        "modelpack.gateway.writes.uploads (writes) imports modelpack.gateway.app (app)",
        "modelpack.gateway.writes.uploads (writes) imports modelpack.gateway.web.pages (web)",
    ]


def test_the_cli_imports_only_the_public_api():
    wrong = []
    for path in sorted((ROOT / "modelpack_cli").rglob("*.py")):
        for module, names, _ in imports_of(path):
            if module.startswith("modelpack_cli") or module in PUBLIC_DATA_MODULES:
                continue
            public = PUBLIC_MODULES.get(module)
            if public is None:
                wrong.append(f"{path.name}: {module}")
                continue
            wrong += [f"{path.name}: {module}.{n}" for n in names if n not in public.__all__]
    assert wrong == []


def test_the_library_never_imports_click():
    for path in (ROOT / "modelpack").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] != "click" for a in node.names), path
            if isinstance(node, ast.ImportFrom) and node.module:
                assert node.module.split(".")[0] != "click", path


PUBLIC_FUNCTIONS = sorted(
    name for name in modelpack.__all__ if inspect.isfunction(getattr(modelpack, name))
)


@pytest.mark.parametrize("name", PUBLIC_FUNCTIONS)
def test_public_functions_take_named_parameters_only(name):
    signature = inspect.signature(getattr(modelpack, name))
    variadic = [
        p.name for p in signature.parameters.values() if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    ]
    assert variadic == []


def _named_types(annotation: object) -> set[type]:
    if isinstance(annotation, type):
        return {annotation}
    found: set[type] = set()
    for arg in typing.get_args(annotation):
        found |= _named_types(arg)
    return found


@pytest.mark.parametrize("name", PUBLIC_FUNCTIONS)
def test_every_type_a_public_function_returns_is_exported(name):
    function = getattr(modelpack, name)
    hints = typing.get_type_hints(function)
    ours = {t for t in _named_types(hints.get("return")) if t.__module__.startswith("modelpack")}
    missing = sorted(t.__name__ for t in ours if getattr(modelpack, t.__name__, None) is not t)
    assert missing == []


def test_no_public_name_is_also_a_submodule():
    submodules = {p.stem for p in (ROOT / "modelpack").glob("*.py")}
    submodules |= {p.name for p in (ROOT / "modelpack").iterdir() if (p / "__init__.py").exists()}
    assert sorted(set(modelpack.__all__) & submodules) == []
