"""The base install stays minimal: every import of a third-party package in modelpack/ and cli/
is either a base dependency of pyproject.toml or made inside a function (lazily) for an extra,
every base dependency is used, and a missing extra is one clear error naming it."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from modelpack.errors import MissingDependencyError

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [ROOT / "modelpack", ROOT / "modelpack_cli"]
OWN = {"modelpack", "modelpack_cli"}
# Imported lazily by code that runs outside our environment or only probes for the package.
NOT_OURS = {
    "docker": "modelpack.testing.registry probes for a Docker engine; testcontainers brings it",
    "oras": "the peers' driver runs in a virtualenv of its own (interop tests, benchmarks)",
    "modelpack_client": "the same",
}
# Extras that install heavy packages the base must never pull in.
OPTIONAL = (
    "huggingface_hub",
    "lz4",
    "blake3",
    "redis",
    "model_signing",
    "OpenSSL",
    "numpy",
    "safetensors",
    "oras",
    "gunicorn",
    "concurrent_log_handler",
    "dulwich",
    "uvicorn",
    "httptools",
)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return canonical(re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0])


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def base_dependencies() -> set[str]:
    return {requirement_name(r) for r in project()["dependencies"]}


def extra_dependencies() -> dict[str, set[str]]:
    return {
        extra: {requirement_name(r) for r in requirements if requirement_name(r) != "modelpack-oci"}
        for extra, requirements in project()["optional-dependencies"].items()
    }


def imports(path: Path) -> Iterator[tuple[str, int, bool]]:
    """(top-level module, line, lazy) for every absolute import in ``path``, and every module
    named to ``extras.require``; lazy means inside a function or an ``if TYPE_CHECKING:`` block,
    i.e. not run when the module is imported."""

    def visit(node: ast.AST, lazy: bool) -> Iterator[tuple[str, int, bool]]:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                inner = True
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name.split(".")[0], child.lineno, lazy
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                yield child.module.split(".")[0], child.lineno, lazy
            elif (  # modelpack.extras.require("module", ...): an import made when called
                isinstance(child, ast.Call)
                and isinstance(child.func, ast.Name)
                and child.func.id == "require"
                and child.args
                and isinstance(child.args[0], ast.Constant)
                and isinstance(child.args[0].value, str)
            ):
                yield child.args[0].value.split(".")[0], child.lineno, True
            yield from visit(child, inner)

    yield from visit(ast.parse(path.read_text(encoding="utf-8")), False)


def third_party_imports() -> Iterator[tuple[str, str, set[str], bool]]:
    """(where, module, distributions, lazy) for every non-stdlib, non-own import."""
    owners = packages_distributions()
    for root in SOURCES:
        for path in sorted(root.rglob("*.py")):
            for module, line, lazy in imports(path):
                if module in sys.stdlib_module_names or module in OWN or module == "__future__":
                    continue
                dists = {canonical(d) for d in owners.get(module, [module])}
                yield f"{path.relative_to(ROOT)}:{line}", module, dists, lazy


def test_module_level_imports_are_base_dependencies():
    base = base_dependencies()
    wrong = [
        f"{where} imports {module} at module level ({', '.join(sorted(dists))} is not a base "
        "dependency: add it to [project] dependencies or import it inside the function using it)"
        for where, module, dists, lazy in third_party_imports()
        if not lazy and not dists & base
    ]
    assert not wrong, "\n".join(wrong)


def test_lazy_imports_belong_to_a_declared_extra():
    declared = base_dependencies().union(*extra_dependencies().values())
    wrong = [
        f"{where} imports {module}, which no dependency or extra of pyproject.toml declares"
        for where, module, dists, lazy in third_party_imports()
        if lazy and not dists & declared and module not in NOT_OURS
    ]
    assert not wrong, "\n".join(wrong)


def test_every_base_dependency_is_imported():
    used = set().union(*(dists for _, _, dists, _ in third_party_imports()))
    unused = base_dependencies() - used
    assert not unused, f"base dependencies nothing imports: {sorted(unused)}"


def test_extras_layout():
    extras = extra_dependencies()
    assert extras["hf"] == {"huggingface-hub"}
    assert {"model-signing", "pyopenssl"} <= extras["signing"]
    assert {"mkdocs", "mkdocs-material", "mkdocstrings", "mkdocs-click"} <= extras["docs"]
    assert extras["serve"] == {
        "gunicorn", "lz4", "blake3", "redis", "concurrent-log-handler", "prometheus-client",
        "dulwich", "uvicorn", "httptools",
    }  # fmt: skip
    base = base_dependencies()
    heavy_parts = ("huggingface-hub", "model-signing", "gunicorn", "oras", "filelock", "numpy")
    for heavy in (*heavy_parts, "safetensors"):
        assert heavy not in base
    test_extra = " ".join(project()["optional-dependencies"]["test"])
    for extra in ("hf", "signing", "docs", "serve"):
        assert re.search(rf"modelpack-oci\[[^\]]*\b{extra}\b", test_extra), extra


def test_importing_the_library_and_cli_loads_no_optional_package():
    code = (
        "import sys, modelpack, modelpack_cli.main;"
        f"print(sorted(m for m in {OPTIONAL!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_hf_source_without_huggingface_hub_names_the_extra(monkeypatch, tmp_path):
    from modelpack.model.source.hf import download_snapshot

    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import now raises ImportError
    with pytest.raises(MissingDependencyError) as caught:
        download_snapshot("org/model", None)
    assert caught.value.exit_code == 2
    assert "pip install 'modelpack-oci[hf]'" in str(caught.value)

    args = ["build", "hf://org/model", "-t", "127.0.0.1:1/t/m:v1", "--home", str(tmp_path)]
    assert _cli_error_without("huggingface_hub", args) == (
        "Error: hf:// sources need the huggingface_hub package, which is not installed "
        "(pip install 'modelpack-oci[hf]', or from a checkout: pip install '.[hf]')"
    )


def _cli_error_without(module: str, args: list[str]) -> str:
    """The CLI's stderr for ``args`` when ``module`` cannot be imported; exit code 2."""
    code = (
        f"import sys; sys.modules[{module!r}] = None;"
        f"from modelpack_cli.main import main; main({args!r})"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    return result.stderr.strip()


def test_model_signing_without_the_package_names_the_extra(monkeypatch):
    from modelpack.signing import openssf as provenance

    monkeypatch.setitem(sys.modules, "model_signing", None)
    with pytest.raises(MissingDependencyError, match=r"modelpack-oci\[signing\]"):
        provenance.verify_tree(Path("."), Path("model.sig"), "key.pub")


def test_serve_without_gunicorn_names_the_extra(tmp_path):
    args = ["serve", "--registry", "127.0.0.1:1/hub", "--cache", str(tmp_path)]
    assert _cli_error_without("gunicorn", args) == (
        "Error: modelpack serve's HTTP workers need the gunicorn package, which is not "
        "installed (pip install 'modelpack-oci[serve]', or from a checkout: "
        "pip install '.[serve]')"
    )
    assert not any(tmp_path.iterdir())  # nothing written before the refusal
