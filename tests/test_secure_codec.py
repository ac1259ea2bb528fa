"""FedAvg through CKKS end to end: packing, encryption at the sites, the keyless sum, decryption."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import tenseal.sealapi as sa
import torch

from flame_private.config import HEConfig
from flame_private.secure.public import _sealio, aggregate, context_file, envelope, headroom, packing, params
from flame_private.secure.public.errors import HEError, OverflowRisk, PackingError
from flame_private.secure.site import codec, keys
from flame_private.secure.site.ceremony import key_ceremony

RUN = {"run_id": "run-1", "task": "response", "round": 3}


def _contexts(he: HEConfig, where) -> tuple[keys.SecretContext, params.ParamsContext]:
    result = key_ceremony(he, where)
    return keys.load_secret_context(result.secret_path), context_file.load_params_context(result.params_path)


@pytest.fixture(scope="module")
def contexts(tmp_path_factory: pytest.TempPathFactory) -> tuple[keys.SecretContext, params.ParamsContext]:
    return _contexts(HEConfig(), tmp_path_factory.mktemp("he") / "keys")


@pytest.fixture(scope="module")
def legacy_contexts(tmp_path_factory: pytest.TempPathFactory) -> tuple[keys.SecretContext, params.ParamsContext]:
    """The former default, still selectable."""
    he = HEConfig(poly_modulus_degree=8192, coeff_mod_bit_sizes=[60, 60], scale_bits=40)
    return _contexts(he, tmp_path_factory.mktemp("he-legacy") / "keys")


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


def test_entries_kept_local_are_not_packed_but_another_architecture_is_still_told_apart() -> None:
    """Frozen public entries stay at the sites (exclude=); their names and shapes still go into the digest."""
    sd = _model(0)
    frozen = sorted(sd)[1:]
    layout = packing.ParamLayout.from_state_dict(sd, exclude=frozen, value_bound=4.0)
    assert [s.name for s in layout.specs] == sorted(sd)[:1]
    assert [s.name for s in layout.local] == frozen
    wider = {**sd, frozen[0]: torch.zeros(*sd[frozen[0]].shape[:-1], sd[frozen[0]].shape[-1] + 1)}
    assert packing.ParamLayout.from_state_dict(wider, exclude=frozen, value_bound=4.0).sha256 != layout.sha256
    # Layouts that send everything keep the digest they had before entries could stay local.
    full = packing.ParamLayout.from_state_dict(sd, value_bound=4.0)
    doc = {"tensors": [[s.name, list(s.shape), s.dtype] for s in full.specs], "bounds": [repr(4.0), 1000, 16]}
    assert full.local == ()
    assert full.sha256 == hashlib.sha256(json.dumps(doc, separators=(",", ":")).encode()).hexdigest()


def test_complex_packing_puts_two_reals_per_slot() -> None:
    x = np.arange(10.0)
    (chunk,) = packing.to_slots(x, 16)
    assert chunk.shape == (8,) and chunk[0] == 0 + 8j and chunk[1] == 1 + 9j and chunk[2] == 2 + 0j
    assert np.array_equal(packing.from_slots([chunk], 10), x)


def _fedavg(secret, server, sites, counts, layout, model="response-net"):
    updates = [codec.encrypt_update(secret, sd, n, site_id=f"site-{i}", model=model, layout=layout, **RUN)
               for i, (sd, n) in enumerate(zip(sites, counts))]
    parsed = [envelope.validate_envelope(env.model_dump(), payload, server, model=model, n_params=layout.n_params,
                                       layout_sha256=layout.sha256, **RUN) for env, payload in updates]
    env, total = aggregate.aggregate_updates(updates, server, parsed=parsed, max_contributors=layout.max_sites)
    return env, total


def _rel_error(mean, sites, counts) -> float:
    """Largest |error| of the FedAvg mean, relative to the largest |weight| of any site."""
    err = max((mean[k].double() - sum(c * sd[k].double() for sd, c in zip(sites, counts)) / sum(counts))
              .abs().max().item() for k in sites[0])
    return err / max(sd[k].abs().max().item() for sd in sites for k in sd)


@pytest.mark.parametrize("which", ["default", "legacy"])
def test_fedavg_round_trip_matches_plaintext_weighted_mean(which, contexts, legacy_contexts) -> None:
    """The default (N=4096 [32] 2^30) and the former default (N=8192 [60,60] 2^40) both average exactly."""
    secret, server = contexts if which == "default" else legacy_contexts
    base = _model(1)
    counts = [7, 40, 123, 1000]
    sites = [{k: v + 0.05 * torch.randn_like(v) for k, v in base.items()} for _ in counts]
    layout = packing.ParamLayout.from_state_dict(base, count_bound=sum(counts))
    env, total = _fedavg(secret, server, sites, counts, layout)
    assert env.kind == "aggregate" and env.contributors == 4
    assert env.contributor_ids == ["site-0", "site-1", "site-2", "site-3"]
    mean, n = codec.decrypt_aggregate(secret, env.model_dump_json(), total, layout, model="response-net", **RUN)
    assert n == sum(counts)
    assert all(mean[k].dtype == base[k].dtype and mean[k].shape == base[k].shape for k in base)
    assert _rel_error(mean, sites, counts) < 1e-5
    # Error of the HE pipeline itself, on the packed values (the sum is at most 1):
    agg = codec.decrypt_packed(secret, total, layout.n_params)
    exact = sum(packing.update_vector(sd, layout, c) for sd, c in zip(sites, counts))
    assert np.abs(agg - exact).max() < (1e-5 if which == "default" else 1e-8)


def test_max_sites_at_the_worst_case_values_average_within_the_stated_error(contexts) -> None:
    """16 sites, every weight at +-W, counts adding up to exactly C: the largest sum the packing allows."""
    secret, server = contexts
    n = 3 * server.values_per_chunk
    layout = packing.ParamLayout.from_state_dict({"w": torch.zeros(n)}, value_bound=4.0, count_bound=1600)
    assert layout.max_sites == secret.params.he.max_sites == 16
    signs = torch.ones(n)
    signs[n // 2:] = -1.0  # half the chunk +W, half -W: two coefficients at the bound
    sites = [{"w": 4.0 * signs.double()} for _ in range(16)]
    counts = [100] * 16
    env, total = _fedavg(secret, server, sites, counts, layout)
    mean, total_n = codec.decrypt_aggregate(secret, env, total, layout, model="response-net", **RUN)
    assert total_n == 1600
    assert _rel_error(mean, sites, counts) < 1e-5
    rng = np.random.default_rng(0)  # random signs at the bound, uneven counts
    sites = [{"w": torch.from_numpy(rng.choice([-4.0, 4.0], n))} for _ in range(16)]
    counts = [int(c) for c in rng.integers(1, 200, 16)]
    layout = dataclasses.replace(layout, count_bound=sum(counts))
    env, total = _fedavg(secret, server, sites, counts, layout)
    mean, _ = codec.decrypt_aggregate(secret, env, total, layout, model="response-net", **RUN)
    assert _rel_error(mean, sites, counts) < 1e-5


def test_aggregate_needs_three_contributors(contexts) -> None:
    secret, server = contexts
    sd = _model(2)
    two = [codec.encrypt_update(secret, sd, 5, site_id=f"site-{i}", model="m", **RUN) for i in range(2)]
    with pytest.raises(HEError, match="at least 3"):
        aggregate.aggregate_updates(two, server)


def test_add_needs_only_the_params_only_context(contexts) -> None:
    secret, server = contexts
    xs = [np.full(20_000, i / 100) for i in range(1, 5)]
    total = aggregate.add_ciphertexts([codec.encrypt_vector(secret, x) for x in xs], server)
    assert np.allclose(codec.decrypt_vector(secret, total, 20_000), 0.1, atol=1e-6)


def test_a_weight_beyond_the_public_bound_is_refused_naming_its_tensor(contexts) -> None:
    secret, _ = contexts
    layout = packing.ParamLayout.from_state_dict({"conv.weight": torch.zeros(5), "norm.weight": torch.zeros(3)},
                                                 value_bound=2.0, count_bound=100)
    ok = {"conv.weight": torch.full((5,), 2.0), "norm.weight": torch.full((3,), -2.0)}
    codec.encrypt_update(secret, ok, 100, site_id="s", model="m", layout=layout, **RUN)  # at the bound: fine
    with pytest.raises(OverflowRisk, match=r"norm\.weight: \|weight\| 2\.5 exceeds the public bound 2"):
        codec.encrypt_update(secret, {**ok, "norm.weight": torch.tensor([0.0, 2.5, 0.0])}, 10, site_id="s",
                             model="m", layout=layout, **RUN)
    with pytest.raises(OverflowRisk, match="count 101 exceeds"):
        codec.encrypt_update(secret, ok, 101, site_id="s", model="m", layout=layout, **RUN)
    with pytest.raises(PackingError, match="conv.weight.*NaN"):
        codec.encrypt_update(secret, {**ok, "conv.weight": torch.tensor([float("nan")] * 5)}, 10, site_id="s",
                             model="m", layout=layout, **RUN)
    with pytest.raises(OverflowRisk, match="exceeds"):  # a raw vector past one site's share of the headroom
        codec.encrypt_vector(secret, np.array([0.0, headroom.max_safe_magnitude(secret.params.he) * 1.01]))
    with pytest.raises(OverflowRisk, match="NaN"):
        codec.encrypt_vector(secret, np.array([np.nan]))
    with pytest.raises(OverflowRisk, match="exceeds"):  # a hand-made "packed" vector beyond 1
        codec.encrypt_packed(secret, np.array([1.5, 0.01]))


def test_the_automatic_weight_bound_is_twice_the_round_one_model_rounded_up() -> None:
    assert packing.ParamLayout.from_state_dict({"w": torch.tensor([0.3, -1.0])}).value_bound == 2.0
    assert packing.ParamLayout.from_state_dict({"w": torch.tensor([4.0, 2.0])}).value_bound == 8.0
    assert packing.ParamLayout.from_state_dict({"w": torch.tensor([0.2])}).value_bound == 0.5
    a = packing.ParamLayout.from_state_dict({"w": torch.zeros(2)}, value_bound=2.0)
    b = packing.ParamLayout.from_state_dict({"w": torch.zeros(2)}, value_bound=4.0)
    c = packing.ParamLayout.from_state_dict({"w": torch.zeros(2)}, value_bound=2.0, count_bound=999)
    assert len({a.sha256, b.sha256, c.sha256}) == 3  # other bounds: refused like another architecture


def test_a_sum_whose_counts_pass_the_bound_is_refused_not_decrypted_wrapped(contexts) -> None:
    """Each site within its bounds, but 16 x 100 patients against a public C of 100: the values wrap.

    The count travels in a chunk of its own that cannot wrap, so the decrypting
    site sees the total and refuses the sum instead of using wrapped weights.
    """
    secret, server = contexts
    n = server.values_per_chunk
    layout = packing.ParamLayout.from_state_dict({"w": torch.zeros(n)}, value_bound=1.0, count_bound=100)
    sites = [{"w": torch.ones(n, dtype=torch.float64)} for _ in range(16)]
    env, total = _fedavg(secret, server, sites, [100] * 16, layout)
    wrapped = codec.decrypt_packed(secret, total, n)
    assert not np.allclose(wrapped[:n], 16.0, atol=1e-3)  # what the refusal protects against
    assert wrapped[-1] * layout.count_scale == pytest.approx(1600, abs=0.01)
    with pytest.raises(OverflowRisk, match="1600 patients, more than the public bound of 100"):
        codec.decrypt_aggregate(secret, env, total, layout, model="response-net", **RUN)


def test_the_analysed_bound_really_is_safe(contexts) -> None:
    """16 sites at the raw limit add up exactly; well past it the sum wraps (what the refusal prevents).

    A constant full chunk puts scale * value in two polynomial coefficients, the
    largest a smooth vector makes them (the bound adds sqrt(2) and a factor 1.25).
    """
    secret, server = contexts
    n = server.values_per_chunk
    limit = headroom.max_safe_magnitude(secret.params.he, max_sites=16)
    assert 1.0 <= 16 * limit < 1.2  # q ~ 2^32, scale 2^30: a sum of 1 fits, with the margins
    total = aggregate.add_ciphertexts([codec.encrypt_vector(secret, np.full(n, limit), max_sites=16)] * 16, server)
    assert np.allclose(codec.decrypt_vector(secret, total, n), 16 * limit, atol=1e-5)
    big = codec.encrypt_vector(secret, np.full(n, 4 * limit), max_sites=4)
    wrapped = codec.decrypt_vector(secret, aggregate.add_ciphertexts([big] * 16, server), n)
    assert not np.allclose(wrapped, 64 * limit, rtol=1e-3)


def test_wire_size_uses_the_compact_encoding(contexts) -> None:
    """Seeded symmetric, one 32-bit prime, complex packing: ~4.14 B per packed value up, ~8.3 for the sum.

    A format property (SEAL's serialisation, zstd-compressed), not a timing:
    up <= 4.2 and down <= 8.5 B/param for a 1 M-parameter model including the
    count chunk and the padding of the last chunk.
    """
    secret, server = contexts
    chunk = server.values_per_chunk
    n_params = 1_000_000
    rng = np.random.default_rng(1)
    layout = packing.ParamLayout.from_state_dict({"w": torch.zeros(n_params)}, value_bound=1.0)
    sds = [{"w": torch.from_numpy(rng.uniform(-1, 1, n_params))} for _ in range(3)]
    updates = [codec.encrypt_update(secret, sd, 50, site_id=f"s{i}", model="m", layout=layout, **RUN)
               for i, sd in enumerate(sds)]
    env, payload = updates[0]
    assert env.n_chunks == 245 + 1  # 244.1 chunks of values, padded, then the count chunk
    assert len(payload) / n_params <= 4.2
    assert len(payload) / (env.n_chunks * chunk) <= 4.16
    _, total = aggregate.aggregate_updates(updates, server)
    assert len(total) / n_params <= 8.5
    assert len(total) / (env.n_chunks * chunk) <= 8.32


def test_a_count_bound_too_large_for_the_scale_is_refused_before_encryption(contexts) -> None:
    """The summed count must decrypt to an integer: C * M times one coefficient's noise must stay below 0.125."""
    secret, _ = contexts
    layout = packing.ParamLayout.from_state_dict({"w": torch.zeros(4)}, value_bound=1.0, count_bound=100_000)
    with pytest.raises(HEError, match="count bound of 100000 patients with 16 sites is too large"):
        codec.encrypt_update(secret, {"w": torch.zeros(4)}, 10, site_id="s", model="m", layout=layout, **RUN)
    headroom.check_packing(secret.params, packing.ParamLayout.from_state_dict({"w": torch.zeros(4)}, count_bound=8000))


# --------------------------------------------------------------------------- work split over forked processes


@pytest.fixture
def forks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Fork even for a few chunks, and note every child forked (positive control: the split really happened)."""
    monkeypatch.setattr(_sealio, "MIN_ITEMS_PER_WORKER", 1)
    children: list[int] = []
    real_fork = os.fork

    def counting_fork() -> int:
        pid = real_fork()
        if pid:
            children.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", counting_fork)
    return children


def _packed(secret: keys.SecretContext, n_chunks: int = 5) -> tuple[np.ndarray, packing.ParamLayout]:
    n = n_chunks * secret.params.values_per_chunk - 123
    rng = np.random.default_rng(7)
    sd = {"w": torch.from_numpy(rng.uniform(-0.5, 0.5, n))}
    layout = packing.ParamLayout.from_state_dict(sd, value_bound=1.0, count_bound=100)
    return packing.update_vector(sd, layout, 37), layout


def test_forked_workers_give_the_one_process_result_in_the_same_format(contexts, forks) -> None:
    """Encryption and decryption split over 3 processes: same chunks, same SEAL format, same values."""
    secret, server = contexts
    packed, layout = _packed(secret)
    one = codec.encrypt_packed(secret, packed, workers=1)
    assert forks == []
    split = codec.encrypt_packed(secret, packed, workers=3)
    assert len(forks) == 2
    pieces_one, pieces_split = envelope.split_payload(one), envelope.split_payload(split)
    assert len(pieces_one) == len(pieces_split) == server.update_chunks(layout.n_params)
    assert [p[:8] for p in pieces_one] == [p[:8] for p in pieces_split]  # SEAL header: magic, version, zstd
    assert abs(len(split) - len(one)) < 0.01 * len(one)
    for payload in (one, split):  # either payload, decrypted in one process or three
        alone = codec.decrypt_packed(secret, payload, layout.n_params, workers=1)
        spread = codec.decrypt_packed(secret, payload, layout.n_params, workers=3)
        assert np.array_equal(alone, spread)
        assert np.abs(alone - packed).max() < 1e-5  # the bound of the one-process round trip above
    sums = aggregate.add_ciphertexts([one, split, one], server)
    assert np.abs(codec.decrypt_packed(secret, sums, layout.n_params, workers=3) - 3 * packed).max() < 1e-5


def test_forked_workers_write_the_secret_key_nowhere(contexts, forks, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """No process of the split opens a file, serialises the key, or uses a scratch path other than an in-memory
    file (a child that tried would fail, and its failure is raised here)."""
    secret, _ = contexts
    packed, layout = _packed(secret, n_chunks=3)
    empty = tmp_path / "cwd"
    empty.mkdir()
    monkeypatch.chdir(empty)
    monkeypatch.setenv("TMPDIR", str(empty))

    def no_files(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"opened a file or saved the key: {args}")

    real_scratch = _sealio.scratch

    @contextmanager
    def memory_only():
        with real_scratch() as f:
            assert f.path.startswith("/proc/self/fd/") and os.readlink(f.path).startswith("/memfd:"), f.path
            yield f

    monkeypatch.setattr("builtins.open", no_files)
    monkeypatch.setattr(os, "open", no_files)
    monkeypatch.setattr(sa.SecretKey, "save", no_files)
    monkeypatch.setattr(codec, "scratch", memory_only)
    monkeypatch.setattr(envelope, "scratch", memory_only)
    payload = codec.encrypt_packed(secret, packed, workers=2)
    values = codec.decrypt_packed(secret, payload, layout.n_params, workers=2)
    monkeypatch.undo()
    assert len(forks) == 2
    assert np.abs(values - packed).max() < 1e-5
    assert list(empty.iterdir()) == []


def test_a_failing_worker_is_reported_and_blocks_come_back_in_order(forks) -> None:
    def work(lo: int, hi: int) -> bytes:
        return f"{lo}-{hi};".encode()

    assert _sealio.fork_map(work, 10, 3) == [b"0-3;", b"3-6;", b"6-10;"]

    def failing(lo: int, hi: int) -> bytes:
        if lo:
            raise ValueError("chunk out of range")
        return b"ok"

    with pytest.raises(RuntimeError, match="items 5-9 failed: ValueError: chunk out of range"):
        _sealio.fork_map(failing, 10, 2)
    for pid in forks:  # every child has been waited for: none is left behind
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def test_the_split_is_opt_in_through_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(_sealio.WORKERS_ENV, raising=False)
    assert _sealio.default_workers() == 1
    monkeypatch.setenv(_sealio.WORKERS_ENV, "3")
    assert _sealio.default_workers() == 3
    for bad in ("0", "two"):
        monkeypatch.setenv(_sealio.WORKERS_ENV, bad)
        with pytest.raises(ValueError, match=_sealio.WORKERS_ENV):
            _sealio.default_workers()
