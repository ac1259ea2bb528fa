"""A real deployment on loopback, with app pinning: one SuperLink (TLS + SuperNode authentication) and three
SuperNodes as separate processes, started by deploy/start-local.sh with FLAME_APP_PINNING=1, the apps submitted
by deploy/run.sh (`flwr run`), everything stopped whatever happens.  Each site's ClientApps are started by its
launcher (flame_private.federation.site.app_launcher), which runs only FABs the site's DPO approved.

Two runs of two rounds: first the app with one byte of its code changed (refused by every site, nothing leaves
but "declined"), then the approved app (trains both rounds, each DP release in the ledger before it left).
Tiny on purpose (3 sites x 4 patients, 24^3, the response model): 3-6 min on 2 cores.  The approved FAB is
built from the working tree at the start, and `flwr run` rebuilds it from the same files later: do not edit
the sources while it runs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest
from deploy_harness import REPO, local_federation, prepare_sites, submit, wait_for_summary
from flwr.cli.build import build_fab_from_disk
from typer.testing import CliRunner

from flame_private.cli import app
from flame_private.config import SiteConfig, load_config
from flame_private.privacy import Ledger
from flame_private.records.audit import audit_site
from flame_private.records.egress import EgressLog

pytestmark = pytest.mark.slow


def _modified_copy(dest: Path) -> Path:
    """The app's FAB sources (pyproject.toml, src/flame_private/**/*.py, configs/) with one byte of code changed."""
    dest.mkdir()
    shutil.copy2(REPO / "pyproject.toml", dest / "pyproject.toml")
    shutil.copy2(REPO / "README.md", dest / "README.md")
    shutil.copytree(REPO / "src" / "flame_private", dest / "src" / "flame_private",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(REPO / "configs", dest / "configs")
    code = dest / "src" / "flame_private" / "federation" / "site" / "client_app.py"
    data = bytearray(code.read_bytes())
    data[data.index(b"ClientApp")] = ord("c")
    code.write_bytes(bytes(data))
    return dest


def test_pinned_sites_run_the_approved_fab_and_refuse_a_modified_one(tmp_path: Path, cohort_dir: Path) -> None:
    prepared = prepare_sites(tmp_path, cohort_dir, rounds=2)
    sites = prepared["sites"]

    # The DPO of each site approves the bundle built from the approved release (the bytes `flwr run` submits).
    approved_fab = tmp_path / "flame-private.approved.fab"
    approved_fab.write_bytes(build_fab_from_disk(REPO))
    approved = hashlib.sha256(approved_fab.read_bytes()).hexdigest()
    for yaml in sites.values():
        res = CliRunner().invoke(app, ["site", "approve-app", str(approved_fab), "--site", str(yaml),
                                       "--by", "Dr Test, DPO", "--note", "TEST-1"])
        assert res.exit_code == 0, res.output
    modified_dir = _modified_copy((tmp_path / "flame-modified").resolve())
    modified = hashlib.sha256(build_fab_from_disk(modified_dir)).hexdigest()
    assert modified != approved

    t0 = time.monotonic()
    with local_federation(tmp_path, prepared, FLAME_APP_PINNING="1") as f:
        refused_dir, approved_dir = tmp_path / "run-refused", tmp_path / "run-approved"
        submit(f, "pin-refused", refused_dir, FLAME_APP=str(modified_dir))
        refused_summary = wait_for_summary(f, refused_dir)
        t_refused = time.monotonic() - t0
        submit(f, "pin-approved", approved_dir)
        approved_summary = wait_for_summary(f, approved_dir)
        installed = {sid: sorted(p.name for p in (f["deploy"] / "nodes" / sid / "flwr-home" / "apps").iterdir())
                     for sid in sites}
        superexec_logs = {sid: (f["deploy"] / "nodes" / sid / "superexec.log").read_text(errors="replace")
                          for sid in sites}

    # The modified app: every site declined both rounds, so they were refused and no model exists.
    assert [r["round"] for r in refused_summary["rounds"]] == [1, 2]
    for r in refused_summary["rounds"]:
        assert r["contributors"] == [] and sorted(r["declined"]) == sorted(sites), r
        assert "refused" in r
    assert refused_summary["exports"]["response"] == "no global model (every round refused)"
    for sid, yaml in sites.items():
        site = load_config(yaml, SiteConfig)
        entries = [e for e in EgressLog.open(site.state_dir, sid, readonly=True).entries if e.run_id == "pin-refused"]
        # Nothing but the refusal left the site: one "declined" status, recorded with the refused FAB's hash
        # and why; its payload is the generic status, nothing more.
        assert [(e.kind, e.round, e.task) for e in entries] == [("declined", 1, "response"),
                                                                  ("declined", 2, "response")], (sid, entries)
        for refusal in entries:
            assert refusal.app_hash == modified
            assert refusal.reason is not None and "not approved" in refusal.reason and modified in refusal.reason
            payload = (site.state_dir / "outbox" / refusal.payload_name).read_bytes()
            assert json.loads(payload) == {"site_id": sid, "status": "declined"}
        assert not [e for e in Ledger.open(site.state_dir, sid).entries if e.run_id == "pin-refused"], sid
        # The refused bundle was never even unpacked; the approved one was.
        assert not [n for n in installed[sid] if n.endswith(modified[:8])], installed[sid]
        assert [n for n in installed[sid] if n.endswith(approved[:8])], installed[sid]
        assert "REFUSED" in superexec_logs[sid] and modified in superexec_logs[sid]

    # The approved app ran: every site trained both rounds, and exported the final model.
    assert [r["round"] for r in approved_summary["rounds"]] == [1, 2]
    for r in approved_summary["rounds"]:
        assert sorted(r["contributors"]) == sorted(sites) and "refused" not in r, r
    assert approved_summary["exports"]["response"] == {sid: "ok" for sid in sites}
    for sid, yaml in sites.items():
        site = load_config(yaml, SiteConfig)
        sent = [e for e in EgressLog.open(site.state_dir, sid, readonly=True).entries if e.run_id == "pin-approved"]
        assert [e.kind for e in sent] == ["update", "update", "metrics", "finished"], (sid, sent)
        assert {e.fab_sha256 for e in sent} == {approved}, "each message names the approved FAB it came from"
        # Two DP-SGD releases (one per round) and the DP release of the final metric sums (sample rate 1, one
        # step), each recorded in the ledger before it left the site.
        entries = [e for e in Ledger.open(site.state_dir, sid).entries if e.run_id == "pin-approved"]
        training = [e for e in entries if e.sample_rate < 1.0]
        evaluation = [e for e in entries if e.sample_rate == 1.0]
        assert sorted((e.task, e.round) for e in training) == [("response", 1), ("response", 2)], sid
        assert [(e.task, e.round, e.steps) for e in evaluation] == [("response", 2, 1)], sid
    # The DPO's audit accepts the refusal record as a plain "declined" status and lists the refused hash.
    report = audit_site(load_config(sites["site-a"], SiteConfig))
    assert report.ok, [c for c in report.checks if c.severity == "fail"]
    assert modified in {a.app_hash for a in report.app_hashes}
    assert [c.detail for c in report.checks if c.name == "app approval" and c.ok and "each approved" in c.detail]
    print(f"pinned deployment: refused run {t_refused:.0f} s, both runs {time.monotonic() - t0:.0f} s")
