"""`modelpack pull` as a user runs it, against hostile or odd artifacts: what is refused
(exit code, one line), and that nothing is written where it was refused."""

from __future__ import annotations

import json

import pytest
from support.helpers import make_artifact, run_cli, tree_files

import modelpack
from modelpack.oci.spec import ANNOTATION_FILEPATH, ANNOTATION_HF_COMMIT, ANNOTATION_HF_REPO_ID
from modelpack.storage.store import LayoutStore

RAW = "application/vnd.cncf.model.weight.v1.raw"
LAYERS = [(RAW, b"weights", {ANNOTATION_FILEPATH: "w.bin"})]


def _layout(tmp_path, layers=LAYERS, **options):
    make_artifact(LayoutStore(tmp_path / "layout"), "v1", layers, **options)
    return f"oci:{tmp_path / 'layout'}:v1"


def _one_line(result, code, *needles):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1, result.stderr
    assert all(n in lines[0] for n in needles), lines[0]


@pytest.mark.parametrize("into", ["-o", "node cache"])
@pytest.mark.parametrize(
    ("config", "needles"),
    [
        (("application/vnd.oci.image.config.v1+json", b'{"architecture":"amd64"}'),
         ("container image", "application/vnd.oci.image.config.v1+json")),
        (("application/vnd.unknown.config.v1+json", b"{}"),
         ("not a ModelPack model", "application/vnd.unknown.config.v1+json", "--allow-oci-artifact")),
        (("application/vnd.cncf.model.config.v1+json", b"not json {"), ("not valid JSON",)),
    ],
    ids=["image", "generic", "not-json"],
)  # fmt: skip
def test_an_artifact_that_is_not_a_model_is_refused(
    request, home, settings, tmp_path, config, needles, into
):
    ref = _layout(tmp_path, config=config)
    if into == "-o":
        out = ["-o", str(tmp_path / "out")]
    else:  # the node cache takes registry references
        registry = request.getfixturevalue("registry")
        out, layout = ["--plain-http"], ref
        ref = f"{registry.host}/not-a-model/{tmp_path.name.lower()}:v1"
        modelpack.copy(layout, ref, settings=settings)
    _one_line(run_cli("pull", ref, *out), 5, *needles)
    assert not (tmp_path / "out").exists()
    assert not (home / "store").exists() or list((home / "store").rglob("sha256/*")) == []


def test_a_generic_oci_artifact_is_pulled_when_asked_and_legacy_configs_always(tmp_path):
    generic = _layout(tmp_path, config=("application/vnd.unknown.config.v1+json", b"{}"))
    pulled = run_cli("pull", generic, "-o", str(tmp_path / "generic"), "--allow-oci-artifact")
    assert pulled.returncode == 0, pulled.stderr
    assert tree_files(tmp_path / "generic") == {"w.bin": b"weights"}
    legacy_config = json.dumps({"descriptor": {}, "config": {}, "modelfs": {"type": "layers"}})
    (tmp_path / "legacy").mkdir()
    legacy = _layout(
        tmp_path / "legacy",
        config=("application/vnd.cnai.model.config.v1+json", legacy_config.encode()),
    )
    pulled = run_cli("pull", legacy, "-o", str(tmp_path / "legacy-out"))
    assert pulled.returncode == 0, pulled.stderr


@pytest.mark.parametrize("path", [".git/config", ".GIT/hooks/pre-commit", ".git./config"])
def test_pull_into_a_git_checkout_cannot_write_its_git_folder(tmp_path, path):
    ref = _layout(
        tmp_path, [(RAW, b"[core]\n\tfsmonitor = touch /tmp/pwned\n", {ANNOTATION_FILEPATH: path})]
    )
    checkout = tmp_path / "checkout"
    (checkout / ".git").mkdir(parents=True)
    (checkout / ".git" / "config").write_bytes(b"[core]\n")
    _one_line(run_cli("pull", ref, "-o", str(checkout)), 5, ".git folder", repr(path))
    assert (checkout / ".git" / "config").read_bytes() == b"[core]\n"
    assert sorted(p.name for p in checkout.rglob("*")) == [".git", "config"]


@pytest.mark.parametrize(
    ("path", "needle"),
    [(".blobs/w.bin", "reserves"), ("\udcff.bin", "not valid UTF-8"), ("n" * 300, "255 bytes")],
    ids=["blobs", "surrogate", "long"],
)
def test_odd_names_are_one_clear_error(tmp_path, path, needle):
    ref = _layout(tmp_path, [(RAW, b"x", {ANNOTATION_FILEPATH: path})], ascii_json=True)
    _one_line(run_cli("pull", ref, "-o", str(tmp_path / "out")), 5, needle)
    assert not (tmp_path / "out").exists()


def test_an_existing_file_is_not_overwritten_without_force(tmp_path):
    ref = _layout(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "w.bin").write_bytes(b"my own file")
    (out / "notes.txt").write_bytes(b"notes")
    _one_line(run_cli("pull", ref, "-o", str(out)), 2, str(out / "w.bin"), "--force")
    assert tree_files(out) == {"w.bin": b"my own file", "notes.txt": b"notes"}
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    again = run_cli("pull", ref, "-o", str(out), "--force")
    assert again.returncode == 0, again.stderr
    assert tree_files(out) == {"w.bin": b"weights", "notes.txt": b"notes"}
    # The same artifact into a directory that holds exactly its files: not an overwrite.
    (out / "notes.txt").unlink()
    same = run_cli("pull", ref, "-o", str(out))
    assert same.returncode == 0, same.stderr


def test_a_directory_with_files_of_its_own_is_refused_unless_forced(tmp_path):
    """Issue 22 item 2: a user's notes.txt stayed mixed into the model, without a word."""
    ref = _layout(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_bytes(b"notes")
    (out / "lost+found").mkdir()  # a fresh volume's: allowed
    _one_line(run_cli("pull", ref, "-o", str(out)), 2, "is not empty", "notes.txt", "--force")
    assert sorted(p.name for p in out.iterdir()) == ["lost+found", "notes.txt"]
    merged = run_cli("pull", ref, "-o", str(out), "--force")
    assert merged.returncode == 0, merged.stderr
    assert tree_files(out) == {"w.bin": b"weights", "notes.txt": b"notes"}


def test_hf_cache_repo_id_and_commit_come_from_the_reference_unless_trusted(
    registry, settings, tmp_path
):
    """Item 6: someone/innocent:v1 could write models--meta-llama--Llama-3.1-8B/refs/main."""
    claimed = "deadbeef" * 5
    layout = _layout(
        tmp_path,
        annotations={
            ANNOTATION_HF_REPO_ID: "meta-llama/Llama-3.1-8B",
            ANNOTATION_HF_COMMIT: claimed,
        },
    )
    ref = f"{registry.host}/someone/innocent:v1"
    modelpack.copy(layout, ref, settings=settings)
    hub = tmp_path / "hub"
    pulled = run_cli("pull", ref, "--hf-cache", str(hub), "--plain-http")
    assert pulled.returncode == 0, pulled.stderr
    assert sorted(p.name for p in hub.iterdir()) == ["models--someone--innocent"]
    commit = (hub / "models--someone--innocent" / "refs" / "main").read_text()
    assert commit != claimed and pulled.stdout.strip().endswith(f"snapshots/{commit}")
    trusted = run_cli("pull", ref, "--hf-cache", str(hub), "--plain-http", "--hf-trust-annotations")
    assert trusted.returncode == 0, trusted.stderr
    llama = hub / "models--meta-llama--Llama-3.1-8B"
    assert (llama / "refs" / "main").read_text() == claimed
    named = run_cli("pull", ref, "--hf-cache", str(hub), "--plain-http", "--hf-repo-id", "me/mine")
    assert named.returncode == 0, named.stderr
    assert (hub / "models--me--mine" / "refs" / "main").read_text() == commit
