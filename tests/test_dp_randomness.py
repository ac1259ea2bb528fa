"""DP randomness is secret: nobody holding the config can regenerate a site's noise or sampling.

The guarantee a site's ledger states holds only if its noise is unpredictable.
These tests fail if any release becomes reproducible from public inputs (the run
config, the seed, the data): the same training twice, or two sites with the same
scans and config, must release different weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from federation_harness import make_federation
from scipy import stats
from torch.utils.data import Dataset

from flame_private.config import DPConfig, ModelConfig
from flame_private.federation.site.site import Site
from flame_private.models import build_model
from flame_private.privacy.dp import plan_dp
from flame_private.privacy.randomness import DPRandomness, SecretPoissonSampler
from flame_private.secure.public.packing import flatten, weighted_mean
from flame_private.secure.site.ceremony import key_ceremony
from flame_private.secure.site.codec import decrypt_packed
from flame_private.training import TrainSettings, train

SMALL = ModelConfig(response_channels=[4, 8], evolution_channels=[4, 8], norm_groups=2)


class Patients(Dataset):
    """Eight fixed response 'patients' (same data every time it is built)."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(11)
        self.x = torch.randn(8, 4, 8, 8, 8, generator=g)

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.x[i], "seg": (self.x[i, :1] > 1).long(), "treatment": torch.eye(3)[i % 3],
                "covariates": torch.zeros(6), "label": torch.tensor(float(i % 2))}


def _dp_train(randomness: DPRandomness | None = None, seed: int = 5) -> torch.Tensor:
    torch.manual_seed(0)
    model = build_model("response", SMALL)
    dp = DPConfig(noise_multiplier=1.0, max_grad_norm=1.0)
    settings = TrainSettings(epochs=1, batch_size=4, learning_rate=0.01, seed=seed, optimizer="sgd")
    plan = plan_dp(model, 8, settings.batch_size, settings.epochs, dp)
    out = train(model, "response", Patients(), settings, plan, randomness=randomness).model
    return torch.cat([p.detach().reshape(-1) for p in out.parameters()])


def test_secret_streams_differ_every_time_and_a_public_seed_replays_exactly() -> None:
    a, b = DPRandomness.secret().uniform(64), DPRandomness.secret().uniform(64)
    assert not np.array_equal(a, b)
    assert np.array_equal(DPRandomness.from_public_seed(7).uniform(64), DPRandomness.from_public_seed(7).uniform(64))
    assert not DPRandomness.secret().replayable and DPRandomness.from_public_seed(7).replayable


def test_gaussian_noise_is_standard_normal_and_scaled() -> None:
    z = DPRandomness.secret().standard_normal(40_001)
    assert len(z) == 40_001
    assert stats.kstest(z, "norm").pvalue > 1e-4
    ref = [torch.zeros(300, 100, dtype=torch.float32), torch.zeros(5, dtype=torch.float64)]
    noise = DPRandomness.secret().normal_like(ref, std=2.5)
    assert [(n.shape, n.dtype) for n in noise] == [(r.shape, r.dtype) for r in ref]
    assert float(noise[0].std()) == pytest.approx(2.5, rel=0.03)


def test_poisson_sampler_takes_each_record_at_the_sampling_rate() -> None:
    sampler = SecretPoissonSampler(num_samples=50, sample_rate=0.2, steps=400, randomness=DPRandomness.secret())
    batches = list(sampler)
    assert len(batches) == len(sampler) == 400
    sizes = np.array([len(b) for b in batches])
    assert sizes.mean() == pytest.approx(10.0, abs=0.6)  # 50 * 0.2, binomial over 400 steps
    counts = np.bincount(np.concatenate([b for b in batches if b]), minlength=50)
    assert counts.min() > 40 and counts.max() < 125  # every record is sampled, none favoured


def test_the_same_training_twice_releases_different_weights() -> None:
    first, second = _dp_train(), _dp_train()
    assert not torch.equal(first, second)
    assert float((first - second).abs().max()) > 1e-3


def test_noise_does_not_follow_torchs_global_generator() -> None:
    """0.1.0 seeded torch's generator with the run's seed; reseeding it must no longer fix the noise."""
    torch.manual_seed(123)
    first = _dp_train(seed=123)
    torch.manual_seed(123)
    assert not torch.equal(first, _dp_train(seed=123))


def test_a_replayable_stream_is_what_makes_training_reproducible_positive_control() -> None:
    """If these were equal with secret noise the two tests above could not fail; here they must be equal."""
    assert torch.equal(_dp_train(DPRandomness.from_public_seed(1)), _dp_train(DPRandomness.from_public_seed(1)))


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory, cohort_dir: Path) -> dict[str, Site]:
    keys = tmp_path_factory.mktemp("keys")
    key_ceremony(__import__("flame_private.config", fromlist=["HEConfig"]).HEConfig(), keys)
    root = tmp_path_factory.mktemp("fed")
    yamls, fed = make_federation(root, cohort_dir, keys, n_sites=4, tasks="[response]")
    return {sid: Site.load(yamls[sid], fed) for sid in ("site-a", "site-d")}  # site-d holds site-a's scans


def _released(site: Site, run_id: str) -> np.ndarray:
    reply = site.train_round(run_id, "response", 1, None, None)
    assert reply.status == "ok" and reply.payload is not None
    layout = site.layout("response")
    state, count = weighted_mean(decrypt_packed(site.secret, reply.payload, layout.n_params), layout)
    return np.append(flatten(state, layout), count)  # the released weights, then the count


@pytest.mark.slow
def test_a_site_trained_twice_on_the_same_config_and_data_releases_different_weights(sites) -> None:
    a1, a2 = _released(sites["site-a"], "twice-1"), _released(sites["site-a"], "twice-2")
    assert a1[-1] == pytest.approx(a2[-1])  # same patients (the count slot) ...
    assert np.abs(a1[:-1] - a2[:-1]).max() > 1e-3  # ... different noise


@pytest.mark.slow
def test_two_sites_with_the_same_scans_and_config_draw_different_noise(sites) -> None:
    a, d = _released(sites["site-a"], "pair"), _released(sites["site-d"], "pair")
    assert a[-1] == pytest.approx(d[-1])
    assert np.abs(a[:-1] - d[:-1]).max() > 1e-3


def test_no_site_code_path_uses_a_replayable_stream() -> None:
    """``from_public_seed`` exists for the attack suite's control; a site that called it would void epsilon."""
    src = Path(__file__).parents[1] / "src" / "flame_private"
    users = sorted(str(p.relative_to(src)) for p in src.rglob("*.py")
                   if "from_public_seed(" in p.read_text(encoding="utf-8"))
    assert users == [os.path.join("attacks", "noise_replay.py"), os.path.join("privacy", "randomness.py")]
