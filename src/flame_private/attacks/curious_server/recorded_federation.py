"""The recorded federation: a real (simulated) federation whose server records everything it receives and keeps.

A small synthetic cohort, the key ceremony, site configs and approved
policies, the real ServerApp logic (``run_server``) and the real ClientApp,
connected by the in-process Grid.  Every reply the server receives is recorded
(the bytes Flower would carry, object by object) and written to its folder.
An oracle that only a simulation can have sees what each site encrypted, so
each check can be scored against the truth.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from flwr.app import Message
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from flame_private.attacks.curious_server.settings import RUN_ID, CuriousServerSettings
from flame_private.config import (
    CohortConfig,
    FederationConfig,
    HEConfig,
    load_config,
    parse_config,
)
from flame_private.federation.inprocess import LocalGrid
from flame_private.federation.protocol import UPDATE, read_ct_record
from flame_private.federation.server.server_app import ServerSettings, run_server
from flame_private.federation.site import site as site_module
from flame_private.secure.public.envelope import CiphertextEnvelope, Content
from flame_private.secure.public.packing import ParamLayout, update_vector
from flame_private.secure.site.ceremony import key_ceremony
from flame_private.secure.site.keys import SecretContext
from flame_private.site_state import init_state

log = logging.getLogger(__name__)

_MIXES = ({"photon": 0.6, "proton": 0.4}, {"photon": 0.5, "proton": 0.2, "carbon": 0.3}, {"photon": 1.0},
          {"photon": 0.4, "proton": 0.3, "carbon": 0.3})
_SCANNERS: tuple[dict[str, Any], ...] = (
    {}, {"orientation": "LPS", "spacing_factor": [1.0, 1.0, 1.5], "intensity_scale": 600, "noise_sd": 0.05},
    {"orientation": "LAS", "contrast_gamma": 1.2, "bias_field": 0.3}, {"intensity_scale": 800})

POLICY = """site_id: {site}
epsilon_cap: 100.0
delta: 1.0e-5
unit_of_privacy: patient
accountant: prv
approved_by: Attack simulation on synthetic patients
approval_reference: SIM-{site}
approved_on: 2025-01-01
expires_on: 2099-01-01
"""


@dataclass(frozen=True)
class Federation:
    """Paths of one simulated federation: custodian, sites, server."""

    work: Path
    fed_yaml: Path
    site_yamls: dict[str, Path]
    site_dirs: dict[str, Path]
    server_dir: Path
    server_params: Path

    @property
    def run_dir(self) -> Path:
        return self.server_dir / "run"

    @property
    def received_dir(self) -> Path:
        return self.server_dir / "received"


@dataclass
class Plain:
    """What one site encrypted, as the simulation's oracle saw it (the server never does)."""

    site_id: str
    task: str
    round: int
    model: str
    content: Content
    count: int
    state: dict[str, np.ndarray]
    """Tensors in layout order, in their own dtype: trained weights, or the metric sums / METRIC_SCALE."""
    vector: np.ndarray
    """``[count * w | count]``, exactly what was encrypted."""

    @property
    def is_metrics(self) -> bool:
        return self.content == "metrics"


@dataclass
class Received:
    """One reply as the server received it."""

    seq: int
    site_id: str
    step: str
    wire: bytes
    header: str | None = None
    payload: bytes | None = None
    plain: Plain | None = None


def cohort_config(settings: CuriousServerSettings, seed: int) -> CohortConfig:
    sites = []
    for i, n in enumerate(settings.site_patients):
        entry: dict[str, Any] = {"site_id": f"site-{chr(ord('a') + i)}", "n_patients": n,
                                 "treatment_mix": _MIXES[i % len(_MIXES)]}
        if _SCANNERS[i % len(_SCANNERS)]:
            entry["scanner"] = _SCANNERS[i % len(_SCANNERS)]
        sites.append(entry)
    return parse_config({"name": f"curious-server-s{seed}", "seed": seed, "grid": settings.grid, "sites": sites},
                        CohortConfig, "<curious-server cohort>")


def federation_config(settings: CuriousServerSettings, seed: int) -> dict[str, Any]:
    """A small run at the deployed CKKS parameters and DP-SGD at every site."""
    return {"run_name": RUN_ID, "seed": seed, "tasks": list(settings.tasks), "rounds": settings.rounds,
            "local_epochs": 1, "batch_size": 2, "learning_rate": 1e-3, "min_sites": 3, "reply_timeout_s": 120,
            "data": {"grid": settings.grid, "val_fraction": 0.25, "test_fraction": 0.0},
            "model": {"response_channels": list(settings.channels), "evolution_channels": list(settings.channels),
                      "norm_groups": settings.norm_groups},
            "dp": {"enabled": True, "noise_multiplier": 1.0, "max_grad_norm": 1.0, "delta": 1e-5},
            "he": HEConfig().model_dump(mode="json")}


def build_federation(work: Path, settings: CuriousServerSettings, seed: int) -> Federation:
    """Cohort (cached by config), key ceremony, one folder per site, the server's folder; all fresh but the cohort."""
    from flame_private.cohort.writer import synthesise_cohort

    work.mkdir(parents=True, exist_ok=True)
    cfg = cohort_config(settings, seed)
    cohort = work / f"cohort-{hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()[:12]}"
    for old in work.iterdir():
        if old != cohort:
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    if not (cohort / "cohort.json").is_file():
        log.info("synthesising %d patients at %d^3", sum(settings.site_patients), settings.grid)
        synthesise_cohort(cfg, cohort, workers=max(1, min(4, os.cpu_count() or 1)), overwrite=True)
    fed_yaml = work / "federation.yaml"
    fed_yaml.write_text(yaml.safe_dump(federation_config(settings, seed), sort_keys=False), encoding="utf-8")
    fed = load_config(fed_yaml, FederationConfig)
    custodian = work / "custodian"
    ceremony = key_ceremony(fed.he, custodian)
    server_dir = work / "server"
    server_dir.mkdir()
    server_params = server_dir / "server-params.ctx"
    shutil.copyfile(ceremony.params_path, server_params)
    site_yamls, site_dirs = {}, {}
    for site in cfg.sites:
        sid = site.site_id
        folder = work / "sites" / sid
        folder.mkdir(parents=True, mode=0o700)
        secret = folder / "secret.ctx"
        shutil.copyfile(ceremony.secret_path, secret)
        os.chmod(secret, 0o600)
        (folder / "policy.yaml").write_text(POLICY.format(site=sid), encoding="utf-8")
        site_yaml = folder / "site.yaml"
        site_yaml.write_text(yaml.safe_dump({"site_id": sid, "data_dir": str(cohort / sid),
                                             "state_dir": str(folder / "state"),
                                             "privacy_policy": str(folder / "policy.yaml"),
                                             "secret_context": str(secret)}), encoding="utf-8")
        init_state(folder / "state", sid)  # onboarding: training refuses a site without its state
        site_yamls[sid], site_dirs[sid] = site_yaml, folder
    return Federation(work=work, fed_yaml=fed_yaml, site_yamls=site_yamls, site_dirs=site_dirs,
                      server_dir=server_dir, server_params=server_params)


def wire_bytes(message: Message) -> bytes:
    """A message as Flower carries it: every object of its tree, deflated."""
    return b"".join(obj.deflate() for obj in get_all_nested_objects(message).values())


@contextmanager
def site_oracle() -> Iterator[dict[str, Plain]]:
    """Capture what every site encrypts, keyed by the sha256 of the ciphertext it produced."""
    seen: dict[str, Plain] = {}
    real = site_module.encrypt_update

    def spy(secret: SecretContext, state_dict: Mapping[str, torch.Tensor], count: int,
            **kw: Any) -> tuple[CiphertextEnvelope, bytes]:
        env, payload = real(secret, state_dict, count, **kw)
        layout = kw.get("layout") or ParamLayout.from_state_dict(state_dict)
        seen[hashlib.sha256(payload).hexdigest()] = Plain(
            site_id="?", task=kw["task"], round=kw["round"], model=kw["model"], content=kw.get("content", "model"),
            count=int(count),
            state={s.name: state_dict[s.name].detach().cpu().numpy().copy() for s in layout.specs},
            vector=update_vector(state_dict, layout, count))
        return env, payload

    site_module.encrypt_update = spy
    try:
        yield seen
    finally:
        site_module.encrypt_update = real


def run_recorded(fed: Federation) -> tuple[list[Received], dict[str, Any]]:
    """The federation, with every reply the server receives recorded (and written to its folder)."""
    received: list[Received] = []

    def record(site_id: str, reply: Message) -> Message:
        item = Received(seq=len(received) + 1, site_id=site_id, step=reply.metadata.message_type,
                        wire=wire_bytes(reply))
        if not reply.has_error() and UPDATE in reply.content:
            item.header, item.payload = read_ct_record(reply.content.array_records[UPDATE])
        received.append(item)
        return reply

    with site_oracle() as plains:
        grid = LocalGrid(fed.site_yamls, fed.fed_yaml, tamper=record)
        try:
            summary = run_server(grid, ServerSettings(federation_config=fed.fed_yaml, params_context=fed.server_params,
                                                      run_dir=fed.run_dir, run_id=RUN_ID,
                                                      expected_sites=len(fed.site_yamls), node_wait_s=1))
        finally:
            grid.close()
    for r in summary["rounds"]:
        if sorted(r["contributors"]) != sorted(fed.site_yamls) or "refused" in r:
            raise RuntimeError(f"the simulated federation did not complete {r['task']} round {r['round']}: {r}")
    fed.received_dir.mkdir()
    for item in received:
        stem = fed.received_dir / f"{item.seq:03d}-{item.site_id}-{item.step}"
        stem.with_suffix(".msg").write_bytes(item.wire)
        if item.payload is not None and item.header is not None:
            stem.with_suffix(".ct").write_bytes(item.payload)
            stem.with_suffix(".json").write_text(item.header, encoding="utf-8")
            plain = plains.get(hashlib.sha256(item.payload).hexdigest())
            if plain is None:
                raise RuntimeError(f"reply {stem.name} carries a payload no site encrypted")
            plain.site_id = item.site_id
            item.plain = plain
    return received, summary


def server_files(fed: Federation) -> list[Path]:
    """Everything the server process has on disk."""
    return sorted(p for p in fed.server_dir.rglob("*") if p.is_file())


def global_sum_groups(plains: Sequence[Plain]) -> dict[tuple[str, int, str], list[Plain]]:
    """The plaintexts summed into each global value, by (task, round, model)."""
    groups: dict[tuple[str, int, str], list[Plain]] = defaultdict(list)
    for p in plains:
        groups[(p.task, p.round, p.model)].append(p)
    return groups
