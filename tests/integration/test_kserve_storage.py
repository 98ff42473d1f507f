"""KServe's storage initializer, for real: kserve-storage from PyPI (what KServe's
``storage-initializer`` image runs), in a venv of its own, downloads `modelpack image
--modelcar` images from the real registry by ``oci://``: the path KServe takes for an
``oci://`` storageUri when modelcars are off, and for ``oci+fetch://`` (its webhook hands the
initializer the same ``oci://`` URI). Its ``_download_oci`` extracts only the ``models/``
entries of each tar layer, prefix stripped, with tarfile's ``data`` filter."""

import json
from pathlib import Path

import pytest
from support.helpers import build_and_push, make_artifact, make_tar, run_cli, tree_files
from support.kserve_storage import storage_initializer

from modelpack.oci.spec import ANNOTATION_FILEPATH
from modelpack.storage.store import LayoutStore


def image_json(*args: str) -> dict:
    result = run_cli("image", *args, "--json", "--plain-http")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def regular_files(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` (dotfiles too) by relative path; a symlink fails the test."""
    assert not [p for p in root.rglob("*") if p.is_symlink()], "a symlink in the download"
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def stored_blobs(registry) -> dict[str, int]:  # noqa: ANN001
    """digest -> size of every blob in the registry's storage (manifests are blobs there too)."""
    root = registry.workdir / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256"
    return {f"sha256:{p.parent.name}": p.stat().st_size for p in root.glob("*/*/data")}


def files_modelcar(model: Path, ref: str, registry, settings, **build) -> tuple[dict, dict]:  # noqa: ANN001
    """Build and push ``model``, then its files modelcar: the --json output and the blobs
    the registry stored for the modelcar (digest -> size)."""
    build_and_push(model, ref, settings, **build)
    before = stored_blobs(registry)
    out = image_json(ref, f"{ref}-kserve", "--modelcar", "--modelcar-layout", "files")
    return out, {d: s for d, s in stored_blobs(registry).items() if d not in before}


@pytest.mark.interop(
    "kserve-storage",
    "modelpack image --modelcar --modelcar-layout files -> KServe storage initializer (oci://, oci+fetch://)",
    "every file of the model, byte-identical, no symlink, nothing else; raw, tar and tar+zstd models alike",
)  # fmt: skip
@pytest.mark.parametrize(
    "build", [{"layer_format": "tar"}, {}, {"layer_format": "tar", "compress": "zstd"}],
    ids=["tar", "raw", "tar+zstd"],
)  # fmt: skip
def test_the_storage_initializer_unpacks_a_files_modelcar_byte_for_byte(
    build, tiny_model, registry, settings, home, kserve_storage, tmp_path
):
    (tiny_model / "notes.txt").write_text(f"unique to {tmp_path}\n")  # a blob no test pushed
    (tiny_model / "bin").mkdir()  # a folder the links layout refuses (busybox is at /bin)
    (tiny_model / "bin" / "run.sh").write_text("#!/bin/sh\n")
    (tiny_model / "bin" / "run.sh").chmod(0o755)
    model = tree_files(tiny_model)
    name = "-".join(build.values()) or "raw"
    out, added = files_modelcar(tiny_model, f"{registry.host}/kserve/{name}:v1", registry, settings,
                                **build)  # fmt: skip
    assert out["layout"] == "files" and out["layersConverted"] == len(model)
    assert out["layersReused"] == 0 and out["bytesReused"] == 0

    dest = tmp_path / "mnt" / "models"
    result = storage_initializer(kserve_storage, f"oci://{out['reference']}", dest, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert regular_files(dest) == model
    assert (dest / "bin" / "run.sh").stat().st_mode & 0o111  # executable, as in the model
    # the registry paid the model's bytes once more, plus tar headers and padding
    payload = sum(map(len, model.values()))
    assert out["bytesAdded"] > payload
    assert sum(added.values()) <= out["bytesAdded"] + 4_000  # + the referrers index


def test_a_links_modelcar_is_what_the_storage_initializer_refuses(
    tiny_model, registry, settings, home, kserve_storage, tmp_path
):
    """The reason for the files layout (issue 30): the default, zero-copy modelcar is a layer
    of symlinks out of ``models/``, which the ``data`` filter refuses: nothing usable."""
    ref = f"{registry.host}/kserve/links:v1"
    build_and_push(tiny_model, ref, settings, layer_format="tar")
    out = image_json(ref, f"{ref}-modelcar", "--modelcar")
    assert out["layout"] == "links" and out["layersConverted"] == 0
    dest = tmp_path / "mnt" / "models"
    result = storage_initializer(kserve_storage, f"oci://{out['reference']}", dest, tmp_path)
    assert result.returncode == 1
    assert "LinkOutsideDestinationError" in result.stderr.strip().splitlines()[-1]
    assert not [p for p in dest.rglob("*") if p.is_file()]


@pytest.mark.interop(
    "kserve-storage",
    "modelpack image --modelcar --modelcar-layout files -> KServe storage initializer (oci://)",
    "all-MiniLM-L6-v2 (a real hub model with a 1_Pooling/ folder): every file, byte-identical",
)  # fmt: skip
def test_a_real_model_reaches_the_storage_initializer_whole(
    minilm_model, registry, settings, home, kserve_storage, tmp_path
):
    model = tree_files(minilm_model)
    ref = f"{registry.host}/kserve/minilm:v1"
    out, added = files_modelcar(minilm_model, ref, registry, settings, layer_format="tar")
    dest = tmp_path / "mnt" / "models"
    result = storage_initializer(kserve_storage, f"oci://{out['reference']}", dest, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert regular_files(dest) == model and "1_Pooling/config.json" in model
    payload = sum(map(len, model.values()))
    # a tar per file costs its headers and padding to 10 KiB records; busybox is under 2.5 MB
    assert payload < sum(added.values()) < payload + len(model) * 10_240 + 2_500_000 + 16_000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--modelcar-layout", "files"], "--modelcar-layout files without --modelcar"),
        (["--modelcar-layout", "links"], "--modelcar-layout links without --modelcar"),
        (["--modelcar", "--modelcar-layout", "files", "--convert-raw"], "drop --convert-raw"),
    ],
)
def test_modelcar_layout_refusals_are_one_line_with_exit_2_and_push_nothing(
    tiny_model, registry, settings, home, args, message
):
    ref = f"{registry.host}/kserve/refused:v1"
    build_and_push(tiny_model, ref, settings)  # raw: --convert-raw is not what is refused
    before = stored_blobs(registry)
    result = run_cli("image", ref, f"{ref}-bad", *args, "--plain-http")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert stored_blobs(registry) == before


def test_an_unknown_layout_is_a_usage_error(registry):
    ref = f"{registry.host}/kserve/refused:v1"
    result = run_cli("image", ref, f"{ref}-bad", "--modelcar", "--modelcar-layout", "copy")
    assert result.returncode == 2  # click's usage message, before anything is asked of a registry
    assert "'copy' is not one of 'links', 'files'" in result.stderr


def test_the_python_api_refuses_an_unknown_layout_before_any_request(settings):
    import modelpack
    from modelpack.errors import UsageError

    with pytest.raises(UsageError, match="expected one of links, files"):
        modelpack.image("127.0.0.1:9/m:v1", "127.0.0.1:9/m:v1-x", modelcar=True,
                        modelcar_layout="symlinks", settings=settings)  # fmt: skip


def test_a_model_with_an_empty_folder_is_refused_for_the_files_layout(
    registry, settings, home, tmp_path
):
    """An empty folder (a tar layer holding only a directory entry, as another tool may
    write) has no file to copy under models/: refused, naming it, nothing pushed."""
    layout = tmp_path / "layout"
    make_artifact(
        LayoutStore(layout),
        "v1",
        [("application/vnd.cncf.model.code.v1.tar", make_tar([("empty", None)]),
          {ANNOTATION_FILEPATH: "empty/"}),
         ("application/vnd.cncf.model.weight.config.v1.tar", make_tar([("config.json", b"{}")]),
          {ANNOTATION_FILEPATH: "config.json"})],
    )  # fmt: skip
    ref = f"{registry.host}/kserve/empty:v1"
    assert run_cli("copy", f"oci:{layout}:v1", ref, "--plain-http").returncode == 0
    before = stored_blobs(registry)
    result = run_cli("image", ref, f"{ref}-kserve", "--modelcar", "--modelcar-layout", "files",
                     "--plain-http")  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "empty folder empty/" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    new = {d for d in stored_blobs(registry) if d not in before}
    tags = run_cli("tags", f"{registry.host}/kserve/empty", "--plain-http").stdout
    assert "v1-kserve" not in tags and not new
