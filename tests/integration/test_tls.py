"""HTTPS registries: trusted via --ca-file, refused with a clear line when not trusted."""

import pytest
from support.helpers import run_cli, tree_files

import modelpack
from modelpack.errors import RegistryUnavailableError
from modelpack.testing import RegistryServer


@pytest.fixture(scope="module")
def tls_registry():
    with RegistryServer(tls=True) as server:
        yield server


def test_https_round_trip_with_ca_file(tiny_model, tls_registry, settings, tmp_path):
    https = settings.with_overrides(plain_http=False, ca_file=str(tls_registry.ca_file))
    ref = f"{tls_registry.host}/secure/tiny:v1"
    modelpack.build(tiny_model, ref, settings=https)
    pushed = modelpack.push(ref, settings=https)
    assert pushed.stats.transferred > 0
    out = modelpack.pull(ref, tmp_path / "out", settings=https)
    assert tree_files(out) == tree_files(tiny_model)


def test_untrusted_certificate_is_one_clear_error(tiny_model, tls_registry, tmp_path):
    ref = f"{tls_registry.host}/secure/untrusted:v1"
    result = run_cli("inspect", ref, "--remote")
    assert result.returncode == 6
    assert "TLS" in result.stderr and "--ca-file" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_insecure_skips_verification(tiny_model, tls_registry, settings):
    ref = f"{tls_registry.host}/secure/insecure:v1"
    insecure = settings.with_overrides(plain_http=False, insecure=True)
    modelpack.build(tiny_model, ref, settings=insecure)
    assert modelpack.push(ref, settings=insecure).stats.transferred > 0
    with pytest.raises(RegistryUnavailableError):
        modelpack.inspect(ref, remote=True, settings=settings.with_overrides(plain_http=False))


def test_per_registry_config_file_needs_no_flags(tiny_model, tls_registry, tmp_path):
    config = tmp_path / "modelpack.toml"
    config.write_text(f'[registries."{tls_registry.host}"]\nca_file = "{tls_registry.ca_file}"\n')
    env = {"MODELPACK_CONFIG": str(config)}
    ref = f"{tls_registry.host}/secure/configured:v1"
    assert run_cli("build", str(tiny_model), "-t", ref, "-q", env=env).returncode == 0
    pushed = run_cli("push", ref, env=env)
    assert pushed.returncode == 0, pushed.stderr
    out = tmp_path / "out"
    assert run_cli("pull", ref, "-o", str(out), env=env).returncode == 0
    assert tree_files(out) == tree_files(tiny_model)
