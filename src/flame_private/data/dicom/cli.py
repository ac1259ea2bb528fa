"""``flame data import`` and ``flame data export-dicom``: thin wrappers over importer and export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from flame_private.cli_common import fail, refusals

console = Console(soft_wrap=True)  # paths stay on one line, whatever the terminal width


def _default_pseudonyms(out: Path) -> Path:
    return out.parent / f"{out.name}-pseudonyms.csv"


def import_command(
    dicom: Annotated[Path, typer.Option("--dicom", help="The hospital's DICOM export (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The site folder to create (flame layout).")],
    site_id: Annotated[Optional[str], typer.Option(help="The site's name (default: the folder's name).")] = None,
    pseudonyms: Annotated[Optional[Path], typer.Option(
        help="Hospital ID -> pseudonym map, kept at the site (default: OUT-pseudonyms.csv beside OUT).",
        show_default=False)] = None,
    sequences: Annotated[Optional[Path], typer.Option(
        help="YAML of the site's series names: sequence -> regular expressions (docs/site-data.md).")] = None,
    clinical: Annotated[Optional[Path], typer.Option(
        help="Clinical table by hospital patient ID (columns of clinical.csv, docs/data.md).")] = None,
    voxel_mm: Annotated[float, typer.Option(min=0.25, max=8.0, help="Isotropic voxel of the written images, mm.")]
    = 1.0,
    skull_strip: Annotated[bool, typer.Option("--skull-strip/--no-skull-strip", help=(
        "Extract the brain with the MNI152 mask (off for scans already skull-stripped)."))] = True,
    skip_invalid: Annotated[bool, typer.Option(help=(
        "Write the patients that import and list the others (default: write nothing if any fails)."))] = False,
    segmentation_model: Annotated[Optional[Path], typer.Option(help=(
        "The baseline segmentation model (segmentation.pt): draws the baseline segmentation of a patient whose "
        "baseline study has no DICOM-SEG; import.json and the contact sheet show which were drawn."),
        show_default=False)] = None,
) -> None:
    """Import DICOM series (T1, T1ce, T2, FLAIR, DICOM-SEG, RT plan) into a new, de-identified site folder."""
    from flame_private.data.dicom.importer import ImportOptions, import_dicom
    from flame_private.data.dicom.sequences import SequenceRules

    options = ImportOptions(site_id=site_id or out.name, voxel_mm=voxel_mm, skull_strip=skull_strip,
                            pseudonyms=pseudonyms or _default_pseudonyms(out), sequences=sequences,
                            clinical=clinical, skip_invalid=skip_invalid, segmentation_model=segmentation_model)
    with refusals():
        if sequences is not None:
            SequenceRules.load(sequences)  # a bad rules file is refused before anything is read
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console) as progress:
            task = progress.add_task("importing patients", total=None)
            report = import_dicom(dicom, out, options, on_patient=lambda _p: progress.advance(task))
    table = Table(title=f"site {report.site_id}: {len(report.patients)} patient(s) imported into {out}")
    for col in ("patient", "timepoints", "segmented", "baseline segmentation", "treatment", "brain ml", "seconds"):
        table.add_column(col, justify="left" if col == "patient" else "right")
    for p in report.patients:
        table.add_row(p.patient_id, str(len(p.timepoints)), str(sum(t.segmentation for t in p.timepoints)),
                      p.baseline_segmentation.split(" (")[0],
                      f"{p.treatment or '-'} ({p.treatment_source})",
                      f"{p.brain_ml:.0f}" if p.brain_ml is not None else "-", f"{p.seconds:.1f}")
    console.print(table)
    for problem in report.skipped:  # the full paths are in the log above
        console.print(f"[yellow]skipped[/] {problem}", highlight=False)
    console.print(f"check by eye: {out / 'qc'} (one contact sheet per patient); report: {out / 'import.json'}")
    console.print(f"pseudonym map (keep it at the site, never send it): {options.pseudonyms}")


def export_command(
    site_dir: Annotated[Path, typer.Argument(help="A synthetic site folder (flame layout).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to create with the DICOM series.")],
    compress: Annotated[bool, typer.Option(help="Write the MR slices RLE-compressed.")] = False,
    motion_mm: Annotated[float, typer.Option(help="Largest follow-up translation, mm.")] = 4.0,
    motion_deg: Annotated[float, typer.Option(help="Largest follow-up rotation, degrees.")] = 3.0,
    patient: Annotated[Optional[list[str]], typer.Option(
        "--patient", help="Only this patient (repeat for more; default: every patient).")] = None,
) -> None:
    """Write a synthetic site as a PACS-style DICOM export (to try or test 'flame data import')."""
    from flame_private.data.dicom.export import export_site_dicom

    if out.exists():
        raise fail(f"{out}: already exists; export into a new folder")
    with refusals():
        truth = export_site_dicom(site_dir, out, max_motion_mm=motion_mm, max_motion_deg=motion_deg,
                                  compress=compress, patients=patient or None)
    console.print(f"wrote {len(truth['patients'])} patient(s) as DICOM in {out}; the truth for checking an "
                  f"import: {out / 'export.json'}")
