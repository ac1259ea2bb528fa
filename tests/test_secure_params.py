"""The server's checks: every malformed reply is refused with its reason, logged, never a crash."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch

from flame_private.config import HEConfig
from flame_private.secure.public import aggregate, context_file, envelope, packing, params
from flame_private.secure.public.errors import CiphertextRejected, HEError
from flame_private.secure.site import codec, keys
from flame_private.secure.site.ceremony import key_ceremony

RUN = {"run_id": "run-1", "task": "evolution", "round": 2}
OTHER = HEConfig(poly_modulus_degree=4096, coeff_mod_bit_sizes=[30], scale_bits=28)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("he")
    result = key_ceremony(HEConfig(), root / "keys")
    secret = keys.load_secret_context(result.secret_path)
    server = context_file.load_params_context(result.params_path)
    other = keys.load_secret_context(key_ceremony(OTHER, root / "other").secret_path)
    sd = {"a.weight": torch.randn(15000) * 0.1, "b.bias": torch.randn(40, 50) * 0.1}
    layout = packing.ParamLayout.from_state_dict(sd)
    env, payload = codec.encrypt_update(secret, sd, 30, site_id="site-a", model="evo-net", **RUN)
    return secret, server, other, sd, layout, env, payload


def _check(setup, env, payload, **overrides):
    _, server, _, _, layout, _, _ = setup
    kw = {**RUN, "model": "evo-net", "n_params": layout.n_params, "layout_sha256": layout.sha256, **overrides}
    return envelope.validate_envelope(env, payload, server, **kw)


def _reason(setup, env, payload, caplog, **overrides) -> str:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="flame_private.secure.public.envelope"):
        with pytest.raises(CiphertextRejected) as err:
            _check(setup, env, payload, **overrides)
    assert any("rejected ciphertext" in r.message and err.value.reason in r.message for r in caplog.records)
    return err.value.reason


def _forge(env: envelope.CiphertextEnvelope, payload: bytes, **changes) -> envelope.CiphertextEnvelope:
    """A header consistent with ``payload`` (as a buggy or malicious site would send)."""
    import hashlib

    base = {"payload_sha256": hashlib.sha256(payload).hexdigest(), "n_bytes": len(payload)}
    return env.model_copy(update={**base, **changes})


def test_a_good_update_is_accepted(setup) -> None:
    *_, env, payload = setup
    cts = _check(setup, env, payload)
    assert len(cts) == env.n_chunks


def test_wrong_fingerprint(setup, caplog) -> None:
    *_, env, payload = setup
    bad = env.model_copy(update={"he_fingerprint": "0" * 64})
    assert _reason(setup, bad, payload, caplog) == "fingerprint"


def test_wrong_parameters(setup, caplog) -> None:
    secret, server, other, sd, *_ , env, payload = setup
    # Honestly labelled: the site's parameters differ, so does its fingerprint.
    env2, payload2 = codec.encrypt_update(other, sd, 30, site_id="site-a", model="evo-net", **RUN)
    assert _reason(setup, env2, payload2, caplog) == "fingerprint"
    # Forged label: the bytes themselves are refused by SEAL for these parameters.
    assert _reason(setup, _forge(env, payload2, he_fingerprint=server.fingerprint), payload2, caplog) == "params"
    # Slots per chunk from another ring degree.
    assert _reason(setup, env.model_copy(update={"slots_per_chunk": 4096}), payload, caplog) == "params"


def test_truncated(setup, caplog) -> None:
    *_, env, payload = setup
    cut = payload[: len(payload) - 1000]
    assert _reason(setup, env, cut, caplog) == "length"  # the header's byte count catches it first
    assert _reason(setup, _forge(env, cut), cut, caplog) == "truncated"
    assert _reason(setup, _forge(env, payload[:10]), payload[:10], caplog) == "truncated"


def test_garbage(setup, caplog) -> None:
    *_, env, payload = setup
    junk = os.urandom(len(payload))
    assert _reason(setup, env, junk, caplog) == "checksum"
    assert _reason(setup, _forge(env, junk), junk, caplog) == "garbage"
    flipped = bytearray(payload)
    flipped[16:116] = os.urandom(100)  # the start of chunk 0's compressed body: not a ciphertext any more
    assert _reason(setup, _forge(env, bytes(flipped)), bytes(flipped), caplog) == "params"
    # Deeper in a chunk, random bytes can decode to another valid ciphertext (any residue below the 32-bit
    # prime is one): like an update of other values.  Transport damage is caught by the header's sha256.
    flipped = bytearray(payload)
    flipped[5000:5100] = os.urandom(100)
    assert _reason(setup, env, bytes(flipped), caplog) == "checksum"
    assert _reason(setup, env, "not bytes", caplog) in {"garbage", "length"}  # type: ignore[arg-type]


def test_wrong_chunk_count_or_length(setup, caplog) -> None:
    secret, *_, env, payload = setup
    assert _reason(setup, env.model_copy(update={"n_chunks": env.n_chunks + 1}), payload, caplog) == "chunk_count"
    chunks = envelope.split_payload(payload)
    short = b"".join(chunks[:-1])
    assert _reason(setup, _forge(env, short), short, caplog) == "chunk_count"
    assert _reason(setup, env, payload + b"\0" * 10, caplog) == "length"
    assert _reason(setup, _forge(env, payload + b"\0" * 10), payload + b"\0" * 10, caplog) == "truncated"
    assert _reason(setup, env.model_copy(update={"n_params": env.n_params + 1}), payload, caplog) == "layout"
    assert _reason(setup, env.model_copy(update={"layout_sha256": "1" * 64}), payload, caplog) == "layout"


def test_wrong_round_task_run_or_model(setup, caplog) -> None:
    *_, env, payload = setup
    assert _reason(setup, env, payload, caplog, round=3) == "round"
    assert _reason(setup, env, payload, caplog, task="response") == "task"
    assert _reason(setup, env, payload, caplog, run_id="run-0") == "run"
    assert _reason(setup, env, payload, caplog, model="response-net") == "model"
    assert _reason(setup, env, payload, caplog, kind="aggregate") == "kind"


def test_oversized(setup, caplog) -> None:
    *_, env, payload = setup
    assert _reason(setup, env, payload, caplog, max_bytes=len(payload) - 1) == "oversized"
    huge = payload + os.urandom(env.n_chunks * params.ParamsContext.from_config(HEConfig()).max_chunk_bytes())
    assert _reason(setup, _forge(env, huge), huge, caplog) == "oversized"


def test_malformed_header(setup, caplog) -> None:
    *_, env, payload = setup
    raw = env.model_dump()
    assert _reason(setup, {**raw, "round": -1}, payload, caplog) == "header"
    assert _reason(setup, {**raw, "extra": 1}, payload, caplog) == "header"
    assert _reason(setup, b"{not json", payload, caplog) == "header"


def test_server_sum_rejects_mismatched_payloads(setup) -> None:
    secret, server, *_ , payload = setup
    small = codec.encrypt_vector(secret, np.full(10, 0.01))
    with pytest.raises(CiphertextRejected) as err:
        aggregate.add_ciphertexts([payload, small], server)
    assert err.value.reason in {"chunk_count", "oversized"}


def test_the_server_adds_what_validation_parsed_without_parsing_it_again(setup) -> None:
    secret, server, _, sd, layout, _, _ = setup
    updates = [codec.encrypt_update(secret, sd, 30, site_id=f"site-{i}", model="evo-net", **RUN) for i in range(3)]
    parsed = [_check(setup, env, payload) for env, payload in updates]
    env, once = aggregate.aggregate_updates(updates, server, parsed=parsed)
    _, twice = aggregate.aggregate_updates(updates, server)
    assert np.allclose(codec.decrypt_packed(secret, once, layout.n_params),
                       codec.decrypt_packed(secret, twice, layout.n_params), atol=1e-6)
    with pytest.raises(HEError, match="2 parsed payloads for 3 updates"):
        aggregate.aggregate_updates(updates, server, parsed=parsed[:2])


# --------------------------------------------------------------------------- what a ciphertext holds


def test_what_a_ciphertext_holds_is_a_header_field_checked_against_the_step(setup, caplog) -> None:
    """Metric sums are marked by the header's ``content``; offered in place of a model update they are refused."""
    secret, _, _, sd, _, env, payload = setup
    m_env, m_payload = codec.encrypt_update(secret, sd, 30, site_id="site-a", model="evo-net", content="metrics",
                                            **RUN)
    assert (env.content, m_env.content) == ("model", "metrics")
    assert len(_check(setup, m_env, m_payload, content="metrics")) == m_env.n_chunks
    assert _reason(setup, m_env, m_payload, caplog, content="model") == "model"
    assert _reason(setup, env, payload, caplog, content="metrics") == "model"


def test_the_sum_keeps_the_content_and_refuses_updates_that_disagree_on_it(setup) -> None:
    secret, server, _, sd, _, _, _ = setup
    updates = [codec.encrypt_update(secret, sd, 30, site_id=f"site-{i}", model="evo-net",
                                    content="metrics" if i == 2 else "model", **RUN) for i in range(3)]
    with pytest.raises(HEError, match="disagree on content"):
        aggregate.aggregate_updates(updates, server)
    metrics = [codec.encrypt_update(secret, sd, 30, site_id=f"site-{i}", model="evo-net", content="metrics", **RUN)
               for i in range(3)]
    assert aggregate.aggregate_updates(metrics, server)[0].content == "metrics"


def test_a_header_from_before_the_content_field_is_read_by_its_model_name(setup) -> None:
    """Egress logs and checkpoints written earlier marked metric sums only by the name ``metrics:<task>``."""
    *_, env, _ = setup
    older = env.model_dump(mode="json", exclude={"content"})
    assert envelope.parse_envelope({**older, "model": "metrics:evolution"}).content == "metrics"
    assert envelope.parse_envelope(older).content == "model"
    assert envelope.envelope_model("evolution", "metrics") == "metrics:evolution"
    assert envelope.envelope_model("evolution", "model") == "evolution"
