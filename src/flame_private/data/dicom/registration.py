"""Co-registration onto the baseline T1ce, resampling, and brain extraction.

Every sequence and timepoint of a patient is registered rigidly to the baseline
T1ce (Mattes mutual information, which is what makes T2 or FLAIR comparable
with T1ce) and resampled onto one isotropic grid over the T1ce's field of view,
so the models see voxels that correspond across sequences and time. The brain is
extracted with the MNI152 brain mask (shipped inside nilearn's wheel, nothing
downloaded), registered affinely onto the patient's T1.
"""

from __future__ import annotations

import functools

import numpy as np
import SimpleITK as sitk

from flame_private.config import StrictModel
from flame_private.data.dicom.volume import from_ras

REGISTRATION_SEED = 20240917
"""Fixed seed of the metric's random sampling: the same scans give the same transforms."""
METRIC_SAMPLES = 50_000
"""Voxels the metric samples per iteration, whatever the image size: mutual information needs tens of
thousands of samples, not a fraction of a 1 mm volume's ten million (which made a 1 mm import take minutes
per series)."""


def _sampling(image: sitk.Image) -> float:
    voxels = 1
    for n in image.GetSize():
        voxels *= n
    return min(1.0, METRIC_SAMPLES / voxels)


class Registration(StrictModel):
    """One rigid registration, kept in the import report for the site to audit."""

    rotation_deg: list[float]
    translation_mm: list[float]
    metric: float
    """Final Mattes mutual information (negative: lower is better)."""
    parameters: list[float]
    """Euler angles (rad) then translation (mm) about ``center``, in LPS: the transform takes a point of the
    baseline T1ce (fixed) to the same anatomy in the registered series (moving), SimpleITK's convention."""
    center: list[float]

    def transform(self) -> sitk.Euler3DTransform:
        t = sitk.Euler3DTransform()
        t.SetCenter(self.center)
        t.SetParameters(self.parameters)
        return t


def isotropic_reference(image: sitk.Image, voxel_mm: float) -> sitk.Image:
    """An empty grid of VOXEL_MM cubes covering IMAGE's field of view, in its orientation."""
    size = [max(1, int(round(n * s / voxel_mm))) for n, s in zip(image.GetSize(), image.GetSpacing(), strict=True)]
    ref = sitk.Image(size, sitk.sitkFloat32)
    ref.SetDirection(image.GetDirection())
    ref.SetSpacing((voxel_mm,) * 3)
    # Keep the field of view's centre where it was.
    centre_index = [(n - 1) / 2 for n in image.GetSize()]
    centre = np.asarray(image.TransformContinuousIndexToPhysicalPoint(centre_index))
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    origin = centre - direction @ (np.asarray([(n - 1) / 2 for n in size]) * voxel_mm)
    ref.SetOrigin(tuple(float(v) for v in origin))
    return ref


def _mutual_information(fixed: sitk.Image, moving: sitk.Image, initial: sitk.Transform, *, learning_rate: float,
                        iterations: int, shrink: list[int], sigmas_mm: list[float],
                        **optimizer: float) -> tuple[sitk.ImageRegistrationMethod, sitk.Transform]:
    """Register MOVING onto FIXED (both float32) by Mattes mutual information from INITIAL; the method (for its
    final metric) and the transform. Seeded sampling of at most METRIC_SAMPLES voxels, step gradient descent
    scaled by physical shift, a pyramid of SHRINK factors smoothed by SIGMAS_MM."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(_sampling(fixed), seed=REGISTRATION_SEED)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=learning_rate, minStep=1e-3,
                                                   numberOfIterations=iterations, **optimizer)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(shrink)
    method.SetSmoothingSigmasPerLevel(sigmas_mm)
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=False)
    return method, method.Execute(fixed, moving)


def register_rigid(fixed: sitk.Image, moving: sitk.Image) -> Registration:
    """The rigid transform that maps FIXED's points into MOVING (SimpleITK's convention)."""
    fixed_f = sitk.Cast(fixed, sitk.sitkFloat32)
    moving_f = sitk.Cast(moving, sitk.sitkFloat32)
    initial = sitk.CenteredTransformInitializer(fixed_f, moving_f, sitk.Euler3DTransform(),
                                                sitk.CenteredTransformInitializerFilter.MOMENTS)
    spacing = max(fixed.GetSpacing())
    # Three levels at most, the coarsest that keep 16 voxels a side: a 1 mm volume registers at 8, 4 and
    # 2 mm, which is finer than a rigid transform needs and four times faster than ending at 1 mm.
    levels = [f for f in (8, 4, 2, 1) if min(fixed.GetSize()) // f >= 16][:3] or [1]
    method, final = _mutual_information(fixed_f, moving_f, initial, learning_rate=2.0, iterations=200,
                                        shrink=levels, sigmas_mm=[spacing * (f - 1) / 2 for f in levels],
                                        relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6)
    euler = sitk.Euler3DTransform(sitk.CompositeTransform(final).GetBackTransform()) \
        if isinstance(final, sitk.CompositeTransform) else sitk.Euler3DTransform(final)
    params = list(euler.GetParameters())
    # Rounded to 4 decimals (0.1 mrad, 0.1 micrometre): finer than any registration, and short enough that no run of
    # digits in the report can spell a patient's date or numeric ID by chance (deidentify's last gate).
    return Registration(
        rotation_deg=[round(float(np.degrees(a)), 4) for a in params[:3]],
        translation_mm=[round(float(v), 4) for v in params[3:]],
        metric=round(float(method.GetMetricValue()), 4),
        parameters=[round(float(v), 4) for v in params[:3]] + [round(float(v), 4) for v in params[3:]],
        center=[round(float(v), 4) for v in euler.GetCenter()],
    )


def resample(image: sitk.Image, reference: sitk.Image, transform: sitk.Transform | None = None,
             labels: bool = False) -> sitk.Image:
    """IMAGE on REFERENCE's grid: B-spline for intensities, nearest neighbour for label maps."""
    interpolator = sitk.sitkNearestNeighbor if labels else sitk.sitkBSpline
    out = sitk.Resample(image, reference, transform or sitk.Transform(), interpolator, 0.0,
                        sitk.sitkUInt8 if labels else sitk.sitkFloat32)
    if not labels:
        out = sitk.Clamp(out, sitk.sitkFloat32, *_range(image))  # B-spline overshoot stays in the data's range
    return out


def _range(image: sitk.Image) -> tuple[float, float]:
    stats = sitk.MinimumMaximumImageFilter()
    stats.Execute(image)
    return float(stats.GetMinimum()), float(stats.GetMaximum())


@functools.lru_cache(maxsize=1)
def _mni() -> tuple[sitk.Image, sitk.Image]:
    """The MNI152 T1 template and its brain mask (2 mm) as SimpleITK images (LPS)."""
    from nilearn import datasets  # heavy import: only when a brain is extracted

    def to_sitk(img: object, dtype: type) -> sitk.Image:
        return from_ras(np.asarray(img.get_fdata(), dtype=dtype), img.affine)  # type: ignore[attr-defined]

    template = to_sitk(datasets.load_mni152_template(resolution=2), np.float32)
    mask = to_sitk(datasets.load_mni152_brain_mask(resolution=2), np.uint8)
    return template, mask


def brain_mask(t1: sitk.Image, reference: sitk.Image, dilate_mm: float = 4.0) -> tuple[sitk.Image, float]:
    """The MNI152 brain mask on REFERENCE's grid, fitted to T1 by an affine registration.

    Returns the mask and the registration's final metric. The mask is dilated by
    DILATE_MM so that a registration error of a few millimetres never cuts tumour.
    """
    template, mask = _mni()
    fixed = sitk.Cast(t1, sitk.sitkFloat32)
    initial = sitk.CenteredTransformInitializer(fixed, template, sitk.AffineTransform(3),
                                                sitk.CenteredTransformInitializerFilter.MOMENTS)
    method, transform = _mutual_information(fixed, template, initial, learning_rate=1.0, iterations=150,
                                            shrink=[2, 1], sigmas_mm=[2.0, 0.0])
    fitted = sitk.Resample(mask, reference, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    radius = max(1, int(round(dilate_mm / min(reference.GetSpacing()))))
    return sitk.BinaryDilate(fitted, [radius] * 3), float(method.GetMetricValue())


def registration_error_mm(estimated: Registration, motion: list[float], centre: list[float],
                          points: np.ndarray) -> float:
    """Mean distance (mm) between where the registration and the true motion send POINTS back.

    MOTION is the rigid motion the follow-up's content underwent (Euler angles
    then translation, about CENTRE), as ``export`` writes it; a perfect
    registration composes with it to the identity.
    """
    truth = sitk.Euler3DTransform()
    truth.SetCenter(centre)
    truth.SetParameters(motion)
    est = estimated.transform()
    errors = [np.linalg.norm(np.asarray(truth.TransformPoint(est.TransformPoint(tuple(p)))) - p) for p in points]
    return float(np.mean(errors))
