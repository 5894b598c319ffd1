"""N4 bias-field correction as seed 002 runs it: settings, masks, and the two-pass form with a head mask.

MRI intensities carry a smooth multiplicative bias field that changes from scan to scan; a network cannot predict
it, so it averages it out, and it must be removed from both members of a pair, above all at 7T (seed 002, section
1.2.1). N4 (Tustison et al. 2010, through SimpleITK's ``N4BiasFieldCorrectionImageFilter``) fits the log field
with a multi-level B-spline on a shrunk copy of the image; the fitted log field is then evaluated on the full grid
(``GetLogBiasFieldAsImage``) and divided out, see :func:`n4_bias_field`.

Where N4 fits the field matters: background, skull and neck make it fit badly (seed 002). The first pass is fitted
inside :attr:`N4Settings.mask` (``"otsu"``: Otsu's threshold as in SimpleITK's N4 examples; ``"none"``: every
voxel above 0; ``"head"`` / ``"brain"``: :mod:`.masks`). With :attr:`N4Settings.two_pass`, a mask is then made from
the corrected image (:attr:`N4Settings.second_mask`, seed 002 uses a brain mask with CSF) and N4 is fitted again on
the *original* image inside it: the final field is one N4 field, fitted where the tissue is.

:data:`SEED_002` holds the thesis's parameters (FWHM 0.18, Wiener noise 0.1, convergence 1e-7, 150 iterations at
four levels, shrink factor 4; about 2 minutes per 7T scan there).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..imaging.volume import Volume
from ..imaging.volume_io import to_sitk
from .masks import check_mask, foreground_mask

#: Where the first pass is fitted.
FIRST_MASKS = ("otsu", "none", "head", "brain")
#: Masks of the second pass, made from the image corrected by the first.
SECOND_MASKS = ("head", "brain")


@dataclass(frozen=True)
class N4Settings:
    """Parameters of an N4 correction (the keys of ``data.n4`` in a training config).

    Attributes:
        shrink: N4 runs on the image shrunk by this factor per axis (never below 4 voxels an axis); the field is
            evaluated at full resolution. 4 suits 1 mm scans; 2 is slightly better and about 5 times slower.
        iterations: maximum iterations per fitting level; the number of entries is the number of levels (the
            B-spline mesh doubles at each).
        convergence: a level stops when the change of the field falls below this.
        fwhm: width of the Gaussian that models the field's blur of the intensity histogram.
        wiener_noise: noise term of the Wiener deconvolution of the histogram.
        control_points: B-spline control points per axis at the first level.
        mask: where the (first) pass is fitted: one of :data:`FIRST_MASKS`.
        two_pass: fit again on the original image inside ``second_mask`` made from the first pass's result.
        second_mask: one of :data:`SECOND_MASKS`.
    """

    shrink: int = 4
    iterations: tuple[int, ...] = (50, 50, 30, 20)
    convergence: float = 1e-3
    fwhm: float = 0.15
    wiener_noise: float = 0.01
    control_points: int = 4
    mask: str = "otsu"
    two_pass: bool = False
    second_mask: str = "head"

    def __post_init__(self) -> None:
        object.__setattr__(self, "iterations", tuple(int(n) for n in self.iterations))
        if int(self.shrink) < 1:
            raise ValueError(f"n4 shrink must be >= 1, got {self.shrink}")
        if not self.iterations or min(self.iterations) < 1:
            raise ValueError(f"n4 iterations must be one or more positive counts (one per level), got "
                             f"{list(self.iterations)}")
        if not self.convergence >= 0 or not self.fwhm > 0 or not self.wiener_noise > 0:
            raise ValueError("n4 convergence must be >= 0 and fwhm, wiener_noise > 0")
        if self.control_points < 4:
            raise ValueError(f"n4 control_points must be at least 4 (cubic B-spline), got {self.control_points}")
        if self.mask not in FIRST_MASKS:
            raise ValueError(f"n4 mask must be one of {', '.join(FIRST_MASKS)}, got {self.mask!r}")
        if self.second_mask not in SECOND_MASKS:
            raise ValueError(f"n4 second_mask must be one of {', '.join(SECOND_MASKS)}, got {self.second_mask!r}")

    @classmethod
    def from_config(cls, value: bool | dict[str, Any] | None) -> N4Settings | None:
        """Settings from a config value: ``false``/``null`` (no N4), ``true`` (defaults) or a mapping of fields.

        Raises:
            ValueError: unknown keys (listing the valid ones) or impossible values.
        """
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if not isinstance(value, dict):
            raise TypeError(f"n4 must be true, false or a mapping of settings, got {type(value).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ValueError(f"unknown n4 key(s) {', '.join(unknown)}; valid keys: {', '.join(names)}")
        return cls(**value)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (the inverse of :meth:`from_config`)."""
        values = dataclasses.asdict(self)
        values["iterations"] = list(self.iterations)
        return values


#: The parameters of seed 002 (section 1.2.1), two passes with a brain mask (CSF kept) for the second.
SEED_002 = N4Settings(shrink=4, iterations=(150, 150, 150, 150), convergence=1e-7, fwhm=0.18, wiener_noise=0.1,
                      mask="otsu", two_pass=True, second_mask="brain")


@dataclass(frozen=True)
class N4Result:
    """What :func:`n4_correct` did.

    Attributes:
        corrected: the input divided by ``field`` (float32, same grid and metadata).
        field: the multiplicative bias field of the last pass (float32; about 1 inside its mask).
        masks: the boolean mask each pass was fitted in (``[i, j, k]``), in order.
        seconds: wall time per pass.
    """

    corrected: Volume
    field: Volume
    masks: list[np.ndarray] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def summary(self, settings: N4Settings) -> dict[str, Any]:
        """JSON-ready summary: settings, time and mask size of each pass, and the field's range in its mask."""
        inside = self.field.array[self.masks[-1]] if self.masks[-1].any() else self.field.array
        voxel_ml = float(np.prod(self.field.spacing)) / 1000.0
        return {
            "settings": settings.to_dict(),
            "passes": [{"seconds": round(s, 2), "mask_ml": round(float(m.sum()) * voxel_ml, 1)}
                       for s, m in zip(self.seconds, self.masks)],
            "field_p1_p99": [round(float(v), 4) for v in np.percentile(inside, [1, 99])],
        }


def pass_mask(volume: Volume, kind: str) -> np.ndarray:
    """The boolean mask named ``kind`` (:data:`FIRST_MASKS` or :data:`SECOND_MASKS`) of ``volume``."""
    from .masks import brain_mask, head_mask
    from ..imaging.volume_io import to_sitk

    if kind == "none":
        return volume.array > 0
    if kind == "otsu":
        image = to_sitk(volume, volume.array.astype(np.float32))
        return np.ascontiguousarray(sitk.GetArrayFromImage(sitk.OtsuThreshold(image, 0, 1, 200)).transpose(2, 1, 0)
                                    > 0)
    if kind == "head":
        return head_mask(volume)
    if kind == "brain":
        return brain_mask(volume)
    raise ValueError(f"unknown N4 mask {kind!r}")


def n4_bias_field(
    volume: Volume,
    mask: np.ndarray | None = None,
    *,
    shrink: int | Sequence[int] = 4,
    iterations: Sequence[int] = (50, 50, 30, 20),
    control_points: int = 4,
    spline_order: int = 3,
    convergence: float = 1e-3,
    fwhm: float = 0.15,
    bins: int = 200,
    wiener_noise: float = 0.01,
) -> Volume:
    """The multiplicative bias field that N4 finds in ``volume`` (float32, about 1 inside the mask).

    Args:
        volume: the scan; voxels must be non-negative (magnitude images).
        mask: boolean array on the volume's grid where the field is fitted (e.g. the head or brain); by
            default :func:`foreground_mask` with its defaults. Voxels <= 0 are left out either way (N4 fits
            the log intensity).
        shrink: N4 runs on the volume shrunk by this factor (one, or one per axis ``i, j, k``); the fitted
            B-spline field is then evaluated on the full grid. Larger is faster; 4 suits 1 mm scans.
        iterations: maximum iterations per fitting level; the number of entries is the number of levels
            (the B-spline mesh doubles at each).
        control_points: B-spline control points per axis at the first level (at least ``spline_order + 1``).
        spline_order: order of the B-spline field.
        convergence: stop a level when the change of the field falls below this.
        fwhm: full width at half maximum of the Gaussian that models the field's blur of the histogram.
        bins: histogram bins of the sharpening step.
        wiener_noise: noise term of the Wiener deconvolution of the histogram (seed 002 uses 0.1).

    Two-pass correction with the settings of a config: :func:`n4_correct`.
    """
    if np.any(volume.array < 0):
        raise InputError("N4 bias-field correction needs non-negative intensities (a magnitude image)")
    mask = foreground_mask(volume) if mask is None else check_mask(mask, volume)
    mask = mask & (volume.array > 0)
    if not mask.any():
        raise InputError("N4 bias-field correction has an empty mask; give a mask that covers the anatomy")
    image = to_sitk(volume, volume.array.astype(np.float32))
    mask_image = to_sitk(volume, mask.astype(np.uint8))
    factors = [int(shrink)] * 3 if np.isscalar(shrink) else [int(f) for f in shrink]  # type: ignore[arg-type]
    # Never shrink an axis below a few voxels (thick-slice scans have few slices).
    factors = [max(1, min(f, n // 4)) for f, n in zip(factors, volume.shape)]
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([int(n) for n in iterations])
    corrector.SetNumberOfControlPoints([int(control_points)] * 3)
    corrector.SetSplineOrder(int(spline_order))
    corrector.SetConvergenceThreshold(float(convergence))
    corrector.SetBiasFieldFullWidthAtHalfMaximum(float(fwhm))
    corrector.SetNumberOfHistogramBins(int(bins))
    corrector.SetWienerFilterNoise(float(wiener_noise))
    corrector.Execute(sitk.Shrink(image, factors), sitk.Shrink(mask_image, factors))
    log_field = corrector.GetLogBiasFieldAsImage(image)
    field = np.exp(sitk.GetArrayFromImage(log_field).transpose(2, 1, 0)).astype(np.float32)
    return volume.with_array(np.ascontiguousarray(field))


def n4_correct(volume: Volume, settings: N4Settings = N4Settings(), mask: np.ndarray | None = None) -> N4Result:
    """Correct ``volume``'s bias field with N4, in one or two passes (see the module docstring).

    Args:
        volume: a magnitude image (no negative voxels); it is not modified.
        settings: the N4 parameters and masks.
        mask: a boolean ``[i, j, k]`` mask to fit the first pass in, instead of ``settings.mask`` (e.g. a mask
            drawn on the scan).

    Raises:
        InputError: negative intensities, a constant volume, or an empty mask.
    """
    if not np.ptp(volume.array) > 0:
        raise InputError("the volume is constant; N4 needs a volume with anatomy in it")
    original = volume.with_array(volume.array.astype(np.float32))
    if np.any(original.array < 0):
        raise InputError("N4 bias-field correction needs non-negative intensities (a magnitude image); this volume "
                         "has negative values")
    options = {"shrink": settings.shrink, "iterations": settings.iterations, "convergence": settings.convergence,
               "fwhm": settings.fwhm, "wiener_noise": settings.wiener_noise,
               "control_points": settings.control_points}
    first = pass_mask(original, settings.mask) if mask is None else np.asarray(mask, dtype=bool)
    masks, seconds = [first], []
    start = time.perf_counter()
    bias = n4_bias_field(original, first, **options)  # type: ignore[arg-type]
    seconds.append(time.perf_counter() - start)
    if settings.two_pass:
        corrected = original.with_array(original.array / bias.array)
        second = pass_mask(corrected, settings.second_mask)
        masks.append(second)
        start = time.perf_counter()
        bias = n4_bias_field(original, second, **options)  # type: ignore[arg-type]
        seconds.append(time.perf_counter() - start)
    corrected = original.with_array((original.array / bias.array).astype(np.float32))
    return N4Result(corrected, bias, masks, seconds)


def parse_iterations(text: str | Sequence[int]) -> tuple[int, ...]:
    """``"50,50,30,20"`` or ``"150x4"`` (150 at four levels, ANTs' notation) as a tuple of counts."""
    if not isinstance(text, str):
        return tuple(int(n) for n in text)
    text = text.strip()
    try:
        if "x" in text and "," not in text:
            count, levels = text.split("x")
            return (int(count),) * int(levels)
        return tuple(int(n) for n in text.split(","))
    except ValueError:
        raise ValueError(f"iterations {text!r} are not understood; give counts per level like 50,50,30,20 or "
                         "150x4") from None
