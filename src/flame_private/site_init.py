"""Scaffold a new site for its IT team and DPO: ``flame site init``.

Writes one folder per site::

    <out>/
      site.yaml             SiteConfig (validated): data, state, policy, secret context, agreed HE parameters
      privacy-policy.yaml   policy TEMPLATE: refused by load_policy until the committee fills it in
      state/                (0700) the empty privacy ledger and egress log with their heads (count 0);
                            later the outbox and exports
      keys/                 (0700) where the secret context goes (0600), from the key custodian
      DPO-CHECKLIST.md      what the DPO approves before the first round

Nothing here touches data or keys: the site's scans are only referenced, and the
secret context is handed over by the key custodian out of band.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, get_args

import typer

from flame_private.cli_common import LayoutChoice, refusals, value
from flame_private.config import ConfigError, Layout, SiteConfig, load_config
from flame_private.errors import ExitCode, FlameError
from flame_private.privacy.policy import TEMPLATE_MARKER
from flame_private.site_state import init_state

PRIVATE_DIR_MODE = 0o700
SITE_DIR_MODE = 0o750
SITE_YAML = "site.yaml"
POLICY_YAML = "privacy-policy.yaml"
CHECKLIST = "DPO-CHECKLIST.md"
SECRET_NAME = "secret.ctx"


class SiteInitError(FlameError, ValueError):
    """The site folder cannot be created as asked (exists already, bad site id or layout)."""

    exit_code = ExitCode.INPUT


SITE_YAML_TEXT = """\
# Deployment of site {site_id}: where its data, state, approved policy and key live.
# Written by `flame site init`; check it with `flame config validate {site_yaml} --kind site`.
# The SuperNode of this site gets this file as node config:
#   flower-supernode ... --node-config "site-config='{site_yaml}'"
# Relative paths are relative to this file's folder (not to where a command runs), so
# the site folder may be moved or restored elsewhere as a whole; data_dir is absolute.
site_id: {site_id}
data_dir: {data_dir}
layout: {layout}
state_dir: {state_rel}
privacy_policy: {policy_rel}
secret_context: {secret_rel}
{he_params_line}
"""

HE_PARAMS_UNSET = """\
# he_params: the key ceremony's params-only context (server-params.ctx), received from the key
# custodian; `flame audit` checks the site's ciphertexts and secret context against it, and fails
# without it (or `flame audit --he-params FILE`). Set it once you have the file, e.g.:
# he_params: {keys_rel}/server-params.ctx"""

POLICY_TEMPLATE = """\
# PRIVACY POLICY TEMPLATE for site {site_id}: NOT AN APPROVAL.
#
# The site's ethics committee fills in every field marked FILL IN (format:
# privacy_budgets/README.md, meaning: docs/privacy-accounting.md).  Until then the
# site refuses to train: the null placeholders and the {marker} line
# below do not validate (`flame budget show --site {site_yaml}` says why).
# When the committee has approved it: fill in every field, then delete the
# {marker} line.
{marker}: "delete this line once the committee has filled in every field"
site_id: {site_id}
epsilon_cap: null          # FILL IN: total epsilon ever spent on this site's patients (all models, rounds, runs)
delta: null                # FILL IN: e.g. 1.0e-5; must be below 1e-3 and well below 1 / number of patients
# The number of patients the site trains on is public to the consortium (the aggregate carries the
# total, and the sampling rate and training time follow it); the guarantee protects each patient's data.
unit_of_privacy: patient   # the only unit accepted: all scans of one patient form one record
accountant: prv            # prv (default) or rdp
approved_by: null          # FILL IN: "Research Ethics Committee of ..."
approval_reference: null   # FILL IN: the committee's reference for this approval
approved_on: null          # FILL IN: YYYY-MM-DD, first day the policy applies
expires_on: null           # FILL IN: YYYY-MM-DD, first day it no longer applies
notes: null                # optional: anything the committee wants on record
"""

CHECKLIST_TEXT = """\
# DPO checklist: site {site_id}

Before this site takes part in its first federated round, the site's data
protection officer (DPO) approves each item below and keeps this file, signed,
with the site's records.  Commands run from the flame-private installation the
site's SuperNode uses.  Background: docs/site-setup.md, docs/deployment.md,
docs/privacy-accounting.md, docs/encryption.md.

Site folder: `{root}`

## 1. Privacy policy approved and filled in

- [ ] The ethics committee approved the privacy budget (epsilon cap, delta,
      unit of privacy = patient, accountant, approval reference, validity dates).
- [ ] `{policy}` holds exactly what was approved: every FILL IN field filled,
      the `{marker}` line deleted.
- [ ] `flame budget show --site {site_yaml}` prints the policy as VALID today,
      with nothing spent yet (or only what earlier approved runs spent).

## 2. Encryption key: key check value compared out of band

- [ ] The secret context came from the key custodian by an approved channel
      (not e-mail, not the federation server) and is at `{secret}`.
- [ ] `flame keys verify {secret} --kcv XXXX-XXXX-XXXX-XXXX-XXXX-XXXX` passes
      with the key check value the custodian read out over a second channel
      (telephone, signed letter), or with the ceremony's `he-key-check.json`
      received by that channel (`--kcv-file`). The key check value identifies
      the key; the HE parameters fingerprint does not (it is the same for
      every key made with the same settings).
- [ ] The key ceremony's params-only context (`server-params.ctx`) is named as
      `he_params` in `{site_yaml}`, and `flame keys fingerprint` of it prints
      the parameters fingerprint the custodian announced and the other sites
      report.
- [ ] The server operator holds only the params-only context
      (`server-params.ctx`): no secret key at the aggregation server.

## 3. Secret context protected

- [ ] `{secret}` has mode 0600 (`ls -l` shows `-rw-------`), is owned by the
      account that runs the SuperNode, and `{keys}` is 0700.  flame-private
      refuses a secret context that group or others can read.
- [ ] The key is in the site's backup and key-destruction procedures.

## 4. Data checked

- [ ] `flame data check {data_dir} --layout {layout}` passes: every case valid,
      patient identifiers pseudonymised, no case the ethics approval excludes.
- [ ] `data_dir` is read-only to the SuperNode's account where possible.

## 5. What leaves the site: egress log and audit understood

- [ ] The DPO knows that each round sends only CKKS ciphertexts of the
      noised (DP-SGD) model update and of metric sums, and that every sent
      byte is logged (kind, size, sha256) in `{state}` before it leaves.
- [ ] The privacy ledger in `{state}` records every spend before the update
      is sent; the DPO knows how to read it (`flame budget show`, `flame budget verify`).
- [ ] The DPO has run `flame audit --site {site_yaml}` on a test run and
      understands each check and what to do when one fails.
- [ ] `{state}` holds the empty privacy ledger and egress log written by
      `flame site init`; at each review the DPO runs `flame audit` with the
      anchor saved last time (`--anchor`) and saves a new one (`--save-anchor`),
      so a deleted or rebuilt state cannot go unnoticed.

## 6. Application identity approved

- [ ] The flame-private version installed for the SuperNode (`flame version`)
      and the app bundle (FAB) hash the operator announces (printed by
      `flwr run` / `flwr build`, and in the SuperNode log as the installed app
      directory name) are the ones the site approved.
- [ ] The app is pinned (docs/deployment.md, "App pinning"): the SuperNode
      runs with `--isolation process` and its superexec starts ClientApps
      through the site's launcher; the DPO approved the bundle built from the
      approved release with `flame site approve-app FAB --site {site_yaml}
      --by NAME`, and `flame site approved-apps --site {site_yaml}` lists
      exactly the bundles the site approved (any other is refused, and the
      refusal recorded in the egress log).

## 7. Transport: TLS and SuperNode authentication

- [ ] The SuperNode connects with TLS (`--root-certificates` = the
      federation CA certificate, obtained out of band), never `--insecure`.
- [ ] The site generated its own SuperNode key pair (`ssh-keygen -t ecdsa -b 384`),
      kept the private key on the site (mode 0600), and sent only the public
      key to the operator, who registered it (`flwr supernode register`).
- [ ] The SuperNode is started with `--auth-supernode-private-key` and the
      site config `{site_yaml}`; nothing else on the site listens to the
      outside (the SuperNode only makes outgoing connections).

Approved by (DPO): ____________________   Date: ____________
"""


def init_site(site_id: str, out_dir: Path | str, data_dir: Path | str, layout: str = "flame",
              he_params: Path | str | None = None) -> list[Path]:
    """Create the site folder ``out_dir``; returns the paths written (files and folders).

    Refuses an ``out_dir`` that exists and is not empty (nothing is overwritten),
    a site id or layout SiteConfig would refuse.  In ``site.yaml`` the data folder
    is absolute and the site folder's own files are relative to it (the rule for
    every site YAML), so the SuperNode may start from any directory and the site
    folder may be moved as a whole.  ``he_params``, the key ceremony's params-only
    context, is written (absolute) when known; otherwise ``site.yaml`` says how to add it.
    """
    if layout not in get_args(Layout):
        raise SiteInitError(f"unknown layout {layout!r}; expected one of {', '.join(get_args(Layout))}")
    root = Path(out_dir).expanduser().absolute()
    data = Path(data_dir).expanduser().absolute()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise SiteInitError(f"{root} exists and is not an empty folder: refusing to overwrite a site folder")
    state, keys = root / "state", root / "keys"
    site_yaml, policy, checklist = root / SITE_YAML, root / POLICY_YAML, root / CHECKLIST
    secret = keys / SECRET_NAME
    agreed = _agreed_params(he_params) if he_params is not None else None
    # Validate before writing anything, so a bad site id leaves no half-made folder.
    try:
        SiteConfig(site_id=site_id, data_dir=data, layout=layout, state_dir=state,  # type: ignore[arg-type]
                   privacy_policy=policy, secret_context=secret, he_params=agreed)
    except ValueError as exc:
        raise SiteInitError(f"site {site_id!r}: {exc}") from None

    created_root = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    if created_root:
        os.chmod(root, SITE_DIR_MODE)
    for folder in (state, keys):
        folder.mkdir(mode=PRIVATE_DIR_MODE)
        os.chmod(folder, PRIVATE_DIR_MODE)  # mkdir's mode is filtered by the umask
    init_state(state, site_id)  # training refuses a site without it: a deleted state is never "nothing spent"
    fields = {"site_id": site_id, "root": root, "site_yaml": site_yaml, "data_dir": data, "layout": layout,
              "state_dir": state, "state": state, "keys": keys, "policy": policy, "secret": secret,
              "marker": TEMPLATE_MARKER, "state_rel": state.relative_to(root).as_posix(),
              "policy_rel": policy.relative_to(root).as_posix(), "secret_rel": secret.relative_to(root).as_posix(),
              "keys_rel": keys.relative_to(root).as_posix()}
    fields["he_params_line"] = (f"he_params: {agreed}" if agreed is not None
                                else HE_PARAMS_UNSET.format(**fields))
    _write_new(site_yaml, SITE_YAML_TEXT.format(**fields))
    _write_new(policy, POLICY_TEMPLATE.format(**fields))
    _write_new(checklist, CHECKLIST_TEXT.format(**fields))
    try:
        load_config(site_yaml, SiteConfig)
    except ConfigError as exc:  # pragma: no cover - the model accepted the same values above
        raise SiteInitError(f"{site_yaml} does not validate: {exc}") from None
    return [site_yaml, policy, state, keys, checklist]


def _agreed_params(path: Path | str) -> Path:
    """The absolute path of the key ceremony's params-only context; refuses anything else, naming the file."""
    from flame_private.secure.public.context_file import context_kind, load_params_context
    from flame_private.secure.public.errors import HEError

    agreed = Path(path).expanduser().absolute()
    try:
        kind = context_kind(agreed)
        if kind != "params":
            raise SiteInitError(f"he_params {agreed}: not the key ceremony's params-only context "
                                f"({'a ' + kind + ' context' if kind else 'not an HE context file'})")
        load_params_context(agreed)
    except HEError as exc:
        raise SiteInitError(f"he_params: {exc}") from None
    return agreed


def _write_new(path: Path, text: str) -> None:
    """Create ``path`` (never overwrite), 0640: readable by the site's IT group, not by others."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def site_init_command(
    site_id: Annotated[str, typer.Argument(help="The site's id (letters, digits, - and _), as in the federation.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The new site folder (must not exist, or be empty).")],
    data_dir: Annotated[Path, typer.Option("--data-dir", help="The site's scans (check them with "
                                                              "`flame data check`).")],
    layout: Annotated[LayoutChoice, typer.Option("--layout", help="The layout of the site's scans.")]
    = LayoutChoice("flame"),
    he_params: Annotated[Path | None, typer.Option(
        "--he-params", help="The key ceremony's params-only context (server-params.ctx), if the site has it: the "
                            "agreed HE parameters `flame audit` checks against (else add he_params later).")] = None,
) -> None:
    """Scaffold a new site: site.yaml, a privacy-policy template, state/ (empty ledger and egress log) and keys/
    (0700), DPO-CHECKLIST.md."""
    with refusals():
        written = init_site(site_id, out, data_dir, value(layout), he_params)
    for path in written:
        typer.echo(f"created {path}{'/' if path.is_dir() else ''}")
    root = written[0].parent
    if not Path(data_dir).expanduser().is_dir():
        typer.echo(f"note: {data_dir} does not exist yet; put the site's scans there before the first round")
    typer.echo(f"""
next steps (docs/site-setup.md):
  1. the ethics committee fills in {root / POLICY_YAML} (it is refused until then)
  2. the key custodian hands over the secret context: {root / 'keys' / SECRET_NAME} (chmod 600);
     check it with `flame keys verify` and the key check value received by another channel
  3. flame data check {data_dir} --layout {layout}
  4. the DPO works through {root / CHECKLIST}""")
    if he_params is None:
        typer.echo(f"  5. set he_params in {root / SITE_YAML} to the key ceremony's server-params.ctx "
                   "(flame audit needs the agreed HE parameters)")
