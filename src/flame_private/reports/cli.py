"""``flame report``: write the ethics-committee report of a site, or the consortium overview.  Thin: parse,
build, write, say where and what the verdict is.

Exit status: 0 when the report was written and nothing failed (points needing
attention allowed); 1 when it was written but flags a problem (a record that
does not verify, a failed audit check, a spend over the cap, an attack the
protection did not stop): the report says so prominently; 3 when no report
could be written (bad input: the message names the file); docs/cli.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from flame_private.cli_common import FormatChoice, LangChoice, refusals, value
from flame_private.config import SITE_YAML_HELP

report_app = typer.Typer(help="Privacy-budget reports for ethics committees and data-protection officers "
                              "(HTML or PDF, English or French).", no_args_is_help=True)

LANG_HELP = "Language of the report."
FORMAT_HELP = "File format (default: from the --out file name)."
PARAMS_HELP = ("The key ceremony's params-only context (server-params.ctx): the agreed HE parameters to check the "
               "ciphertexts against. Default: he_params in the site YAML; with neither, the check fails.")
STUDY_HELP = "Name of the study, as the committee knows it (default: a generic description)."


def _written(out: Path, level: str, what: str) -> None:
    console = Console(highlight=False)
    if level == "fail":
        console.print(f"[bold red]PROBLEM FOUND[/]: {what}; the report {out} says what and where. "
                      "Do not sign off before it is explained (docs/reports.md).")
        raise typer.Exit(1)
    style = "green" if level == "ok" else "yellow"
    console.print(f"wrote {out} ([{style}]verdict: {level}[/])")


@report_app.command("ethics")
def ethics(
    site: Annotated[Path, typer.Option("--site", "-s", help=SITE_YAML_HELP)],
    out: Annotated[Path, typer.Option("--out", "-o", help="File to write (.pdf or .html).")],
    lang: Annotated[LangChoice, typer.Option("--lang", help=LANG_HELP)] = LangChoice.en,
    fmt: Annotated[FormatChoice | None, typer.Option("--format", help=FORMAT_HELP)] = None,
    attack_results: Annotated[Path | None, typer.Option(
        "--attack-results", help="Folder of attack results (*.json and their figures) to include as evidence.")] = None,
    he_params: Annotated[Path | None, typer.Option("--he-params", help=PARAMS_HELP)] = None,
    study: Annotated[str | None, typer.Option("--study", help=STUDY_HELP)] = None,
) -> None:
    """One site's report for its ethics committee and DPO.

    Approved budget, spend, what it means for a patient, what left the site,
    attack evidence, threat model, integrity of the records, sign-off.
    """
    from flame_private.reports import (
        build_ethics_report,
        ethics_document,
        write_document,
    )
    from flame_private.reports.output import format_for

    with refusals():
        chosen = format_for(out, value(fmt))
        facts = build_ethics_report(site, attacks_dir=attack_results, params=he_params, study=study)
        write_document(ethics_document(facts, lang.value), out, chosen)
    reasons = ", ".join(r.code for r in facts.verdict.reasons)
    _written(out, facts.verdict.level, f"{facts.site_id}: {reasons}")


@report_app.command("consortium")
def consortium(
    sites: Annotated[list[Path], typer.Option("--sites", help="Site YAMLs: --sites a.yaml b.yaml ... (or repeat "
                                                              "--sites).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="File to write (.pdf or .html).")],
    more: Annotated[list[Path] | None, typer.Argument(help="More site YAMLs (after --sites).", show_default=False,
                                                      metavar="[SITE_YAML]...")] = None,
    lang: Annotated[LangChoice, typer.Option("--lang", help=LANG_HELP)] = LangChoice.en,
    fmt: Annotated[FormatChoice | None, typer.Option("--format", help=FORMAT_HELP)] = None,
    he_params: Annotated[Path | None, typer.Option("--he-params", help=PARAMS_HELP)] = None,
    study: Annotated[str | None, typer.Option("--study", help=STUDY_HELP)] = None,
) -> None:
    """The consortium overview: every site's spend against its own cap.

    Also rounds taken part in, refusals, and whether each site's records verify.
    """
    from flame_private.reports import (
        build_consortium_report,
        consortium_document,
        write_document,
    )
    from flame_private.reports.output import format_for

    with refusals():
        chosen = format_for(out, value(fmt))
        facts = build_consortium_report([*sites, *(more or [])], params=he_params, study=study)
        write_document(consortium_document(facts, lang.value), out, chosen)
    bad = ", ".join(s.site_id for s in facts.sites if s.verdict.level == "fail")
    _written(out, facts.level, bad)
