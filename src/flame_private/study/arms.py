"""How each arm of the study trains: pooled (central, single-site), plain FedAvg, and the private federation.

Every arm starts from the same initial model (``experiments.initial_model``) and
sees each training patient as often: ``rounds x local_epochs`` passes.  The
private federation is the real thing: the ServerApp and the sites' ClientApps,
DP-SGD with each site's own noise for the whole run (``dp.run_epsilon``), CKKS
aggregation, each site's ledger and egress log, in fresh site states.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

from flame_private.config import CohortConfig, FederationConfig, InitialWeights, SiteConfig, Task, load_config
from flame_private.experiments import initial_model, settings_from
from flame_private.federation.site.task import train_settings
from flame_private.models.io import load_model
from flame_private.privacy.accounting import epsilon_for
from flame_private.secure.site.keys import PARAMS_NAME, SECRET_NAME
from flame_private.study.config import StudyError
from flame_private.study.data import StudyData
from flame_private.training import plan_training, train, training_size

log = logging.getLogger(__name__)


def passes(fed: FederationConfig) -> int:
    """Epochs of the pooled arms: as many passes over each patient as the federation makes."""
    return fed.rounds * fed.local_epochs


def train_pooled(data: StudyData, task: Task, sites: list[str], epsilon: float | None = None,
                 tasks_sharing_epsilon: int = 1) -> tuple[torch.nn.Module, dict[str, Any]]:
    """One model on the training patients of ``sites`` pooled; with ``epsilon``, DP-SGD at that per-site budget.

    A DP single-site model gets ``epsilon / tasks_sharing_epsilon``: a site training both models alone spends
    the same total as it does in the federation, where one ``run_epsilon`` covers both.
    """
    fed = data.fed
    pool = data.training_pool(task, sites)
    settings = settings_from(fed, passes(fed))
    model = initial_model(task, fed)
    info: dict[str, Any] = {"epochs": settings.epochs, "patients": sum(data.patients(s, "train") for s in sites)}
    plan = None
    if epsilon is not None:
        if len(sites) != 1:
            raise StudyError("a DP model trained on pooled patients is not an arm of this study")
        dp = fed.dp.model_copy(update={"enabled": True, "noise_multiplier": None, "run_epsilon": None,
                                       "target_epsilon": epsilon / tasks_sharing_epsilon})
        plan = plan_training(model, task, pool, settings, dp)
        assert plan is not None
        spent = epsilon_for([(plan.noise_multiplier, plan.sample_rate, plan.steps)], dp.delta, dp.accountant)
        info.update({"noise_multiplier": plan.noise_multiplier, "sample_rate": plan.sample_rate,
                     "epsilon_spent": spent, "delta": dp.delta})
    result = train(model, task, pool, settings, plan)
    info.update({"steps": result.steps, "train_seconds": round(result.seconds, 2)})
    return result.model, info


def train_public_start(fed: FederationConfig, tasks: list[Task], cohort: CohortConfig, cohort_dir: Path,
                       epochs: int, folder: Path) -> dict[Task, InitialWeights]:
    """Each task's model trained without DP on every patient of the public cohort, saved in ``folder`` and pinned.

    A model already saved there is reused (a resumed study does not train it again).
    """
    from flame_private.data.checks import load_site
    from flame_private.experiments import make_dataset
    from flame_private.models.io import file_sha256, save_model

    folder.mkdir(parents=True, exist_ok=True)
    pinned = {}
    for task in tasks:
        path = folder / f"{task}.pt"
        if not path.is_file():
            records = [r for s in cohort.sites
                       for r in load_site(cohort_dir / s.site_id, cohort.layout, s.site_id).records]
            t0 = time.perf_counter()
            result = train(initial_model(task, fed), task, make_dataset(task, records, fed),
                           settings_from(fed, epochs), None)
            save_model(path, task, result.model, fed.model, fed.data, card={  # atomic: never half a checkpoint
                "public_cohort": cohort.name, "patients": len(records), "epochs": epochs,
                "train_seconds": round(time.perf_counter() - t0, 1)})
        pinned[task] = InitialWeights(path=path, sha256=file_sha256(path))
        log.info("%s: every arm starts from %s (sha256 %s)", task, path, pinned[task].sha256[:16])
    return pinned


def _average(states: list[dict[str, torch.Tensor]], weights: list[int]) -> dict[str, torch.Tensor]:
    total = float(sum(weights))
    out = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            out[key] = torch.stack([s[key] * (w / total) for s, w in zip(states, weights, strict=True)]).sum(dim=0)
        else:
            out[key] = first.clone()
    return out


def train_fedavg(data: StudyData, tasks: list[Task], sites: list[str]) -> tuple[dict[Task, torch.nn.Module],
                                                                                dict[str, Any]]:
    """Plain federated averaging (no DP, no encryption), replicated in this process.

    Real sites refuse to release an update without DP-SGD, so the non-private federation
    is a replica of the same loop: each round each site trains ``local_epochs`` from the
    global model, and the global model is the patient-weighted mean of their models.
    """
    fed = data.fed
    models, info = {}, {"rounds": fed.rounds, "patients": sum(data.patients(s, "train") for s in sites)}
    for task in tasks:
        global_model = initial_model(task, fed)
        for round_ in range(1, fed.rounds + 1):
            states, weights = [], []
            settings = train_settings(fed, round_)  # what every site of the real federation trains with
            for site in sites:
                ds = data.dataset(task, site, "train")
                n_patients = training_size(task, ds)
                if n_patients == 0:
                    continue  # as a real site with no patient for the task declines it
                local = copy.deepcopy(global_model)
                states.append(train(local, task, ds, settings, None).model.state_dict())
                weights.append(n_patients)
            if not states:
                raise StudyError(f"no training site has a patient for the {task} task")
            global_model.load_state_dict(_average(states, weights))
        global_model.eval()
        models[task] = global_model
    return models, info


@dataclass(frozen=True)
class Keys:
    """The study's key ceremony, made once: every federated cell uses it with fresh site states."""

    folder: Path

    @property
    def secret(self) -> Path:
        return self.folder / SECRET_NAME

    @property
    def params(self) -> Path:
        return self.folder / PARAMS_NAME


def make_keys(fed: FederationConfig, folder: Path) -> Keys:
    from flame_private.secure.site.ceremony import key_ceremony

    keys = Keys(folder)
    if not (keys.params.is_file() and keys.secret.is_file()):  # none yet, or a ceremony cut short: a new one
        shutil.rmtree(folder, ignore_errors=True)
        key_ceremony(fed.he, folder)
    return keys


POLICY = """# A study cell's policy: synthetic cohort, no real approval.
site_id: {site}
epsilon_cap: {cap}
delta: {delta}
unit_of_privacy: patient
accountant: {accountant}
approved_by: flame study (synthetic cohort; no real approval)
approval_reference: STUDY-{site}
approved_on: 2025-01-01
expires_on: 2099-01-01
"""


def write_cell(data: StudyData, fed: FederationConfig, sites: list[str], epsilon: float, keys: Keys,
               work: Path, layout: str = "flame") -> tuple[Path, dict[str, Path]]:
    """A fresh federation folder: the run config at ``epsilon`` per site, and each site's config, policy, key, state."""
    from flame_private.site_state import init_state

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    site_yamls = {}
    for sid in sites:
        folder = work / sid
        folder.mkdir()
        secret = folder / "secret.ckks"
        shutil.copyfile(keys.secret, secret)
        os.chmod(secret, 0o600)
        (folder / "policy.yaml").write_text(POLICY.format(site=sid, cap=epsilon, delta=fed.dp.delta,
                                                          accountant=fed.dp.accountant), encoding="utf-8")
        site_yaml = folder / "site.yaml"
        site_yaml.write_text(yaml.safe_dump({
            "site_id": sid, "data_dir": str(data.cohort_dir / sid), "layout": layout,
            "state_dir": str(folder / "state"), "privacy_policy": str(folder / "policy.yaml"),
            "secret_context": str(secret), "he_params": str(keys.params)}, sort_keys=False), encoding="utf-8")
        init_state(folder / "state", sid)
        site_yamls[sid] = site_yaml
    run_cfg = fed.model_copy(update={"dp": fed.dp.model_copy(update={
        "enabled": True, "noise_multiplier": None, "target_epsilon": None, "run_epsilon": epsilon})})
    fed_yaml = work / "federation.yaml"
    fed_yaml.write_text(yaml.safe_dump(run_cfg.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
    load_config(fed_yaml, FederationConfig)  # the sites will read it: refuse a bad one here, naming the file
    return fed_yaml, site_yamls


def train_federated(data: StudyData, tasks: list[Task], sites: list[str], epsilon: float, keys: Keys,
                    work: Path, run_id: str, engine: Literal["simulation", "inprocess"],
                    layout: str = "flame") -> tuple[dict[Task, torch.nn.Module | None], dict[str, Any]]:
    """The private federation of ``sites`` at ``epsilon`` per site; the global models as the first site decrypted
    them (None for a task whose every round was refused) and what each site's ledger says it spent."""
    fed = data.fed.model_copy(update={"tasks": tasks})
    fed_yaml, site_yamls = write_cell(data, fed, sites, epsilon, keys, work, layout)
    run_dir = work / "run"
    if engine == "simulation":
        from flame_private.federation.simulation import simulate_federation

        summary = simulate_federation(fed_yaml, list(site_yamls.values()), keys.params, run_dir, run_id)
    else:
        from flame_private.federation.inprocess import LocalGrid
        from flame_private.federation.server.server_app import ServerSettings, run_server

        settings = ServerSettings(federation_config=fed_yaml, params_context=keys.params, run_dir=run_dir,
                                  run_id=run_id, expected_sites=len(sites), node_wait_s=1)
        summary = run_server(LocalGrid(site_yamls, fed_yaml), settings)
    from flame_private.privacy import Ledger, open_site_budget
    from flame_private.records.egress import EgressLog

    spent, sigmas, reasons = {}, {}, {}
    for sid, p in site_yamls.items():
        site = load_config(p, SiteConfig)
        spent[sid] = open_site_budget(site).spent()
        ledger = Ledger.open(site.state_dir, sid, readonly=True)
        trained = {e.noise_multiplier for e in ledger.entries if e.sample_rate < 1.0}
        sigmas[sid] = max(trained) if trained else None
        egress = EgressLog.open(Path(site.state_dir), sid, readonly=True)
        declined = sorted({e.reason for e in egress.entries if e.kind == "declined" and e.reason})
        if declined:
            reasons[sid] = declined
    exports = Path(load_config(site_yamls[sites[0]], SiteConfig).state_dir) / "exports" / run_id
    models: dict[Task, torch.nn.Module | None] = {}
    for task in tasks:
        path = exports / f"{task}.pt"
        models[task] = load_model(path)[1].eval() if path.is_file() else None
    return models, {"rounds": fed.rounds, "epsilon_spent": spent, "noise_multiplier": sigmas,
                    "declined": reasons, "exports": summary.get("exports", {}),
                    "patients": sum(data.patients(s, "train") for s in sites)}
