"""`flame site init`: the scaffold of a new site for its IT team and DPO."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from flame_private.config import SiteConfig, load_config
from flame_private.privacy.ledger import Ledger
from flame_private.privacy.policy import PolicyError, load_policy
from flame_private.records.egress import EgressLog
from flame_private.site_init import TEMPLATE_MARKER, SiteInitError, init_site, site_init_command
from flame_private.site_state import StateInitError, init_state, init_state_command

FILLED = {"epsilon_cap": 8.0, "delta": 1.0e-5, "approved_by": "Research Ethics Committee of Site E",
          "approval_reference": "REC-E-2026-001", "approved_on": "2026-01-15", "expires_on": "2029-01-14"}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def site(tmp_path: Path) -> tuple[Path, list[Path]]:
    data = tmp_path / "data"
    data.mkdir()
    root = tmp_path / "sites" / "site-e"
    return root, init_site("site-e", root, data, "brats2021")


def test_the_scaffold_validates_as_a_site_config(site, tmp_path: Path) -> None:
    root, written = site
    assert [p.name for p in written] == ["site.yaml", "privacy-policy.yaml", "state", "keys", "DPO-CHECKLIST.md"]
    cfg = load_config(root / "site.yaml", SiteConfig)
    assert cfg.site_id == "site-e"
    assert cfg.layout == "brats2021"
    assert cfg.data_dir == tmp_path / "data"
    assert cfg.state_dir == root / "state"
    assert cfg.privacy_policy == root / "privacy-policy.yaml"
    assert cfg.secret_context == root / "keys" / "secret.ctx"
    assert all(Path(p).is_absolute() for p in (cfg.data_dir, cfg.state_dir, cfg.privacy_policy, cfg.secret_context))


def test_the_site_folder_can_be_moved_as_a_whole(site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = site
    (tmp_path / "restored").mkdir()
    moved = root.rename(tmp_path / "restored" / "site-e")
    monkeypatch.chdir(tmp_path / "restored")
    cfg = load_config(Path("site-e/site.yaml"), SiteConfig)
    assert (cfg.state_dir, cfg.privacy_policy, cfg.secret_context) == (
        moved / "state", moved / "privacy-policy.yaml", moved / "keys" / "secret.ctx")
    assert cfg.data_dir == tmp_path / "data", "the scans stay where they are"


def test_the_policy_template_is_refused_until_filled_in(site) -> None:
    root, _ = site
    policy = root / "privacy-policy.yaml"
    with pytest.raises(PolicyError) as err:
        load_policy(policy)
    message = str(err.value)
    for field in ("epsilon_cap", "delta", "approved_by", "approval_reference", "approved_on", "expires_on",
                  TEMPLATE_MARKER):
        assert field in message

    raw = yaml.safe_load(policy.read_text())
    # Every field filled but the template marker forgotten: still refused.
    policy.write_text(yaml.safe_dump({**raw, **FILLED}))
    with pytest.raises(PolicyError, match=TEMPLATE_MARKER):
        load_policy(policy)
    # Marker deleted but one field left as the placeholder: refused, naming the field.
    policy.write_text(yaml.safe_dump({k: v for k, v in {**raw, **FILLED, "approved_by": None}.items()
                                      if k != TEMPLATE_MARKER}))
    with pytest.raises(PolicyError, match="approved_by"):
        load_policy(policy)
    # Filled in completely, marker deleted: a valid policy for this site.
    policy.write_text(yaml.safe_dump({k: v for k, v in {**raw, **FILLED}.items() if k != TEMPLATE_MARKER}))
    loaded = load_policy(policy)
    assert loaded.site_id == "site-e" and loaded.epsilon_cap == 8.0 and loaded.unit_of_privacy == "patient"


def test_state_and_keys_are_private_to_the_owner(site) -> None:
    root, _ = site
    assert _mode(root / "state") == 0o700
    assert _mode(root / "keys") == 0o700
    for name in ("site.yaml", "privacy-policy.yaml", "DPO-CHECKLIST.md"):
        assert _mode(root / name) & 0o007 == 0, name
    assert list((root / "keys").iterdir()) == []  # the key comes from the custodian, never from init


def test_the_checklist_covers_what_the_dpo_must_approve(site) -> None:
    root, _ = site
    text = (root / "DPO-CHECKLIST.md").read_text()
    for needle in ("privacy-policy.yaml", "fingerprint", "0600", "flame data check", "flame audit",
                   "egress", "FAB", "TLS", "auth-supernode-private-key", str(root / "site.yaml")):
        assert needle in text, needle


def test_an_existing_site_folder_is_never_overwritten(site, tmp_path: Path) -> None:
    root, _ = site
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    with pytest.raises(SiteInitError, match="refusing to overwrite"):
        init_site("site-e", root, tmp_path / "data")
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    other = tmp_path / "not-empty"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(SiteInitError):
        init_site("site-f", other, tmp_path / "data")
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_an_empty_folder_is_used_and_bad_input_leaves_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "prepared-by-it"
    empty.mkdir()
    init_site("site-g", empty, tmp_path / "data")
    assert (empty / "site.yaml").is_file()
    for bad_id, layout in (("../etc", "flame"), ("site-h", "dicom")):
        target = tmp_path / f"bad-{layout}"
        with pytest.raises(SiteInitError):
            init_site(bad_id, target, tmp_path / "data", layout)
        assert not target.exists()


def test_the_command_is_typer_compatible(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(site_init_command)
    out = tmp_path / "site-x"
    runner = CliRunner()
    result = runner.invoke(app, ["site-x", "--out", str(out), "--data-dir", str(tmp_path / "scans")])
    assert result.exit_code == 0, result.output
    assert "DPO-CHECKLIST.md" in result.output and "does not exist yet" in result.output
    assert load_config(out / "site.yaml", SiteConfig).layout == "flame"
    again = runner.invoke(app, ["site-x", "--out", str(out), "--data-dir", str(tmp_path / "scans")])
    assert again.exit_code == 3
    assert "refusing to overwrite" in again.output


def test_the_agreed_he_parameters_are_written_when_known(tmp_path: Path) -> None:
    from flame_private.config import HEConfig
    from flame_private.secure.public.context_file import encode_trailer, make_context_header, params_context_bytes

    agreed = tmp_path / "server-params.ctx"
    agreed.write_bytes(params_context_bytes(HEConfig(), "2026-01-01T00:00:00+0000"))
    init_site("site-p", tmp_path / "p", tmp_path / "data", he_params=agreed)
    assert load_config(tmp_path / "p" / "site.yaml", SiteConfig).he_params == agreed

    # Unknown at init: site.yaml validates without it and says how to add it.
    init_site("site-q", tmp_path / "q", tmp_path / "data")
    text = (tmp_path / "q" / "site.yaml").read_text()
    assert load_config(tmp_path / "q" / "site.yaml", SiteConfig).he_params is None
    assert "# he_params:" in text and "flame audit --he-params" in text

    # Anything but a params-only context is refused, naming the file, and leaves nothing behind.
    secret = tmp_path / "site-secret.ctx"
    secret.write_bytes(b"k" * 64 + encode_trailer(make_context_header(HEConfig(), "secret", b"k" * 64, "t")))
    for bad, why in ((secret, "a secret context"), (tmp_path / "missing.ctx", "file not found"),
                     (tmp_path / "p" / "site.yaml", "not an HE context file")):
        with pytest.raises(SiteInitError, match=why) as err:
            init_site("site-r", tmp_path / "r", tmp_path / "data", he_params=bad)
        assert str(bad) in str(err.value)
        assert not (tmp_path / "r").exists()


def test_the_scaffold_initialises_the_state_a_site_must_train_from(site) -> None:
    """An empty ledger, egress log and approved-apps log with their heads (count 0): training refuses a site
    without the first two, and the site's launcher runs no app until the DPO approves one."""
    root, _ = site
    state = root / "state"
    for stem in ("privacy_ledger", "egress_log", "approved_apps"):
        assert (state / f"{stem}.jsonl").read_bytes() == b""
        assert yaml.safe_load((state / f"{stem}.head.json").read_text()) == {"count": 0, "last_hash": "0" * 64}
        assert _mode(state / f"{stem}.jsonl") == 0o600
    assert len(Ledger.open(state, "site-e")) == 0 and len(EgressLog.open(state, "site-e")) == 0


def test_init_state_initialises_a_hand_configured_site_once(tmp_path: Path) -> None:
    yaml_path = tmp_path / "site.yaml"
    yaml_path.write_text(yaml.safe_dump({"site_id": "site-f", "data_dir": str(tmp_path / "data"),
                                         "state_dir": str(tmp_path / "state"),
                                         "privacy_policy": str(tmp_path / "policy.yaml")}))
    app = typer.Typer()
    app.command("init-state")(init_state_command)
    app.command("noop")(lambda: None)
    first = CliRunner().invoke(app, ["init-state", "--site", str(yaml_path)])
    assert first.exit_code == 0 and first.output.count("created") == 3, first.output
    assert _mode(tmp_path / "state") == 0o700
    again = CliRunner().invoke(app, ["init-state", "--site", str(yaml_path)])
    assert again.exit_code == 3 and "already initialised" in again.output
    (tmp_path / "state" / "privacy_ledger.jsonl").write_text('{"seq":1}\n')  # a ledger with an entry ...
    (tmp_path / "state" / "privacy_ledger.head.json").unlink()  # ... and no head is never re-initialised
    with pytest.raises(StateInitError, match="exists already"):
        init_state(tmp_path / "state", "site-f")
