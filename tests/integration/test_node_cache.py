"""The node cache: many pullers, killed pullers, stale locks, HF cache layout, management."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support.helpers import build_and_push, run_cli, tree_files
from support.http_proxy import HttpProxy

import modelpack
from modelpack.storage.cache import NodeCache
from modelpack.storage.unpack import DirectoryTarget
from modelpack.testing import make_tiny_model


@pytest.fixture(scope="module")
def big_model(tmp_path_factory):
    # ~26 MB of weights: long enough to interrupt, quick enough for CI.
    return make_tiny_model(tmp_path_factory.mktemp("big") / "big-bert", hidden=512)


def _push(model, host, settings, name):
    ref = f"{host}/cache/{name}:v1"
    built = build_and_push(model, ref, settings)
    weight = next(x.descriptor for x in built.layers if x.plan.file.relpath == "model.safetensors")
    return ref, built, weight


def _spawn_pull(ref, home, extra_env=None):
    env = {**os.environ, "MODELPACK_HOME": str(home), **(extra_env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "modelpack", "pull", ref, "--plain-http", "-q"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_four_concurrent_pullers_download_each_blob_once(big_model, registry, settings, tmp_path):
    ref, built, weight = _push(big_model, registry.host, settings, "concurrent")
    node = tmp_path / "node"
    before = registry.access_log().count(f"GET /v2/cache/concurrent/blobs/{weight.digest}")
    pullers = [_spawn_pull(ref, node) for _ in range(4)]
    results = [p.communicate(timeout=300) for p in pullers]
    assert [p.returncode for p in pullers] == [0, 0, 0, 0], [r[1] for r in results]
    paths = {out.strip() for out, _ in results}
    assert len(paths) == 1
    assert tree_files(Path(paths.pop())) == tree_files(big_model)
    log = registry.access_log()
    for layer in built.manifest.layers:
        fetched = log.count(f"GET /v2/cache/concurrent/blobs/{layer.digest}")
        assert fetched - (before if layer.digest == weight.digest else 0) == 1, layer.filepath


def test_pull_killed_mid_blob_resumes(big_model, registry, settings, tmp_path):
    slow = HttpProxy(upstream=registry.url, blob_delay=0.004).start()
    try:
        ref, built, weight = _push(big_model, slow.host, settings, "killed")
        node = tmp_path / "node"
        partial = node / "store" / "ingest" / f"partial-sha256-{weight.digest.split(':')[1]}"
        puller = _spawn_pull(ref, node)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if partial.exists() and partial.stat().st_size >= weight.size * 0.3:
                break
            time.sleep(0.02)
        puller.send_signal(signal.SIGKILL)
        puller.wait()
        kept = partial.stat().st_size
        assert weight.size * 0.3 <= kept < weight.size
        served = slow.bytes_served(lambda e: weight.digest in e.path)
        again = _spawn_pull(ref, node)
        out, err = again.communicate(timeout=300)
        assert again.returncode == 0, err
        assert tree_files(Path(out.strip())) == tree_files(big_model)
        fetched_again = slow.bytes_served(lambda e: weight.digest in e.path) - served
        assert fetched_again == weight.size - kept  # only what was missing
    finally:
        slow.stop()


LOCK_HOLDER = """
import sys, time
from modelpack.storage._locks import file_lock
with file_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize("which", ["blob", "tree"])
def test_a_killed_lock_holder_does_not_block_the_next_pull(
    tiny_model, registry, settings, tmp_path, which
):
    ref, built, weight = _push(tiny_model, registry.host, settings, f"stale-{which}")
    node = tmp_path / "node"
    hexpart = (weight.digest if which == "blob" else built.digest).split(":")[1]
    lock = (
        node / "store" / "ingest" / f"sha256-{hexpart}.lock"
        if which == "blob"
        else node / "models" / ".locks" / f"{hexpart}.lock"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(lock)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "locked"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    result = run_cli("pull", ref, "--plain-http", env={"MODELPACK_HOME": str(node)})
    assert result.returncode == 0, result.stderr
    assert tree_files(Path(result.stdout.strip())) == tree_files(tiny_model)


HF_CHECK = """
import json, sys
from huggingface_hub import hf_hub_download, snapshot_download
from transformers import AutoConfig, AutoTokenizer
repo, cache = sys.argv[1], sys.argv[2]
path = snapshot_download(repo, local_files_only=True, cache_dir=cache)
tagged = snapshot_download(repo, revision="v1", local_files_only=True, cache_dir=cache)
config_file = hf_hub_download(repo, "config.json", cache_dir=cache)
config = AutoConfig.from_pretrained(repo, cache_dir=cache)
tokens = AutoTokenizer.from_pretrained(repo, cache_dir=cache)("the model")["input_ids"]
print(json.dumps({"path": path, "tagged": tagged, "config_file": config_file,
                  "model_type": config.model_type, "tokens": tokens}))
"""


def test_hf_cache_layout_loads_offline_with_unchanged_code(
    tiny_model, registry, settings, tmp_path
):
    ref = f"{registry.host}/cache/hf:v1"
    modelpack.build(tiny_model, ref, hf_repo_id="modelpack-test/tiny-bert", settings=settings)
    modelpack.push(ref, settings=settings)
    hub = tmp_path / "hf-hub"
    result = run_cli("pull", ref, "--hf-cache", str(hub), "--hf-trust-annotations", "--plain-http")
    assert result.returncode == 0, result.stderr
    snapshot = Path(result.stdout.strip())
    repo_dir = hub / "models--modelpack-test--tiny-bert"
    assert snapshot.parent == repo_dir / "snapshots"
    commit = (repo_dir / "refs" / "main").read_text()
    assert re.fullmatch(r"[0-9a-f]{40}", commit)  # no trailing newline
    assert (repo_dir / "refs" / "v1").read_text() == commit
    assert all((snapshot / f).is_symlink() for f in tree_files(tiny_model))
    check = subprocess.run(
        [sys.executable, "-c", HF_CHECK, "modelpack-test/tiny-bert", str(hub)],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    found = json.loads(check.stdout)
    assert Path(found["path"]) == snapshot == Path(found["tagged"])
    assert Path(found["config_file"]).read_bytes() == (tiny_model / "config.json").read_bytes()
    assert found["model_type"] == "bert"
    assert found["tokens"][0] == 2  # [CLS]
    assert tree_files(snapshot) == tree_files(tiny_model)


def test_hf_cache_repo_id_defaults_to_the_reference_and_can_be_overridden(
    tiny_model, registry, settings, tmp_path
):
    ref = f"{registry.host}/org-x/model-y:v2"
    modelpack.build(tiny_model, ref, settings=settings)
    modelpack.push(ref, settings=settings)
    snapshot = modelpack.pull(ref, hf_cache=tmp_path / "hub", settings=settings)
    assert snapshot.parent.parent.name == "models--org-x--model-y"
    other = modelpack.pull(
        ref,
        hf_cache=tmp_path / "hub",
        hf_repo_id="acme/renamed",
        hf_revision="prod",
        settings=settings,
    )
    assert other.parent.parent.name == "models--acme--renamed"
    assert (other.parent.parent / "refs" / "prod").exists()


def test_partial_pull_into_the_cache(tiny_model, registry, settings, tmp_path):
    ref, built, _ = _push(tiny_model, registry.host, settings, "partial")
    node = settings.with_overrides(home=tmp_path / "node")
    part = modelpack.pull_model(ref, include=["*.json"], settings=node)
    assert set(tree_files(part.path)) == {f for f in tree_files(tiny_model) if f.endswith(".json")}
    full = modelpack.pull_model(ref, settings=node)
    assert full.path != part.path
    assert tree_files(full.path) == tree_files(tiny_model)
    assert full.stats.bytes_transferred < sum(
        x.descriptor.size for x in built.layers
    )  # json reused


def test_verify_dir_names_what_differs(tiny_model, registry, settings, tmp_path):
    ref, _, _ = _push(tiny_model, registry.host, settings, "verify")
    out = modelpack.pull(ref, tmp_path / "out", settings=settings)
    ok = run_cli("verify", ref, "--dir", str(out), "--plain-http", "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["verified"] is True
    (out / "config.json").write_text("{}")
    (out / "vocab.txt").unlink()
    bad = run_cli("verify", ref, "--dir", str(out), "--plain-http")
    assert bad.returncode == 5
    assert "config.json (differs)" in bad.stderr and "vocab.txt (missing)" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_verify_dir_reads_tar_layers(tiny_model, registry, settings, tmp_path):
    ref = f"{registry.host}/cache/verify-tar:v1"
    modelpack.build(tiny_model, ref, layer_format="tar", compress="zstd", settings=settings)
    modelpack.push(ref, settings=settings)
    out = modelpack.pull(ref, tmp_path / "out", settings=settings)
    assert modelpack.verify_dir(ref, out, settings=settings).checked == len(tree_files(tiny_model))
    (out / "README.md").write_text("changed")
    with pytest.raises(modelpack.IntegrityError, match="README.md"):
        modelpack.verify_dir(ref, out, settings=settings)


def test_cache_ls_prune_rm(tiny_model, big_model, registry, settings, tmp_path):
    small_ref, _, _ = _push(tiny_model, registry.host, settings, "lru-small")
    big_ref, _, _ = _push(big_model, registry.host, settings, "lru-big")
    node = settings.with_overrides(home=tmp_path / "node")
    modelpack.pull(big_ref, settings=node)
    modelpack.pull(small_ref, settings=node)
    listing = json.loads(
        run_cli("cache", "ls", "--json", env={"MODELPACK_HOME": str(node.home)}).stdout
    )
    assert [m["reference"] for m in listing["models"]] == [small_ref, big_ref]  # most recent first
    # The big model is least recently used: pruning to 5 MB evicts it, keeps the small one.
    with modelpack.use_model(small_ref, settings=node):
        result = modelpack.cache_prune("5MB", settings=node)
    assert [e.reference for e in result.removed] == [big_ref]
    assert result.size <= 5_000_000
    assert [e.reference for e in modelpack.cache_list(settings=node)] == [small_ref]
    # A model in use is never evicted, even when the limit says so.
    with modelpack.use_model(small_ref, settings=node):
        held = modelpack.cache_prune("1KB", settings=node)
    assert [e.reference for e in held.in_use] == [small_ref] and held.removed == []
    removed = run_cli("cache", "rm", small_ref, env={"MODELPACK_HOME": str(node.home)})
    assert removed.returncode == 0, removed.stderr
    assert modelpack.cache_list(settings=node) == []
    assert run_cli("cache", "rm", small_ref, env={"MODELPACK_HOME": str(node.home)}).returncode == 3


def test_library_import_needs_no_cli_dependencies():
    code = "import sys, modelpack; print(sorted(m for m in ('click', 'rich') if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_progress_false_and_true(tiny_model, registry, settings, tmp_path, capfd):
    ref, _, _ = _push(tiny_model, registry.host, settings, "progress")
    modelpack.pull(ref, tmp_path / "quiet", progress=False, settings=settings)
    assert capfd.readouterr().err == ""
    modelpack.pull(ref, tmp_path / "loud", progress=True, settings=settings)
    assert capfd.readouterr().err == ""  # not a TTY and nothing big: plain mode stays short


def _held_after_first_link(monkeypatch):
    """Pause a tree's materialization after its first layer is linked into staging:
    (reached, release) events for the test to act in between."""
    reached, release = threading.Event(), threading.Event()
    original = DirectoryTarget._try_link

    def paused(self, desc, target):
        linked = original(self, desc, target)
        if not reached.is_set():
            reached.set()
            assert release.wait(120), "the test never released the pull"
        return linked

    monkeypatch.setattr(DirectoryTarget, "_try_link", paused)
    return reached, release


def test_prune_racing_a_pull_never_publishes_a_partial_tree(
    tiny_model, registry, settings, tmp_path, monkeypatch
):
    ref, _, _ = _push(tiny_model, registry.host, settings, "prune-race")
    node = settings.with_overrides(home=tmp_path / "node", concurrency=1)
    reached, release = _held_after_first_link(monkeypatch)
    outcome: dict = {}

    def pull():
        try:
            outcome["result"] = modelpack.pull_model(ref, settings=node)
        except Exception as exc:  # handed to the assertion below
            outcome["error"] = exc

    puller = threading.Thread(target=pull)
    puller.start()
    try:
        assert reached.wait(120)
        # What `modelpack prune` does once the store part is done, while the tree is staged.
        NodeCache(node).prune_untagged()
    finally:
        release.set()
        puller.join(120)
    assert "error" not in outcome, outcome.get("error")
    assert tree_files(outcome["result"].path) == tree_files(tiny_model)
    monkeypatch.undo()
    again = modelpack.pull_model(ref, settings=node)
    assert tree_files(again.path) == tree_files(tiny_model)


def test_a_tree_without_its_completion_marker_is_rebuilt(tiny_model, registry, settings, tmp_path):
    ref, built, _ = _push(tiny_model, registry.host, settings, "marker")
    node = settings.with_overrides(home=tmp_path / "node")
    first = modelpack.pull_model(ref, settings=node)
    # A tree half removed by a killed prune, or renamed into place by a pull killed
    # before it was marked complete: never reused as it is.
    (first.path / "vocab.txt").unlink()
    (node.models_dir / ".complete" / f"{first.path.name}.json").unlink(missing_ok=True)
    again = modelpack.pull_model(ref, settings=node)
    assert again.path == first.path
    assert tree_files(again.path) == tree_files(tiny_model)
    # Staging whose puller is gone (no lock held) is removed by prune; untagged, so the tree too.
    staging = first.path.with_name(f".modelpack-staging-{first.path.name}")
    (staging / "sub").mkdir(parents=True)
    modelpack.cache_remove(ref, settings=node)
    assert not staging.exists() and not first.path.exists()


def _write_in_place(path: Path, data: bytes) -> None:
    """What a careless training script does to a file it was given (root ignores 0444)."""
    if os.geteuid() != 0:
        path.chmod(0o644)
    with open(path, "r+b") as f:
        f.write(data)


def test_writing_into_a_cached_tree_leaks_into_no_other_pull(
    tiny_model, registry, settings, tmp_path
):
    ref_a, _, _ = _push(tiny_model, registry.host, settings, "write-a")
    ref_b, _, _ = _push(tiny_model, registry.host, settings, "write-b")  # the same blobs
    node = settings.with_overrides(home=tmp_path / "node")
    a = modelpack.pull_model(ref_a, settings=node)
    _write_in_place(a.path / "model.safetensors", b"\x00" * 64)
    _write_in_place(a.path / "config.json", b"{}")
    b = modelpack.pull_model(ref_b, settings=node)
    assert tree_files(b.path) == tree_files(tiny_model)
    again = modelpack.pull_model(ref_a, settings=node)  # the changed tree is rebuilt
    assert tree_files(again.path) == tree_files(tiny_model)
    layout = tmp_path / "layout"
    modelpack.copy(f"store:{ref_a}", f"oci:{layout}:v1", settings=node)  # reads every blob
    assert tree_files(modelpack.pull(f"oci:{layout}:v1", tmp_path / "out", settings=node)) == (
        tree_files(tiny_model)
    )


def test_hf_cache_after_an_include_pull_is_the_whole_model(
    tiny_model, registry, settings, tmp_path
):
    ref, _, _ = _push(tiny_model, registry.host, settings, "hf-partial")
    hub = tmp_path / "hub"
    part = run_cli("pull", ref, "--include", "*.json", "--hf-cache", str(hub), "--plain-http")
    assert part.returncode == 0, part.stderr
    assert set(tree_files(Path(part.stdout.strip()))) < set(tree_files(tiny_model))
    full = run_cli("pull", ref, "--hf-cache", str(hub), "--plain-http")
    assert full.returncode == 0, full.stderr
    assert Path(full.stdout.strip()) == Path(part.stdout.strip())
    assert tree_files(Path(full.stdout.strip())) == tree_files(tiny_model)


@pytest.mark.parametrize("into", ["-o", "node cache"])
def test_ctrl_c_says_what_was_kept_and_the_next_run_resumes(
    into, big_model, registry, settings, tmp_path
):
    """Issue 22 item 3: Ctrl-C printed only `Aborted.` and left 451 MB without a word."""
    slow = HttpProxy(upstream=registry.url, blob_delay=0.004).start()
    try:
        ref, built, weight = _push(big_model, slow.host, settings, f"ctrl-c-{into[:2]}")
        node = tmp_path / "node"
        out = tmp_path / "out"
        args = ["-o", str(out)] if into == "-o" else []
        env = {**os.environ, "MODELPACK_HOME": str(node)}
        command = [sys.executable, "-m", "modelpack", "pull", ref, "--plain-http", *args]
        # A shell's background job (CI, nohup) starts with SIGINT ignored, and a Python
        # started so keeps ignoring it: give the puller the default, as a terminal would.
        puller = subprocess.Popen(
            command,
            env=env,
            stderr=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        hexpart = weight.digest.split(":")[1]

        def partials():
            if into == "-o":
                return list(tmp_path.glob(f".modelpack-staging-out/.blobs/sha256-{hexpart}"))
            return list((node / "store" / "ingest").glob(f"partial-sha256-{hexpart}"))

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            found = partials()
            if found and found[0].stat().st_size >= weight.size * 0.3:
                break
            time.sleep(0.02)
        puller.send_signal(signal.SIGINT)
        _, err = puller.communicate(timeout=60)
        assert puller.returncode == 130, err
        (line,) = [x for x in err.splitlines() if x.startswith("Error:")]
        assert re.search(r"interrupted: [\d.]+ MB of downloads kept in ", line), line
        assert "run the same command again to resume" in line
        again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr
        done = out if into == "-o" else Path(again.stdout.strip())
        assert tree_files(done) == tree_files(big_model)
    finally:
        slow.stop()


def test_prune_and_doctor_find_what_a_killed_pull_left(big_model, registry, settings, tmp_path):
    """Issue 22 item 3: a killed pull's hidden staging directory was known to neither."""
    slow = HttpProxy(upstream=registry.url, blob_delay=0.004).start()
    try:
        ref, _, weight = _push(big_model, slow.host, settings, "killed-pull")
        node, out = tmp_path / "node", tmp_path / "out"
        env = {**os.environ, "MODELPACK_HOME": str(node)}
        command = [sys.executable, "-m", "modelpack", "pull", ref, "--plain-http", "-o", str(out)]
        puller = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        partial = tmp_path / ".modelpack-staging-out" / ".blobs" / f"sha256-{weight.digest[7:]}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (
            partial.exists() and partial.stat().st_size > weight.size * 0.2
        ):
            time.sleep(0.02)
        puller.kill()
        puller.communicate(timeout=60)
    finally:
        slow.stop()
    staging = partial.parent.parent
    assert staging.is_dir()
    doctor = run_cli("doctor", env={"MODELPACK_HOME": str(node)})
    (line,) = [x for x in doctor.stdout.splitlines() if "interrupted pulls" in x]
    assert "of downloads kept" in line and str(staging) in line, doctor.stdout
    assert "modelpack prune" in doctor.stdout
    pruned = run_cli("prune", env={"MODELPACK_HOME": str(node)})
    assert pruned.returncode == 0, pruned.stderr
    assert f"Removed {staging} (" in pruned.stderr
    assert "1 interrupted pull," in pruned.stderr
    assert not staging.exists() and not out.exists()
    assert not list(tmp_path.glob(".modelpack-staging-out*"))  # its lock file too
    again = run_cli("doctor", env={"MODELPACK_HOME": str(node)})
    (line,) = [x for x in again.stdout.splitlines() if "interrupted pulls" in x]
    assert line.split()[-1] == "none", again.stdout
