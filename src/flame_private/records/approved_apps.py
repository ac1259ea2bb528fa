"""The site's approved apps: which Flower app bundles (FABs) the DPO allows to run on the site's patients' data.

Flower 1.42 checks FAB signatures only for apps published on Flower Hub, so the
site pins the app itself: its ClientApp launcher (``federation/site/app_launcher.py``)
runs a FAB only if the sha256 of its bytes is approved here.  A FAB's sha256 is
Flower's FAB hash: ``flwr build`` and ``flwr run`` build the same bytes from the
same files (fixed zip dates, sorted paths), so the hash of the bundle the DPO
approved is the hash the SuperLink announces for a run of that release.

File: ``<state_dir>/approved_apps.jsonl`` (+ ``.head.json``, ``.lock``), the
site's state folder (0700, site-owned, per site).  A hash-chained log with the
privacy ledger's mechanics (:mod:`flame_private.records.hashchain`): each line approves or
revokes one FAB hash, says who decided and when, and nothing is ever rewritten,
so the approval history is itself auditable.  A FAB is approved when its latest
entry is an approval.  A log that does not verify approves nothing: the launcher
then refuses every FAB and says why.
"""

from __future__ import annotations

import hashlib
import io
import logging
import tomllib
import zipfile
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from flame_private.config import StrictModel
from flame_private.errors import ExitCode, FlameError
from flame_private.records.durable import utc_now as _utc_now
from flame_private.records.hashchain import HashChainLog

log = logging.getLogger(__name__)

STEM = "approved_apps"
FAB_MAX_BYTES = 10 * 2**20
"""Flower's own limit on a FAB (``FAB_MAX_SIZE``); anything larger is not a FAB Flower would run."""

_HEX64 = r"^[0-9a-f]{64}$"
_TEXT = r"^[^\x00-\x1f\x7f]+$"


class ApprovedAppsError(FlameError):
    """The approved-apps log cannot be trusted or written, or a FAB cannot be approved as asked."""

    exit_code = ExitCode.CHECK_FAILED


class FabInfo(StrictModel):
    """What a FAB says it is (its ``pyproject.toml``), and the sha256 of its bytes."""

    sha256: Annotated[str, Field(pattern=_HEX64)]
    publisher: str
    name: str
    version: str

    @property
    def label(self) -> str:
        return f"{self.publisher}/{self.name} {self.version}"


class ApprovalEntry(StrictModel):
    """One line of the approved-apps log: the DPO approves (or revokes) one FAB hash."""

    seq: Annotated[int, Field(ge=1)]
    time: Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")]
    site_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
    action: Literal["approve", "revoke"]
    fab_sha256: Annotated[str, Field(pattern=_HEX64)]
    publisher: Annotated[str, Field(max_length=200)]
    name: Annotated[str, Field(max_length=200)]
    version: Annotated[str, Field(max_length=200)]
    fab_file: Annotated[str, Field(max_length=500)]
    """The file name the DPO approved (for people; the hash is what counts)."""
    decided_by: Annotated[str, Field(min_length=1, max_length=200, pattern=_TEXT)]
    note: Annotated[str, Field(max_length=2000)] | None
    """The approval's reference, or why it was revoked."""
    prev_hash: Annotated[str, Field(pattern=_HEX64)]
    hash: Annotated[str, Field(pattern=_HEX64)]


def read_fab(path: Path | str) -> tuple[bytes, FabInfo]:
    """The bytes of a built FAB and what it says it is; ApprovedAppsError naming the file if it is not a FAB."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > FAB_MAX_BYTES:
            raise ApprovedAppsError(f"{path}: {size} bytes, more than a FAB may hold ({FAB_MAX_BYTES})")
        data = path.read_bytes()
    except OSError as exc:
        raise ApprovedAppsError(f"{path}: cannot read ({exc})") from None
    return data, fab_info(data, str(path))


def fab_info(data: bytes, where: str = "the FAB") -> FabInfo:
    """Publisher, name and version from the FAB's ``pyproject.toml``; ApprovedAppsError if it has none."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            config = tomllib.loads(zf.read("pyproject.toml").decode("utf-8"))
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ApprovedAppsError(f"{where}: not a Flower app bundle (a zip with a valid pyproject.toml): {exc}"
                                ) from None
    project, flwr_app = config.get("project", {}), config.get("tool", {}).get("flwr", {}).get("app", {})
    try:
        return FabInfo(sha256=hashlib.sha256(data).hexdigest(), publisher=str(flwr_app["publisher"]),
                       name=str(project["name"]), version=str(project["version"]))
    except (KeyError, TypeError) as exc:
        raise ApprovedAppsError(f"{where}: its pyproject.toml lacks {exc} ([project] name and version, "
                                "[tool.flwr.app] publisher)") from None


class ApprovedApps(HashChainLog[ApprovalEntry]):
    """A site's verified approved-apps log.  Get one with :meth:`ApprovedApps.open`."""

    entry_model = ApprovalEntry
    error = ApprovedAppsError
    stem = STEM
    logger = log
    noun = "approved-apps log"
    short = holder = "the log"
    entry_noun = "an approval entry"
    released = "approved"
    kept = "kept"
    lag_note = "the entry is kept"

    @classmethod
    def open(cls, state_dir: Path | str, site_id: str, *, readonly: bool = False) -> ApprovedApps:
        """Open and verify the approvals of ``site_id`` in ``state_dir``; ApprovedAppsError on any break."""
        apps = cls(Path(state_dir), site_id, readonly=readonly)
        if not readonly:
            apps._ensure_dir(apps.state_dir, "state directory")
        with apps._locked():
            apps._load()
        return apps

    def current(self) -> dict[str, ApprovalEntry]:
        """The approved FABs now: sha256 -> the approval in force (the latest entry of a hash is an approval)."""
        latest: dict[str, ApprovalEntry] = {}
        for e in self._entries:
            latest[e.fab_sha256] = e
        return {h: e for h, e in latest.items() if e.action == "approve"}

    def decide(self, action: Literal["approve", "revoke"], info: FabInfo, fab_file: str, decided_by: str,
               note: str | None = None) -> ApprovalEntry:
        """Record that ``decided_by`` approves or revokes the FAB ``info``; refuses a decision that changes nothing."""
        if self.readonly:
            raise ApprovedAppsError(f"{self.path}: opened read-only; cannot record an approval")

        def make_fields() -> dict[str, Any]:
            now = self.current().get(info.sha256)
            if action == "approve" and now is not None:
                raise ApprovedAppsError(f"{info.label} (sha256 {info.sha256}) is already approved "
                                        f"(entry {now.seq}, by {now.decided_by}, {now.time})")
            if action == "revoke" and now is None:
                raise ApprovedAppsError(f"sha256 {info.sha256} is not approved at site {self.site_id!r}: "
                                        "nothing to revoke")
            return {"seq": len(self._entries) + 1, "time": _utc_now(), "site_id": self.site_id, "action": action,
                    "fab_sha256": info.sha256, "publisher": info.publisher, "name": info.name,
                    "version": info.version, "fab_file": fab_file, "decided_by": decided_by, "note": note,
                    "prev_hash": self.head_hash}

        def invalid(exc: Any) -> str:
            return (f"{self.path}: refusing to write an invalid entry "
                    f"({'; '.join(self._error_loc(e) + ': ' + e['msg'] for e in exc.errors())})")

        return self._append_entry(make_fields, invalid=invalid, cannot_record="approval")


def approve_fab(state_dir: Path | str, site_id: str, fab_path: Path | str, decided_by: str,
                note: str | None = None) -> ApprovalEntry:
    """The DPO approves the built FAB at ``fab_path`` for the site: its sha256, name, version, who and when."""
    _, info = read_fab(fab_path)
    return ApprovedApps.open(state_dir, site_id).decide("approve", info, Path(fab_path).name, decided_by, note)


def revoke_fab(state_dir: Path | str, site_id: str, fab_sha256: str, decided_by: str,
               note: str | None = None) -> ApprovalEntry:
    """Withdraw the approval of ``fab_sha256``: from now on the launcher refuses that FAB."""
    apps = ApprovedApps.open(state_dir, site_id)
    approved = apps.current().get(fab_sha256)
    if approved is None:
        raise ApprovedAppsError(f"sha256 {fab_sha256} is not approved at site {site_id!r}: nothing to revoke")
    info = FabInfo(sha256=fab_sha256, publisher=approved.publisher, name=approved.name, version=approved.version)
    return apps.decide("revoke", info, approved.fab_file, decided_by, note)
