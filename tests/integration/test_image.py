"""`modelpack image`: an image of a model, seen as a container runtime sees it, from the
registry's own storage (no layer stored twice), containerd (pull, mount, and KServe's modelcar
commands run in it), skopeo + umoci, and crane export."""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests
from support.helpers import build_and_push, run_cli, tree_files

# What KServe's modelcar-init and modelcar containers run (kserve pkg/utils/storage.go,
# CreateModelcarInitContainer / CreateModelcarContainer), with Kubernetes' `$$` escapes undone.
KSERVE_INIT = (
    "echo 'Pre-fetching modelcar: ' && [ -d /models ] && [ \"$(ls -A /models)\" ] && "
    "echo 'OK ... Prefetched and valid (/models exists)' || "
    "(echo 'NOK ... Prefetched but modelcar is invalid' && exit 1)"
)
KSERVE_MODELCAR = "ln -sf /proc/$$/root/models /mnt/models && sleep infinity"


def stored_blobs(registry) -> dict[str, int]:  # noqa: ANN001
    """digest -> size of every blob in the registry's storage (manifests are blobs there too)."""
    root = registry.workdir / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256"
    return {f"sha256:{p.parent.name}": p.stat().st_size for p in root.glob("*/*/data")}


def unpack_with_umoci(reference: str, workdir: Path, arch: str | None = None) -> Path:
    """skopeo copy to an OCI layout (of ``arch``'s manifest), then umoci unpack: the rootfs a
    runtime would mount."""
    layout, bundle = workdir / "layout", workdir / "bundle"
    workdir.mkdir(parents=True, exist_ok=True)
    chosen = ["--override-arch", arch] if arch else []
    subprocess.run(["skopeo", *chosen, "copy", "--src-tls-verify=false", f"docker://{reference}",
                    f"oci:{layout}:image"], check=True, capture_output=True, timeout=120)  # fmt: skip
    result = subprocess.run(["umoci", "unpack", "--image", f"{layout}:image", str(bundle)],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return bundle / "rootfs"


def image_json(*args: str) -> dict:
    result = run_cli("image", *args, "--json", "--plain-http")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def tar_model(tiny_model, registry, settings, home, tmp_path):
    """The tiny model with tar layers, plus one file of its own: its config and images are
    new to the (session-wide) registry whatever ran before."""
    (tiny_model / "notes.txt").write_text(f"unique to {tmp_path}\n")
    ref = f"{registry.host}/images/bert:v1"
    build_and_push(tiny_model, ref, settings, layer_format="tar")
    return ref


@pytest.mark.interop(
    "skopeo / umoci",
    "modelpack image -> skopeo copy -> umoci unpack",
    "the image's root filesystem holds the model's files, identical; the registry stores no layer twice",
)  # fmt: skip
def test_image_volume_reuses_every_layer_and_unpacks_to_the_model(
    tar_model, tiny_model, registry, tmp_path
):
    before = stored_blobs(registry)
    out = image_json(tar_model, f"{registry.host}/images/bert:v1-image")
    added = {d: s for d, s in stored_blobs(registry).items() if d not in before}
    # New in storage: the image config, the image manifest and the referrers index (tag
    # schema) naming the image as the model's referrer. No layer.
    assert out["layersReused"] == len(tree_files(tiny_model)) and out["bytesReused"] > 200_000
    assert out["digest"] in added and len(added) == 3, added
    assert max(added.values()) < 8_000
    assert 0 < sum(added.values()) - out["bytesAdded"] < 4_000  # the index, beside config+manifest
    assert out["kind"] == "volume" and out["root"] == "/" and not out["modelCopied"]

    rootfs = unpack_with_umoci(out["reference"], tmp_path)
    assert tree_files(rootfs) == tree_files(tiny_model)


@pytest.mark.interop(
    "crane",
    "modelpack image -> crane export",
    "the flattened filesystem of a gzip-layered model's image is the model's files, identical",
)
def test_crane_exports_the_model_from_a_compressed_models_image(
    tiny_model, registry, settings, home, go_peers, tmp_path
):
    ref = f"{registry.host}/images/gz:v1"
    build_and_push(tiny_model, ref, settings, layer_format="tar", compress="gzip")
    out = image_json(ref, f"{registry.host}/images/gz:v1-image")
    exported = tmp_path / "fs.tar"
    go_peers.run("crane", "export", "--insecure", out["reference"], str(exported))
    root = tmp_path / "root"
    root.mkdir()
    shutil.unpack_archive(exported, root, format="tar")
    assert tree_files(root) == tree_files(tiny_model)
    # umoci checks each layer's diffId (from the model config) after decompressing it
    assert tree_files(unpack_with_umoci(out["reference"], tmp_path / "umoci")) == tree_files(
        tiny_model
    )


@pytest.fixture(scope="module")
def containerd(tmp_path_factory):  # noqa: ANN201 - modelpack.testing.containerd.Containerd
    from modelpack.testing.containerd import Containerd

    with Containerd(tmp_path_factory.mktemp("containerd")) as daemon:
        yield daemon


@pytest.mark.interop(
    "containerd / runc",
    "modelpack image -> containerd pull, unpack and mount",
    "the mounted image (what an image volume is on containerd) is the model's files, read-only",
)
def test_containerd_mounts_the_image_as_an_image_volume_would(
    tar_model, tiny_model, registry, containerd, tmp_path
):
    out = image_json(tar_model, f"{registry.host}/images/bert:v1-image")
    containerd.pull(out["reference"])  # unpacks every layer and checks its diffId
    mount = tmp_path / "volume"
    mount.mkdir()
    containerd.ctr("images", "mount", out["reference"], str(mount))
    try:
        assert tree_files(mount) == tree_files(tiny_model)
        with pytest.raises(OSError, match="Read-only file system"):
            (mount / "config.json").write_text("{}")
    finally:
        containerd.ctr("images", "unmount", str(mount))


@pytest.mark.interop(
    "containerd / runc",
    "modelpack image --modelcar -> containerd runs KServe's modelcar-init and modelcar commands",
    "the check passes; a second container in the modelcar's PID namespace reads /mnt/models: the model's files, nothing else",
)  # fmt: skip
@pytest.mark.parametrize("layout", ["links", "files"])
def test_modelcar_runs_kserves_commands_in_containerd(
    layout, tar_model, tiny_model, registry, containerd, tmp_path
):
    before = stored_blobs(registry)
    chosen = ["--modelcar-layout", layout] if layout == "files" else []  # links: the default
    out = image_json(tar_model, f"{registry.host}/images/bert:v1-modelcar-{layout}", "--modelcar",
                     *chosen)  # fmt: skip
    added = {d: s for d, s in stored_blobs(registry).items() if d not in before}
    image = json.loads(
        run_cli("inspect", "--remote", out["reference"], "--json", "--plain-http").stdout
    )
    model = json.loads(run_cli("inspect", "--remote", tar_model, "--json", "--plain-http").stdout)
    base = image["layers"][0]
    assert base["size"] > Path("/bin/busybox").stat().st_size
    assert out["kind"] == "modelcar" and out["root"] == "/models" and out["layout"] == layout
    small = {d for d in added if d != base["digest"]}
    if layout == "links":
        links = image["layers"][-1]
        # new: config, manifest, referrers index, the /models links, and the busybox base unless
        # an earlier modelcar left it (one blob for all); no model layer
        assert small >= {out["digest"], links["digest"]} and len(small) == 4
        assert all(d == base["digest"] or s < 16_000 for d, s in added.items()), added
    else:
        # no layer of the model: a tar of each file under models/, the model's bytes again
        # (the tars of files other tests' models share may be there already; notes.txt's not)
        manifest = requests.get(
            f"http://{registry.host}/v2/images/bert/manifests/{out['digest']}",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}, timeout=30,
        ).json()  # fmt: skip
        assert manifest["annotations"]["io.modelpack.image.layout"] == "files"
        titles = [layer["annotations"]["org.opencontainers.image.title"] for layer in
                  manifest["layers"][1:]]  # fmt: skip
        files = dict(zip(titles, image["layers"][1:], strict=True))
        assert sorted(files) == sorted(f"models/{name}" for name in tree_files(tiny_model))
        assert not {f["digest"] for f in files.values()} & {m["digest"] for m in model["layers"]}
        assert out["layersConverted"] == len(files) and out["layersReused"] == 0
        assert files["models/notes.txt"]["digest"] in added
        assert {f["digest"] for f in files.values()} <= set(stored_blobs(registry))
        assert out["bytesAdded"] > sum(map(len, tree_files(tiny_model).values()))
        assert len(small - {f["digest"] for f in files.values()}) == 3  # config, manifest, index

    reference = out["reference"]
    containerd.pull(reference)
    init = containerd.run(reference, f"modelcar-init-{layout}", "sh", "-c", KSERVE_INIT)
    assert init.returncode == 0 and "OK ... Prefetched" in init.stdout, init.stdout + init.stderr

    shared, copied = tmp_path / "shared", tmp_path / "copied"  # the pod's emptyDir; our eyes
    shared.mkdir()
    copied.mkdir()
    emptydir = f"type=bind,src={shared},dst=/mnt,options=rbind:rw"
    sidecar = containerd.run(reference, f"modelcar-{layout}", "sh", "-c", KSERVE_MODELCAR,
                             detach=True, options=("--mount", emptydir))  # fmt: skip
    assert sidecar.returncode == 0, sidecar.stderr
    deadline = time.monotonic() + 30
    while not (shared / "models").is_symlink() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.readlink(shared / "models") == "/proc/1/root/models"  # PID 1 of the pod's namespace
    pid = containerd.task_pid(f"modelcar-{layout}")
    # the serving container: the same PID namespace (shareProcessNamespace) and emptyDir
    server = containerd.run(
        reference, f"server-{layout}", "sh", "-c", "ls -A /mnt/models && /bin/busybox cp -rL /mnt/models/. /out/",
        options=("--with-ns", f"pid:/proc/{pid}/ns/pid", "--mount", emptydir,
                 "--mount", f"type=bind,src={copied},dst=/out,options=rbind:rw"),
    )  # fmt: skip
    assert server.returncode == 0, server.stderr
    top = {name.split("/")[0] for name in tree_files(tiny_model)}
    assert set(server.stdout.split()) == top  # /models holds the model and nothing else
    assert tree_files(copied) == tree_files(tiny_model)
    assert containerd.task_pid(f"modelcar-{layout}") == pid  # still alive: sleep infinity


@pytest.mark.interop(
    "containerd / runc",
    "modelpack image --modelcar -> KServe oci+native:// (an image volume mounted with subPath models)",
    "--modelcar-layout files: models/ alone, bind-mounted as the kubelet mounts a subPath, holds the model's files; the links layout's links lead out of it",
)  # fmt: skip
@pytest.mark.parametrize("layout", ["links", "files"])
def test_kserves_oci_native_subpath_reads_the_files_layout_only(
    layout, tar_model, tiny_model, registry, containerd, tmp_path
):
    out = image_json(tar_model, f"{registry.host}/images/bert:v1-native-{layout}", "--modelcar",
                     "--modelcar-layout", layout)  # fmt: skip
    containerd.pull(out["reference"])
    volume, copied = tmp_path / "volume", tmp_path / "copied"
    volume.mkdir()
    copied.mkdir()
    containerd.ctr("images", "mount", out["reference"], str(volume))
    try:
        # KServe's ConfigureOciNativeToContainer: the image volume at /mnt/models, subPath "models"
        subpath = f"type=bind,src={volume / 'models'},dst=/mnt/models,options=rbind:ro"
        server = containerd.run(
            out["reference"], f"native-{layout}", "sh", "-c", "/bin/busybox cp -rL /mnt/models/. /out/",
            options=("--mount", subpath, "--mount", f"type=bind,src={copied},dst=/out,options=rbind:rw"),
        )  # fmt: skip
    finally:
        containerd.ctr("images", "unmount", str(volume))
    if layout == "files":
        assert server.returncode == 0, server.stderr
        assert tree_files(copied) == tree_files(tiny_model)
    else:  # models/config.json -> ../config.json: /mnt/config.json, outside the subPath
        assert server.returncode != 0 and "No such file or directory" in server.stderr
        assert tree_files(copied) == {}


def test_inspect_links_the_model_and_its_images_and_copies_across_repositories(tar_model, registry):
    volume = image_json(tar_model, f"{registry.host}/images/bert:v1-image")
    before = stored_blobs(registry)
    elsewhere = image_json(tar_model, f"{registry.host}/serving/bert:v1")
    new = {d: s for d, s in stored_blobs(registry).items() if d not in before}
    assert elsewhere["modelCopied"] and elsewhere["layersReused"] == volume["layersReused"]
    assert all(size < 8_000 for size in new.values()), new  # mounted: no layer stored again

    model = json.loads(run_cli("inspect", "--remote", tar_model, "--json", "--plain-http").stdout)
    assert {"digest": volume["digest"], "kind": "volume"} in model["images"]
    image = json.loads(
        run_cli("inspect", "--remote", elsewhere["reference"], "--json", "--plain-http").stdout
    )
    assert image["imageOf"] == f"{registry.host}/serving/bert@{model['digest']}"
    shown = run_cli("inspect", "--remote", tar_model, "--plain-http").stdout
    assert f"image (volume)     {volume['digest']}" in shown


def test_image_refuses_raw_layers_and_pushes_nothing(tiny_model, registry, settings, home):
    ref = f"{registry.host}/images/raw:v1"
    build_and_push(tiny_model, ref, settings)
    before = stored_blobs(registry)
    result = run_cli("image", ref, f"{registry.host}/images/raw:v1-image", "--plain-http")
    assert result.returncode == 2
    assert (
        f"has {len(tree_files(tiny_model))} raw layers" in result.stderr
        and "--layer-format tar" in result.stderr
    )
    assert len(result.stderr.strip().splitlines()) == 1
    assert stored_blobs(registry) == before
    tags = run_cli("tags", f"{registry.host}/images/raw", "--plain-http").stdout
    assert "v1-image" not in tags


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--modelcar", "--busybox", "/bin/ls"], "dynamically linked"),
        (["--modelcar", "--platform", "linux/arm64"], "busybox is built for amd64"),
        (["--platform", "linux"], "expected OS/ARCH"),
        (["--modelcar", "--busybox", "/nonexistent/busybox"], "No such file"),
    ],
)
def test_image_option_errors_are_one_line_with_exit_2(tar_model, registry, args, message):
    result = run_cli("image", tar_model, f"{registry.host}/images/bert:bad", *args, "--plain-http")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_digest_image_reference_is_refused(tar_model, registry):
    result = run_cli("image", tar_model, f"{registry.host}/images/bert@sha256:{'0' * 64}")
    assert result.returncode == 2 and "needs a tag" in result.stderr


def test_an_image_is_signed_on_its_own_and_travels_with_its_model(tar_model, registry, tmp_path):
    out = image_json(tar_model, f"{registry.host}/images/bert:v1-image")
    key = tmp_path / "cosign"
    assert run_cli("keygen", "--out", str(key), "--unencrypted").returncode == 0
    signed = run_cli("sign", out["reference"], "--key", f"{key}.key", "--plain-http")
    assert signed.returncode == 0, signed.stderr
    verified = run_cli("verify", out["reference"], "--key", f"{key}.pub", "--plain-http")
    assert verified.returncode == 0, verified.stderr

    copied = f"{registry.host}/mirror/bert:v1"
    assert run_cli("copy", tar_model, copied, "--plain-http").returncode == 0
    model = json.loads(run_cli("inspect", "--remote", copied, "--json", "--plain-http").stdout)
    assert {"digest": out["digest"], "kind": "volume"} in model["images"]
    rootfs = unpack_with_umoci(f"{registry.host}/mirror/bert@{out['digest']}", tmp_path / "u")
    assert rootfs.joinpath("config.json").is_file()


def test_an_image_of_a_model_in_the_local_store_pushes_the_model_first(
    tiny_model, registry, settings, home, tmp_path
):
    import modelpack

    local = f"{registry.host}/images/local:v1"
    modelpack.build(tiny_model, local, settings=settings, layer_format="tar")
    out = image_json(f"store:{local}", f"{registry.host}/images/local:v1-image")
    assert out["modelCopied"] and out["model"].startswith(f"{registry.host}/images/local@sha256:")
    rootfs = unpack_with_umoci(out["reference"], tmp_path)
    assert tree_files(rootfs) == tree_files(tiny_model)


def test_convert_raw_adds_one_tar_copy_per_raw_layer(
    tiny_model, registry, settings, home, tmp_path
):
    import modelpack

    (tiny_model / "notes.txt").write_text(f"unique to {tmp_path}\n")  # one blob no test pushed
    ref = f"{registry.host}/images/rawc:v1"
    build_and_push(tiny_model, ref, settings)
    # what `build --layer-format tar` makes of the same files (built here, not pushed)
    tar_build = modelpack.build(
        tiny_model, f"{registry.host}/images/rawc:tar", settings=settings, layer_format="tar"
    )
    tars = {layer.descriptor.digest for layer in tar_build.layers}
    files = tree_files(tiny_model)
    before = stored_blobs(registry)
    out = image_json(ref, f"{registry.host}/images/rawc:v1-image", "--convert-raw")
    added = {d: s for d, s in stored_blobs(registry).items() if d not in before}
    assert out["layersConverted"] == len(files) and out["layersReused"] == 0
    # the tar copies the registry lacked (identical tars of the other tests' models are shared),
    # and the image's config, manifest and referrers index
    assert tars - set(before) <= set(added) and len(tars - set(before)) >= 1
    assert all(d in tars or size < 8_000 for d, size in added.items()), added
    assert sum(len(b) for b in files.values()) < out["bytesAdded"]
    image = json.loads(
        run_cli("inspect", "--remote", out["reference"], "--json", "--plain-http").stdout
    )
    assert {layer["digest"] for layer in image["layers"]} == tars  # the very same tars
    assert tree_files(unpack_with_umoci(out["reference"], tmp_path)) == files
    again = image_json(ref, f"{registry.host}/images/rawc:v1-image2", "--convert-raw")
    assert again["bytesUploaded"] < 8_000  # the tar copies are there already


def test_an_oci_layout_as_image_ref_is_refused_with_the_way_there(tar_model, tmp_path):
    result = run_cli("image", tar_model, f"oci:{tmp_path}/layout:v1", "--plain-http")
    assert result.returncode == 2 and "modelpack copy IMAGE_REF oci:DIR:TAG" in result.stderr
    assert not (tmp_path / "layout").exists()


def test_several_platforms_make_one_index_that_each_node_architecture_resolves(
    tar_model, tiny_model, registry, containerd, tmp_path
):
    out = image_json(tar_model, f"{registry.host}/images/bert:v1-multi",
                     "--platform", "linux/amd64,linux/arm64")  # fmt: skip
    assert out["platform"] == "linux/amd64,linux/arm64"
    for arch in ("amd64", "arm64"):
        rootfs = unpack_with_umoci(out["reference"], tmp_path / arch, arch=arch)
        assert tree_files(rootfs) == tree_files(tiny_model)
    containerd.pull(out["reference"])  # this node's platform out of the index
    shown = run_cli("inspect", "--remote", out["reference"], "--plain-http")
    assert shown.returncode == 2 and "(linux/arm64)" in shown.stderr  # names each manifest
    model = json.loads(run_cli("inspect", "--remote", tar_model, "--json", "--plain-http").stdout)
    assert {"digest": out["digest"], "kind": "volume"} in model["images"]
