"""DP-SGD wrapping: per-sample gradients are exact, and the plan is what Opacus runs."""

from __future__ import annotations

import pytest
import torch
from opacus.grad_sample import GradSampleModule

from flame_private.config import DPConfig, ModelConfig
from flame_private.models import build_model
from flame_private.privacy.dp import SecretNoiseDPOptimizer, default_grad_sample_mode, make_private, plan_dp
from flame_private.privacy.randomness import SecretPoissonSampler
from flame_private.training import make_loss

SMALL = ModelConfig(response_channels=(4, 8, 8), evolution_channels=(4, 8, 8), segmentation_channels=(4, 8, 8),
                    norm_groups=2, dropout=0.0)


def _inputs(task: str, b: int = 3, g: int = 16) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    torch.manual_seed(0)
    image, seg = torch.randn(b, 4, g, g, g), torch.randint(0, 4, (b, 1, g, g, g))
    treatment = torch.eye(3)[torch.arange(b) % 3]
    if task == "response":
        return (image, seg, treatment, torch.randn(b, 6)), torch.tensor([1.0, 0.0, 1.0])[:b]
    if task == "segmentation":
        return (image,), seg
    return (image, seg, treatment, torch.rand(b, 1)), torch.randint(0, 4, (b, 1, g, g, g))


def _reference_per_sample_grads(model: torch.nn.Module, task: str, inputs, target) -> dict[str, torch.Tensor]:
    """One backward pass per patient: the definition of a per-sample gradient (mean loss over a batch of 1)."""
    loss_fn = make_loss(task)  # type: ignore[arg-type]
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    grads: dict[str, list[torch.Tensor]] = {n: [] for n, _ in trained}
    for i in range(target.shape[0]):
        model.zero_grad()
        out = model(*(x[i:i + 1] for x in inputs))
        loss_fn(out, target[i:i + 1]).backward()
        for n, p in trained:
            assert p.grad is not None
            grads[n].append(p.grad.detach().clone())
    return {n: torch.stack(g) for n, g in grads.items()}


@pytest.mark.parametrize("task", ["response", "evolution", "segmentation"])
@pytest.mark.parametrize("mode", ["ew", "hooks"])
def test_per_sample_gradients_match_a_per_patient_loop(task: str, mode: str) -> None:
    torch.manual_seed(0)
    model = build_model(task, SMALL)  # type: ignore[arg-type]  (dropout 0: deterministic in train mode)
    with torch.no_grad():  # as if trained: layers that start at zero (FiLM, output layers) would hide the layers below
        for p in model.parameters():
            if not p.any():
                p.normal_(0.0, 0.1)
    inputs, target = _inputs(task)
    reference = _reference_per_sample_grads(model, task, inputs, target)
    assert all(g.abs().sum() > 0 for g in reference.values())  # every layer has a gradient to check
    gsm = GradSampleModule(model, batch_first=True, loss_reduction="mean", force_functorch=False) \
        if mode == "hooks" else None
    if mode == "ew":
        from opacus.grad_sample import GradSampleModuleExpandedWeights

        gsm = GradSampleModuleExpandedWeights(model, batch_first=True, loss_reduction="mean")
    assert gsm is not None
    gsm.zero_grad()
    out = gsm(*inputs)
    make_loss(task)(out, target).backward()  # type: ignore[arg-type]
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad_sample, reference[name], rtol=1e-4, atol=1e-6,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_the_default_mode_is_expanded_weights_for_our_models() -> None:
    for task in ("response", "evolution", "segmentation"):
        assert default_grad_sample_mode(build_model(task, ModelConfig())) == "ew"


def test_a_layer_outside_expanded_weights_falls_back_to_hooks() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.PReLU())
    assert default_grad_sample_mode(model) == "hooks"


def test_plan_uses_poisson_rate_and_steps_from_the_patient_count() -> None:
    plan = plan_dp(build_model("response", SMALL), n_samples=10, batch_size=4, epochs=2, dp=DPConfig())
    assert plan.sample_rate == pytest.approx(1 / 3)
    assert plan.steps == 6
    assert plan.noise_multiplier == 1.0


def test_target_epsilon_chooses_the_noise_that_reaches_it() -> None:
    from flame_private.privacy.accounting import epsilon_for

    dp = DPConfig(noise_multiplier=None, target_epsilon=2.0)
    plan = plan_dp(build_model("response", SMALL), n_samples=40, batch_size=4, epochs=3, dp=dp)
    eps = epsilon_for([(plan.noise_multiplier, plan.sample_rate, plan.steps)], dp.delta, "prv")
    assert eps == pytest.approx(2.0, abs=0.05)


def test_run_epsilon_noise_keeps_the_whole_run_within_it_and_close_to_it() -> None:
    """Two tasks' trainings over every round and the final evaluations, composed: at most the target, within 1 %."""
    from flame_private.privacy.accounting import epsilon_for
    from flame_private.privacy.dp import noise_for_run

    trainings, releases = ((0.25, 40), (0.25, 40)), ((3.0, 2),)
    sigma = noise_for_run(4.0, 1e-5, trainings, releases, "prv")
    history = [(sigma, q, steps) for q, steps in trainings] + [(3.0, 1.0, 2)]
    assert 0.99 * 4.0 <= epsilon_for(history, 1e-5, "prv") <= 4.0
    assert epsilon_for([(sigma * 0.98, q, s) for q, s in trainings] + [(3.0, 1.0, 2)], 1e-5, "prv") > 4.0


def test_a_site_with_fewer_patients_needs_more_noise_for_the_same_run_epsilon() -> None:
    from flame_private.privacy.dp import noise_for_run, poisson_sampling

    def sigma(n: int) -> float:
        q, steps = poisson_sampling(n, 8, 1)
        return noise_for_run(4.0, 1e-5, ((q, steps * 10),), ((3.0, 1),), "rdp")  # RDP: the faster accountant

    assert sigma(16) > sigma(64) > sigma(256)


def test_run_epsilon_below_what_the_evaluations_alone_spend_is_refused() -> None:
    from flame_private.privacy.dp import noise_for_run

    with pytest.raises(ValueError, match="evaluation releases alone"):
        noise_for_run(0.5, 1e-5, ((0.25, 4),), ((1.0, 4),), "prv")


def test_dp_takes_exactly_one_way_to_set_the_noise() -> None:
    assert DPConfig(run_epsilon=4.0).noise_multiplier is None
    with pytest.raises(ValueError, match="exactly one"):
        DPConfig(run_epsilon=4.0, target_epsilon=1.0)
    with pytest.raises(ValueError, match="exactly one"):
        DPConfig(run_epsilon=4.0, noise_multiplier=1.0)


def test_make_private_runs_exactly_the_planned_mechanism() -> None:
    from torch.utils.data import TensorDataset

    model = build_model("response", SMALL)
    plan = plan_dp(model, n_samples=8, batch_size=4, epochs=1, dp=DPConfig(noise_multiplier=1.3))
    data = TensorDataset(torch.randn(8, 4, 8, 8, 8))
    private = make_private(model, torch.optim.SGD(model.parameters(), lr=0.1), data, plan)
    assert isinstance(private.loader.batch_sampler, SecretPoissonSampler)
    assert private.loader.batch_sampler.sample_rate == pytest.approx(plan.sample_rate)
    assert len(private.loader) == plan.steps
    assert isinstance(private.optimizer, SecretNoiseDPOptimizer)
    assert private.optimizer.noise_multiplier == pytest.approx(1.3)
    assert private.optimizer.max_grad_norm == pytest.approx(plan.max_grad_norm)


def test_an_empty_poisson_batch_is_a_noise_only_step_that_still_counts() -> None:
    """Poisson sampling can draw nobody; the step must still add noise and be accounted."""
    from torch.utils.data import Dataset

    from flame_private.training import TrainSettings, train

    class Tiny(Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            g = 8
            return {"image": torch.randn(4, g, g, g), "seg": torch.zeros(1, g, g, g, dtype=torch.long),
                    "treatment": torch.eye(3)[0], "covariates": torch.zeros(6), "label": torch.tensor(1.0)}

    model = build_model("response", SMALL)
    before = [p.detach().clone() for p in model.parameters()]
    settings = TrainSettings(epochs=20, batch_size=1, seed=5)  # q = 1/2: empty batches are certain over 40 steps
    plan = plan_dp(model, 2, 1, 20, DPConfig(noise_multiplier=1.0))
    result = train(model, "response", Tiny(), settings, plan)
    assert result.steps == plan.steps == 40
    assert any(not torch.equal(a, b) for a, b in zip(before, result.model.parameters(), strict=True))


@pytest.mark.parametrize("mode", ["ew", "hooks"])
def test_per_sample_gradients_of_the_linear_part_trained_alone_match_a_per_patient_loop(mode: str) -> None:
    """With trainable "wide" the network skips its encoder (the image path is a constant): still exact under DP."""
    from opacus.grad_sample import GradSampleModuleExpandedWeights

    from flame_private.training import set_trainable

    torch.manual_seed(0)
    model = build_model("response", SMALL)
    with torch.no_grad():
        model.head[-1].bias.fill_(0.3)
    set_trainable(model, "response", "wide")
    inputs, target = _inputs("response")
    reference = _reference_per_sample_grads(model, "response", inputs, target)
    gsm = GradSampleModuleExpandedWeights(model, batch_first=True, loss_reduction="mean") if mode == "ew" else \
        GradSampleModule(model, batch_first=True, loss_reduction="mean", force_functorch=False)
    gsm.zero_grad()
    make_loss("response")(gsm(*inputs), target).backward()
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert [n for n, _ in trained] == ["clinical.weight", "clinical.bias"]
    for name, p in trained:
        assert reference[name].abs().sum() > 0
        torch.testing.assert_close(p.grad_sample, reference[name], rtol=1e-4, atol=1e-6)
