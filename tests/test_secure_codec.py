"""FedAvg through CKKS end to end: packing, encryption at the sites, the keyless sum, decryption."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flame_private.config import HEConfig
from flame_private.secure import codec, keys, packing, params
from flame_private.secure.errors import HEError, OverflowRisk, PackingError

RUN = {"run_id": "run-1", "task": "response", "round": 3}


@pytest.fixture(scope="module")
def contexts(tmp_path_factory: pytest.TempPathFactory) -> tuple[keys.SecretContext, params.ParamsContext]:
    result = keys.key_ceremony(HEConfig(), tmp_path_factory.mktemp("he") / "keys")
    return keys.load_secret_context(result.secret_path), params.load_params_context(result.params_path)


def _model(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv3d(5, 16, 3), torch.nn.GroupNorm(4, 16), torch.nn.Flatten(),
                              torch.nn.Linear(16 * 8, 64), torch.nn.Linear(64, 2))
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_layout_order_is_sorted_and_round_trips() -> None:
    sd = _model(0)
    layout = packing.ParamLayout.from_state_dict(sd)
    assert [s.name for s in layout.specs] == sorted(sd)
    back = packing.unflatten(packing.flatten(sd, layout), layout)
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    reordered = dict(reversed(list(sd.items())))
    assert packing.ParamLayout.from_state_dict(reordered).sha256 == layout.sha256


def test_non_float_tensors_must_be_excluded_explicitly() -> None:
    sd = {**_model(0), "bn.num_batches_tracked": torch.tensor(3)}
    with pytest.raises(PackingError, match="num_batches_tracked"):
        packing.ParamLayout.from_state_dict(sd)
    layout = packing.ParamLayout.from_state_dict(sd, exclude=["bn.num_batches_tracked"])
    assert "bn.num_batches_tracked" not in [s.name for s in layout.specs]


def test_complex_packing_puts_two_reals_per_slot() -> None:
    x = np.arange(10.0)
    (chunk,) = packing.to_slots(x, 16)
    assert chunk.shape == (8,) and chunk[0] == 0 + 8j and chunk[1] == 1 + 9j and chunk[2] == 2 + 0j
    assert np.array_equal(packing.from_slots([chunk], 10), x)


def test_fedavg_round_trip_matches_plaintext_weighted_mean(contexts) -> None:
    secret, server = contexts
    base = _model(1)
    counts = [7, 40, 123, 1000]
    sites = [{k: v + 0.05 * torch.randn_like(v) for k, v in base.items()} for _ in counts]
    layout = packing.ParamLayout.from_state_dict(base)
    updates = [codec.encrypt_update(secret, sd, n, site_id=f"site-{i}", model="response-net", **RUN)
               for i, (sd, n) in enumerate(zip(sites, counts))]
    accepted = []
    for env, payload in updates:
        params.validate_envelope(env.model_dump(), payload, server, model="response-net",
                                 n_params=layout.n_params, **RUN)
        accepted.append((env, payload))
    env, total = params.aggregate_updates(accepted, server)
    assert env.kind == "aggregate" and env.contributors == 4
    assert env.contributor_ids == ["site-0", "site-1", "site-2", "site-3"]
    mean, n = codec.decrypt_aggregate(secret, env.model_dump_json(), total, layout, model="response-net", **RUN)
    assert n == sum(counts)
    for k in base:
        want = sum(c * sd[k].double() for sd, c in zip(sites, counts)) / sum(counts)
        assert mean[k].dtype == base[k].dtype and mean[k].shape == base[k].shape
        assert (mean[k].double() - want).abs().max().item() < 1e-6
    # Error of the HE pipeline itself, before the cast back to float32:
    agg = codec.decrypt_vector(secret, total, layout.n_params + 1)
    exact = sum(packing.update_vector(sd, layout, c) for sd, c in zip(sites, counts))
    assert np.abs(agg - exact).max() / sum(counts) < 1e-8


def test_aggregate_needs_three_contributors(contexts) -> None:
    secret, server = contexts
    sd = _model(2)
    two = [codec.encrypt_update(secret, sd, 5, site_id=f"site-{i}", model="m", **RUN) for i in range(2)]
    with pytest.raises(HEError, match="at least 3"):
        params.aggregate_updates(two, server)


def test_add_needs_only_the_params_only_context(contexts) -> None:
    secret, server = contexts
    xs = [np.full(20_000, float(i)) for i in range(1, 5)]
    total = params.add_ciphertexts([codec.encrypt_vector(secret, x) for x in xs], server)
    assert np.allclose(codec.decrypt_vector(secret, total, 20_000), 10.0, atol=1e-7)


def test_overflow_is_refused_before_encryption(contexts) -> None:
    secret, _ = contexts
    limit = codec.max_safe_magnitude(HEConfig(), max_sites=16)
    assert 1e4 < limit < 2e4  # q ~ 2^60, scale 2^40, 16 sites, factor 2 and sqrt(2) margins
    codec.encrypt_vector(secret, np.array([limit * 0.99, -limit * 0.99]), max_sites=16)
    with pytest.raises(OverflowRisk, match="exceeds"):
        codec.encrypt_vector(secret, np.array([0.0, limit * 1.01]), max_sites=16)
    with pytest.raises(OverflowRisk):  # the count slot counts too
        codec.encrypt_update(secret, {"w": torch.zeros(3)}, 20_000, site_id="s", model="m", max_sites=16,
                             **RUN)
    with pytest.raises(OverflowRisk, match="NaN"):
        codec.encrypt_vector(secret, np.array([np.nan]))
    assert codec.max_safe_magnitude(HEConfig(), max_sites=4) == pytest.approx(4 * limit, rel=1e-6)


def test_the_analysed_bound_really_is_safe(contexts) -> None:
    """16 sites at the limit add up exactly; well past it the sum wraps (what the refusal prevents).

    A constant full chunk puts scale * value in two polynomial coefficients, the
    largest a smooth vector makes them (the bound adds sqrt(2) and a factor 2).
    """
    secret, server = contexts
    n = server.values_per_chunk
    limit = codec.max_safe_magnitude(HEConfig(), max_sites=16)
    total = params.add_ciphertexts([codec.encrypt_vector(secret, np.full(n, limit), max_sites=16)] * 16, server)
    assert np.allclose(codec.decrypt_vector(secret, total, n), 16 * limit, rtol=1e-9)
    big = codec.encrypt_vector(secret, np.full(n, 4 * limit), max_sites=4)
    wrapped = codec.decrypt_vector(secret, params.add_ciphertexts([big] * 16, server), n)
    assert not np.allclose(wrapped, 64 * limit, rtol=1e-3)


def test_wire_size_uses_the_compact_encoding(contexts) -> None:
    """Seeded symmetric + complex packing: ~8 B/param at N=8192 [60,60] (public-key ts.ckks_vector: 32)."""
    secret, server = contexts
    chunk = server.values_per_chunk
    n_params = 12 * chunk - 1  # 98,303 parameters + the count slot fill 12 chunks exactly
    env, payload = codec.encrypt_update(secret, {"w": torch.randn(n_params) * 0.1}, 50, site_id="s", model="m", **RUN)
    assert env.n_chunks == 12
    assert len(payload) / n_params <= 8.5
    # With a partly filled last chunk (100,000 params -> 13 chunks) the padding costs < 1 chunk.
    env, payload = codec.encrypt_update(secret, {"w": torch.randn(100_000) * 0.1}, 50, site_id="s", model="m", **RUN)
    assert len(payload) / (env.n_chunks * chunk) <= 8.1
    assert len(payload) <= 8.1 * 100_000 + 8.1 * chunk
