"""The models: shapes, budget, conditioning, Opacus compatibility."""

from __future__ import annotations

import pytest
import torch
from opacus.validators import ModuleValidator

from flame_private.config import ModelConfig
from flame_private.models import EvolutionNet, ResponseNet, build_model, count_parameters
from flame_private.models.blocks import model_inputs

SMALL = ModelConfig(response_channels=(8, 16, 32), evolution_channels=(8, 16, 32), segmentation_channels=(8, 16, 32),
                    norm_groups=4)


def batch(b: int = 2, g: int = 24) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    seg = torch.randint(0, 4, (b, 1, g, g, g))
    return {
        "image": torch.randn(b, 4, g, g, g),
        "seg": seg,
        "treatment": torch.eye(3)[torch.arange(b) % 3],
        "covariates": torch.randn(b, 6),
        "interval": torch.rand(b, 1),
    }


def test_default_models_fit_the_parameter_budget() -> None:
    for task in ("response", "evolution", "segmentation"):
        assert count_parameters(build_model(task, ModelConfig())) <= 1_500_000


def test_a_model_over_budget_is_refused_with_its_size() -> None:
    with pytest.raises(ValueError, match="max_parameters"):
        build_model("evolution", ModelConfig(evolution_channels=(32, 64, 128, 256)))


def test_unknown_task_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown task"):
        build_model("survival", SMALL)  # type: ignore[arg-type]


def test_response_model_outputs_one_logit_per_patient() -> None:
    b = batch()
    out = build_model("response", SMALL)(b["image"], b["seg"], b["treatment"], b["covariates"])
    assert out.shape == (2,)


def test_evolution_model_outputs_label_logits_at_input_resolution() -> None:
    b = batch(g=24)
    out = build_model("evolution", SMALL)(b["image"], b["seg"], b["treatment"], b["interval"])
    assert out.shape == (2, 4, 24, 24, 24)


def test_segmentation_model_outputs_label_logits_from_the_mri_alone() -> None:
    b = batch(g=24)
    model = build_model("segmentation", SMALL)
    assert model(b["image"]).shape == (2, 4, 24, 24, 24)
    assert not any("film" in name for name, _ in model.named_parameters())  # nothing but the scan conditions it


def test_segment_draws_canonical_labels_on_the_model_grid() -> None:
    from flame_private.models.segmentation import segment

    labels = segment(build_model("segmentation", SMALL), batch(g=24)["image"][0])
    assert labels.shape == (24, 24, 24) and labels.dtype == torch.uint8
    assert set(labels.unique().tolist()) <= {0, 1, 2, 3}


def test_inputs_are_mri_plus_one_hot_tumour_labels() -> None:
    b = batch()
    x = model_inputs(b["image"], b["seg"])
    assert x.shape[1] == 7
    assert torch.equal(x[:, 4:].sum(1) == 1, (b["seg"][:, 0] > 0))


def test_every_layer_is_accepted_by_opacus() -> None:
    for task in ("response", "evolution", "segmentation"):
        model = build_model(task, ModelConfig())
        assert ModuleValidator.validate(model, strict=False) == []
        assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
        assert not any(getattr(m, "inplace", False) for m in model.modules())
        assert not any(isinstance(m, torch.nn.ConvTranspose3d) for m in model.modules())


def test_an_untrained_model_ignores_the_treatment_until_it_learns_to_use_it() -> None:
    """FiLM starts at the identity in the convolutions: the modality only acts once trained."""
    model = ResponseNet((8, 16), groups=4)
    for stage in model.stages:
        assert torch.count_nonzero(stage.film.proj.weight) == 0


def test_trained_conditioning_changes_the_prediction_between_modalities() -> None:
    torch.manual_seed(1)
    model = EvolutionNet((8, 16), groups=4)
    for stage in [*model.encoder, *model.decoder]:
        torch.nn.init.normal_(stage.film.proj.weight, std=0.5)
    torch.nn.init.normal_(model.out.weight, std=0.5)  # trained: the change path is no longer zero
    b = batch(b=1)
    outs = [model(b["image"], b["seg"], torch.eye(3)[[i]], b["interval"]) for i in range(3)]
    assert not torch.allclose(outs[0], outs[1]) and not torch.allclose(outs[1], outs[2])


def test_an_untrained_evolution_model_predicts_no_change() -> None:
    """The persistence prior: before training, the predicted follow-up is the baseline segmentation."""
    torch.manual_seed(0)
    b = batch(b=2, g=16)
    model = build_model("evolution", SMALL)  # as built: no weight set by hand
    pred = model(b["image"], b["seg"], b["treatment"], b["interval"]).argmax(1)
    assert torch.equal(pred, b["seg"][:, 0])


def test_training_moves_the_evolution_model_away_from_no_change() -> None:
    """A zero output layer must not freeze the network: one step gives it a gradient and changes the logits."""
    torch.manual_seed(0)
    b = batch(b=2, g=16)
    model = build_model("evolution", SMALL)
    before = model(b["image"], b["seg"], b["treatment"], b["interval"]).detach()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = torch.nn.functional.cross_entropy(model(b["image"], b["seg"], b["treatment"], b["interval"]),
                                             torch.zeros_like(b["seg"][:, 0]))
    loss.backward()
    assert model.out.weight.grad.abs().sum() > 0
    opt.step()
    after = model(b["image"], b["seg"], b["treatment"], b["interval"]).detach()
    assert not torch.allclose(before, after)


def test_an_untrained_response_model_is_a_linear_model_of_the_clinical_and_first_order_features() -> None:
    """Wide and deep: the image path's output layer starts at zero, so at first only the wide features act."""
    from flame_private.models.response import wide_features

    b = batch(b=2, g=16)
    model = build_model("response", SMALL).eval()
    out = model(b["image"], b["seg"], b["treatment"], b["covariates"])
    linear = model.clinical(wide_features(b["image"], b["seg"], b["treatment"], b["covariates"])).squeeze(1)
    torch.testing.assert_close(out, linear)
    # Images that keep every compartment's mean intensity change nothing yet: the encoder's output is unused.
    shuffled = b["image"].clone()
    for i in range(2):
        for label in (0, 1, 2, 3):
            where = (b["seg"][i, 0] == label) & (b["image"][i, 0] != 0)
            values = shuffled[i][:, where]
            shuffled[i][:, where] = values[:, torch.randperm(values.shape[1])]
    torch.testing.assert_close(model(shuffled, b["seg"], b["treatment"], b["covariates"]), out)


def test_the_linear_part_trained_alone_gets_the_same_logits_and_gradients_without_running_the_encoder() -> None:
    """Frozen at zero, the image path's output layer makes it a constant: the encoder is skipped, not changed."""
    from flame_private.training import set_trainable

    b = batch(b=3, g=16)
    model = build_model("response", SMALL).train()
    torch.nn.init.normal_(model.clinical.weight)
    torch.nn.init.normal_(model.head[-1].bias)
    encoder_calls = []
    model.stages[0].register_forward_hook(lambda *_: encoder_calls.append(1))
    args = (b["image"], b["seg"], b["treatment"], b["covariates"])

    def logits_and_grad() -> tuple[torch.Tensor, torch.Tensor]:
        model.zero_grad()
        out = model(*args)
        out.sum().backward()
        assert model.clinical.weight.grad is not None
        return out.detach(), model.clinical.weight.grad.clone()

    model.eval()  # no dropout, so both paths see the same head
    full_out, full_grad = logits_and_grad()  # every parameter trainable: the encoder runs
    assert len(encoder_calls) == 1
    set_trainable(model, "response", "wide")
    wide_out, wide_grad = logits_and_grad()
    assert len(encoder_calls) == 1  # skipped
    torch.testing.assert_close(wide_out, full_out, rtol=0, atol=0)
    torch.testing.assert_close(wide_grad, full_grad, rtol=0, atol=0)
    # A zero output layer frozen alone while the encoder trains: the encoder runs (its gradients are asked for).
    model.requires_grad_(True)
    model.head[-1].weight.requires_grad_(False)
    model(*args).sum().backward()
    assert len(encoder_calls) == 2
    assert model.stages[0].conv1.conv.weight.grad is not None
    # An output layer that has learnt something brings the encoder back, frozen or not.
    set_trainable(model, "response", "wide")
    with torch.no_grad():
        model.head[-1].weight.fill_(0.01)
    model(*args)
    assert len(encoder_calls) == 3


def test_first_order_features_read_each_compartments_contrast_against_healthy_brain() -> None:
    from flame_private.models.blocks import N_FIRST_ORDER, first_order_intensities

    image = torch.ones(1, 4, 16, 16, 16)
    seg = torch.zeros(1, 1, 16, 16, 16, dtype=torch.long)
    seg[0, 0, 4:8, 4:8, 4:8] = 2
    seg[0, 0, 5:7, 5:7, 5:7] = 3
    image[0, 1][seg[0, 0] == 3] = 3.0  # enhancing: bright on T1ce
    image[0, 2][seg[0, 0] == 2] = -1.0  # oedema: T2 two below healthy brain
    f = first_order_intensities(image, seg)
    assert f.shape == (1, N_FIRST_ORDER)
    oedema, enhancing, flags = f[0, :4], f[0, 4:8], f[0, 8:]
    torch.testing.assert_close(enhancing, torch.tensor([0.0, 2.0, 0.0, 0.0]))
    torch.testing.assert_close(oedema, torch.tensor([0.0, 0.0, -2.0, 0.0]))
    torch.testing.assert_close(flags, torch.ones(2))
    # A tumour without enhancing voxels: that block is zero and its flag says absent.
    seg[seg == 3] = 2
    f = first_order_intensities(image, seg)
    torch.testing.assert_close(f[0, 4:8], torch.zeros(4))
    assert f[0, 9] == 0 and f[0, 8] == 1
    # Means, not sums: the same case on a finer grid gives the same features.
    fine = [t.repeat_interleave(2, 2).repeat_interleave(2, 3).repeat_interleave(2, 4) for t in (image, seg)]
    torch.testing.assert_close(first_order_intensities(*fine), f)


def test_the_clinical_features_are_the_logistic_baselines_in_the_same_order() -> None:
    from flame_private.baselines import FEATURES
    from flame_private.models.response import N_CLINICAL, clinical_features

    b = batch(b=3, g=16)
    f = clinical_features(b["seg"], b["treatment"], b["covariates"])
    assert f.shape == (3, N_CLINICAL) == (3, len(FEATURES))
    mgmt = b["covariates"][:, 2]
    for k, m in enumerate(("photon", "proton", "carbon")):
        torch.testing.assert_close(f[:, FEATURES.index(f"{m}_x_mgmt")], b["treatment"][:, k] * mgmt)
    torch.testing.assert_close(f[:, FEATURES.index("age"):FEATURES.index("biopsy") + 1], b["covariates"])


def test_tumour_volume_features_mean_the_same_volume_at_any_grid() -> None:
    """A fraction of the field of view: the same tumour resampled to a finer grid gives the same feature,
    log(1 + mL) at the default field of view, as the logistic baseline reads it."""
    from flame_private.models.blocks import tumour_volumes

    coarse = torch.zeros(1, 1, 16, 16, 16, dtype=torch.long)
    coarse[0, 0, 4:8, 4:8, 4:8] = 2
    coarse[0, 0, 5:7, 5:7, 5:7] = 3
    fine = coarse.repeat_interleave(2, 2).repeat_interleave(2, 3).repeat_interleave(2, 4)
    torch.testing.assert_close(tumour_volumes(coarse), tumour_volumes(fine))
    assert tumour_volumes(coarse)[0, 0] == 0  # no necrotic core
    assert tumour_volumes(coarse)[0, 3] > tumour_volumes(coarse)[0, 2] > 0
    whole_ml = 4**3 / 16**3 * 192.0**3 / 1000.0
    torch.testing.assert_close(tumour_volumes(coarse)[0, 3], torch.log1p(torch.tensor(whole_ml)))


def test_an_untrained_segmentation_model_draws_no_tumour() -> None:
    """The output bias starts at the regions' public priors: background everywhere, not a coin toss per voxel."""
    from flame_private.models.segmentation import segment

    model = build_model("segmentation", SMALL)
    assert not segment(model, batch(g=24)["image"][0]).any()
