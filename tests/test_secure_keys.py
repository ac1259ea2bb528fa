"""Key ceremony, file permissions, key check values, and what the server's params-only context can (not) do.

Specification (secure/site/keys.py, secure/site/ceremony.py, secure/site/keycheck.py, docs/encryption.md):

* the ceremony writes the secret context (0600), the params-only context, the
  parameters' fingerprint and the key check value (KCV), and overwrites nothing;
* the parameters' fingerprint is the same for every key made with the same
  settings; the KCV identifies the key: the same key gives the same KCV however
  it was saved and loaded, another key with the same parameters another KCV;
* ``flame keys verify`` exits 1 when the secret context holds another key, and the
  KCV is computed without writing the key anywhere;
* the server's modules never import key handling.
"""

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
from flame_private.secure.public import context_file, params
from flame_private.secure.public.errors import ContextFileError, HEConfigError
from flame_private.secure.site import codec, keycheck, keys
from flame_private.secure.site.ceremony import CeremonyResult, key_ceremony


@pytest.fixture(scope="module")
def ceremony(tmp_path_factory: pytest.TempPathFactory) -> CeremonyResult:
    return key_ceremony(HEConfig(), tmp_path_factory.mktemp("he") / "keys")


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> CeremonyResult:
    """A second ceremony with the same parameters: the same fingerprint, another key."""
    return key_ceremony(HEConfig(), tmp_path_factory.mktemp("he") / "twin")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_ceremony_writes_four_files_with_their_modes(ceremony: CeremonyResult) -> None:
    assert _mode(ceremony.secret_path) == 0o600
    assert _mode(ceremony.params_path) == 0o644
    assert _mode(ceremony.fingerprint_path) == 0o644
    assert _mode(ceremony.key_check_path) == 0o644
    assert ceremony.fingerprint == params.he_fingerprint(HEConfig())
    for path in (ceremony.secret_path, ceremony.params_path, ceremony.fingerprint_path):
        assert context_file.read_fingerprint(path) == ceremony.fingerprint
    assert ceremony.params_path.stat().st_size < 1024


def test_ceremony_refuses_to_overwrite(ceremony: CeremonyResult) -> None:
    with pytest.raises(ContextFileError, match="refusing to overwrite"):
        key_ceremony(HEConfig(), ceremony.secret_path.parent)


def test_secret_context_readable_by_others_is_refused(ceremony: CeremonyResult, tmp_path: Path) -> None:
    leaked = tmp_path / "site-secret.ctx"
    leaked.write_bytes(ceremony.secret_path.read_bytes())
    for mode in (0o644, 0o640, 0o604):
        os.chmod(leaked, mode)
        with pytest.raises(keys.KeyPermissionError, match=f"{mode:04o}") as err:
            keys.load_secret_context(leaked)
        assert str(leaked) in str(err.value) and err.value.mode == mode
    os.chmod(leaked, 0o600)
    assert keys.load_secret_context(leaked).fingerprint == ceremony.fingerprint


def test_params_only_file_is_not_a_secret_context(ceremony: CeremonyResult, tmp_path: Path) -> None:
    copy = tmp_path / "server.ctx"
    copy.write_bytes(ceremony.params_path.read_bytes())
    os.chmod(copy, 0o600)
    with pytest.raises(ContextFileError, match="params-only"):
        keys.load_secret_context(copy)


def test_server_refuses_a_secret_context(ceremony: CeremonyResult) -> None:
    with pytest.raises(ContextFileError, match="SECRET"):
        context_file.load_params_context(ceremony.secret_path)


def test_params_only_context_holds_no_key(ceremony: CeremonyResult) -> None:
    header = context_file.read_context_header(ceremony.params_path)
    assert header.kind == "params"
    body = ceremony.params_path.read_bytes()[: header.body_bytes]
    # The body is exactly SEAL's EncryptionParameters, ~70 bytes: no room for any key (a key is >= 64 kB here).
    assert body == context_file.serialize_params(params.ParamsContext.from_config(HEConfig()))
    assert len(body) < 200
    server = context_file.load_params_context(ceremony.params_path)
    assert not any(hasattr(server, a) for a in ("secret_key", "public_key", "relin_keys", "galois_keys"))


def test_what_the_server_holds_cannot_decrypt(ceremony: CeremonyResult) -> None:
    secret = keys.load_secret_context(ceremony.secret_path)
    values = np.linspace(-0.05, 0.05, 1000)  # within one site's share of the headroom
    payload = codec.encrypt_vector(secret, values)
    server = context_file.load_params_context(ceremony.params_path)
    # The best the server can do is make its own key from the parameters: it decrypts noise.
    guess = sa.KeyGenerator(server.seal).secret_key()
    from flame_private.secure.site.keys import SecretContext

    wrong = codec.decrypt_vector(SecretContext(params=server, secret_key=guess), payload, values.size)
    assert np.abs(wrong - values).max() > 10
    right = codec.decrypt_vector(secret, payload, values.size)
    assert np.abs(right - values).max() < 1e-5


def test_insecure_or_overflowing_configs_are_refused(tmp_path: Path) -> None:
    insecure = HEConfig.model_construct(poly_modulus_degree=4096, coeff_mod_bit_sizes=[60, 60], scale_bits=40)
    with pytest.raises(HEConfigError, match="128-bit"):
        key_ceremony(insecure, tmp_path / "a")
    # Parameters whose sum over 16 sites cannot hold the magnitude asked for are refused, files unwritten.
    with pytest.raises(HEConfigError, match="required"):
        key_ceremony(HEConfig(poly_modulus_degree=4096, coeff_mod_bit_sizes=[32], scale_bits=30),
                          tmp_path / "b", required_magnitude=2.0)
    assert not (tmp_path / "b" / keys.SECRET_NAME).exists()
    # A patient bound whose summed count could not decrypt to an exact integer at this scale.
    with pytest.raises(HEConfigError, match="too large for scale"):
        key_ceremony(HEConfig(max_patients=100_000), tmp_path / "c")
    assert not (tmp_path / "c" / keys.SECRET_NAME).exists()


def test_corrupt_context_files_are_refused(ceremony: CeremonyResult, tmp_path: Path) -> None:
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


def test_the_keys_cli_loads_no_key_handling_until_a_command_runs() -> None:
    """The top-level ``flame`` CLI imports ``secure.site.cli``; the key modules load only inside a command.

    (That the server side never imports ``secure/site`` at all: tests/test_import_boundaries.py.)
    """
    code = ("import sys, flame_private.secure.site.cli; "
            "bad = [m for m in ('flame_private.secure.site.keys', 'flame_private.secure.site.codec', "
            "'flame_private.secure.site.ceremony', 'flame_private.secure.site.keycheck') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_cli_init_and_fingerprint(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flame_private.secure.site.cli import keys_app

    cfg = tmp_path / "he.yaml"
    cfg.write_text("poly_modulus_degree: 4096\ncoeff_mod_bit_sizes: [32]\nscale_bits: 30\n")
    run = CliRunner().invoke(keys_app, ["init", "--out", str(tmp_path / "k"), "--he-config", str(cfg)])
    assert run.exit_code == 0, run.output
    fp = params.he_fingerprint(HEConfig())
    kcv = keycheck.read_key_check(tmp_path / "k" / keys.KEY_CHECK_NAME)
    assert fp in run.output and kcv.key_check_short in run.output and "0600" in run.output and "0644" in run.output
    run = CliRunner().invoke(keys_app, ["fingerprint", str(tmp_path / "k" / keys.PARAMS_NAME)])
    assert run.exit_code == 0, run.output
    assert f"HE parameters fingerprint: {fp}" in run.output and "does not identify a key" in run.output
    assert "key check value" not in run.output
    run = CliRunner().invoke(keys_app, ["fingerprint", str(tmp_path / "k" / keys.SECRET_NAME)])
    assert run.exit_code == 0, run.output
    assert f"HE parameters fingerprint: {fp}" in run.output
    assert f"key check value: {kcv.key_check_short}" in run.output
    run = CliRunner().invoke(keys_app, ["init", "--out", str(tmp_path / "k")])
    assert run.exit_code == 5 and "overwrite" in run.output


# --------------------------------------------------------------------------- key check value


def test_the_parameters_fingerprint_is_the_same_for_two_keys_the_kcv_is_not(ceremony: CeremonyResult,
                                                                             twin: CeremonyResult) -> None:
    other = twin
    assert other.fingerprint == ceremony.fingerprint
    assert other.key_check_value != ceremony.key_check_value
    assert keycheck.short_kcv(other.key_check_value) != keycheck.short_kcv(ceremony.key_check_value)
    assert (keys.load_secret_context(other.secret_path).key_check_value
            != keys.load_secret_context(ceremony.secret_path).key_check_value)


def test_the_same_key_has_the_same_kcv_however_it_was_saved(ceremony: CeremonyResult, tmp_path: Path) -> None:
    loaded = keys.load_secret_context(ceremony.secret_path)
    assert loaded.key_check_value == ceremony.key_check_value
    copy = tmp_path / "copy.ctx"
    copy.write_bytes(ceremony.secret_path.read_bytes())
    os.chmod(copy, 0o600)
    assert keys.load_secret_context(copy).key_check_value == ceremony.key_check_value
    # A second serialisation by SEAL (saved again from memory, loaded again): same coefficients, same KCV.
    resaved = tmp_path / "resaved.key"
    loaded.secret_key.save(str(resaved))
    again = sa.SecretKey()
    again.load(loaded.params.seal, str(resaved))
    assert keycheck.key_check_value(again, loaded.fingerprint) == ceremony.key_check_value
    # The value is bound to the parameters' fingerprint too (domain separation).
    assert keycheck.key_check_value(again, "0" * 64) != ceremony.key_check_value


def test_the_ceremony_hands_out_the_kcv_of_the_key_it_wrote(ceremony: CeremonyResult) -> None:
    check = keycheck.read_key_check(ceremony.key_check_path)
    assert check.key_check_value == ceremony.key_check_value
    assert check.he_fingerprint == ceremony.fingerprint
    assert check.key_check_short == keycheck.short_kcv(ceremony.key_check_value)
    assert [len(g) for g in check.key_check_short.split("-")] == [4] * 6
    assert context_file.read_fingerprint(ceremony.fingerprint_path) == ceremony.fingerprint


def test_computing_the_kcv_writes_the_key_nowhere(ceremony: CeremonyResult, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    secret = keys.load_secret_context(ceremony.secret_path)
    empty = tmp_path / "cwd"
    empty.mkdir()
    monkeypatch.chdir(empty)
    monkeypatch.setenv("TMPDIR", str(empty))

    def no_files(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"the KCV computation opened a file: {args}")

    monkeypatch.setattr("builtins.open", no_files)
    monkeypatch.setattr(os, "open", no_files)
    monkeypatch.setattr("flame_private.secure.public._sealio.scratch", no_files)
    value = keycheck.key_check_value(secret.secret_key, secret.fingerprint)
    monkeypatch.undo()
    assert value == ceremony.key_check_value
    assert list(empty.iterdir()) == []


def test_kcv_values_are_compared_in_any_grouping_and_case(ceremony: CeremonyResult) -> None:
    kcv = ceremony.key_check_value
    short = keycheck.short_kcv(kcv)
    for typed in (short, short.lower(), short.replace("-", " "), short.replace("-", ""), kcv, kcv.upper()):
        assert keycheck.matches(kcv, typed), typed
    wrong = short[:-1] + ("0" if short[-1] != "0" else "1")
    assert not keycheck.matches(kcv, wrong)
    for bad in ("", "3F2A", "xyz-" * 6, kcv + "00"):
        with pytest.raises(keycheck.KeyCheckFormatError):
            keycheck.normalise_kcv(bad)


def test_cli_verify_accepts_the_ceremony_key_and_refuses_another(ceremony: CeremonyResult,
                                                                 twin: CeremonyResult) -> None:
    from typer.testing import CliRunner

    from flame_private.secure.site.cli import keys_app

    secret = str(ceremony.secret_path)
    short = keycheck.short_kcv(ceremony.key_check_value)
    run = CliRunner().invoke(keys_app, ["verify", secret, "--kcv", short])
    assert run.exit_code == 0, run.output
    assert "key check passed" in run.output
    run = CliRunner().invoke(keys_app, ["verify", secret, "--kcv-file", str(ceremony.key_check_path)])
    assert run.exit_code == 0, run.output

    other = twin  # same parameters, another key
    run = CliRunner().invoke(keys_app, ["verify", secret, "--kcv", keycheck.short_kcv(other.key_check_value)])
    assert run.exit_code == 1, run.output
    assert "KEY CHECK FAILED" in run.output and "holds another key" in run.output and short in run.output
    run = CliRunner().invoke(keys_app, ["verify", str(other.secret_path), "--kcv-file", str(ceremony.key_check_path)])
    assert run.exit_code == 1 and "holds another key" in run.output

    run = CliRunner().invoke(keys_app, ["verify", secret, "--kcv", "3F2A"])
    assert run.exit_code == 3 and "hex digits" in run.output
    run = CliRunner().invoke(keys_app, ["verify", secret])
    assert run.exit_code == 2 and "--kcv" in run.output


def test_cli_verify_refuses_a_key_check_of_other_parameters(ceremony: CeremonyResult, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flame_private.secure.site.cli import keys_app

    forged = tmp_path / "he-key-check.json"
    check = keycheck.read_key_check(ceremony.key_check_path)
    forged.write_bytes(keycheck.key_check_bytes(check.model_copy(update={"he_fingerprint": "f" * 64})))
    run = CliRunner().invoke(keys_app, ["verify", str(ceremony.secret_path), "--kcv-file", str(forged)])
    assert run.exit_code == 1 and "other HE parameters" in run.output


def test_no_key_material_is_printed_or_logged(ceremony: CeremonyResult, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    from typer.testing import CliRunner

    from flame_private.secure.site.cli import keys_app

    with caplog.at_level("DEBUG"):
        made = CliRunner().invoke(keys_app, ["init", "--out", str(tmp_path / "k")])
        path = tmp_path / "k" / keys.SECRET_NAME
        check = keycheck.read_key_check(tmp_path / "k" / keys.KEY_CHECK_NAME)
        outputs = [made.output] + [CliRunner().invoke(keys_app, args).output for args in (
            ["fingerprint", str(path)], ["verify", str(path), "--kcv", check.key_check_short])]
    secret = keys.load_secret_context(path)
    plain = secret.secret_key.data()
    coefficients = [str(plain[i]) for i in range(0, plain.coeff_count(), 97)]
    text = "\n".join(outputs) + caplog.text + repr(secret) + (tmp_path / "k" / keys.KEY_CHECK_NAME).read_text()
    assert check.key_check_short in text  # the positive control: what is shown is there
    assert not [c for c in coefficients if len(c) > 9 and c in text]
    assert path.read_bytes()[:48].hex() not in text
