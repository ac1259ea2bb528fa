"""App pinning without a federation: the DPO's approved-apps log, the launcher's verdict, what a refusal records
and sends, and the launcher folder the site's superexec runs from.  The real deployment is
tests/test_app_pinning_deploy.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import zipfile
from pathlib import Path

import pytest
from flwr.app import Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from typer.testing import CliRunner

from flame_private.cli import app
from flame_private.config import SiteConfig
from flame_private.federation.protocol import INSTRUCTION, Instruction, instruction_record, read_status
from flame_private.federation.site import app_launcher
from flame_private.federation.site.app_launcher import AppRefused, check_fab, write_launcher_bin
from flame_private.records.approved_apps import (
    ApprovedApps,
    ApprovedAppsError,
    approve_fab,
    read_fab,
    revoke_fab,
)
from flame_private.records.egress import EgressLog
from flame_private.site_state import init_state

PYPROJECT = """[project]
name = "flame-private"
version = "0.2.0"
[tool.flwr.app]
publisher = "flame-private"
"""


def _fab(code: bytes = b"print('approved')\n") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(zipfile.ZipInfo("pyproject.toml", (1980, 1, 1, 0, 0, 0)), PYPROJECT)
        zf.writestr(zipfile.ZipInfo("src/flame_private/app.py", (1980, 1, 1, 0, 0, 0)), code)
    return buf.getvalue()


@pytest.fixture
def site(tmp_path: Path) -> SiteConfig:
    init_state(tmp_path / "state", "site-a")  # onboarding creates the approved-apps log, empty
    return SiteConfig(site_id="site-a", data_dir=tmp_path / "data", state_dir=tmp_path / "state",
                      privacy_policy=tmp_path / "policy.yaml")


@pytest.fixture
def approved(tmp_path: Path, site: SiteConfig) -> Path:
    fab = tmp_path / "app.fab"
    fab.write_bytes(_fab())
    approve_fab(site.state_dir, site.site_id, fab, "Dr A, DPO", "REF-1")
    return fab


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- the approved-apps log


def test_approval_records_hash_name_version_who_and_when(site: SiteConfig, approved: Path) -> None:
    (entry,) = ApprovedApps.open(site.state_dir, site.site_id, readonly=True).entries
    assert (entry.action, entry.fab_sha256, entry.publisher, entry.name, entry.version, entry.decided_by,
            entry.note, entry.fab_file) == ("approve", _sha(approved.read_bytes()), "flame-private", "flame-private",
                                            "0.2.0", "Dr A, DPO", "REF-1", "app.fab")
    assert entry.time.endswith("Z")


def test_approving_twice_and_revoking_what_is_not_approved_are_refused(site: SiteConfig, approved: Path) -> None:
    with pytest.raises(ApprovedAppsError, match="already approved"):
        approve_fab(site.state_dir, site.site_id, approved, "Dr B")
    revoke_fab(site.state_dir, site.site_id, _sha(approved.read_bytes()), "Dr A", "withdrawn")
    assert ApprovedApps.open(site.state_dir, site.site_id).current() == {}
    with pytest.raises(ApprovedAppsError, match="nothing to revoke"):
        revoke_fab(site.state_dir, site.site_id, _sha(approved.read_bytes()), "Dr A")


def test_a_file_that_is_not_a_fab_is_refused_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "notes.fab"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ApprovedAppsError, match="notes.fab: not a Flower app bundle"):
        read_fab(bad)
    with pytest.raises(ApprovedAppsError, match="missing.fab: cannot read"):
        read_fab(tmp_path / "missing.fab")


# --------------------------------------------------------------------------- the launcher's verdict


def test_the_approved_fab_passes_and_one_changed_byte_is_refused(site: SiteConfig, approved: Path) -> None:
    ok = _fab()
    assert check_fab(site, ok, _sha(ok)).approved
    changed = _fab(b"print('approvee')\n")
    verdict = check_fab(site, changed, _sha(changed))
    assert not verdict.approved and verdict.fab_sha256 == _sha(changed)
    assert "is not approved by site site-a" in verdict.reason and _sha(changed) in verdict.reason


def test_bytes_that_do_not_match_the_announced_hash_are_refused(site: SiteConfig, approved: Path) -> None:
    changed = _fab(b"print('evil')\n")
    verdict = check_fab(site, changed, _sha(_fab()))  # the approved hash announced, other bytes delivered
    assert not verdict.approved and "not to the announced FAB hash" in verdict.reason


def test_a_tampered_approval_log_approves_nothing(site: SiteConfig, approved: Path) -> None:
    log = site.state_dir / "approved_apps.jsonl"
    other = _fab(b"print('other')\n")
    log.write_text(log.read_text().replace(_sha(approved.read_bytes()), _sha(other)))
    verdict = check_fab(site, other, _sha(other))
    assert not verdict.approved and "does not verify" in verdict.reason
    assert not check_fab(site, _fab(), _sha(_fab())).approved


def test_no_approval_log_approves_nothing(site: SiteConfig) -> None:
    verdict = check_fab(site, _fab(), _sha(_fab()))
    assert not verdict.approved and "0 app(s) approved" in verdict.reason


# --------------------------------------------------------------------------- what a refusal records and sends


class _Fab:
    def __init__(self, content: bytes) -> None:
        self.content, self.hash_str = content, _sha(content)


class _Run:
    def __init__(self, fab_hash: str) -> None:
        self.fab_hash = fab_hash


def _message(content: RecordDict) -> Message:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    msg = Message(content, dst_node_id=7, message_type="train")
    msg.metadata.__dict__["_message_id"] = msg.object_id
    return msg


def _pull_with(monkeypatch: pytest.MonkeyPatch, site: SiteConfig, content: RecordDict, fab: bytes):
    """The launcher's pull step on a task carrying ``fab``; returns (result or exception, replies pushed)."""
    import flwr.supernode.runtime.run_clientapp as flwr_runtime

    from flame_private.records.egress import PINNED_FAB_ENV

    pushed: list[Message] = []
    monkeypatch.setattr(flwr_runtime, "push_message", lambda client, reply, context: pushed.append(reply))
    monkeypatch.setenv(PINNED_FAB_ENV, "0" * 64)  # restored (unset) after the test: the launcher sets it
    monkeypatch.delenv(PINNED_FAB_ENV)
    msg = _message(content)
    pull = app_launcher._pinned(site, lambda client: (msg, "context", _Run(_sha(fab)), _Fab(fab)))
    try:
        return pull(object()), pushed
    except AppRefused as exc:
        return exc, pushed


def _instruction() -> RecordDict:
    ins = Instruction(run_id="run-7", task="response", round=2, step="train", has_model=True, start="seed:0",
                      min_sites=3, he_fingerprint="a" * 64)
    return RecordDict({INSTRUCTION: instruction_record(ins)})


def test_an_approved_fab_goes_on_to_flower_untouched(monkeypatch, site: SiteConfig, approved: Path) -> None:
    result, pushed = _pull_with(monkeypatch, site, _instruction(), _fab())
    assert not isinstance(result, Exception) and result[3].content == _fab()
    from flame_private.records.egress import pinned_fab_sha256

    assert pinned_fab_sha256() == _sha(_fab()), "what the app's messages will record in the egress log"
    assert pushed == [] and len(EgressLog.open(site.state_dir, site.site_id, readonly=True)) == 0


def test_a_refusal_is_logged_then_answered_with_only_declined(monkeypatch, site: SiteConfig, approved: Path) -> None:
    changed = _fab(b"print('approvee')\n")
    result, pushed = _pull_with(monkeypatch, site, _instruction(), changed)
    assert isinstance(result, AppRefused)
    (entry,) = EgressLog.open(site.state_dir, site.site_id, readonly=True).entries
    assert (entry.kind, entry.run_id, entry.task, entry.round, entry.app_hash) == (
        "declined", "run-7", "response", 2, _sha(changed))
    assert entry.reason.startswith("app not approved: ") and _sha(changed) in entry.reason
    (reply,) = pushed
    status = read_status(reply.content)
    assert (status.site_id, status.status) == ("site-a", "declined")
    sent = (site.state_dir / "outbox" / entry.payload_name).read_bytes()
    assert json.loads(sent) == {"site_id": "site-a", "status": "declined"} == json.loads(status.model_dump_json())


def test_a_message_of_another_app_gets_flowers_fixed_refusal(monkeypatch, site: SiteConfig, approved: Path) -> None:
    changed = _fab(b"print('other app')\n")
    result, pushed = _pull_with(monkeypatch, site, RecordDict(), changed)
    assert isinstance(result, AppRefused)
    (reply,) = pushed
    assert reply.has_error() and reply.error.code == 7 and reply.error.reason == app_launcher.REFUSAL_TEXT
    assert len(EgressLog.open(site.state_dir, site.site_id, readonly=True)) == 0


def test_flowers_clientapp_still_pulls_the_fab_before_unpacking_it() -> None:
    """The launcher hooks ``pull_task_input`` of Flower's ``run_clientapp``; it refuses to start if that changed."""
    import flwr.supernode.runtime.run_clientapp as flwr_runtime

    names = flwr_runtime.run_clientapp.__code__.co_names
    assert "pull_task_input" in names and "install_from_fab" in names


# --------------------------------------------------------------------------- the launcher folder and the CLI


def test_launcher_folder_runs_the_launcher_and_refuses_other_task_commands(tmp_path: Path) -> None:
    yaml = tmp_path / "site.yaml"
    yaml.write_text(f"site_id: site-a\ndata_dir: {tmp_path}\nstate_dir: {tmp_path / 'state'}\n"
                    f"privacy_policy: {tmp_path / 'p.yaml'}\n")
    written = {p.name: p for p in write_launcher_bin(tmp_path / "bin", yaml, "/opt/venv/bin/python")}
    assert {"flwr-clientapp", "flwr-agentapp", "flwr-serverapp"} <= set(written)
    assert (f"exec /opt/venv/bin/python -m flame_private.federation.site.app_launcher --site-config {yaml} \"$@\""
            in written["flwr-clientapp"].read_text())
    stub = subprocess.run([str(written["flwr-agentapp"]), "--token", "t"], capture_output=True, text=True)
    assert stub.returncode == 1 and "refusing" in stub.stderr


def test_cli_approves_lists_and_refuses_a_second_approval(tmp_path: Path) -> None:
    yaml = tmp_path / "site.yaml"
    yaml.write_text(f"site_id: site-a\ndata_dir: {tmp_path}\nstate_dir: {tmp_path / 'state'}\n"
                    f"privacy_policy: {tmp_path / 'p.yaml'}\n")
    init_state(tmp_path / "state", "site-a")
    fab = tmp_path / "app.fab"
    fab.write_bytes(_fab())
    runner, env = CliRunner(), {"COLUMNS": "250"}
    res = runner.invoke(app, ["site", "approve-app", str(fab), "--site", str(yaml), "--by", "Dr A"], env=env)
    assert res.exit_code == 0 and _sha(_fab()) in res.output, res.output
    res = runner.invoke(app, ["site", "approve-app", str(fab), "--site", str(yaml), "--by", "Dr A"], env=env)
    assert res.exit_code == 1 and "already approved" in res.output
    res = runner.invoke(app, ["site", "approved-apps", "--site", str(yaml)], env=env)
    assert res.exit_code == 0 and _sha(_fab()) in res.output and "Dr A" in res.output
    res = runner.invoke(app, ["site", "approved-apps", "--site", str(tmp_path / "none.yaml")], env=env)
    assert res.exit_code == 3 and "none.yaml" in res.output


def test_cli_writes_the_launcher_folder_for_a_site(tmp_path: Path) -> None:
    yaml = tmp_path / "site.yaml"
    yaml.write_text(f"site_id: site-a\ndata_dir: {tmp_path}\nstate_dir: {tmp_path / 'state'}\n"
                    f"privacy_policy: {tmp_path / 'p.yaml'}\n")
    res = CliRunner().invoke(app, ["site", "write-launcher", str(tmp_path / "bin"), "--site", str(yaml)],
                             env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    clientapp = (tmp_path / "bin" / "flwr-clientapp").read_text()
    assert f"--site-config {yaml.absolute()}" in clientapp and "flame_private.federation.site.app_launcher" in clientapp
    res = CliRunner().invoke(app, ["site", "write-launcher", str(tmp_path / "bin2"),
                                   "--site", str(tmp_path / "x.yaml")])
    assert res.exit_code == 3 and not (tmp_path / "bin2").exists()


def _declined_from(site: SiteConfig, fab_sha256: str | None, round_: int = 1):
    status = json.dumps({"site_id": site.site_id, "status": "declined"}).encode()
    return EgressLog.open(site.state_dir, site.site_id).append(
        run_id="run-1", round=round_, task="response", kind="declined", payload=status, reason="test",
        fab_sha256=fab_sha256)


def _approval_check(site: SiteConfig):
    from flame_private.records.audit_provenance import check_app_approval
    from flame_private.records.audit_report import Checks

    checks = Checks()
    check_app_approval(site, list(EgressLog.open(site.state_dir, site.site_id, readonly=True).entries), checks)
    return checks.items


def test_the_audit_passes_messages_from_an_approved_fab_and_fails_one_from_another(site: SiteConfig,
                                                                                   approved: Path) -> None:
    _declined_from(site, _sha(_fab()))
    (result,) = _approval_check(site)
    assert result.ok and not result.warning and "each approved" in result.detail
    _declined_from(site, _sha(b"another bundle"), round_=2)  # the positive control: not approved
    results = _approval_check(site)
    assert [r.ok for r in results] == [False] and "was not approved before" in results[0].detail


def test_a_message_sent_before_its_fab_was_approved_fails_the_audit(tmp_path: Path, site: SiteConfig) -> None:
    _declined_from(site, _sha(_fab()))
    fab = tmp_path / "late.fab"
    fab.write_bytes(_fab())
    approve_fab(site.state_dir, site.site_id, fab, "Dr A, DPO", "REF-2")
    (result,) = _approval_check(site)
    assert not result.ok and "was not approved before it was sent" in result.detail


def test_messages_record_the_fab_the_launcher_verified(monkeypatch, site: SiteConfig, approved: Path) -> None:
    from flame_private.records.egress import PINNED_FAB_ENV

    monkeypatch.delenv(PINNED_FAB_ENV, raising=False)
    assert _declined_from(site, None).fab_sha256 is None  # not launched by the site's launcher
    monkeypatch.setenv(PINNED_FAB_ENV, _sha(_fab()))
    assert _declined_from(site, None, round_=2).fab_sha256 == _sha(_fab())
    results = _approval_check(site)
    assert all(r.ok for r in results) and any(r.warning and "outside the site's launcher" in r.detail
                                              for r in results)
