"""Key ceremony, file permissions, and what the server's params-only context can (not) do."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tenseal.sealapi as sa

from flame_private.config import HEConfig
from flame_private.secure import codec, keys, params
from flame_private.secure.errors import ContextFileError, HEConfigError


@pytest.fixture(scope="module")
def ceremony(tmp_path_factory: pytest.TempPathFactory) -> keys.CeremonyResult:
    return keys.key_ceremony(HEConfig(), tmp_path_factory.mktemp("he") / "keys")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_ceremony_writes_three_files_with_their_modes(ceremony: keys.CeremonyResult) -> None:
    assert _mode(ceremony.secret_path) == 0o600
    assert _mode(ceremony.params_path) == 0o644
    assert _mode(ceremony.fingerprint_path) == 0o644
    assert ceremony.fingerprint == params.he_fingerprint(HEConfig())
    for path in (ceremony.secret_path, ceremony.params_path, ceremony.fingerprint_path):
        assert params.read_fingerprint(path) == ceremony.fingerprint
    assert ceremony.params_path.stat().st_size < 1024


def test_ceremony_refuses_to_overwrite(ceremony: keys.CeremonyResult) -> None:
    with pytest.raises(ContextFileError, match="refusing to overwrite"):
        keys.key_ceremony(HEConfig(), ceremony.secret_path.parent)


def test_secret_context_readable_by_others_is_refused(ceremony: keys.CeremonyResult, tmp_path: Path) -> None:
    leaked = tmp_path / "site-secret.ctx"
    leaked.write_bytes(ceremony.secret_path.read_bytes())
    for mode in (0o644, 0o640, 0o604):
        os.chmod(leaked, mode)
        with pytest.raises(keys.KeyPermissionError, match=f"{mode:04o}") as err:
            keys.load_secret_context(leaked)
        assert str(leaked) in str(err.value) and err.value.mode == mode
    os.chmod(leaked, 0o600)
    assert keys.load_secret_context(leaked).fingerprint == ceremony.fingerprint


def test_params_only_file_is_not_a_secret_context(ceremony: keys.CeremonyResult, tmp_path: Path) -> None:
    copy = tmp_path / "server.ctx"
    copy.write_bytes(ceremony.params_path.read_bytes())
    os.chmod(copy, 0o600)
    with pytest.raises(ContextFileError, match="params-only"):
        keys.load_secret_context(copy)


def test_server_refuses_a_secret_context(ceremony: keys.CeremonyResult) -> None:
    with pytest.raises(ContextFileError, match="SECRET"):
        params.load_params_context(ceremony.secret_path)


def test_params_only_context_holds_no_key(ceremony: keys.CeremonyResult) -> None:
    header = params.read_context_header(ceremony.params_path)
    assert header.kind == "params"
    body = ceremony.params_path.read_bytes()[: header.body_bytes]
    # The body is exactly SEAL's EncryptionParameters, ~70 bytes: no room for any key (a key is >= 64 kB here).
    assert body == params.serialize_params(params.ParamsContext.from_config(HEConfig()))
    assert len(body) < 200
    server = params.load_params_context(ceremony.params_path)
    assert not any(hasattr(server, a) for a in ("secret_key", "public_key", "relin_keys", "galois_keys"))


def test_what_the_server_holds_cannot_decrypt(ceremony: keys.CeremonyResult) -> None:
    secret = keys.load_secret_context(ceremony.secret_path)
    values = np.linspace(-1, 1, 1000)
    payload = codec.encrypt_vector(secret, values)
    server = params.load_params_context(ceremony.params_path)
    # The best the server can do is make its own key from the parameters: it decrypts noise.
    guess = sa.KeyGenerator(server.seal).secret_key()
    from flame_private.secure.keys import SecretContext

    wrong = codec.decrypt_vector(SecretContext(params=server, secret_key=guess), payload, values.size)
    assert np.abs(wrong - values).max() > 1e3
    right = codec.decrypt_vector(secret, payload, values.size)
    assert np.abs(right - values).max() < 1e-6


def test_insecure_or_overflowing_configs_are_refused(tmp_path: Path) -> None:
    insecure = HEConfig.model_construct(poly_modulus_degree=4096, coeff_mod_bit_sizes=[60, 60], scale_bits=40)
    with pytest.raises(HEConfigError, match="128-bit"):
        keys.key_ceremony(insecure, tmp_path / "a")
    # docs/references.md 8's smallest option cannot hold n_k * w_k summed over 16 sites.
    with pytest.raises(HEConfigError, match="required"):
        keys.key_ceremony(HEConfig(poly_modulus_degree=4096, coeff_mod_bit_sizes=[32], scale_bits=28),
                          tmp_path / "b")
    assert not (tmp_path / "b" / keys.SECRET_NAME).exists()


def test_corrupt_context_files_are_refused(ceremony: keys.CeremonyResult, tmp_path: Path) -> None:
    bad = tmp_path / "bad.ctx"
    bad.write_bytes(b"not a context at all")
    os.chmod(bad, 0o600)
    with pytest.raises(ContextFileError, match="magic"):
        keys.load_secret_context(bad)
    data = bytearray(ceremony.secret_path.read_bytes())
    data[100] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(ContextFileError, match="checksum"):
        keys.load_secret_context(bad)


def test_params_module_does_not_import_key_handling() -> None:
    code = ("import sys, flame_private.secure.params, flame_private.secure.packing, flame_private.secure.cli; "
            "bad = [m for m in ('flame_private.secure.keys', 'flame_private.secure.codec') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_cli_init_and_fingerprint(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flame_private.secure.cli import keys_app

    cfg = tmp_path / "he.yaml"
    cfg.write_text("poly_modulus_degree: 8192\ncoeff_mod_bit_sizes: [60, 60]\nscale_bits: 40\n")
    run = CliRunner().invoke(keys_app, ["init", "--out", str(tmp_path / "k"), "--config", str(cfg)])
    assert run.exit_code == 0, run.output
    fp = params.he_fingerprint(HEConfig())
    assert fp in run.output and "0600" in run.output and "0644" in run.output
    run = CliRunner().invoke(keys_app, ["fingerprint", str(tmp_path / "k" / keys.PARAMS_NAME)])
    assert run.exit_code == 0 and run.output.strip() == fp
    run = CliRunner().invoke(keys_app, ["init", "--out", str(tmp_path / "k")])
    assert run.exit_code == 2 and "overwrite" in run.output
