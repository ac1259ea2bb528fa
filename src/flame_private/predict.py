"""Treatment comparison for one patient: what a clinician looks at.

Given a patient's baseline scans (and clinical covariates), run the response
model and the evolution model under photons, protons and carbon ions, and draw
the predicted follow-up tumour under each modality over the baseline slices.
Where the baseline has no segmentation, the baseline segmentation model draws
it first, and every output says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flame_private.auto_segmentation import Segmenter, drawing_model
from flame_private.config import MODALITIES, DataConfig, Layout
from flame_private.data.datasets import encode_covariates
from flame_private.data.errors import DataError, Problem, format_problems
from flame_private.data.layouts import LABEL_MAPS
from flame_private.data.layouts.flame import MANIFEST, manifest_site_id, read_flame
from flame_private.data.records import CaseRecord, Covariates, ImageFiles, TimepointRecord
from flame_private.data.transforms import preprocess
from flame_private.models.io import load_model
from flame_private.training import evolution_under_each_modality, response_under_each_modality

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_DAYS = 120
"""About the first evaluation after chemoradiation, counted from the planning MRI."""
_PATTERNS = {"t1": ("t1",), "t1ce": ("t1ce", "t1c", "t1gd", "ct1"), "t2": ("t2", "t2w"),
             "flair": ("flair", "t2f"), "seg": ("seg", "segm")}


@dataclass
class Prediction:
    patient_id: str
    probabilities: dict[str, float]
    segmentations: dict[str, np.ndarray]
    baseline_image: np.ndarray
    baseline_seg: np.ndarray
    interval_days: int
    voxel_ml: float
    affine: np.ndarray | None = None
    """Model-grid voxel -> RAS millimetres, where the preprocessing kept it: places the predictions back
    on the patient's scans (DICOM output)."""
    baseline_seg_source: str = "reference"
    """``reference`` (the case's own segmentation) or ``automatic (segmentation model sha256 <hex>)``."""
    segmentation_model_sha256: str | None = None
    """The segmentation model that drew the baseline segmentation, when one did."""

    def enhancing_ml(self) -> dict[str, float]:
        return {m: float((s == 3).sum() * self.voxel_ml) for m, s in self.segmentations.items()}


def _find(folder: Path) -> dict[str, Path]:
    """Baseline files by modality, by name: flame layout (t1.nii.gz) or BraTS-style suffixes (_t1ce.nii.gz)."""
    found: dict[str, Path] = {}
    files = sorted(p for p in folder.iterdir() if p.name.endswith((".nii.gz", ".nii")))
    for key, names in _PATTERNS.items():
        for p in files:
            stem = p.name.removesuffix(".gz").removesuffix(".nii").lower()
            if any(stem == n or stem.endswith(f"_{n}") or stem.endswith(f"-{n}") for n in names):
                found[key] = p
                break
    return found


def case_from_folder(case: Path, covariates: Covariates | None = None, need_seg: bool = True) -> CaseRecord:
    """A one-timepoint case record from a patient folder (flame layout or a BraTS-style folder).

    ``need_seg=False`` accepts a baseline without a segmentation (the segmentation model will draw it).
    """
    folder = case / "baseline" if (case / "baseline").is_dir() else case
    files = _find(folder)
    needed = ("t1", "t1ce", "t2", "flair", "seg") if need_seg else ("t1", "t1ce", "t2", "flair")
    missing = [k for k in needed if k not in files]
    if missing:
        hint = (" and seg NIfTI files; without a segmentation, give the baseline segmentation model "
                "(--segmentation-model)" if need_seg else " NIfTI files")
        raise DataError(f"{folder}: missing baseline file(s) for {', '.join(missing)} "
                        f"(expected t1, t1ce, t2, flair{hint})")
    layout: Layout = "flame" if folder.name == "baseline" else "brats2021"
    listed = _site_entry(case) if layout == "flame" else None
    if covariates is None and listed is not None:
        covariates = listed.covariates
    # Who drew the segmentation, as the site's manifest says (None: a reference).
    seg_source = listed.baseline.seg_source if listed is not None and "seg" in files else None
    if covariates is None:
        raise DataError(f"{case}: no clinical covariates: give --age, --sex, --mgmt/--no-mgmt and --resection "
                        "(or keep the folder next to its site's manifest.json)")
    tp = TimepointRecord(name="baseline", day=0, files=ImageFiles(**files), rano=None, seg_source=seg_source)
    return CaseRecord(patient_id=case.name, site_id="local", layout=layout, timepoints=[tp], treatment=None,
                      covariates=covariates, rano=None, responder=None, label_map=LABEL_MAPS[layout])


def _site_entry(case: Path) -> CaseRecord | None:
    """The case as its site's manifest lists it, when the folder sits in a flame-layout site folder; a
    manifest that cannot be read, or a bad entry for this patient, is refused naming the manifest."""
    manifest = case.parent / MANIFEST
    if not manifest.is_file():
        return None
    found: list[Problem] = []
    records = read_flame(case.parent, manifest_site_id(case.parent) or "local", problems=found)
    mine = [p for p in found if p.patient_id in (case.name, None)]
    if mine:
        raise DataError(format_problems(mine, f"{manifest}: cannot read the entry of {case.name}"))
    return next((r for r in records if r.patient_id == case.name), None)


def _load(path: Path, task: str) -> tuple[torch.nn.Module, DataConfig]:
    """The model of ``task`` saved at ``path``; another task's checkpoint is refused, naming both."""
    found, model, _, data_cfg = load_model(path)
    if found != task:
        raise DataError(f"{path}: a {found} model, where the {task} model is needed")
    return model, data_cfg


def predict_case(model_dir: Path, case: CaseRecord, interval_days: int = DEFAULT_INTERVAL_DAYS,
                 segmentation_model: Path | None = None) -> Prediction:
    """Both models under each modality for one patient; the models' data config sets the grid.

    A case without a baseline segmentation is segmented first by ``segmentation_model`` (default:
    ``segmentation.pt`` in ``model_dir`` when it is there); without one it is refused, naming the case.
    """
    response, data_cfg = _load(model_dir / "response.pt", "response")
    evolution, data_cfg_evo = _load(model_dir / "evolution.pt", "evolution")
    if data_cfg_evo != data_cfg:
        raise ValueError(f"{model_dir}: response and evolution models were trained on different grids")
    assert case.covariates is not None
    tensors = preprocess(case, data_cfg, with_affine=True)
    image = tensors["image"]
    source, drawn_by = "reference", None
    if case.baseline.files.seg is not None:
        seg = tensors["seg"]
        if case.baseline.seg_source is not None:  # drawn at import: still said to be automatic, and by which model
            source, drawn_by = case.baseline.seg_source, drawing_model(case.baseline.seg_source)
    else:
        path = segmentation_model or model_dir / "segmentation.pt"
        if not path.is_file():
            raise DataError(f"{case.patient_id}: the baseline has no segmentation and there is no baseline "
                            f"segmentation model ({path}): give --segmentation-model or the case's seg file")
        segmenter = Segmenter.load(path)
        if (segmenter.data_config.grid, segmenter.data_config.voxel_mm) != (data_cfg.grid, data_cfg.voxel_mm):
            raise DataError(f"{path}: trained on another grid than the response and evolution models in {model_dir}")
        seg, source, drawn_by = segmenter.on_model_grid(image), segmenter.source, segmenter.sha256
        log.info("%s: baseline segmentation drawn by %s", case.patient_id, path)
    probs = response_under_each_modality(response, image, seg, encode_covariates(case.covariates))
    segs = evolution_under_each_modality(evolution, image, seg, interval_days / 365.0)
    affine = tensors.get("affine")
    return Prediction(patient_id=case.patient_id, probabilities=probs, segmentations=segs,
                      baseline_image=image[1].numpy(), baseline_seg=seg[0].numpy().astype(np.uint8),
                      interval_days=interval_days, voxel_ml=data_cfg.voxel_mm**3 / 1000.0,
                      affine=None if affine is None else np.asarray(affine, dtype=np.float64),
                      baseline_seg_source=source,
                      segmentation_model_sha256=drawn_by)


def plot_prediction(pred: Prediction, out: Path) -> Path:
    """Baseline T1ce with the baseline tumour, then the predicted follow-up under each modality."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flame_private.cohort.figure import overlay, save_figure

    tumour = np.argwhere(pred.baseline_seg > 0)
    z = int(np.median(tumour[:, 2])) if len(tumour) else pred.baseline_seg.shape[2] // 2
    panels = [("baseline", pred.baseline_seg)] + [(m, pred.segmentations[m]) for m in MODALITIES]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.0))
    enh = pred.enhancing_ml()
    for ax, (name, seg) in zip(axes, panels, strict=True):
        base = "baseline" if pred.baseline_seg_source == "reference" else "baseline (automatic segmentation)"
        title = (f"{pred.patient_id}\n{base}" if name == "baseline" else
                 f"{name}: P(response) {pred.probabilities[name]:.2f}\nenhancing {enh[name]:.1f} mL")
        overlay(ax, pred.baseline_image[:, :, z], seg[:, :, z], title)
    fig.suptitle(f"predicted tumour {pred.interval_days} days after the planning MRI "
                 "(red necrosis, green oedema, yellow enhancing)", fontsize=8)
    return save_figure(fig, out)
