"""``flame keys ...``: the key custodian's commands.  Thin: call ``keys``/``params``, print.

Key handling is imported inside the commands, so importing this module (as the
top-level ``flame`` CLI does) does not load ``keys``/``codec``.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

keys_app = typer.Typer(help="Key ceremony and HE fingerprints (run by the key custodian).", no_args_is_help=True)
console = Console()


def _fail(message: str, code: int = 2) -> typer.Exit:
    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


@keys_app.command("init")
def init(
    out: Annotated[Path, typer.Option("--out", help="Directory for the three files (created 0700).")],
    config: Annotated[Optional[Path], typer.Option("--config", help="HE config YAML (HEConfig); default: built-in.")]
    = None,
    max_sites: Annotated[Optional[int], typer.Option(help="Most sites whose sum must not overflow "
                                                          "(default: the config's max_sites).")] = None,
) -> None:
    """Run the key ceremony once: secret context for sites, params-only context for the server, fingerprint."""
    from flame_private.config import ConfigError, HEConfig, load_config
    from flame_private.secure.errors import HEError
    from flame_private.secure.keys import key_ceremony
    from flame_private.secure.params import he_summary

    try:
        he = load_config(config, HEConfig) if config is not None else HEConfig()
        result = key_ceremony(he, out, max_sites=max_sites)
    except (ConfigError, HEError) as exc:
        raise _fail(str(exc)) from None
    table = Table(title=f"key ceremony: {he_summary(he)}")
    for col in ("file", "mode", "bytes", "give to"):
        table.add_column(col)
    who = {result.secret_path: "each SITE, out of band (encrypted medium, in person); never the server",
           result.params_path: "the aggregation SERVER (and anyone: it holds no key)",
           result.fingerprint_path: "EVERYONE: sites and server operators compare it before round 1"}
    for path, to in who.items():
        st = path.stat()
        table.add_row(str(path), f"{stat.S_IMODE(st.st_mode):04o}", str(st.st_size), to)
    console.print(table)
    console.print(f"HE fingerprint: [bold]{result.fingerprint}[/]", highlight=False)
    console.print(f"each site may encrypt |n_k * w_k| <= {result.max_safe_magnitude:.4g} for up to {max_sites or he.max_sites} sites")
    console.print("Keep no copy of the secret context beyond what the sites need; it decrypts every update.")


@keys_app.command("fingerprint")
def fingerprint(path: Annotated[Path, typer.Argument(help="A secret or params-only context, or he-fingerprint.txt.")]
                ) -> None:
    """Print the HE fingerprint of a file (the secret key itself is not loaded)."""
    from flame_private.secure.errors import HEError
    from flame_private.secure.params import read_fingerprint

    try:
        console.print(read_fingerprint(path), highlight=False)
    except HEError as exc:
        raise _fail(str(exc)) from None
