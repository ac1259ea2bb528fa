"""The shared training loop, local/central runs, saved models and the predict path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from flame_private.config import DataConfig, DPConfig, FederationConfig, ModelConfig, SiteConfig
from flame_private.data.checks import load_site
from flame_private.data.datasets import EvolutionDataset, OneFollowUpPerPatient, ResponseDataset
from flame_private.data.splits import split_records
from flame_private.experiments import load_truth, run_central, run_local, treatment_comparison_with_baselines
from flame_private.models import build_model
from flame_private.models.io import load_model, save_model
from flame_private.predict import case_from_folder, plot_prediction, predict_case
from flame_private.training import TrainSettings, evaluate, plan_training, train, training_size

SMALL = ModelConfig(response_channels=(8, 16, 32), evolution_channels=(8, 16, 32), segmentation_channels=(8, 16, 32),
                    norm_groups=4, dropout=0.0)
DATA = DataConfig(grid=24, val_fraction=0.25, test_fraction=0.25)


def fed_config(**changes) -> FederationConfig:
    return FederationConfig(model=SMALL, data=DATA, batch_size=2, local_epochs=1, **changes)


def site_config(cohort_dir: Path, site_id: str, tmp_path: Path) -> SiteConfig:
    return SiteConfig(site_id=site_id, data_dir=cohort_dir / site_id, layout="flame", state_dir=tmp_path / "state",
                      privacy_policy=tmp_path / "policy.yaml")


@pytest.fixture(scope="module")
def site_b_records(cohort_dir: Path):
    return load_site(cohort_dir / "site-b", "flame").records


def test_dp_training_runs_exactly_the_planned_number_of_steps(site_b_records) -> None:
    ds = ResponseDataset(site_b_records, DATA)
    model = build_model("response", SMALL)
    settings = TrainSettings(epochs=2, batch_size=2)
    plan = plan_training(model, "response", ds, settings, DPConfig(noise_multiplier=0.8))
    assert plan is not None
    result = train(model, "response", ds, settings, plan)
    assert result.steps == plan.steps == 2 * 2
    assert not hasattr(result.model, "_module")  # the plain module comes back, ready to save or encrypt


def test_a_model_that_was_evaluated_still_trains_under_dp(site_b_records) -> None:
    """The global model of round r comes back from evaluation in eval mode; round r + 1 trains it privately."""
    ds = ResponseDataset(site_b_records, DATA)
    model = build_model("response", SMALL).eval()
    settings = TrainSettings(epochs=1, batch_size=2)
    plan = plan_training(model, "response", ds, settings, DPConfig(noise_multiplier=0.8))
    assert train(model, "response", ds, settings, plan).steps == plan.steps


@pytest.mark.parametrize("dp", [False, True])
def test_a_cosine_schedule_settles_the_model_by_its_last_epoch(site_b_records, dp: bool) -> None:
    """Adam's steps scale with the learning rate: under the cosine schedule the last epoch moves the weights
    a fraction of what the first moved; at a constant rate (the control) it moves them about as much."""
    ds = ResponseDataset(site_b_records, DATA)

    def movement(schedule: Literal["cosine", "constant"]) -> list[float]:
        torch.manual_seed(0)
        model = build_model("response", SMALL)
        settings = TrainSettings(epochs=4, batch_size=2, learning_rate=1e-3, lr_schedule=schedule)
        snapshots = [torch.cat([p.detach().flatten() for p in model.parameters()]).clone()]

        def on_epoch(_epoch: int, net: torch.nn.Module) -> None:
            snapshots.append(torch.cat([p.detach().flatten() for p in net.parameters()]).clone())

        plan = plan_training(model, "response", ds, settings, DPConfig(noise_multiplier=0.8) if dp else None)
        train(model, "response", ds, settings, plan, on_epoch=on_epoch)
        return [float((b - a).norm()) for a, b in zip(snapshots, snapshots[1:], strict=False)]

    cosine, constant = movement("cosine"), movement("constant")
    assert cosine[-1] < 0.15 * cosine[0], cosine  # measured: 0.09 (0.05 under DP)
    assert constant[-1] > 0.3 * constant[0], constant  # measured: 0.93 (0.47 under DP: Adam's moments grow)


@pytest.mark.parametrize("dp", [False, True])
def test_wide_training_moves_the_linear_part_and_nothing_else(site_b_records, dp: bool) -> None:
    """``response_trainable: wide``: under DP too, only the 27 linear weights change; "all" then trains all again."""
    from flame_private.training import set_trainable

    ds = ResponseDataset(site_b_records, DATA)
    model = build_model("response", SMALL)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    from flame_private.federation.site.task import train_settings

    wide = FederationConfig(model=SMALL.model_copy(update={"response_trainable": "wide"}), batch_size=2,
                            learning_rate=0.05, he={"weight_bound": 16.0})
    settings = train_settings(wide, 1)  # what a site runs in a federated round
    assert settings.trainable == "wide"
    settings = TrainSettings(epochs=2, batch_size=2, learning_rate=0.05, trainable=settings.trainable)
    plan = plan_training(model, "response", ds, settings, DPConfig(noise_multiplier=0.8)) if dp else None
    after = train(model, "response", ds, settings, plan).model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved == {"clinical.weight", "clinical.bias"}
    assert set_trainable(model, "response", "all") == sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match="linear part"):
        set_trainable(build_model("evolution", SMALL), "evolution", "wide")


def test_training_leaves_a_callers_own_freezing_alone(site_b_records) -> None:
    """A frozen encoder (fewer parameters share the DP noise) stays frozen under the default settings."""
    ds = ResponseDataset(site_b_records, DATA)
    model = build_model("response", SMALL)
    frozen = [n for n, p in model.named_parameters() if n.startswith("stages.") and ".film." not in n]
    for name, p in model.named_parameters():
        p.requires_grad_(name not in frozen)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    after = train(model, "response", ds, TrainSettings(epochs=1, batch_size=2, learning_rate=0.05), None).model
    assert all(torch.equal(before[n], after.state_dict()[n]) for n in frozen)
    assert not torch.equal(before["clinical.weight"], after.state_dict()["clinical.weight"])


def test_without_dp_a_model_can_fit_its_training_patients(site_b_records) -> None:
    ds = ResponseDataset(site_b_records, DATA)
    torch.manual_seed(0)
    model = build_model("response", SMALL)
    before = evaluate(model, "response", ds).metrics()["brier"]
    train(model, "response", ds, TrainSettings(epochs=30, batch_size=4, learning_rate=3e-3), None)
    after = evaluate(model, "response", ds).metrics()["brier"]
    assert after < before * 0.5


def test_the_responder_weight_scales_the_responders_loss_and_nothing_else() -> None:
    """Below 1 where most patients respond, so a 0.5 threshold does not call everyone a responder."""
    from flame_private.training import make_loss

    logits = torch.tensor([0.3, -1.2, 2.0])
    responders, non_responders = torch.ones(3), torch.zeros(3)
    plain, weighted = make_loss("response"), make_loss("response", positive_weight=0.4)
    torch.testing.assert_close(weighted(logits, responders), 0.4 * plain(logits, responders))
    torch.testing.assert_close(weighted(logits, non_responders), plain(logits, non_responders))
    assert FederationConfig(response_positive_weight=0.4).response_positive_weight == 0.4
    with pytest.raises(ValueError, match="response_positive_weight"):
        FederationConfig(response_positive_weight=0.0)


def test_evolution_training_samples_patients_not_follow_ups(site_b_records) -> None:
    """Each patient has several follow-ups; DP must sample the patient (the unit of privacy) once."""
    ds = EvolutionDataset(site_b_records, DATA)
    per_patient = OneFollowUpPerPatient(ds)
    assert len(ds) == 3 * len(site_b_records)
    assert training_size("evolution", ds) == len(per_patient) == len(site_b_records)
    plan = plan_training(build_model("evolution", SMALL), "evolution", ds, TrainSettings(batch_size=2), DPConfig())
    assert plan is not None and plan.sample_rate == pytest.approx(2 / len(site_b_records))
    intervals = {float(per_patient[0]["interval"]) for _ in range(30)}
    assert len(intervals) > 1  # every follow-up of the patient is seen across epochs


def test_saved_models_reload_with_identical_outputs(tmp_path: Path) -> None:
    model = build_model("evolution", SMALL)
    torch.nn.init.normal_(model.out.weight)
    save_model(tmp_path / "evolution.pt", "evolution", model, SMALL, DATA, card={"note": "test"})
    task, again, model_cfg, data_cfg = load_model(tmp_path / "evolution.pt")
    x = (torch.randn(1, 4, 16, 16, 16), torch.zeros(1, 1, 16, 16, 16), torch.eye(3)[:1], torch.ones(1, 1))
    assert task == "evolution" and model_cfg == SMALL and data_cfg == DATA
    torch.testing.assert_close(model.eval()(*x), again(*x))
    card = json.loads((tmp_path / "evolution.json").read_text())
    assert card["note"] == "test" and card["task"] == "evolution"


def test_a_file_that_is_not_a_checkpoint_is_refused_by_name(tmp_path: Path) -> None:
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="x.pt"):
        load_model(bad)


@pytest.fixture(scope="module")
def central_models(cohort_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("central")
    tmp = tmp_path_factory.mktemp("sites")
    sites = [site_config(cohort_dir, s, tmp) for s in ("site-a", "site-b", "site-c")]
    cfg = fed_config()
    reports = {task: run_central(sites, task, cfg, out, epochs=1, truth=cohort_dir / "truth" / "counterfactuals.json")
               for task in ("response", "evolution", "segmentation")}
    return out, reports


def test_central_run_pools_sites_and_scores_each_and_the_treatment_choice(central_models) -> None:
    out, reports = central_models
    assert (out / "response.pt").is_file() and (out / "evolution.pt").is_file()
    r = reports["response"]
    assert set(r["sites"]) == {"site-a", "site-b", "site-c"}
    assert r["test"]["n"] == sum(m["n"] for m in r["sites"].values())
    tc = r["treatment_comparison"]
    assert 0.0 <= tc["best_modality_accuracy"] <= 1.0
    assert tc["n"] == r["test"]["n"]  # every site's test patients, scored together
    lo, hi = tc["best_modality_accuracy_ci95"]
    assert lo <= tc["best_modality_accuracy"] <= hi
    rules = r["treatment_comparison_baselines"]  # read against the logistic baseline and the fixed rules
    assert set(rules) == {"logistic_observables", "always_photon", "always_proton", "always_carbon",
                          "always_majority_best"}
    for rule in rules.values():
        assert set(rule) == set(tc) and rule["n"] == tc["n"]  # same patients, same keys, intervals included
    assert "dice_whole_tumour" in reports["evolution"]["test"]


def test_the_treatment_comparison_scores_model_and_baselines_on_the_same_patients_or_not_at_all(
        cohort_dir: Path) -> None:
    cfg = fed_config()
    splits = [split_records(load_site(cohort_dir / s, "flame").records, cfg.data) for s in ("site-a", "site-b")]
    train_ds = [ResponseDataset(sp.train, cfg.data) for sp in splits]
    test_ds = [ResponseDataset(sp.test, cfg.data) for sp in splits]
    truth = load_truth(cohort_dir / "truth" / "counterfactuals.json")
    model = build_model("response", SMALL)
    scored = treatment_comparison_with_baselines(train_ds, test_ds, truth, 1.0, model)
    n = sum(len(sp.test) for sp in splits)
    assert set(scored) == {"model", "logistic_observables", "always_photon", "always_proton", "always_carbon",
                           "always_majority_best"}
    assert {len(s.probs) for s in scored.values()} == {n}
    assert all(np.array_equal(s.responder, scored["model"].responder) for s in scored.values())  # same truth rows
    assert set(treatment_comparison_with_baselines(train_ds, test_ds, truth, 1.0)) == set(scored) - {"model"}
    missing = test_ds[0].records[0].patient_id
    with pytest.raises(ValueError, match=missing):  # a patient without truth is named, not left out
        treatment_comparison_with_baselines(train_ds, test_ds, {k: v for k, v in truth.items() if k != missing},
                                            1.0, model)


def test_every_evaluation_carries_its_baselines_on_the_same_patients_with_the_same_keys(central_models) -> None:
    out, reports = central_models
    response, evolution, segmentation = reports["response"], reports["evolution"], reports["segmentation"]
    assert set(response["baselines"]) == {"prevalence", "logistic_observables", "logistic_first_order"}
    assert set(evolution["baselines"]) == {"no_change"}
    assert set(segmentation["baselines"]) == {"intensity_thresholds"}
    for report in (response, evolution, segmentation):
        for baseline in report["baselines"].values():
            assert set(baseline) == set(report["test"])  # same metric keys, intervals included
            assert baseline["n"] == report["test"]["n"]  # same patients
    lo, hi = evolution["test"]["dice_whole_tumour_ci95"]
    assert lo <= evolution["test"]["dice_whole_tumour"] <= hi
    card = json.loads((out / "response.json").read_text())
    assert card["baselines"]["logistic_observables"]["n"] == card["test"]["n"]
    card = json.loads((out / "segmentation.json").read_text())
    assert card["baselines"]["intensity_thresholds"]["n"] == card["test"]["n"]
    lo, hi = card["test"]["dice_necrotic_core_ci95"]  # every label's Dice carries its interval
    assert lo is None or lo <= card["test"]["dice_necrotic_core"] <= hi


def test_local_run_without_dp_spends_no_budget(cohort_dir: Path, tmp_path: Path) -> None:
    site = site_config(cohort_dir, "site-a", tmp_path)
    report = run_local(site, "response", fed_config(), tmp_path / "out", dp=False, epochs=1)
    assert report["dp"] is False and report["epsilon_site_total"] is None
    assert not (tmp_path / "state").exists()


def test_predict_gives_three_probabilities_and_segmentations(central_models, cohort_dir: Path, tmp_path: Path) -> None:
    out, _ = central_models
    case = case_from_folder(cohort_dir / "site-b" / "site-b-000")
    assert case.covariates is not None  # read from the site's manifest
    pred = predict_case(out, case, interval_days=90)
    assert set(pred.probabilities) == {"photon", "proton", "carbon"}
    assert all(0.0 <= p <= 1.0 for p in pred.probabilities.values())
    assert all(s.shape == (24, 24, 24) and set(np.unique(s)) <= {0, 1, 2, 3} for s in pred.segmentations.values())
    png = plot_prediction(pred, tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _without_seg(cohort_dir: Path, tmp_path: Path) -> Path:
    """A copy of site-b-000 whose baseline has no segmentation, beside its site's manifest."""
    import shutil

    site = tmp_path / "site-b"
    shutil.copytree(cohort_dir / "site-b" / "site-b-000", site / "site-b-000")
    shutil.copy(cohort_dir / "site-b" / "manifest.json", site / "manifest.json")
    (site / "site-b-000" / "baseline" / "seg.nii.gz").unlink()
    return site / "site-b-000"


def test_predict_draws_a_missing_baseline_segmentation_with_the_segmentation_model_and_says_so(
        central_models, cohort_dir: Path, tmp_path: Path) -> None:
    from flame_private.models.io import file_sha256

    out, _ = central_models
    case = case_from_folder(_without_seg(cohort_dir, tmp_path), need_seg=False)
    pred = predict_case(out, case, interval_days=90)  # segmentation.pt beside the two models
    assert pred.baseline_seg_source == f"automatic (segmentation model sha256 {file_sha256(out / 'segmentation.pt')})"
    assert pred.baseline_seg.shape == (24, 24, 24) and set(np.unique(pred.baseline_seg)) <= {0, 1, 2, 3}
    with_seg = predict_case(out, case_from_folder(cohort_dir / "site-b" / "site-b-000"), interval_days=90)
    assert with_seg.baseline_seg_source == "reference"


def test_predict_without_a_segmentation_or_a_segmentation_model_is_refused_naming_the_case(
        central_models, cohort_dir: Path, tmp_path: Path) -> None:
    import shutil

    from flame_private.data.errors import DataError

    out, _ = central_models
    case_dir = _without_seg(cohort_dir, tmp_path)
    with pytest.raises(DataError, match="seg NIfTI files; without a segmentation, give the baseline segmentation"):
        case_from_folder(case_dir)
    models = tmp_path / "models"
    models.mkdir()
    for task in ("response", "evolution"):
        shutil.copy(out / f"{task}.pt", models / f"{task}.pt")
    with pytest.raises(DataError, match="site-b-000: the baseline has no segmentation and there is no baseline"):
        predict_case(models, case_from_folder(case_dir, need_seg=False))
    with pytest.raises(DataError, match="a response model, where the baseline segmentation model is needed"):
        predict_case(models, case_from_folder(case_dir, need_seg=False), segmentation_model=out / "response.pt")


def test_predict_needs_covariates_when_no_manifest_is_beside_the_case(cohort_dir: Path, tmp_path: Path) -> None:
    import shutil

    from flame_private.data.errors import DataError

    case = tmp_path / "patient"
    shutil.copytree(cohort_dir / "site-a" / "site-a-000" / "baseline", case)
    with pytest.raises(DataError, match="--age"):
        case_from_folder(case)


def test_a_case_folder_reads_its_site_manifest_only_in_a_flame_site_folder(cohort_dir: Path, tmp_path: Path,
                                                                           caplog) -> None:
    """A BraTS-style case beside some other manifest.json takes the covariates given; a flame site's case
    takes its entry (no warning about the site id); a broken flame manifest is refused by name."""
    import shutil

    from flame_private.data.errors import DataError
    from flame_private.data.records import Covariates

    given = Covariates(age=61, sex="M", mgmt_methylated=False, resection="biopsy")
    brats = tmp_path / "other" / "BraTS-like"
    shutil.copytree(cohort_dir / "site-a" / "site-a-000" / "baseline", brats)
    (brats.parent / "manifest.json").write_text('{"files": ["unrelated"]}')
    assert case_from_folder(brats, given).covariates == given
    site = tmp_path / "site-a"
    shutil.copytree(cohort_dir / "site-a", site)
    with caplog.at_level("WARNING"):
        record = case_from_folder(site / "site-a-000")
    assert record.covariates is not None and "reading it as site" not in caplog.text
    (site / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="manifest.json"):
        case_from_folder(site / "site-a-000", given)


def test_flame_predict_prints_the_three_modalities_side_by_side(central_models, cohort_dir: Path,
                                                               tmp_path: Path) -> None:
    from flame_private.cli import app

    out, _ = central_models
    png = tmp_path / "pred.png"
    result = CliRunner().invoke(app, ["predict", "--model", str(out), "--case",
                                      str(cohort_dir / "site-c" / "site-c-001"), "--out", str(png)])
    assert result.exit_code == 0, result.output
    for m in ("photon", "proton", "carbon"):
        assert m in result.output
    assert png.is_file()


def _policy(tmp_path: Path, site_id: str, cap: float) -> Path:
    """Onboard ``site_id`` for DP training: its approved policy and its initialised state."""
    from flame_private.site_state import init_state

    init_state(tmp_path / "state", site_id)
    path = tmp_path / "policy.yaml"
    path.write_text(
        f"site_id: {site_id}\nepsilon_cap: {cap}\ndelta: 1.0e-5\nunit_of_privacy: patient\naccountant: prv\n"
        "approved_by: Test Committee\napproval_reference: T-1\napproved_on: 2025-01-01\nexpires_on: 2099-01-01\n",
        encoding="utf-8")
    return path


def test_local_dp_run_records_its_spend_in_the_site_ledger(cohort_dir: Path, tmp_path: Path) -> None:
    from flame_private.privacy import Ledger, epsilon_for

    site = site_config(cohort_dir, "site-a", tmp_path)
    _policy(tmp_path, "site-a", cap=50.0)
    report = run_local(site, "response", fed_config(), tmp_path / "out", dp=True, epochs=1, run_id="t1")
    ledger = Ledger.open(tmp_path / "state", "site-a")
    assert len(ledger) == 1
    entry = ledger.entries[0]
    assert (entry.run_id, entry.task, entry.steps) == ("t1", "response", report["steps"])
    assert report["epsilon_site_total"] == pytest.approx(entry.epsilon_after)
    assert entry.epsilon_after == pytest.approx(epsilon_for([entry.history_item()], 1e-5, "prv"))
    card = json.loads((tmp_path / "out" / "response.json").read_text())
    assert card["epsilon_site_total"] == pytest.approx(entry.epsilon_after)


def test_local_dp_run_over_the_cap_is_refused_before_training(cohort_dir: Path, tmp_path: Path) -> None:
    from flame_private.privacy import BudgetExceeded

    site = site_config(cohort_dir, "site-a", tmp_path)
    _policy(tmp_path, "site-a", cap=0.01)
    with pytest.raises(BudgetExceeded, match="cap"):
        run_local(site, "response", fed_config(), tmp_path / "out", dp=True, epochs=1, run_id="t2")
    assert not (tmp_path / "out" / "response.pt").exists()
    assert not (tmp_path / "state" / "privacy_ledger.jsonl").exists() or \
        (tmp_path / "state" / "privacy_ledger.jsonl").read_text() == ""


def test_training_stops_on_an_invalid_case_unless_asked_to_skip_it_and_then_lists_it(cohort_dir: Path,
                                                                                     tmp_path: Path) -> None:
    import shutil

    from flame_private.data.errors import DataError

    data = tmp_path / "site-a"
    shutil.copytree(cohort_dir / "site-a", data)
    bad = data / "site-a-001" / "baseline" / "t2.nii.gz"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated
    site = SiteConfig(site_id="site-a", data_dir=data, layout="flame", state_dir=tmp_path / "state",
                      privacy_policy=tmp_path / "policy.yaml")
    with pytest.raises(DataError, match="site-a-001"):
        run_local(site, "response", fed_config(), tmp_path / "out", dp=False, epochs=1)
    report = run_local(site, "response", fed_config(), tmp_path / "out", dp=False, epochs=1, skip_invalid=True)
    [skipped] = report["skipped_cases"]
    assert skipped["patient_id"] == "site-a-001" and any("t2.nii.gz" in p for p in skipped["problems"])


def test_a_cosine_run_lowers_every_sites_learning_rate_round_by_round_and_the_same_at_each() -> None:
    """Public and deterministic: round r's rate is a function of the run's config alone."""
    from flame_private.experiments import settings_from
    from flame_private.federation.site.task import train_settings

    fed = FederationConfig(rounds=4, learning_rate=0.02, lr_schedule="cosine")
    rates = [train_settings(fed, r).learning_rate for r in range(1, 5)]
    with pytest.raises(ValueError, match="round 5 is outside the run's 4 rounds"):
        fed.round_learning_rate(5)
    assert rates[0] == pytest.approx(0.02) and rates == sorted(rates, reverse=True) and rates[-1] > 0
    assert rates == pytest.approx([0.02, 0.01 * (1 + np.cos(np.pi / 4)), 0.01, 0.01 * (1 + np.cos(3 * np.pi / 4))])
    assert [train_settings(fed.model_copy(update={"lr_schedule": "constant"}), r).learning_rate
            for r in range(1, 5)] == [0.02] * 4
    # Trained in one go (central, local, a study's single-site arm), the schedule spans the steps instead.
    assert settings_from(fed, epochs=8).lr_schedule == "cosine" and settings_from(fed).learning_rate == 0.02
