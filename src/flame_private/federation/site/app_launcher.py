"""The site's ClientApp launcher: run a Flower app bundle (FAB) only if the site's DPO approved its sha256.

With ``flower-supernode --isolation process`` the SuperNode runs no app code itself:
it stores each message and the run's FAB, and a ``flower-superexec`` the site
starts claims each task from the SuperNode's local Runtime API and starts
``flwr-clientapp --token ...`` *from PATH*.  The site puts a folder made by
:func:`write_launcher_bin` first on that superexec's PATH, so this module is what
starts instead.  It is Flower's own ClientApp process (``run_clientapp``) with one
step added between pulling the task input (message, context, run, FAB) and
unpacking the FAB:

* the sha256 of the FAB's bytes is computed here (the hash the SuperLink claims is
  not trusted), and must equal the run's FAB hash and be approved in the site's
  approved-apps log (``approved_apps.py``);
* approved: Flower unpacks, loads and runs the ClientApp as usual, and every message
  it records in the egress log carries the FAB's sha256 (``fab_sha256``), which
  ``flame audit`` checks against the approvals;
* refused: nothing of the FAB is unpacked or imported.  The refusal is recorded in
  the site's egress log (kind "declined", ``app_hash`` = the refused FAB's sha256,
  ``reason`` = why) and the server gets only the generic "declined" status, exactly
  as for any other decline.  A message that is not a flame-private instruction
  (another app altogether) gets Flower's own fixed refusal instead,
  ``Error(INVALID_FAB, "The FAB could not be verified.")``, and the refusal is
  logged here only (the egress log records flame-private messages, which name
  their run, task and round).

The other task commands the superexec might start (``flwr-agentapp``, ...) are
replaced by a stub that refuses: this site runs only pinned ClientApps.
Runtime dependency installation is always off, whatever the superexec asks.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flame_private.config import ConfigError, SiteConfig, load_config
from flame_private.errors import ExitCode, FlameError
from flame_private.records.approved_apps import ApprovedApps, ApprovedAppsError, fab_info

log = logging.getLogger("flame_private.federation.site.app_launcher")  # also when run as __main__

CLIENTAPP_COMMAND = "flwr-clientapp"
REFUSAL_TEXT = "The FAB could not be verified."
"""What a non-flame-private app's server is told: Flower's own text for a FAB it refuses."""


class AppRefused(FlameError):
    """The site does not run this FAB (raised after the refusal was recorded and answered)."""

    exit_code = ExitCode.PRIVACY_REFUSED


@dataclass(frozen=True)
class Verdict:
    approved: bool
    fab_sha256: str
    reason: str


def check_fab(site: SiteConfig, content: bytes, announced_hash: str) -> Verdict:
    """Whether ``site`` runs this FAB: its bytes hash to the announced hash and that hash is approved."""
    sha = hashlib.sha256(content).hexdigest()
    if sha != announced_hash:
        return Verdict(False, sha, f"the FAB's bytes hash to {sha}, not to the announced FAB hash {announced_hash}")
    try:
        label = fab_info(content).label
    except ApprovedAppsError:
        label = "an unreadable bundle"
    try:
        apps = ApprovedApps.open(site.state_dir, site.site_id, readonly=True)
    except ApprovedAppsError as exc:
        return Verdict(False, sha, f"{label} (FAB sha256 {sha}): the approved-apps log does not verify, so no app "
                                   f"is approved: {exc}")
    approval = apps.current().get(sha)
    if approval is None:
        return Verdict(False, sha, f"{label} (FAB sha256 {sha}) is not approved by site {site.site_id} "
                                   f"({len(apps.current())} app(s) approved in {apps.path})")
    return Verdict(True, sha, f"{label} (FAB sha256 {sha}) approved by {approval.decided_by} at {approval.time} "
                              f"(entry {approval.seq} of {apps.path})")


def refuse(site: SiteConfig, client: Any, message: Any, context: Any, verdict: Verdict) -> None:
    """Record the refusal in the egress log, then answer the message with the generic "declined" status."""
    from flwr.app import ConfigRecord, Error, Message, RecordDict
    from flwr.common.constant import ErrorCode
    from flwr.supernode.runtime.run_clientapp import push_message

    from flame_private.federation.protocol import STATUS, SiteStatus, read_instruction
    from flame_private.records.egress import EgressLog, EgressLogError

    try:
        ins = read_instruction(message.content)
    except Exception as exc:  # noqa: BLE001 - anything unreadable is "not a flame-private instruction"
        log.error("REFUSED %s; the message is not a flame-private instruction (%s): answering with Flower's "
                  "fixed refusal", verdict.reason, exc)
        reply = Message(Error(ErrorCode.INVALID_FAB, REFUSAL_TEXT), reply_to=message)
    else:
        status = SiteStatus(site_id=site.site_id, status="declined").model_dump_json()
        try:
            EgressLog.open(site.state_dir, site.site_id).append(
                run_id=ins.run_id, round=ins.round, task=ins.task, kind="declined", payload=status.encode(),
                reason=f"app not approved: {verdict.reason}", app_hash=verdict.fab_sha256)
        except EgressLogError as exc:
            log.error("REFUSED %s; cannot record it in the egress log (%s): answering with Flower's fixed "
                      "refusal only", verdict.reason, exc)
            reply = Message(Error(ErrorCode.INVALID_FAB, REFUSAL_TEXT), reply_to=message)
        else:
            log.error("REFUSED %s (run %s, %s round %d, step %s): recorded in the egress log; the server is told "
                      "only \"declined\"", verdict.reason, ins.run_id, ins.task, ins.round, ins.step)
            reply = Message(RecordDict({STATUS: ConfigRecord({STATUS: status})}), reply_to=message)
    push_message(client, reply, context)


def _pinned(site: SiteConfig, pull: Any) -> Any:
    """Flower's ``pull_task_input`` with the approval check: returns only an approved FAB, else refuses."""

    def pull_task_input(client: Any) -> Any:
        message, context, run, fab = pull(client)
        verdict = check_fab(site, fab.content, run.fab_hash)
        if not verdict.approved:
            refuse(site, client, message, context, verdict)
            raise AppRefused(verdict.reason)
        log.info("running %s", verdict.reason)
        # Every message this ClientApp process records in the egress log names the FAB that produced it.
        from flame_private.records.egress import PINNED_FAB_ENV

        os.environ[PINNED_FAB_ENV] = verdict.fab_sha256
        return message, context, run, fab

    return pull_task_input


def _parser() -> argparse.ArgumentParser:
    from flwr.common.args import add_args_flwr_app_common

    parser = argparse.ArgumentParser(description="flwr-clientapp that runs only FABs the site approved")
    parser.add_argument("--site-config", required=True, type=Path, help="The site's YAML (SiteConfig).")
    parser.add_argument("--runtime-api-address", required=True, help="The SuperNode's Runtime API address.")
    add_args_flwr_app_common(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the site's ``flwr-clientapp``: the arguments of Flower's, plus ``--site-config``."""
    # The verdicts (and the app's own flame_private lines) go to the superexec's log; Flower logs on its own.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    package_log = logging.getLogger("flame_private")
    package_log.addHandler(handler)
    package_log.setLevel(logging.INFO)
    package_log.propagate = False
    args = _parser().parse_args(argv)
    try:
        site = load_config(args.site_config, SiteConfig)
    except ConfigError as exc:
        sys.exit(f"flame app launcher: {exc}")

    from flwr.common.args import try_obtain_flwr_app_token
    from flwr.supercore.tls import validate_and_resolve_root_certificates
    from flwr.supernode.runtime import run_clientapp as flwr_runtime

    names = flwr_runtime.run_clientapp.__code__.co_names
    if "pull_task_input" not in names or "install_from_fab" not in names:  # fail closed if Flower changed
        sys.exit("flame app launcher: this Flower's run_clientapp no longer pulls the FAB through "
                 "pull_task_input before install_from_fab; refusing to run any app")
    flwr_runtime.pull_task_input = _pinned(site, flwr_runtime.pull_task_input)
    flwr_runtime.run_clientapp(
        runtime_api_address=args.runtime_api_address,
        token=try_obtain_flwr_app_token(args),
        insecure=args.insecure,
        certificates=validate_and_resolve_root_certificates(args.root_certificates, args.insecure),
        parent_pid=args.parent_pid,
        runtime_dependency_install=False,
    )


def write_launcher_bin(bin_dir: Path | str, site_yaml: Path | str, python: Path | str = sys.executable) -> list[Path]:
    """Write the folder to put first on the site's ``flower-superexec`` PATH; returns the files written.

    ``flwr-clientapp`` runs :func:`main` for ``site_yaml`` with ``python``; every other
    task command Flower's superexec knows is a stub that refuses (exit 1).
    """
    from flwr.supercore.constant import TASK_TYPE_TO_COMMAND

    bin_dir, site_yaml = Path(bin_dir), Path(site_yaml).absolute()
    load_config(site_yaml, SiteConfig)  # a launcher for a site config that does not validate would refuse everything
    bin_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for command in sorted({CLIENTAPP_COMMAND, *TASK_TYPE_TO_COMMAND.values()}):
        if command == CLIENTAPP_COMMAND:
            body = (f"exec {shlex.quote(str(python))} -m flame_private.federation.site.app_launcher "
                    f"--site-config {shlex.quote(str(site_yaml))} \"$@\"")
        else:
            body = ("echo \"$0: this site runs only the ClientApps its DPO approved "
                    "(flame_private.federation.site.app_launcher); refusing\" >&2\nexit 1")
        path = bin_dir / command
        tmp = bin_dir / f".{command}.tmp"
        tmp.write_text("#!/bin/sh\n# Written by flame_private.federation.site.app_launcher.write_launcher_bin\n"
                       f"{body}\n", encoding="utf-8")
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
        written.append(path)
    return written


if __name__ == "__main__":
    main()
