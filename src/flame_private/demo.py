"""The embedded default: the whole system on the synthetic 4-site cohort, under ``runs/demo`` or any folder.

Cohort -> key ceremony -> federation in Flower's simulation engine (both models,
DP-SGD, CKKS) -> each site exports the decrypted global models -> each site's
DPO audit -> ethics-committee reports (``reports/``, with the attack results
of ``attacks/`` when that folder exists) -> a summary table.  The demo writes
its own configs (``<out>/configs/``) so it runs from any folder.  Synthetic data
only: the demo starts from a clean folder each time (its ledgers are demo
ledgers, not a site's real ones).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flame_private.config import CohortConfig, FederationConfig, SiteConfig, load_config

log = logging.getLogger(__name__)

DEMO_SITES = [f"site-{s}" for s in "abcd"]
DEMO_SOURCES = {"cohort.yaml": "configs/cohort/demo.yaml", "federation.yaml": "configs/federation/demo.yaml"} | {
    f"policies/{site}.yaml": f"privacy_budgets/{site}.yaml" for site in DEMO_SITES}
"""What the demo reads (its name under ``<out>/configs/`` -> its path in the repository).

The repository's files are the one source: a wheel carries copies of them (``demo_configs/``, made at build
time by setup.py), a source checkout is read directly."""
PACKAGED = Path(__file__).parent / "demo_configs"
CHECKOUT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class DemoConfigs:
    """The demo's own configs, all under ``<out>/configs/`` and pointing only inside ``<out>``."""

    cohort: Path
    federation: Path
    sites: list[Path]


def demo_source(relative: str) -> Path:
    """A file the demo needs, from the installed package, else from the source checkout."""
    for root in (PACKAGED, CHECKOUT):
        if (root / relative).is_file():
            return root / relative
    raise FileNotFoundError(f"demo file {relative} is missing: neither in {PACKAGED} (installed package) nor in "
                            f"{CHECKOUT} (source checkout); reinstall flame-private")


def _site_yaml(site_id: str) -> str:
    """A demo site's deployment, relative to ``<out>/configs/sites/`` (the layout configs/sites/ documents)."""
    return (f"# Demo site {site_id}, written by `flame demo`: every path is inside the demo's folder.\n"
            f"site_id: {site_id}\n"
            f"data_dir: ../../cohort/{site_id}\n"
            "layout: flame\n"
            f"state_dir: ../../state/{site_id}\n"
            f"privacy_policy: ../policies/{site_id}.yaml\n"
            f"secret_context: ../../keys/{site_id}/secret.ckks\n"
            "he_params: ../../keys/ceremony/server-params.ctx\n")


def write_demo_configs(out: Path) -> DemoConfigs:
    """Write the demo's configs under ``out/configs`` (replacing any earlier ones) from any working directory."""
    folder = out.resolve() / "configs"
    shutil.rmtree(folder, ignore_errors=True)
    for name, relative in DEMO_SOURCES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(demo_source(relative), folder / name)
    sites = []
    for site_id in DEMO_SITES:
        path = folder / "sites" / f"{site_id}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_site_yaml(site_id), encoding="utf-8")
        sites.append(path)
    return DemoConfigs(cohort=folder / "cohort.yaml", federation=folder / "federation.yaml", sites=sites)


@dataclass
class DemoResult:
    run_id: str
    out: Path
    sites: list[dict[str, Any]]
    metrics: dict[str, dict[str, Any]]
    seconds: dict[str, float]
    server_summary: dict[str, Any]
    reports: list[Path] = field(default_factory=list)
    """Each site's ethics report and the consortium overview (HTML and PDF, English and French)."""


def _site_paths(site: SiteConfig, out: Path) -> None:
    """The demo's site configs must point inside ``out`` (write_demo_configs makes them so)."""
    root = out.resolve()
    for p in (site.data_dir, site.state_dir, site.privacy_policy, site.secret_context, site.he_params):
        if p is not None and not Path(p).resolve().is_relative_to(root):
            raise ValueError(f"demo site {site.site_id}: {p} is outside {root}; the demo only writes there")


@dataclass
class DemoSetup:
    configs: DemoConfigs
    cohort: CohortConfig
    federation: FederationConfig
    sites: list[SiteConfig]


def prepare_demo(out: Path) -> DemoSetup:
    """A clean demo folder: its configs written, earlier state/keys/runs/reports removed, each site's state fresh."""
    from flame_private.site_state import init_state

    configs = write_demo_configs(out)
    cohort_cfg = load_config(configs.cohort, CohortConfig)
    fed = load_config(configs.federation, FederationConfig)
    sites = [load_config(p, SiteConfig) for p in configs.sites]
    for s in sites:
        _site_paths(s, out)
    for sub in ("state", "keys", "federation", "reports"):
        shutil.rmtree(out / sub, ignore_errors=True)
    for s in sites:  # onboarding: each demo site starts from a fresh, explicitly initialised state
        init_state(s.state_dir, s.site_id)
    return DemoSetup(configs=configs, cohort=cohort_cfg, federation=fed, sites=sites)


def distribute_keys(ceremony_dir: Path, sites: list[SiteConfig]) -> None:
    """What the key custodian does out of band: give each site the secret context (mode 0600)."""
    secret = ceremony_dir / "site-secret.ctx"
    for site in sites:
        assert site.secret_context is not None
        target = Path(site.secret_context)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copyfile(secret, target)
        os.chmod(target, 0o600)


def run_demo(out: Path = Path("runs/demo"), workers: int = 0,
             progress: Any = None, attacks: bool = False) -> DemoResult:
    """Everything, in order; ``progress(step, detail)`` is called as each step starts.

    With ``attacks`` the four simulated attacks run first (about 6 minutes more on
    2 cores) and their results go into every report.
    """
    from flame_private.cohort.writer import synthesise_cohort
    from flame_private.federation.simulation import simulate_federation
    from flame_private.privacy import open_site_budget
    from flame_private.records.audit import audit_site
    from flame_private.secure.site.ceremony import key_ceremony

    say = progress or (lambda step, detail="": log.info("%s %s", step, detail))
    seconds: dict[str, float] = {}
    setup = prepare_demo(out)
    cohort_cfg, fed, sites, configs = setup.cohort, setup.federation, setup.sites, setup.configs
    run_id = f"{fed.run_name}-{time.strftime('%Y%m%dT%H%M%S')}"

    t = time.perf_counter()
    say("cohort", f"synthesising {sum(s.n_patients for s in cohort_cfg.sites)} patients at {cohort_cfg.grid}^3")
    synthesise_cohort(cohort_cfg, out / "cohort", workers=workers or max(1, os.cpu_count() or 1), overwrite=True)
    seconds["cohort"] = time.perf_counter() - t

    t = time.perf_counter()
    say("keys", "key ceremony (CKKS) and distribution of the secret context to the sites")
    ceremony = key_ceremony(fed.he, out / "keys" / "ceremony")
    distribute_keys(out / "keys" / "ceremony", sites)
    seconds["keys"] = time.perf_counter() - t

    t = time.perf_counter()
    say("federation", f"{fed.rounds} rounds x {len(fed.tasks)} models, {len(sites)} sites, DP-SGD + CKKS")
    summary = simulate_federation(configs.federation, configs.sites, ceremony.params_path, out / "federation",
                                  run_id)
    seconds["federation"] = time.perf_counter() - t

    t = time.perf_counter()
    say("audit", "each site's DPO audit: egress log, ledger, ciphertexts only")
    rows = []
    for site in sites:
        report = audit_site(site, ceremony.params_path)
        guard = open_site_budget(site)
        declined = sum(1 for r in summary["rounds"] for sid in r.get("declined", []) if sid == site.site_id)
        rows.append({"site_id": site.site_id, "epsilon": guard.spent(), "cap": guard.policy.epsilon_cap,
                     "delta": guard.policy.delta, "releases": len(guard.ledger), "declined": declined,
                     "audit_ok": report.ok, "all_ciphertexts": report.all_ciphertexts,
                     "audit_failures": [c.name for c in report.checks if not c.ok]})
    seconds["audit"] = time.perf_counter() - t

    attacks_dir = out / "attacks"
    if attacks:
        t = time.perf_counter()
        say("attacks", "curious server, gradient inversion, membership inference, DP audit (synthetic, ci size)")
        shutil.rmtree(attacks_dir, ignore_errors=True)
        from flame_private.attacks.result import ATTACKS
        from flame_private.attacks.runner import run_attack

        for name in ATTACKS:
            run_attack(name, attacks_dir)
        seconds["attacks"] = time.perf_counter() - t

    t = time.perf_counter()
    have_attacks = attacks_dir.is_dir()
    say("reports", "ethics-committee reports (HTML, PDF; English, French)"
                   + (f" with the attack results in {attacks_dir}" if have_attacks else ""))
    from flame_private.reports.bundle import write_reports

    bundle = write_reports(configs.sites, out / "reports", attacks_dir=attacks_dir if have_attacks else None,
                           params=ceremony.params_path)
    for row, facts in zip(rows, bundle.sites, strict=True):
        row["report"] = facts.verdict.level
    seconds["reports"] = time.perf_counter() - t

    metrics: dict[str, dict[str, Any]] = {}
    first_export = Path(sites[0].state_dir) / "exports" / run_id
    for task in fed.tasks:
        path = first_export / f"{task}-metrics.json"
        metrics[task] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}  # federated + local
    result = DemoResult(run_id=run_id, out=out, sites=rows, metrics=metrics, seconds=seconds,
                        server_summary=summary, reports=bundle.files)
    (out / "demo-summary.json").write_text(json.dumps({
        "run_id": run_id, "sites": rows, "metrics": metrics, "seconds": seconds,
        "server": summary}, indent=2, default=str) + "\n", encoding="utf-8")
    return result
