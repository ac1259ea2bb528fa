"""``flame study``: the leave-one-site-out evidence study, at its ci size (schema and arms; no performance claims).

One study is run for the module: interrupted after a few units, then resumed
through the CLI, as a user whose machine stopped would do.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flame_private.cli import app
from flame_private.evaluation import EVOLUTION_HEADLINES, RESPONSE_HEADLINES, TREATMENT_HEADLINES
from flame_private.study.config import StudyConfig, StudyError, load_study_config
from flame_private.study.plan import plan_units
from flame_private.study.runner import StudyRunner

STUDY_YAML = Path(__file__).resolve().parents[1] / "configs" / "study.yaml"
INTERRUPT_AFTER = 5


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def ci_study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("study") / "ci"
    cfg = load_study_config(STUDY_YAML, "ci")

    def stop_after_a_few(i: int, n: int, unit: Any, state: str) -> None:
        if state == "finished" and i + 1 == INTERRUPT_AFTER:
            raise Interrupted  # the machine stops between two units

    with pytest.raises(Interrupted):
        StudyRunner(cfg, out).run(stop_after_a_few)
    partial = json.loads((out / "study.json").read_text())
    written = {p.name: p.stat().st_mtime_ns for p in (out / "units").glob("*.json")}
    here = os.getcwd()
    os.chdir(out.parent)  # resumed from the folder above, naming the study's folder relatively
    try:
        result = CliRunner().invoke(app, ["study", "--config", str(STUDY_YAML), "--size", "ci", "--out", out.name],
                                    env={"COLUMNS": "200"})
    finally:
        os.chdir(here)
    assert result.exit_code == 0, result.output
    text = (out / "study.json").read_text()
    return {"out": out, "cfg": cfg, "partial": partial, "written": written, "output": result.output, "text": text,
            "results": json.loads(text)}


def _ok(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["status"] == "ok"]


@pytest.mark.slow
def test_the_ci_study_has_one_row_per_arm_epsilon_training_site_held_out_site_and_task(ci_study) -> None:
    rows = ci_study["results"]["rows"]
    got = sorted((r["arm"], r["epsilon"] or 0.0, tuple(r["trained_at"]), r["held_out_site"], r["task"]) for r in rows)
    others = ("site-a", "site-b", "site-c")
    want = sorted([(arm, 0.0, others, "site-d", task) for arm in ("central", "fedavg")
                   for task in ("response", "evolution")]
                  + [("single-site", eps, (site,), "site-d", task) for site in others for eps in (0.0, 1.0, 8.0)
                     for task in ("response", "evolution")]
                  + [("federated", eps, others, "site-d", task) for eps in (1.0, 8.0)
                     for task in ("response", "evolution")])
    assert got == want
    assert ci_study["results"]["units"] == {"done": 23, "planned": 23}
    assert len(_ok(rows)) == len(rows), [r.get("reason") for r in rows if r["status"] != "ok"]


@pytest.mark.slow
def test_every_row_carries_the_model_card_metrics_with_intervals_and_the_baselines_on_the_same_patients(
        ci_study) -> None:
    for r in ci_study["results"]["rows"]:
        assert r["n"] == 6.0  # every patient of the held-out site
        headlines = RESPONSE_HEADLINES if r["task"] == "response" else EVOLUTION_HEADLINES
        for key in headlines:
            assert key in r and len(r[f"{key}_ci95"]) == 2, (r["unit"], key)
        expected = ({"prevalence", "logistic_observables", "logistic_first_order"} if r["task"] == "response"
                    else {"no_change"})
        assert set(r["baselines"]) == expected
        assert all(b["n"] == 6.0 for b in r["baselines"].values())
        if r["task"] == "response":
            assert sum(b["n"] for b in r["calibration"]) == 6.0
            for key in TREATMENT_HEADLINES:
                assert key in r["treatment_comparison"]
            assert {"logistic_observables", "always_photon"} <= set(r["treatment_comparison_baselines"])
        assert r["seed"] == 5 and r["repeat"] == 0 and r["train_wall_s"] >= 0.0


@pytest.mark.slow
def test_private_arms_spend_at_most_their_epsilon_and_the_others_spend_none(ci_study) -> None:
    for r in ci_study["results"]["rows"]:
        if r["arm"] == "federated":  # each site's ledger, whole run: both models and the final evaluations
            assert r["he"] is True
            assert 0.9 * r["epsilon"] <= r["epsilon_spent"] <= r["epsilon"], r["unit"]
            assert set(r["training"]["epsilon_spent"]) == set(r["trained_at"])
        elif r["arm"] == "single-site" and r["epsilon"] is not None:  # one of the site's two models
            assert r["he"] is False and 0.45 * r["epsilon"] <= r["epsilon_spent"] <= r["epsilon"] / 2, r["unit"]
        else:
            assert r["he"] is False and r["epsilon"] is None and r["epsilon_spent"] is None


@pytest.mark.slow
def test_a_resumed_study_reruns_no_finished_unit(ci_study) -> None:
    written = ci_study["written"]
    assert len(written) == INTERRUPT_AFTER  # each finished unit was on disk when the study stopped ...
    for name, mtime in written.items():  # ... and the resumed study read it, never rewrote it
        assert (ci_study["out"] / "units" / name).stat().st_mtime_ns == mtime
    resumed = {r["unit"]: r for r in ci_study["results"]["rows"]}
    for row in ci_study["partial"]["rows"]:  # the same results, not retrained ones
        assert resumed[row["unit"]]["train_wall_s"] == row["train_wall_s"]
    assert f"{len(ci_study['results']['rows'])} rows, 23 of 23 units" in ci_study["output"]


@pytest.mark.slow
def test_study_json_is_strict_json_with_what_reproduces_it(ci_study) -> None:
    def no_nan(token: str) -> None:
        raise AssertionError(f"study.json holds {token}")

    results = json.loads(ci_study["text"], parse_constant=no_nan)
    assert results["command"].startswith("flame study --config")
    assert len(results["cohort"]["sha256"]) == 64
    assert {"platform", "cpus", "torch"} <= set(results["machine"])
    assert results["federation"]["rounds"] == 2


@pytest.mark.slow
def test_the_cli_writes_the_tables_and_draws_the_figures_of_the_rows_it_has(ci_study) -> None:
    tables = (ci_study["out"] / "study.md").read_text()
    for task in ("response", "evolution"):
        assert f"## {task}, held-out site site-d (6 patients)" in tables
    assert "| federated DP+HE eps 8 | site-a, site-b, site-c |" in tables
    assert "| baseline: no change |" in tables and "| rule: always photon |" in tables
    plots = ci_study["out"] / "plots"
    names = sorted(p.name for p in plots.glob("*.png"))
    assert names == sorted([f"study-ci-{fig}-{task}.png" for fig in ("epsilon", "sites")
                            for task in ("response", "evolution")] + ["study-ci-calibration-response.png"])
    assert all((plots / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for n in names)


@pytest.mark.slow
def test_repeated_cells_are_summarised_over_their_runs_in_the_tables_and_figures(ci_study, tmp_path: Path) -> None:
    """A second run of every cell: each run keeps its row, and each cell gets its mean and range over the runs."""
    from flame_private.study.plots import draw_all
    from flame_private.study.summary import markdown

    rows = _ok(ci_study["results"]["rows"])
    again = [{**r, "repeat": 1, "auc": r["auc"] - 0.1} if r["task"] == "response" else {**r, "repeat": 1}
             for r in rows]
    results = {**ci_study["results"], "rows": rows + again}
    tables = markdown(results)
    central = next(r for r in rows if r["arm"] == "central" and r["task"] == "response")
    assert "| central (pooled, no DP), repeat 1 | site-a, site-b, site-c |" in tables  # each run keeps its row
    assert "Each cell over its runs" in tables
    mean = (central["auc"] + (central["auc"] - 0.1)) / 2  # as the table sums them
    assert (f"| central (pooled, no DP) | site-a, site-b, site-c | 2 | {mean:.3f} "
            f"({central['auc'] - 0.1:.3f}-{central['auc']:.3f}) |") in tables
    names = sorted(p.name for p in draw_all(results, tmp_path, prefix="twice"))
    assert names == sorted([f"twice-{fig}-{task}.png" for fig in ("epsilon", "sites")
                            for task in ("response", "evolution")] + ["twice-calibration-response.png"])
    # A metric the held-out patients cannot give (one class only: null in study.json) leaves a gap, not an error.
    nulled = [{**r, "baselines": {k: {**m, "auc": None} for k, m in r["baselines"].items()}} for r in rows]
    assert len(draw_all({**results, "rows": nulled}, tmp_path / "null", prefix="null")) == len(names)


@pytest.mark.slow
def test_a_study_folder_refuses_to_resume_with_another_configuration(ci_study) -> None:
    cfg = ci_study["cfg"].model_copy(update={"epsilons": [2.0, 8.0], "cohort_dir": ci_study["out"] / "cohort"})
    with pytest.raises(StudyError, match="another configuration .*study"):
        StudyRunner(cfg, ci_study["out"]).run()


@pytest.mark.slow
def test_a_cohort_folder_holding_another_cohort_is_refused(ci_study, cohort_dir: Path, tmp_path: Path) -> None:
    cfg = ci_study["cfg"].model_copy(update={"cohort_dir": cohort_dir})
    with pytest.raises(StudyError, match="holds another cohort"):
        StudyRunner(cfg, tmp_path / "study")


def _config(**changes: Any) -> StudyConfig:
    return StudyConfig(cohort=Path("c.yaml"), federation=Path("f.yaml"), **changes)


def test_single_site_models_are_trained_once_and_scored_on_every_held_out_site_they_did_not_see() -> None:
    units = plan_units(_config(arms=["single-site"], tasks=["response"], epsilons=[8.0]), ["a", "b", "c", "d"], 3)
    assert len(units) == 8  # 4 sites x (no DP, epsilon 8)
    by_key = {u.key: u for u in units}
    assert by_key["single-response-a-eps8"].held_out == ["b", "c", "d"]
    assert by_key["single-response-a-nodp"].epsilon is None


def test_every_other_arm_trains_once_per_held_out_site_on_all_the_others() -> None:
    units = plan_units(_config(held_out=["b"], epsilons=[1.0, 8.0]), ["a", "b", "c", "d"], 3)
    federated = [u for u in units if u.arm == "federated"]
    assert [u.epsilon for u in federated] == [8.0, 1.0]
    assert all(u.trained_at == ["a", "c", "d"] and u.held_out == ["b"] and u.he for u in federated)
    assert {u.arm for u in units} == {"central", "single-site", "fedavg", "federated"}
    assert not any(u.arm == "single-site" and u.trained_at == ["b"] for u in units)  # b is scored, not trained


def test_repeats_run_every_cell_again_with_the_next_seed_after_every_first_run() -> None:
    once = plan_units(_config(held_out=["b"], epsilons=[8.0]), ["a", "b", "c", "d"], 3)
    thrice = plan_units(_config(held_out=["b"], epsilons=[8.0], repeats=3), ["a", "b", "c", "d"], 3)
    assert thrice[:len(once)] == once  # a study cut short has each cell once before any twice
    assert [u.repeat for u in thrice] == [0] * len(once) + [1] * len(once) + [2] * len(once)
    assert len({u.key for u in thrice}) == 3 * len(once)
    assert thrice[len(once)].key == f"{once[0].key}-r1"


def test_a_study_that_cannot_hold_a_site_out_is_refused_naming_why() -> None:
    with pytest.raises(StudyError, match="min_sites"):
        plan_units(_config(), ["a", "b", "c"], 3)
    with pytest.raises(StudyError, match="held_out names"):
        plan_units(_config(held_out=["x"]), ["a", "b", "c", "d"], 3)


def test_an_unknown_size_is_an_error_naming_the_file_and_the_sizes_it_has() -> None:
    has = (r"\(it has: ci, response, response-clip, response-clip-cosine, response-sites, segmentation, "
           r"segmentation-public\)")
    with pytest.raises(Exception, match=r"study\.yaml: no size 'huge' under sizes " + has):
        load_study_config(STUDY_YAML, "huge")


def test_a_study_folder_of_an_earlier_version_is_read_with_the_settings_added_since_at_their_defaults(
        tmp_path: Path) -> None:
    """A federation setting added with a default (lr_schedule) is no change of configuration; a public start
    recorded by its path (before it was recorded by content) is named as an earlier version's."""
    from flame_private.config import FederationConfig

    path = tmp_path / "study-identity.json"
    federation = FederationConfig().model_dump(mode="json")
    del federation["lr_schedule"]
    path.write_text(json.dumps({"study": {"name": "s"}, "federation": federation, "cohort_sha256": "x"}))
    assert StudyRunner._stored_identity(path)["federation"] == FederationConfig().model_dump(mode="json")
    path.write_text(json.dumps({"study": {"public_start": {"cohort": "cohort/public.yaml", "epochs": 10}},
                                "federation": federation, "cohort_sha256": "x"}))
    with pytest.raises(StudyError, match="written by an earlier version"):
        StudyRunner._stored_identity(path)


def test_a_repeated_epsilon_is_refused() -> None:
    with pytest.raises(ValueError, match="epsilons lists a value twice"):
        _config(epsilons=[8.0, 8.0])


@pytest.mark.parametrize("size", [None, "ci", "response", "response-sites", "response-clip", "response-clip-cosine",
                                  "segmentation", "segmentation-public"])
def test_the_shipped_study_config_and_each_of_its_sizes_load_with_files_that_exist(size: str | None) -> None:
    cfg = load_study_config(STUDY_YAML, size)
    assert cfg.cohort.is_file() and cfg.federation.is_file()


def test_flame_study_with_an_unknown_size_exits_3_naming_the_sizes(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["study", "-c", str(STUDY_YAML), "--size", "huge", "-o", str(tmp_path / "s")],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 3
    assert "no size 'huge'" in result.output and not (tmp_path / "s").exists()


def test_a_segmentation_model_is_scored_on_the_held_out_site_beside_the_threshold_baseline(cohort_dir: Path) -> None:
    from flame_private.config import FederationConfig, load_config
    from flame_private.evaluation import SEGMENTATION_HEADLINES
    from flame_private.experiments import initial_model
    from flame_private.study.data import StudyData
    from flame_private.study.scoring import Scorer

    fed = load_config(STUDY_YAML.parent / "federation" / "study-ci.yaml", FederationConfig)
    fed = fed.model_copy(update={"tasks": ["segmentation"],
                                 "model": fed.model.model_copy(update={"segmentation_channels": (4, 8)})})
    row = Scorer(StudyData.load(cohort_dir, fed)).score(initial_model("segmentation", fed), "segmentation", "site-c")
    assert row["n"] == 4  # every patient of the held-out site
    for key in SEGMENTATION_HEADLINES:
        assert f"{key}_ci95" in row
    baseline = row["baselines"]["intensity_thresholds"]
    assert set(baseline) == set(k for k in row if k != "baselines") and baseline["n"] == row["n"]


@pytest.mark.slow
def test_a_public_start_trains_once_on_the_public_cohort_and_every_arm_starts_from_it_pinned(
        ci_study, cohort_dir: Path, tmp_path: Path) -> None:
    """The test cohort stands in for the public one: the start is trained on it, saved, pinned by its SHA-256 in
    the rows' federation config, and reused (not retrained) when the study resumes."""
    from flame_private.models.io import file_sha256
    from flame_private.study.config import PublicStart

    public_yaml = tmp_path / "public.yaml"
    public_yaml.write_text((STUDY_YAML.parent / "cohort" / "test.yaml").read_text())
    public = PublicStart(cohort=public_yaml, cohort_dir=cohort_dir, epochs=1)
    cfg = ci_study["cfg"].model_copy(update={
        "tasks": ["segmentation"], "arms": ["central"], "held_out": ["site-c"],
        "cohort_dir": ci_study["out"] / "cohort", "public_start": public})
    out = tmp_path / "study"
    results = StudyRunner(cfg, out).run()
    start = out / "public-start" / "segmentation.pt"
    pinned = results["federation"]["initial_weights"]["segmentation"]
    assert pinned["sha256"] == file_sha256(start) and pinned["path"] == str(start)
    assert json.loads(start.with_suffix(".json").read_text())["epochs"] == 1
    assert [r["status"] for r in results["rows"]] == ["ok"]
    written = start.stat().st_mtime_ns
    (out / "units" / "central-segmentation-without-site-c.json").unlink()  # one unit to redo on resume
    StudyRunner(cfg, out).run()
    assert start.stat().st_mtime_ns == written
    # The public cohort's config edited in place: the saved start no longer matches it, so it is not reused.
    public_yaml.write_text(public_yaml.read_text().replace("seed:", "seed: 1  # was", 1))
    with pytest.raises(StudyError, match="another configuration .*study"):
        StudyRunner(cfg, out).run()
