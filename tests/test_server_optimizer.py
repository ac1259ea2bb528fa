"""The server optimiser step every site applies after decryption: FedAvg, FedAvgM, FedAdam.

The server cannot see a model, so the step and its state live at the sites; every
site must compute the same next global model from the same decrypted average, and
a site that cannot (state missing, stale, of other settings) refuses, naming the file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from federation_harness import LocalGrid, make_federation, run
from flwr.app import Message

from flame_private.config import ConfigError, FederationConfig, HEConfig, ServerOptimizerConfig, parse_config
from flame_private.secure.site.ceremony import key_ceremony
from flame_private.server_optimizer import (
    ServerOptimizerError,
    load_state,
    next_global,
    server_step,
    state_path,
)

ADAM = ServerOptimizerConfig(name="fedadam", lr=0.4, beta1=0.5, beta2=0.75, tau=0.2)


def _state(*values: float) -> dict[str, torch.Tensor]:
    return {"w": torch.tensor(values, dtype=torch.float64), "steps": torch.tensor(7)}


def _averages(rounds: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [{"a.weight": torch.randn(3, 4, generator=g, dtype=torch.float64),
             "a.bias": torch.randn(4, generator=g, dtype=torch.float64)} for _ in range(rounds)]


def _initial() -> dict[str, torch.Tensor]:
    return {"a.weight": torch.zeros(3, 4), "a.bias": torch.ones(4)}  # float32, as a model's state dict


# --------------------------------------------------------------------------- the step


def test_fedadam_matches_a_hand_computed_two_round_example() -> None:
    """x0 = 1; average 0.8 then 1.1; lr 0.4, beta1 0.5, beta2 0.75, tau 0.2 (so v starts at 0.04).

    Round 1: g = 0.2, m = 0.1, v = 0.75 * 0.04 + 0.25 * 0.04 = 0.04, x = 1 - 0.4 * 0.1 / (0.2 + 0.2) = 0.9.
    Round 2: g = 0.9 - 1.1 = -0.2, m = 0.05 - 0.1 = -0.05, v = 0.04, x = 0.9 + 0.4 * 0.05 / 0.4 = 0.95.
    A parameter the sites leave where it is does not move; a counter takes the average's value.
    """
    x1, moments = server_step(ADAM, _state(1.0, 0.0), _state(0.8, 0.0), {})
    assert x1["w"].tolist() == pytest.approx([0.9, 0.0], abs=1e-12)
    assert moments["m"]["w"].tolist() == pytest.approx([0.1, 0.0], abs=1e-12)
    assert moments["v"]["w"].tolist() == pytest.approx([0.04, 0.03], abs=1e-12)
    x2, moments = server_step(ADAM, x1, _state(1.1, 0.0), moments)
    assert x2["w"].tolist() == pytest.approx([0.95, 0.0], abs=1e-12)
    assert x2["w"].dtype == torch.float64 and int(x2["steps"]) == 7


def test_fedavgm_matches_a_hand_computed_two_round_example() -> None:
    """lr 1, momentum 0.5: x0 = 1; average 0.8 (g 0.2, v 0.2, x 0.8) then 0.7 (g 0.1, v 0.2, x 0.6)."""
    cfg = ServerOptimizerConfig(name="fedavgm", momentum=0.5)
    x1, moments = server_step(cfg, _state(1.0), _state(0.8), {})
    x2, _ = server_step(cfg, x1, _state(0.7), moments)
    assert (x1["w"].item(), x2["w"].item()) == pytest.approx((0.8, 0.6), abs=1e-12)


def test_fedavg_is_the_decrypted_average_itself_and_keeps_nothing(tmp_path: Path) -> None:
    """The default: the very tensors the site decrypted become the model, bit for bit, as before this step."""
    average = _averages(1)[0]
    for round_ in (1, 5):
        assert next_global(ServerOptimizerConfig(), tmp_path, "run-1", "response", round_, average,
                           _initial()) is average
    assert list(tmp_path.iterdir()) == []
    assert FederationConfig().server_optimizer.name == "fedavg"


def test_the_server_lr_defaults_to_each_optimisers_usual_value_and_bad_settings_are_named() -> None:
    assert [ServerOptimizerConfig(name=n).server_lr for n in ("fedavg", "fedavgm", "fedadam")] == [1.0, 1.0, 0.01]
    cfg = parse_config({"server_optimizer": {"name": "fedadam", "lr": 0.05, "tau": 1e-2}}, FederationConfig)
    assert cfg.server_optimizer.server_lr == 0.05
    with pytest.raises(ConfigError, match=r"server_optimizer\.name"):
        parse_config({"server_optimizer": {"name": "fedyogi"}}, FederationConfig, source="federation.yaml")
    with pytest.raises(ConfigError, match=r"server_optimizer\.beta2"):
        parse_config({"server_optimizer": {"name": "fedadam", "beta2": 1.0}}, FederationConfig)


# --------------------------------------------------------------------------- the same model at every site


@pytest.mark.parametrize("name", ["fedavgm", "fedadam"])
def test_two_sites_given_the_same_averages_reach_identical_models(tmp_path: Path, name: str) -> None:
    """Each site keeps its own state; the same decrypted averages give bitwise the same global models.

    Site b is restarted before every call (nothing held in memory: the state is re-read from its
    file) and also sees each average twice (evaluation, then the next round's training).
    """
    cfg = ServerOptimizerConfig(name=name)
    averages = _averages(3)
    for round_, average in enumerate(averages, start=1):
        a = next_global(cfg, tmp_path / "a", "run-1", "response", round_, average, _initial())
        b = next_global(cfg, tmp_path / "b", "run-1", "response", round_, {k: v.clone() for k, v in average.items()},
                        _initial())
        again = next_global(cfg, tmp_path / "b", "run-1", "response", round_, average, _initial())
        for k in average:
            assert torch.equal(a[k], b[k]) and torch.equal(b[k], again[k])
            if round_ > 1:  # momentum: off the average (FedAvgM's first step, lr 1, lands on it)
                assert not torch.equal(a[k], average[k])
    kept = load_state(state_path(tmp_path / "a", "run-1", "response"))
    assert kept is not None and kept.round == 3 and kept.settings["name"] == name


def test_the_state_round_trips_across_a_restart_and_continues_as_an_uninterrupted_site(tmp_path: Path) -> None:
    cfg = ServerOptimizerConfig(name="fedadam")
    averages = _averages(2, seed=1)
    next_global(cfg, tmp_path / "a", "run-1", "evolution", 1, averages[0], _initial())
    kept = load_state(state_path(tmp_path / "a", "run-1", "evolution"))
    assert kept is not None and kept.round == 1
    assert set(kept.moments) == {"m", "v"} and all(v.dtype == torch.float64 for v in kept.moments["m"].values())
    # what an uninterrupted site computes for round 2, without the file in between
    x1, moments = server_step(cfg, _initial(), averages[0], {})
    x2, _ = server_step(cfg, x1, averages[1], moments)
    restarted = next_global(cfg, tmp_path / "a", "run-1", "evolution", 2, averages[1], _initial())
    assert all(torch.equal(restarted[k], x2[k]) for k in x2)
    assert not list((tmp_path / "a").rglob(".*.tmp"))  # written whole: no temporary file left behind


def test_state_is_kept_per_run_and_task(tmp_path: Path) -> None:
    cfg = ServerOptimizerConfig(name="fedavgm")
    average = _averages(1)[0]
    for run_id, task in (("run-1", "response"), ("run-1", "evolution"), ("run-2", "response")):
        next_global(cfg, tmp_path, run_id, task, 1, average, _initial())
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.pt")) == [
        "server-optimizer/run-1/evolution.pt", "server-optimizer/run-1/response.pt",
        "server-optimizer/run-2/response.pt"]


# --------------------------------------------------------------------------- refusals


def test_a_site_without_state_refuses_any_round_after_the_first_naming_the_file(tmp_path: Path) -> None:
    cfg = ServerOptimizerConfig(name="fedadam")
    path = state_path(tmp_path, "run-1", "response")
    with pytest.raises(ServerOptimizerError, match=rf"{path}: no server optimiser state.*round 2"):
        next_global(cfg, tmp_path, "run-1", "response", 2, _averages(1)[0], _initial())
    next_global(cfg, tmp_path, "run-1", "response", 1, _averages(1)[0], _initial())  # control: round 1 starts it


def test_a_stale_state_refuses_and_is_left_as_it_was(tmp_path: Path) -> None:
    cfg = ServerOptimizerConfig(name="fedadam")
    averages = _averages(3)
    next_global(cfg, tmp_path, "run-1", "response", 1, averages[0], _initial())
    path = state_path(tmp_path, "run-1", "response")
    before = path.read_bytes()
    with pytest.raises(ServerOptimizerError, match=rf"{path}: server optimiser state of round 1, but the aggregate "
                                                   r"is of round 3"):
        next_global(cfg, tmp_path, "run-1", "response", 3, averages[2], _initial())
    assert path.read_bytes() == before
    next_global(cfg, tmp_path, "run-1", "response", 2, averages[1], _initial())  # control: the next round steps


def test_another_average_for_a_round_already_stepped_is_refused(tmp_path: Path) -> None:
    cfg = ServerOptimizerConfig(name="fedavgm")
    first, other = _averages(2)
    next_global(cfg, tmp_path, "run-1", "response", 1, first, _initial())
    with pytest.raises(ServerOptimizerError, match="round 1 was stepped with another decrypted average"):
        next_global(cfg, tmp_path, "run-1", "response", 1, other, _initial())


def test_a_state_of_other_optimiser_settings_is_not_continued(tmp_path: Path) -> None:
    next_global(ServerOptimizerConfig(name="fedadam"), tmp_path, "run-1", "response", 1, _averages(1)[0], _initial())
    with pytest.raises(ServerOptimizerError, match="the run config says"):
        next_global(ServerOptimizerConfig(name="fedadam", lr=0.1), tmp_path, "run-1", "response", 2,
                    _averages(1)[0], _initial())


def test_an_unreadable_state_or_an_unsafe_run_id_is_refused(tmp_path: Path) -> None:
    path = state_path(tmp_path, "run-1", "response")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a state")
    with pytest.raises(ServerOptimizerError, match=rf"{path}: unreadable server optimiser state"):
        next_global(ServerOptimizerConfig(name="fedadam"), tmp_path, "run-1", "response", 2, _averages(1)[0],
                    _initial())
    with pytest.raises(ServerOptimizerError, match="run id '../x' is not a plain name"):
        next_global(ServerOptimizerConfig(name="fedadam"), tmp_path, "../x", "response", 1, _averages(1)[0],
                    _initial())


# --------------------------------------------------------------------------- a whole federation


@pytest.mark.slow  # one in-process federation of 4 sites, 2 rounds; `make test` runs it
def test_a_federation_under_fedadam_ends_with_one_model_and_a_site_that_lost_its_state_refuses(
        tmp_path: Path, cohort_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Sites a to c keep identical states and export the same model; site d, whose state is lost after it
    trained round 2, declines the final model with the state file named (it does not diverge silently)."""
    key_ceremony(HEConfig(), tmp_path / "keys")
    sites, fed = make_federation(tmp_path, cohort_dir, tmp_path / "keys", n_sites=4, rounds=2, tasks="[response]")
    with fed.open("a", encoding="utf-8") as f:
        f.write("server_optimizer: {name: fedadam, lr: 0.01}\n")
    lost = state_path(sites["site-d"].parent / "state", "run-1", "response")
    trained: list[str] = []

    def lose_state(site_id: str, reply: Message) -> Message:
        if reply.metadata.message_type == "train":
            trained.append(site_id)
            if trained.count("site-d") == 2:
                lost.unlink()  # site d's disk loses the state after it trained on the round-1 model
        return reply

    with caplog.at_level(logging.ERROR):
        summary = run(LocalGrid(sites, fed, tamper=lose_state), fed, tmp_path / "keys", tmp_path / "run")
    assert [r["round"] for r in summary["rounds"] if r["task"] == "response"] == [1, 2]
    kept = [load_state(state_path(sites[s].parent / "state", "run-1", "response")) for s in ("site-a", "site-b",
                                                                                           "site-c")]
    assert all(k is not None and k.round == 2 for k in kept)
    exports = [torch.load(sites[s].parent / "state" / "exports" / "run-1" / "response.pt",
                          weights_only=True)["state_dict"] for s in ("site-a", "site-b", "site-c")]
    for k in kept[0].model:  # type: ignore[union-attr]
        assert all(torch.equal(kept[0].model[k], other.model[k]) for other in kept[1:])  # type: ignore[union-attr]
        assert all(torch.equal(e[k], kept[0].model[k].float()) for e in exports)  # type: ignore[union-attr]
    assert not (sites["site-d"].parent / "state" / "exports" / "run-1" / "response.pt").exists()
    assert f"{lost}: no server optimiser state" in caplog.text
