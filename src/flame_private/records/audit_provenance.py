"""The audit's checks of where the messages came from: the agreed HE parameters and the code that sent them.

``HE parameters``  the agreed parameters (the key ceremony's params-only context, never the site's
                   own files), compared with the header of the site's secret context;
``app approval``   every message that names its app bundle (FAB) names one approved before it was sent;
``code identity``  the app hashes that produced the messages (:func:`app_hash_uses`).
"""

from __future__ import annotations

from pathlib import Path

from flame_private.config import SiteConfig
from flame_private.records.approved_apps import ApprovedApps, ApprovedAppsError
from flame_private.records.audit_report import AppHashUse, Checks
from flame_private.records.code_identity import app_identity
from flame_private.records.egress import EgressEntry
from flame_private.secure.public.context_file import load_params_context, read_context_header
from flame_private.secure.public.errors import HEError
from flame_private.secure.public.params import ParamsContext

SERVER_PARAMS_NAME = "server-params.ctx"
"""The params-only context the key ceremony writes (secure.site.keys.PARAMS_NAME): the agreed parameters."""
NO_AGREED_PARAMS = ("no agreed HE parameters to check against: pass --he-params with the key ceremony's params-only "
                    f"context ({SERVER_PARAMS_NAME}, from the key custodian), or name it as he_params in the site "
                    "YAML. The site's own secret context cannot vouch for itself")


def check_he_parameters(site: SiteConfig, params_context: Path | None, checks: Checks
                        ) -> tuple[ParamsContext | None, str | None, str | None]:
    """(agreed context to parse with, where it came from, its fingerprint); failures are recorded as checks.

    The agreed parameters come from ``params_context`` or ``site.he_params``, the
    key ceremony's params-only context; the site's secret context is checked
    against them, never used as its own reference.
    """
    name = "HE parameters"
    if params_context is not None:
        agreed, given = Path(params_context), "given with --he-params"
    elif site.he_params is not None:
        agreed, given = Path(site.he_params), "he_params of the site config"
    else:
        checks.fail(name, NO_AGREED_PARAMS)
        return None, None, None
    try:
        ctx = load_params_context(agreed)
    except HEError as exc:
        checks.fail(name, f"cannot load the agreed parameters ({given}): {exc}")
        return None, None, None
    source = f"key ceremony's params-only context {agreed} ({given})"
    fp = ctx.fingerprint
    secret = site.secret_context
    if secret is None:
        checks.ok(name, f"fingerprint {fp} from {source}; the site config names no secret_context to compare")
        return ctx, source, fp
    if not secret.exists():
        checks.warn(name, f"the site's secret context {secret} was not found: its parameters were not compared "
                          f"with the agreed ones (fingerprint {fp}, from {source})")
        return ctx, source, fp
    try:
        header = read_context_header(secret)  # the header only: the key is never read
    except HEError as exc:
        checks.fail(name, f"cannot read the header of the site's secret context: {exc}")
        return ctx, source, fp
    if header.kind != "secret":
        checks.fail(name, f"{secret}: the site's secret_context is a {header.kind} context, not the secret one")
    elif header.fingerprint != fp:
        checks.fail(name, f"the site's secret context {secret} has fingerprint {header.fingerprint[:16]}..., the "
                          f"agreed parameters {fp[:16]}... ({agreed}): they are not from the same key ceremony's "
                          "parameters")
    else:
        checks.ok(name, f"fingerprint {fp} from {source}; the site's secret context has the same parameters "
                        "(its key is not read)")
    return ctx, source, fp


def check_app_approval(site: SiteConfig, entries: list[EgressEntry], checks: Checks) -> None:
    """Every message that names the FAB it came from (app pinning) names one approved before it was sent."""
    name = "app approval"
    pinned = [e for e in entries if e.fab_sha256 is not None]
    try:
        approvals = ApprovedApps.open(site.state_dir, site.site_id, readonly=True)
    except ApprovedAppsError as exc:
        if pinned:
            checks.fail(name, f"{exc}. {len(pinned)} message(s) name the app bundle (FAB) they came from, and "
                              "without a verified approved-apps log none of them can be shown to be approved")
        else:
            checks.warn(name, f"{exc}. No message names an app bundle: app pinning was not in use")
        return
    decisions = approvals.entries
    bad = 0
    for e in pinned:
        history = [d for d in decisions if d.fab_sha256 == e.fab_sha256 and d.time <= e.time]
        if not history or history[-1].action != "approve":
            state = "was revoked before" if history else "was not approved before"
            checks.fail(name, f"{e.kind} seq {e.seq} ({e.run_id} round {e.round}, {e.task}) came from FAB "
                              f"{e.fab_sha256}, which {state} it was sent at {e.time} ({approvals.path})")
            bad += 1
    unpinned = len(entries) - len(pinned)
    if pinned and not bad:
        fabs = sorted({e.fab_sha256 for e in pinned if e.fab_sha256 is not None})
        checks.ok(name, f"{len(pinned)} message(s) from {len(fabs)} app bundle(s), each approved in "
                        f"{approvals.path} before it was sent: {', '.join(f[:16] + '...' for f in fabs)}")
    if unpinned and approvals.current():
        checks.warn(name, f"{unpinned} message(s) name no app bundle: they were produced outside the site's "
                          "launcher (no app pinning), while apps are approved here")
    elif not pinned:
        checks.ok(name, "app pinning not in use: no message names an app bundle (the code identity is the "
                        "installed release; docs/deployment.md, 'App pinning')")


def app_hash_uses(entries: list[EgressEntry]) -> list[AppHashUse]:
    """Each distinct code identity in ``entries`` and the messages it produced, in order of first use."""
    installed = app_identity()
    out: dict[str, AppHashUse] = {}
    for e in entries:
        seen = out.get(e.app_hash)
        if seen is None:
            out[e.app_hash] = AppHashUse(app_hash=e.app_hash, messages=1, first_seq=e.seq, last_seq=e.seq,
                                         first_time=e.time, last_time=e.time, installed=e.app_hash == installed)
        else:
            out[e.app_hash] = seen.model_copy(update={"messages": seen.messages + 1, "last_seq": e.seq,
                                                      "last_time": e.time})
    return list(out.values())
