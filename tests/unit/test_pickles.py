"""Pickle-based files are scanned (model/pickles.py, picklescan underneath): real torch.save
files pass, a file that runs code when loaded is refused naming what it calls, and a
hostile file cannot make the scan itself expensive."""

from __future__ import annotations

import io
import json
import pickle
import struct
import time
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from support.pickles import legacy_stream, system_call, torch_zip

import modelpack
from modelpack.errors import NotFoundError, UnsafePickleError
from modelpack.model.pickles import (
    DEFAULT_LIMITS,
    Limits,
    PickleScan,
    scan_file,
    scan_files,
)
from modelpack.oci.spec import ANNOTATION_FILEPATH, ANNOTATION_PICKLE_SCAN
from modelpack.schemas import PICKLE_SCAN, validate


def scanned(tmp_path: Path, name: str, data: bytes, limits: Limits = DEFAULT_LIMITS) -> PickleScan:
    path = tmp_path / name
    path.write_bytes(data)
    return scan_file(path, name, limits)


# -- real files pass, hostile ones are named ------------------------------------------


@pytest.mark.parametrize(
    "name", ["zip-state-dict.ckpt", "legacy-state-dict.pth", "legacy-torch03-state-dict.pth"]
)
def test_real_torch_save_files_pass(torch_files, name):
    scan = scan_file(torch_files / name, name)
    assert scan.status == "safe" and not scan.refused, scan
    assert {i.callable for i in scan.imports} >= {"collections.OrderedDict", "torch.FloatStorage"}
    assert all(i.safety == "innocuous" for i in scan.imports)


def test_a_real_checkpoint_holding_config_objects_needs_the_option(torch_files):
    """Lightning pickled omegaconf objects into it: torch.load(weights_only=True) refuses
    it too, and so do we."""
    scan = scan_file(torch_files / "zip-with-config-objects.ckpt", "last.ckpt")
    assert scan.status == "suspicious" and scan.refused
    assert "omegaconf.dictconfig.DictConfig" in scan.calls


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_a_reduce_to_os_system_is_unsafe_in_every_protocol(tmp_path, protocol):
    scan = scanned(tmp_path, "pytorch_model.bin", system_call(protocol))
    assert scan.status == "unsafe" and scan.calls == ["posix.system"]


@pytest.mark.parametrize(
    "layout",
    [
        pytest.param(lambda: torch_zip(system_call()), id="torch-zip"),
        pytest.param(lambda: torch_zip(system_call(), archive="data"), id="archive-named-data"),
        pytest.param(lambda: legacy_stream(system_call()), id="legacy-stream"),
        pytest.param(lambda: system_call() + system_call(), id="second-pickle"),
    ],
)
def test_the_payload_is_found_in_every_layout_torch_loads(tmp_path, layout):
    assert scanned(tmp_path, "model.pt", layout()).calls == ["posix.system"]


def test_storages_of_a_torch_zip_are_not_read(tmp_path):
    """torch never unpickles ARCHIVE/data/N (raw tensor bytes): a pickle there runs
    nothing, and float data that happens to start like a pickle is no false positive."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": 1}, protocol=2))
        z.writestr("archive/data/0", system_call())
    assert scanned(tmp_path, "model.bin", buffer.getvalue()).status == "safe"


def test_a_name_built_at_load_time_is_unsafe(tmp_path):
    """STACK_GLOBAL fed by something other than two strings: nobody can say what it imports."""
    data = b"\x80\x04" + b"K\x01" + b"\x8c\x06system" + b"\x93" + b"."
    scan = scanned(tmp_path, "x.pkl", data)
    assert scan.status == "unsafe" and any("unknown" in c for c in scan.calls)


def test_getting_past_the_blocklist_still_needs_names_outside_the_allow_list(tmp_path):
    """builtins.__import__ + _operator.getitem are on no blocklist; they are not allowed."""
    data = (
        b"\x80\x02c_operator\ngetitem\nq\x00cbuiltins\nvars\nq\x01cbuiltins\n__import__\n"
        b"X\x02\x00\x00\x00os\x85R\x85RX\x06\x00\x00\x00system\x86R."
    )
    scan = scanned(tmp_path, "x.pkl", data)
    assert scan.refused and set(scan.calls) == {
        "_operator.getitem", "builtins.vars", "builtins.__import__"
    }  # fmt: skip


def test_what_torch_weights_only_accepts_passes(tmp_path):
    """A tensor, a parameter and a set as torch.save writes them (protocol 2 GLOBALs)."""
    data = (
        b"\x80\x02}q\x00(X\x01\x00\x00\x00pctorch._utils\n_rebuild_parameter\nq\x01"
        b"ctorch.nn.parameter\nParameter\nq\x02c__builtin__\nset\nq\x03ctorch\nSize\nq\x04"
        b"c_codecs\nencode\nq\x05ctorch\nbfloat16\nq\x06u."
    )
    scan = scanned(tmp_path, "x.bin", data)
    assert scan.status == "safe", scan


def test_files_that_are_not_pickles_pass_or_are_not_read(tmp_path):
    scans = scan_files(
        [
            ("model.safetensors", _write(tmp_path / "a", system_call())),
            ("config.json", _write(tmp_path / "b", b"{}")),
            ("ct2/model.bin", _write(tmp_path / "c", b"\x06\x00\x00\x00" + bytes(64))),
        ]
    )
    assert list(scans) == ["ct2/model.bin"] and scans["ct2/model.bin"].status == "safe"


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# -- refused, or kept by the option; recorded -------------------------------------------


def test_a_refusal_is_one_line_naming_the_file_and_what_it_calls(tmp_path):
    files = [("sub/pytorch_model.bin", _write(tmp_path / "m", system_call()))]
    with pytest.raises(UnsafePickleError) as caught:
        scan_files(files)
    line = str(caught.value)
    assert "\n" not in line and caught.value.exit_code == 5
    assert line.startswith("sub/pytorch_model.bin: ") and "posix.system" in line
    assert "--allow-unsafe-pickle" in line
    assert caught.value.path == "sub/pytorch_model.bin" and caught.value.calls == ["posix.system"]


def test_the_option_keeps_the_file_and_marks_its_scan(tmp_path):
    files = [("m.bin", _write(tmp_path / "m", system_call()))]
    (scan,) = scan_files(files, allow=True).values()
    assert scan.allowed and scan.status == "unsafe"
    document = json.loads(scan.annotation())
    validate(document, PICKLE_SCAN, "scan")
    assert document["allowed"] is True and document["scanner"] == "picklescan"


def test_annotations_from_elsewhere_are_read_by_shape_only():
    assert PickleScan.from_annotation("f", "not json") is None
    assert PickleScan.from_annotation("f", '{"status": "fine"}') is None
    assert PickleScan.from_annotation("f", "x" * 70000) is None
    odd = {"status": "safe", "imports": [{"module": 1}, {"module": "a", "name": "b",
           "safety": "<b>"}, {"module": "os", "name": "system", "safety": "dangerous"}],
           "moreImports": True}  # fmt: skip
    scan = PickleScan.from_annotation("f", json.dumps(odd))
    assert scan is not None and [i.callable for i in scan.imports] == ["os.system"]
    validate(scan.to_dict(), PICKLE_SCAN, "scan")


def test_an_annotation_lists_at_most_32_imports(tmp_path):
    names = "".join(f"cmod{i}\nname{i}\n" for i in range(100))
    scan = scanned(tmp_path, "x.pkl", f"({names}t.".encode())
    document = json.loads(scan.annotation())
    assert len(document["imports"]) == 32 and document["moreImports"] == 68
    validate(document, PICKLE_SCAN, "scan")


def test_build_refuses_before_writing_a_layer_and_records_what_it_keeps(tmp_path, torch_files):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "bert"}')
    (model / "pytorch_model.bin").write_bytes((torch_files / "zip-state-dict.ckpt").read_bytes())
    (model / "optimizer.pt").write_bytes(system_call())
    with pytest.raises(UnsafePickleError, match=r"^optimizer\.pt: .*posix\.system"):
        modelpack.build(model, "reg.example/ns/m:v1")
    with pytest.raises(NotFoundError):
        modelpack.inspect("reg.example/ns/m:v1")
    result = modelpack.build(model, "reg.example/ns/m:v1", allow_unsafe_pickle=True)
    scans = {
        layer.descriptor.annotations[ANNOTATION_FILEPATH]: json.loads(
            layer.descriptor.annotations[ANNOTATION_PICKLE_SCAN]
        )
        for layer in result.layers
        if ANNOTATION_PICKLE_SCAN in layer.descriptor.annotations
    }
    assert scans["pytorch_model.bin"]["status"] == "safe"
    assert scans["optimizer.pt"]["status"] == "unsafe" and scans["optimizer.pt"]["allowed"]
    assert any("optimizer.pt" in w and "posix.system" in w for w in result.warnings)
    inspected = modelpack.inspect("reg.example/ns/m:v1").to_dict()
    shown = {layer["path"]: layer.get("pickleScan") for layer in inspected["layers"]}
    assert shown["config.json"] is None and shown["optimizer.pt"]["allowed"] is True


# -- bounds ----------------------------------------------------------------------------


def test_opcodes_are_bounded_in_time_and_memory(tmp_path):
    """At the default bound (1,000,000 reads, each opcode at least one) a stream of
    one-byte opcodes stops within seconds; memory is what picklescan keeps per opcode."""
    path = _write(tmp_path / "flat.pkl", b"\x80\x04" + b"N0" * 1_500_000 + b".")
    started = time.monotonic()
    scan = scan_file(path, "flat.pkl")
    assert scan.status == "error" and "opcodes" in scan.note
    assert time.monotonic() - started < 30
    tracemalloc.start()
    try:
        scan = scan_file(path, "flat.pkl", Limits(max_reads=100_000))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert scan.status == "error" and peak < 40 << 20, peak  # ~x10 at the default bound


def test_a_length_a_pickle_claims_is_never_allocated(tmp_path):
    claims = b"\x80\x04\x8e" + struct.pack("<Q", 1 << 62) + b"abc"  # BINBYTES8 of 4 EiB
    scan = scanned(tmp_path, "x.pkl", claims)
    assert scan.status == "error" and "bytes of pickle data" in scan.note


def test_a_long_line_is_bounded_too(tmp_path):
    scan = scanned(tmp_path, "x.pkl", b"c" + b"m" * (2 << 20), Limits(max_bytes=1 << 20))
    assert scan.status == "error" and "bytes" in scan.note


def test_deep_nesting_is_no_recursion(tmp_path):
    nested = b"\x80\x02" + b"(]" * 200_000 + b"e" * 200_000 + b"."
    started = time.monotonic()
    scan = scanned(tmp_path, "x.pkl", nested)
    assert scan.status in ("safe", "error") and time.monotonic() - started < 30


def test_a_zip_bomb_stops_at_the_byte_bound(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", b"\x80\x02" + b"N0" * (8 << 20) + b".")
    assert len(buffer.getvalue()) < 100_000
    scan = scanned(tmp_path, "x.pt", buffer.getvalue(), Limits(max_bytes=1 << 20))
    assert scan.status == "error" and "bytes of pickle data" in scan.note


def test_a_zip_of_too_many_entries_is_refused_before_it_is_parsed(tmp_path):
    data = torch_zip(pickle.dumps({}, protocol=2), storages=50)
    scan = scanned(tmp_path, "x.pt", data, Limits(max_zip_entries=20))
    assert scan.status == "error" and "entries" in scan.note
    scan = scanned(tmp_path, "x.pt", data, Limits(max_central_directory=1000))
    assert scan.status == "error" and "central directory" in scan.note


def test_a_zip_of_many_members_besides_storages_stops_at_the_member_bound(tmp_path):
    """Each member opened is a read at its own offset (a Range request at the gateway):
    thousands of storages cost nothing, other members at most max_zip_members_read."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({}, protocol=2))
        for key in range(2000):
            z.writestr(f"archive/data/{key}", bytes(8))
        z.writestr("archive/version", "3\n")
    assert scanned(tmp_path, "x.pt", buffer.getvalue()).status == "safe"
    with zipfile.ZipFile(buffer, "a") as z:
        for i in range(100):
            z.writestr(f"archive/extra/{i}.txt", b"x")
    scan = scanned(tmp_path, "x.pt", buffer.getvalue())
    assert scan.status == "error" and "64 members" in scan.note


def test_a_zip_whose_end_record_lies_is_an_error(tmp_path):
    data = bytearray(torch_zip(pickle.dumps({}, protocol=2)))
    end = data.rfind(b"PK\x05\x06")
    data[end + 10 : end + 12] = b"\xff\xff"  # zip64 entries, and no zip64 record
    scan = scanned(tmp_path, "x.pt", bytes(data))
    assert scan.status == "error" and scan.refused


def test_the_deadline_stops_a_scan(tmp_path):
    path = _write(tmp_path / "x.pkl", b"\x80\x04" + b"N0" * 50_000 + b".")
    scan = scan_file(path, "x.pkl", Limits(max_seconds=0.0))
    assert scan.status == "error" and "took more than" in scan.note


def test_an_old_tar_checkpoint_is_not_scanned_and_so_refused(tmp_path):
    head = bytearray(1024)
    head[257:262] = b"ustar"
    scan = scanned(tmp_path, "x.pt", bytes(head))
    assert scan.status == "error" and "tar" in scan.note
