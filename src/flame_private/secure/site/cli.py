"""``flame keys ...``: the key custodian's commands.  Thin: call ``ceremony``/``keys``/``keycheck``, print.

Key handling is imported inside the commands, so importing this module (as the
top-level ``flame`` CLI does) does not load ``keys``/``ceremony``/``codec``.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from flame_private.cli_common import fail, refusals
from flame_private.errors import ExitCode

keys_app = typer.Typer(help="Key ceremony (key custodian), HE fingerprints and key checks (sites).",
                       no_args_is_help=True)
console = Console(soft_wrap=True)  # paths and digests stay on one line, whatever the terminal width


@keys_app.command("init")
def init(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the four files (created 0700).")],
    he_config: Annotated[Optional[Path], typer.Option(
        "--he-config", help="YAML of the CKKS settings (the fields of a federation YAML's he:); "
                            "default: built-in.")] = None,
    max_sites: Annotated[Optional[int], typer.Option(help="Most sites whose sum must not overflow "
                                                          "(default: the config's max_sites).")] = None,
) -> None:
    """Run the key ceremony once: secret context (sites), params-only context (server), fingerprint, key check."""
    from flame_private.config import HEConfig, load_config
    from flame_private.secure.public.params import he_summary
    from flame_private.secure.site.ceremony import key_ceremony
    from flame_private.secure.site.keycheck import short_kcv

    with refusals():
        he = load_config(he_config, HEConfig) if he_config is not None else HEConfig()
        result = key_ceremony(he, out, max_sites=max_sites)
    table = Table(title=f"key ceremony: {he_summary(he)}")
    for col in ("file", "mode", "bytes", "give to"):
        table.add_column(col)
    who = {result.secret_path: "each SITE, out of band (encrypted medium, in person); never the server",
           result.params_path: "the aggregation SERVER (and anyone: it holds no key)",
           result.fingerprint_path: "EVERYONE: sites and server operators compare the parameters before round 1",
           result.key_check_path: "each SITE, by a channel other than the secret context's (or read it out by "
                                  "telephone): `flame keys verify` compares it with the key"}
    for path, to in who.items():
        st = path.stat()
        table.add_row(str(path), f"{stat.S_IMODE(st.st_mode):04o}", str(st.st_size), to)
    console.print(table)
    console.print(f"HE parameters fingerprint (the same for every key made with these parameters): "
                  f"[bold]{result.fingerprint}[/]", highlight=False, soft_wrap=True)
    console.print(f"key check value (identifies the key, reveals nothing of it): "
                  f"[bold]{short_kcv(result.key_check_value)}[/]", highlight=False, soft_wrap=True)
    console.print(f"the sum of up to {max_sites or he.max_sites} sites may hold |values| <= "
                  f"{result.max_safe_magnitude:.4g} (packed updates sum to at most 1; weights within "
                  f"he.weight_bound, patients within he.max_patients = {he.max_patients})")
    console.print("Keep no copy of the secret context beyond what the sites need; it decrypts every update.")


@keys_app.command("fingerprint")
def fingerprint(path: Annotated[Path, typer.Argument(help="A secret or params-only context, or he-fingerprint.txt.")]
                ) -> None:
    """Print the HE parameters' fingerprint of a file and, for a secret context, the key check value.

    The parameters' fingerprint is the same for every key made with the same
    settings; only the key check value says which key a secret context holds.
    """
    from flame_private.secure.public.context_file import context_kind, read_fingerprint

    with refusals():
        fp = read_fingerprint(path)
        secret = context_kind(path) == "secret"
    console.print(f"HE parameters fingerprint: {fp}", highlight=False, soft_wrap=True)
    console.print("  (the same for every key made with these parameters: it does not identify a key)",
                  highlight=False, soft_wrap=True)
    if not secret:
        return
    from flame_private.secure.site.keycheck import short_kcv
    from flame_private.secure.site.keys import load_secret_context

    with refusals():
        kcv = load_secret_context(path).key_check_value
    console.print(f"key check value: {short_kcv(kcv)}", highlight=False, soft_wrap=True)
    console.print(f"  (identifies this key; whole value {kcv}; compare it with the key ceremony's using "
                  "`flame keys verify`)", highlight=False, soft_wrap=True)


@keys_app.command("verify")
def verify(
    path: Annotated[Path, typer.Argument(help="The site's secret context.")],
    kcv: Annotated[Optional[str], typer.Option(
        "--kcv", help="The key check value the key custodian gave you, e.g. 3F2A-9C01-77BE-0D45-A1C2-9E30.")] = None,
    kcv_file: Annotated[Optional[Path], typer.Option(
        "--kcv-file", help="The ceremony's he-key-check.json (also checks the parameters' fingerprint).")] = None,
) -> None:
    """Check that a secret context holds the key ceremony's key; exit 1 if it does not.

    Give the key check value the custodian read out (--kcv) or the ceremony's
    he-key-check.json received by another channel (--kcv-file), or both.  The
    key is loaded (the file must be mode 0600) and is never shown.
    """
    from flame_private.secure.site.keycheck import KeyCheckMismatch, check_key, normalise_kcv, read_key_check, short_kcv
    from flame_private.secure.site.keys import load_secret_context

    if kcv is None and kcv_file is None:
        raise fail("give the key check value to compare with: --kcv VALUE or --kcv-file he-key-check.json",
                   ExitCode.USAGE)
    with refusals():
        if kcv is not None:
            normalise_kcv(kcv)  # a mistyped value is refused before the key is loaded
        secret = load_secret_context(path)
        computed = secret.key_check_value
        expected: list[tuple[str, str | None, str]] = [(kcv, None, "--kcv")] if kcv is not None else []
        if kcv_file is not None:
            check = read_key_check(kcv_file)
            expected.append((check.key_check_value, check.he_fingerprint, str(kcv_file)))
        for value, fp, source in expected:
            try:
                check_key(computed, secret.fingerprint, value, expected_fingerprint=fp, what=str(path))
            except KeyCheckMismatch as exc:
                raise fail(f"KEY CHECK FAILED against {source}: {exc}", exc.exit_code) from None
    console.print(f"[green]key check passed[/]: {path} holds the key ceremony's key "
                  f"(key check value {short_kcv(computed)})", highlight=False, soft_wrap=True)
