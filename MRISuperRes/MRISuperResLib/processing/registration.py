"""Registration of real low/high-resolution pairs with SimpleITK: rigid, then affine, by mutual information.

The two scans of a real pair are acquired separately (often with different contrasts, at different times), so the
subject sits differently in each; before patches can be cut from both, the low-resolution scan must be brought
into the high-resolution scan's frame. :func:`register` finds the transform with SimpleITK's v4 registration
framework: Mattes mutual information (works across contrasts), random sampling with a fixed seed, regular-step
gradient descent with physical-shift parameter scales, and a multi-resolution pyramid, first for a rigid
(Euler 3D) transform and then for an affine one started from the rigid result. :func:`resample_into` then puts
the moving scan on any grid of the fixed frame.

Conventions:

* Transforms follow ITK: they map points of the **fixed** image's physical space to the **moving** image's
  physical space (LPS mm), which is what resampling the moving image onto a fixed grid needs. Slicer reads such
  ``.tfm`` files and applies them to the moving volume to align it with the fixed one.
* Grids are cell-centred LPS grids (:class:`~MRISuperResLib.imaging.volume.Grid`), arrays are indexed ``[i, j, k]``.
* The Mattes metric value is the *negative* mutual information (nats): more negative is a better match. A value
  above :data:`MATCH_THRESHOLD` after registration means that the images do not show the same anatomy in an
  overlapping region, and :func:`register` raises :class:`~MRISuperResLib.errors.InputError`.

Results are reproducible bit for bit: random samples come from a fixed seed and the metric is summed in one
work unit (:data:`WORK_UNITS`), whatever the number of cores.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from ..errors import InputError, OutputError
from .interpolation import INTERPOLATORS
from ..imaging.volume import Grid, Volume
from ..imaging.volume_io import check_writable_target, commit_staged, grid_to_sitk_reference, staging_folder, to_sitk

#: Final Mattes mutual information (negative; more negative is better) above which a pair is said not to
#: match. Measured after registration (volumes at 2-3 mm unless noted): same-subject pairs -0.61 to -0.87
#: (IXI002 T1/T2 -0.61, and -0.58 at full resolution; stroke T1/T2/FLAIR -0.81 to -0.87), different subjects
#: or templates -0.40 to -0.71 (Colin27, MNI152, IXI, Seg3D, thick-slice T2w), nonsense pairs -0.001 to -0.015
#: (T1 against uniform or Gaussian noise, smooth random blobs). Below ~30 000 voxels the estimate is biased
#: towards matching (noise against a 20x20x16 volume reaches -0.16): the check is reliable above that size.
MATCH_THRESHOLD = -0.1

#: Work units the metric is split into. ITK adds the per-unit histograms in scheduling order, so with several
#: units results differ in the last digits from run to run (~1e-6 mm); with one they are bit-identical on every
#: machine. The cost is small here: full-resolution IXI002 T1/T2 (10 M voxels) registers in ~30 s.
WORK_UNITS = 1

#: Pyramid levels (the finest ones) the affine stage runs on.
AFFINE_LEVELS = 2

TRANSFORM_EXTENSIONS = (".tfm", ".txt", ".h5", ".hdf5", ".mat")


@dataclass(frozen=True)
class RegistrationResult:
    """What :func:`register` found.

    Attributes:
        transform: maps fixed LPS points (mm) to moving LPS points (ITK convention); an ``Euler3DTransform``
            (rigid only) or an ``AffineTransform``.
        metric: final Mattes mutual information over every fixed voxel (no sampling, no pyramid; negative,
            more negative is better).
        stage_metrics: the metric at the end of each stage (``"rigid"``, ``"affine"``), computed likewise.
        iterations: optimizer iterations per stage (all pyramid levels together).
        stop_conditions: the optimizer's stop reason per stage (its last level).
    """

    transform: sitk.Transform
    metric: float
    stage_metrics: dict[str, float] = field(default_factory=dict)
    iterations: dict[str, int] = field(default_factory=dict)
    stop_conditions: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (the transform as a 4x4 fixed->moving LPS matrix)."""
        return {
            "metric": self.metric,
            "stage_metrics": dict(self.stage_metrics),
            "iterations": dict(self.iterations),
            "transform_type": self.transform.GetName(),
            "fixed_to_moving_lps": affine_matrix(self.transform).tolist(),
        }


def register(
    fixed: Volume,
    moving: Volume,
    *,
    affine: bool = True,
    mask: np.ndarray | None = None,
    moving_mask: np.ndarray | None = None,
    seed: int = 0,
    bins: int = 50,
    sampling: float = 0.2,
    max_samples: int = 100_000,
    shrink_factors: Sequence[int] = (4, 2, 1),
    smoothing_sigmas: Sequence[float] = (2.0, 1.0, 0.0),
    iterations: int = 200,
    initializer: str = "moments",
    threshold: float | None = MATCH_THRESHOLD,
) -> RegistrationResult:
    """Register ``moving`` onto ``fixed``: rigid, then (optionally) affine, by Mattes mutual information.

    Args:
        fixed: the reference volume (e.g. the high-resolution scan); its frame is the output frame.
        moving: the volume to align (e.g. the low-resolution scan), any grid, any contrast.
        affine: after the rigid stage, refine with a 12-parameter affine transform.
        mask: optional boolean array on ``fixed``'s grid; only samples inside it count (e.g. the brain).
        moving_mask: optional boolean array on ``moving``'s grid, likewise.
        seed: seed of the random metric samples; the same seed gives the same result.
        bins: histogram bins of the mutual information.
        sampling: fraction of the (shrunk) fixed voxels sampled at each level, in (0, 1].
        max_samples: at most this many samples per level (bounds the time on large volumes).
        shrink_factors: pyramid shrink factors, coarse to fine (voxels).
        smoothing_sigmas: Gaussian sigma per level in fixed voxels (about half the shrink factor, to avoid
            aliasing).
        iterations: maximum optimizer iterations per level.
        initializer: ``"moments"`` (centres of mass aligned) or ``"geometry"`` (image centres aligned).
        threshold: raise :class:`InputError` when the final metric is above it; ``None`` never raises.

    Returns:
        A :class:`RegistrationResult` whose transform maps fixed LPS points to moving LPS points.

    Raises:
        InputError: the optimisation fails (e.g. the images do not overlap) or the final metric is above
            ``threshold``.
    """
    if initializer not in ("moments", "geometry"):
        raise ValueError(f"initializer must be 'moments' or 'geometry', got {initializer!r}")
    if not 0.0 < sampling <= 1.0:
        raise ValueError(f"sampling must be in (0, 1], got {sampling}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if len(shrink_factors) != len(smoothing_sigmas):
        raise ValueError("give one smoothing sigma per shrink factor")
    for role, volume in (("fixed", fixed), ("moving", moving)):
        if not np.ptp(volume.array) > 0:
            raise InputError(f"registration failed: the {role} volume is constant; give a volume with anatomy")
    fixed_image = _float_image(fixed)
    moving_image = _float_image(moving)
    settings = _Settings(
        seed, bins, _sampling_per_level(fixed.shape, shrink_factors, sampling, max_samples),
        tuple(shrink_factors), tuple(smoothing_sigmas), iterations,
        _mask_image(mask, fixed, "mask"), _mask_image(moving_mask, moving, "moving_mask"),
    )
    center = (sitk.CenteredTransformInitializerFilter.MOMENTS if initializer == "moments"
              else sitk.CenteredTransformInitializerFilter.GEOMETRY)
    current: sitk.Transform = sitk.Euler3DTransform(
        sitk.CenteredTransformInitializer(fixed_image, moving_image, sitk.Euler3DTransform(), center)
    )
    metrics: dict[str, float] = {}
    counts: dict[str, int] = {}
    stops: dict[str, str] = {}
    stages = ("rigid", "affine") if affine else ("rigid",)
    for stage in stages:
        levels = slice(None)
        if stage == "affine":
            current = _affine_from(current)
            # It starts near the optimum: coarse levels would only pull it towards their own, blurred optimum.
            levels = slice(-AFFINE_LEVELS, None)
        current, counts[stage], stops[stage] = _run_stage(fixed_image, moving_image, current, settings, levels)
        metrics[stage] = _evaluate(fixed_image, moving_image, current, settings)
    final = metrics[stages[-1]]
    if threshold is not None and not final < threshold:
        raise InputError(
            f"registration failed: final Mattes mutual information {final:.3f} is above {threshold:.3f} "
            "(images do not overlap anatomically); check that both volumes show the same subject and region"
        )
    return RegistrationResult(current, final, metrics, counts, stops)


@dataclass(frozen=True)
class _Settings:
    seed: int
    bins: int
    sampling: tuple[float, ...]
    shrink_factors: tuple[int, ...]
    smoothing_sigmas: tuple[float, ...]
    iterations: int
    fixed_mask: sitk.Image | None
    moving_mask: sitk.Image | None


def _metric_method(settings: _Settings, levels: slice = slice(-1, None)) -> sitk.ImageRegistrationMethod:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=settings.bins)
    method.SetMetricSamplingStrategy(method.RANDOM)
    # SimpleITK reads seed 0 as "wall clock" (a different draw every run), hence the offset.
    method.SetMetricSamplingPercentagePerLevel(list(settings.sampling[levels]), settings.seed + 1)
    if settings.fixed_mask is not None:
        method.SetMetricFixedMask(settings.fixed_mask)
    if settings.moving_mask is not None:
        method.SetMetricMovingMask(settings.moving_mask)
    method.SetInterpolator(sitk.sitkLinear)
    # With the pre-computed moving-gradient image, sampled metrics gave derivatives that drove the affine stage
    # uphill on its own metric (scales went to 0.99 where the dense MI wants 1.006 on IXI002). Gradients taken
    # at the sample points fix that, and make the rigid result more accurate too.
    method.SetMetricUseMovingImageGradientFilter(False)
    method.SetNumberOfWorkUnits(WORK_UNITS)
    return method


def _run_stage(
    fixed: sitk.Image, moving: sitk.Image, initial: sitk.Transform, settings: _Settings, levels: slice
) -> tuple[sitk.Transform, int, str]:
    method = _metric_method(settings, levels)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-4, numberOfIterations=settings.iterations, relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-8, estimateLearningRate=method.Once,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(settings.shrink_factors[levels]))
    method.SetSmoothingSigmasPerLevel(list(settings.smoothing_sigmas[levels]))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    method.SetInitialTransform(initial, inPlace=False)
    total = [0]
    method.AddCommand(sitk.sitkIterationEvent, lambda: total.__setitem__(0, total[0] + 1))
    try:
        result = method.Execute(fixed, moving)
    except RuntimeError as error:
        raise InputError(
            f"registration failed: {_itk_reason(error)}; check that both volumes show the same subject and "
            "region and overlap in physical space"
        ) from None
    # Execute wraps the optimised transform in a composite; keep the plain transform.
    plain = sitk.CompositeTransform(result).GetBackTransform() if result.GetName() == "CompositeTransform" else result
    return plain.Downcast(), total[0], method.GetOptimizerStopConditionDescription()


def _sampling_per_level(
    shape: Sequence[int], shrink_factors: Sequence[int], sampling: float, max_samples: int
) -> tuple[float, ...]:
    voxels = [float(np.prod([-(-n // f) for n in shape])) for f in shrink_factors]
    return tuple(min(sampling, max_samples / v) for v in voxels)


def _evaluate(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform, settings: _Settings) -> float:
    """Mattes MI at full resolution over every voxel (no sampling), so the value does not depend on the seed."""
    method = _metric_method(settings)
    method.SetMetricSamplingStrategy(method.NONE)
    method.SetInitialTransform(transform, inPlace=False)
    try:
        return float(method.MetricEvaluate(fixed, moving))
    except RuntimeError as error:
        raise InputError(f"registration failed: {_itk_reason(error)}; the aligned volumes do not overlap") from None


def _affine_from(transform: sitk.Transform) -> sitk.AffineTransform:
    rigid = sitk.Euler3DTransform(transform)
    return sitk.AffineTransform(rigid.GetMatrix(), rigid.GetTranslation(), rigid.GetCenter())


def _float_image(volume: Volume) -> sitk.Image:
    return to_sitk(volume, volume.array.astype(np.float32, copy=False))


def _mask_image(mask: np.ndarray | None, volume: Volume, name: str) -> sitk.Image | None:
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.shape != volume.shape:
        raise ValueError(f"{name} shape {mask.shape} does not match the volume shape {volume.shape}")
    if not mask.any():
        raise InputError(f"registration failed: the {name.replace('_', ' ')} is empty; give a mask of the anatomy")
    return to_sitk(volume, mask.astype(np.uint8))


def _itk_reason(error: RuntimeError) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    detail = lines[-1] if lines else "unknown reason"
    return detail.split("):", 1)[-1].strip()[:160]


def resample_into(moving: Volume, transform: sitk.Transform, grid: Grid, interpolator: str = "bspline",
                  default_value: float = 0.0) -> Volume:
    """``moving`` resampled onto ``grid`` of the fixed frame, through ``transform`` (fixed -> moving), as float32.

    Args:
        moving: the volume to resample; it is not modified.
        transform: fixed->moving transform, e.g. :attr:`RegistrationResult.transform`.
        grid: any grid in the fixed frame: the fixed volume's own, or a coarser cell-centred one over its extent
            (:func:`~MRISuperResLib.imaging.geometry.resampled_grid`). No anti-aliasing is applied for coarser grids.
        interpolator: ``"bspline"``, ``"linear"`` or ``"nearest"`` (masks and labels).
        default_value: value of output voxels that fall outside ``moving``.
    """
    image = _float_image(moving)
    resampled = sitk.Resample(image, grid_to_sitk_reference(grid), transform, INTERPOLATORS[interpolator],
                              float(default_value), sitk.sitkFloat32)
    array = np.ascontiguousarray(sitk.GetArrayFromImage(resampled).transpose(2, 1, 0))
    return moving.with_grid(array, grid)


def moving_grid_in_fixed_frame(moving: Grid, transform: sitk.Transform) -> Grid:
    """The moving volume's own grid (shape and spacing) placed in the fixed frame by ``transform``.

    For a rigid transform, resampling onto this grid samples ``moving`` exactly at its own voxel centres, so its
    voxel values are kept (only the geometry changes). For an affine transform the grid takes the rotation
    closest to the transform's linear part (the spacing is kept), so values are interpolated slightly.
    """
    inverse = transform.GetInverse()
    origin = np.asarray(inverse.TransformPoint(tuple(float(v) for v in moving.origin)))
    linear = affine_matrix(inverse)[:3, :3] @ moving.direction
    u, _, vt = np.linalg.svd(linear)
    return Grid(moving.shape, moving.spacing, tuple(origin), u @ vt)


def affine_matrix(transform: sitk.Transform) -> np.ndarray:
    """The 4x4 homogeneous LPS matrix of a linear (rigid, affine, or composite of such) transform.

    Found by mapping the origin and the three unit points, so it is exact for any linear transform; for a
    non-linear one it is the tangent at the origin only.
    """
    base = np.asarray(transform.TransformPoint((0.0, 0.0, 0.0)))
    matrix = np.eye(4)
    for axis in range(3):
        unit = [0.0, 0.0, 0.0]
        unit[axis] = 1.0
        matrix[:3, axis] = np.asarray(transform.TransformPoint(tuple(unit))) - base
    matrix[:3, 3] = base
    return matrix


def transform_points(transform: sitk.Transform, points: np.ndarray) -> np.ndarray:
    """Apply ``transform`` to LPS points given as an ``(..., 3)`` array (mm)."""
    flat = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    moved = np.array([transform.TransformPoint(tuple(p)) for p in flat])
    return moved.reshape(np.shape(points))


def check_transform_path(path: str | os.PathLike, overwrite: bool) -> Path:
    """Raise :class:`OutputError` unless ``path`` is a creatable transform file (``.tfm``, ``.h5`` ...)."""
    path = Path(path)
    if path.suffix.lower() not in TRANSFORM_EXTENSIONS:
        raise OutputError(f"transform file {path} has an unknown extension; use {', '.join(TRANSFORM_EXTENSIONS)}")
    check_writable_target(path, overwrite, volume_format=False)
    return path


def save_transform(transform: sitk.Transform, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Write ``transform`` (fixed -> moving, ITK convention) to ``.tfm``/``.txt``/``.h5``/``.mat``, atomically."""
    path = check_transform_path(path, overwrite)
    with staging_folder(path.parent) as staging:
        stage_transform(transform, staging, path.name)
        commit_staged({path.parent: staging}, overwrite)
    return path


def stage_transform(transform: sitk.Transform, staging: Path, name: str) -> None:
    """Write ``transform`` under its final ``name`` into a staging folder (see ``volume_io.staging_folder``)."""
    try:
        sitk.WriteTransform(transform, str(staging / name))
    except RuntimeError as error:
        raise OutputError(f"cannot write transform {name}: {_itk_reason(error)}") from None


def load_transform(path: str | os.PathLike) -> sitk.Transform:
    """Read a transform written by :func:`save_transform` (or by Slicer, BRAINSFit or ANTs: ``.tfm``, ``.h5``,
    ``.mat``); it maps fixed points to moving points."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"transform file {path} does not exist; check the path")
    try:
        transform = sitk.ReadTransform(str(path))
    except RuntimeError as error:
        raise InputError(f"cannot read transform {path}: {_itk_reason(error)}") from None
    return transform.Downcast()
