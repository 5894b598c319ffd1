"""Augmentations applied identically to both members of a training pair.

Patch-level (:func:`augment_batch`): random flips and 90-degree rotations (rotations only in planes whose two axes
share the scale factor and the patch size, so the pair stays aligned), intensity scale and shift (linear, so they
commute with the B-spline skip), and extra noise on the low-resolution input.

Volume-level (:func:`gmm_contrast`): the Gaussian-mixture contrast augmentation of seed 002 section 1.3.1 (after
Meyer et al.): fit three Gaussians (CSF, grey and white matter) to the foreground intensities, perturb their
means and standard deviations, and move every voxel so that its distance to its class mean, in class standard
deviations, is kept. Responsibilities are soft, which avoids the artefact the thesis reports between classes.

Volume-level, spatial (:func:`random_displacement`, :func:`warp`): elastic and grid distortions (seed 002 section
1.3.2, albumentations in seed 000) defined in physical space, so both members of a pair are deformed identically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..processing.bspline import bspline_upsample


@dataclass(frozen=True)
class PatchBatch:
    """Aligned training patches, shape ``(batch, 1, ...)``: ``low`` on the coarse grid; ``baseline`` (B-spline
    of ``low``) and ``high`` (target) on the fine grid; all in normalised units. For a conditioned model,
    ``context`` ``(batch, dim)`` holds each patch's subject context and ``slice_positions`` ``(batch, slices)`` the
    position in its whole volume of every fine slice along the network's slice axis (:mod:`..conditioning`)."""

    low: torch.Tensor
    baseline: torch.Tensor
    high: torch.Tensor
    context: torch.Tensor | None = None
    slice_positions: torch.Tensor | None = None


def allowed_rotation_planes(scale: Sequence[float], patch: Sequence[int]) -> list[tuple[int, int]]:
    """Axis pairs ``(a, b)`` in which a 90-degree rotation keeps a low/high pair aligned."""
    return [(a, b) for a in range(3) for b in range(a + 1, 3) if scale[a] == scale[b] and patch[a] == patch[b]]


def augment_batch(
    batch: PatchBatch,
    rng: np.random.Generator,
    *,
    scale: Sequence[int],
    flips: bool = True,
    rot90: bool = True,
    intensity_scale: Sequence[float] = (1.0, 1.0),
    intensity_shift: Sequence[float] = (0.0, 0.0),
    noise: Sequence[float] = (0.0, 0.0),
    slice_axis: int | None = None,
) -> PatchBatch:
    """Apply one random draw per sample to its three aligned patches.

    With ``batch.slice_positions`` (along ``slice_axis``), a flip of that axis reverses the positions too and no
    rotation moves that axis, so every slice keeps its own position.
    """
    lows, baselines, highs, positions = [], [], [], []
    planes = allowed_rotation_planes(scale, batch.low.shape[2:]) if rot90 else []
    if batch.slice_positions is not None:
        planes = [plane for plane in planes if slice_axis not in plane]
    for index, (low, baseline, high) in enumerate(zip(batch.low, batch.baseline, batch.high)):
        position = batch.slice_positions[index] if batch.slice_positions is not None else None
        if flips:
            axes = [a + 1 for a in range(3) if rng.random() < 0.5]
            if axes:
                low, baseline, high = (t.flip(axes) for t in (low, baseline, high))
                if position is not None and slice_axis is not None and slice_axis + 1 in axes:
                    position = position.flip(0)
        positions.append(position)
        if planes:
            a, b = planes[int(rng.integers(len(planes)))]
            turns = int(rng.integers(4))
            if turns:
                low, baseline, high = (torch.rot90(t, turns, (a + 1, b + 1)) for t in (low, baseline, high))
        gain = float(rng.uniform(*intensity_scale))
        offset = float(rng.uniform(*intensity_shift))
        low, baseline, high = (t * gain + offset for t in (low, baseline, high))
        low, baseline = add_input_noise(low, baseline, rng, noise, scale)
        lows.append(low.contiguous())
        baselines.append(baseline.contiguous())
        highs.append(high.contiguous())
    return PatchBatch(torch.stack(lows), torch.stack(baselines), torch.stack(highs), batch.context,
                      torch.stack(positions) if batch.slice_positions is not None else None)  # type: ignore[arg-type]


def add_input_noise(low: torch.Tensor, baseline: torch.Tensor, rng: np.random.Generator, noise: Sequence[float],
                    scale: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """One sample's input ``low`` ``(1, *coarse)`` plus white Gaussian noise of a standard deviation drawn from
    ``noise`` (``[low, high]``, normalised units), and its B-spline ``baseline`` ``(1, *fine)`` updated to match;
    both unchanged when the drawn deviation is 0. Draws from ``rng`` only when ``noise[1] > 0``."""
    sigma = float(rng.uniform(*noise)) if noise[1] > 0 else 0.0
    if sigma <= 0:
        return low, baseline
    generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
    extra = torch.randn(low.shape, generator=generator) * sigma
    # B-spline is linear: the skip of the noisy input is the old skip plus the noise's own upsampling.
    return low + extra, baseline + bspline_upsample(extra[None], scale)[0]


def noisy_twin(batch: PatchBatch, rng: np.random.Generator, noise: Sequence[float], scale: Sequence[int]) -> PatchBatch:
    """``batch`` with more noise on every input (:func:`add_input_noise`, one deviation per sample) and the same
    targets, context and slice positions: the perturbed input of stability training (``loss.stability``)."""
    pairs = [add_input_noise(low, baseline, rng, noise, scale) for low, baseline in zip(batch.low, batch.baseline)]
    return PatchBatch(torch.stack([low for low, _ in pairs]), torch.stack([baseline for _, baseline in pairs]),
                      batch.high, batch.context, batch.slice_positions)


def fit_gaussian_mixture(
    values: np.ndarray, components: int = 3, iterations: int = 60, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1D Gaussian mixture by expectation-maximisation: ``(weights, means, stds)`` sorted by mean.

    Initialised at evenly spaced quantiles; a subsample of at most 200 000 values is used.
    """
    rng = rng or np.random.default_rng(0)
    sample = values if values.size <= 200_000 else rng.choice(values, 200_000, replace=False)
    sample = sample.astype(np.float64)
    means = np.quantile(sample, (np.arange(components) + 0.5) / components)
    stds = np.full(components, sample.std() / components + 1e-6)
    weights = np.full(components, 1.0 / components)
    for _ in range(iterations):
        resp = _responsibilities(sample, weights, means, stds)
        total = resp.sum(axis=0) + 1e-12
        weights = total / sample.size
        means = (resp * sample[:, None]).sum(axis=0) / total
        stds = np.sqrt((resp * (sample[:, None] - means) ** 2).sum(axis=0) / total) + 1e-6
    order = np.argsort(means)
    return weights[order], means[order], stds[order]


def _responsibilities(values: np.ndarray, weights: np.ndarray, means: np.ndarray, stds: np.ndarray) -> np.ndarray:
    log_p = -0.5 * ((values[:, None] - means) / stds) ** 2 - np.log(stds) + np.log(weights + 1e-12)
    log_p -= log_p.max(axis=1, keepdims=True)
    p = np.exp(log_p)
    return p / p.sum(axis=1, keepdims=True)


def gmm_contrast(
    array: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    mean_shift: float = 0.05,
    std_scale: float = 0.15,
) -> np.ndarray:
    """Gaussian-mixture contrast augmentation of a normalised volume (values outside ``mask`` kept).

    Each class mean moves by up to ``mean_shift`` (normalised units) and each standard deviation scales by up
    to ``1 +- std_scale``; voxel ``v`` of class ``k`` maps to ``mu'_k + (v - mu_k) / sigma_k * sigma'_k``,
    blended over classes by their responsibilities.
    """
    weights, means, stds = fit_gaussian_mixture(array[mask], rng=rng)
    new_means = means + rng.uniform(-mean_shift, mean_shift, size=means.shape)
    new_stds = stds * rng.uniform(1 - std_scale, 1 + std_scale, size=stds.shape)
    values = array[mask].astype(np.float64)
    resp = _responsibilities(values, weights, means, stds)
    moved = new_means + (values[:, None] - means) / stds * new_stds
    result = array.astype(np.float32).copy()
    result[mask] = (resp * moved).sum(axis=1).astype(np.float32)
    return result


@dataclass(frozen=True)
class ElasticSettings:
    """Random spatial distortion of a whole training subject (the config's ``augment.elastic`` mapping).

    Seed 002 (section 1.3.2) proposes grid distortions and elastic transforms "to account for the variety of brain
    shapes" (after albumentations, also named in seed 000). Here both are smooth displacement fields defined in
    physical space over the subject's extent, so the high-resolution volume and a real low-resolution partner (two
    grids over the same extent) get the identical deformation; a simulated input is simulated from the deformed
    high-resolution volume, so it matches it exactly.

    Attributes:
        probability: chance of a new distortion at each re-simulation (0: off).
        kind: ``"elastic"``: a random low-order Fourier series per displacement component (a smooth field whose
            shortest wavelength is ``2 * control_spacing_mm``); ``"grid"``: albumentations' grid distortion in
            3D, the extent cut into cells of about ``control_spacing_mm`` along each axis and each cell stretched
            or squeezed independently per axis (piecewise linear, never folding).
        max_displacement_mm: largest displacement of any point (mm).
        control_spacing_mm: size of the deformation's features (mm).
    """

    probability: float = 0.0
    kind: str = "elastic"
    max_displacement_mm: float = 4.0
    control_spacing_mm: float = 40.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"elastic probability must be in [0, 1], got {self.probability}")
        if self.kind not in ("elastic", "grid"):
            raise ValueError(f"elastic kind must be 'elastic' or 'grid', got {self.kind!r}")
        if not self.max_displacement_mm >= 0 or not self.control_spacing_mm > 0:
            raise ValueError("elastic max_displacement_mm must be >= 0 and control_spacing_mm > 0")

    @classmethod
    def from_config(cls, value: dict[str, float | str] | None) -> ElasticSettings | None:
        """Settings from ``augment.elastic`` (``null`` or ``{}``: off); unknown keys raise ``ValueError``."""
        if not value:
            return None
        if not isinstance(value, dict):
            raise TypeError(f"augment.elastic must be a mapping, got {type(value).__name__}")
        names = {"probability", "kind", "max_displacement_mm", "control_spacing_mm"}
        unknown = sorted(set(value) - names)
        if unknown:
            raise ValueError(f"unknown augment.elastic key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(names))}")
        settings = cls(**value)  # type: ignore[arg-type]
        return settings if settings.probability > 0 else None


#: Spacing (mm) of the lattice that holds a displacement field; between its nodes the field is trilinear.
LATTICE_MM = 4.0


class Displacement:
    """A smooth displacement field ``u(x)`` (mm) over a box of ``extent_mm`` (``i, j, k``) starting at 0.

    Held as its values on a lattice of nodes every ~:data:`LATTICE_MM` mm spanning the box, and trilinear between
    them: a function of the physical point, not of a voxel grid, so every grid over the box samples the same
    deformation. Build one with :func:`random_displacement`; warp arrays with :func:`warp`.

    Attributes:
        extent: box size (mm) along ``i, j, k``.
        lattice: ``(Li, Lj, Lk, 3)`` displacements (mm) at nodes ``linspace(0, extent, L)`` per axis.
    """

    def __init__(self, extent_mm: Sequence[float], lattice: np.ndarray) -> None:
        self.extent = np.asarray(extent_mm, dtype=np.float64)
        self.lattice = np.asarray(lattice, dtype=np.float32)

    def on_grid(self, axes_mm: Sequence[np.ndarray]) -> torch.Tensor:
        """Displacements (mm), tensor ``(3, I, J, K)``, at the product grid of ``axes_mm`` (mm from the corner)."""
        normalised = [torch.from_numpy((2.0 * np.asarray(x) / e - 1.0).astype(np.float32))
                      for x, e in zip(axes_mm, self.extent)]
        mesh = torch.meshgrid(*normalised, indexing="ij")
        grid = torch.stack(mesh[::-1], dim=-1)[None]  # grid_sample wants (x=k, y=j, z=i)
        nodes = torch.from_numpy(np.ascontiguousarray(self.lattice.transpose(3, 0, 1, 2)))[None]
        values = torch.nn.functional.grid_sample(nodes, grid, mode="bilinear", padding_mode="border",
                                                 align_corners=True)
        return values[0]

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Displacements (mm) at scattered ``points`` of shape ``(..., 3)`` (mm from the box's corner)."""
        points = np.asarray(points, dtype=np.float64)
        flat = points.reshape(-1, 3)
        normalised = torch.from_numpy((2.0 * flat / self.extent - 1.0)[:, ::-1].astype(np.float32).copy())
        nodes = torch.from_numpy(np.ascontiguousarray(self.lattice.transpose(3, 0, 1, 2)))[None]
        values = torch.nn.functional.grid_sample(nodes, normalised[None, :, None, None], mode="bilinear",
                                                 padding_mode="border", align_corners=True)
        return values[0, :, :, 0, 0].T.numpy().astype(np.float64).reshape(points.shape)


def random_displacement(extent_mm: Sequence[float], settings: ElasticSettings, rng: np.random.Generator) -> Displacement:
    """Draw a :class:`Displacement` over a box of ``extent_mm`` (see :class:`ElasticSettings`).

    ``"elastic"``: each component is ``Re(sum_f c_f exp(i pi f . t))`` over integer frequencies ``f`` in
    ``[0, cells]^3`` (``t = x / extent``, ``cells`` = extent / control spacing), complex normal ``c_f`` weighted by
    ``1 / |f|`` and no constant term, scaled to ``max_displacement_mm`` at its largest. ``"grid"``: per axis, the
    cells' widths scaled by random factors and renormalised to the extent (a piecewise-linear, monotone map).
    """
    extent = np.asarray(extent_mm, dtype=np.float64)
    cells = np.maximum(1, np.round(extent / settings.control_spacing_mm)).astype(int)
    spacing = min(LATTICE_MM, settings.control_spacing_mm / 4)
    axes_t = [np.linspace(0.0, 1.0, int(np.ceil(e / spacing)) + 1) for e in extent]
    shape = tuple(len(t) for t in axes_t)
    if settings.kind == "grid":
        lattice = np.zeros((*shape, 3))
        for axis in range(3):
            knots = np.linspace(0.0, 1.0, cells[axis] + 1)
            # Widths scaled by up to +-limit: every point stays within about max_displacement_mm, every width > 0.
            limit = min(0.5, settings.max_displacement_mm / max(extent[axis], 1e-9) * cells[axis])
            widths = np.diff(knots) * (1.0 + rng.uniform(-limit, limit, cells[axis]))
            moved = np.concatenate([[0.0], np.cumsum(widths) / widths.sum()])
            along = (np.interp(axes_t[axis], knots, moved) - axes_t[axis]) * extent[axis]
            lattice[..., axis] = np.expand_dims(along, [a for a in range(3) if a != axis])
        return Displacement(extent, lattice)
    size = (*(cells + 1), 3)
    coefficients = rng.normal(size=size) + 1j * rng.normal(size=size)
    frequency = np.sqrt(sum(np.meshgrid(*[np.arange(n) ** 2 for n in size[:3]], indexing="ij")))
    coefficients *= (frequency > 0)[..., None] / np.maximum(frequency, 1.0)[..., None]
    waves = [np.exp(1j * np.pi * np.outer(t, np.arange(n))) for t, n in zip(axes_t, size[:3])]
    lattice = np.einsum("if,jg,kh,fghd->ijkd", *waves, coefficients, optimize=True).real
    peak = float(np.linalg.norm(lattice, axis=-1).max())
    return Displacement(extent, lattice * (settings.max_displacement_mm / peak if peak > 0 else 0.0))


def warp(array: np.ndarray, spacing: Sequence[float], field: Displacement, order: int = 1) -> np.ndarray:
    """``array`` deformed by ``field``: output voxel at ``x`` takes the value at ``x + u(x)`` (float32, same shape).

    ``array`` is a cell-centred grid over the field's box (voxel ``n`` centred at ``(n + 1/2) * spacing`` mm), so
    a coarse and a fine grid over the same box get the same deformation. Linear interpolation (``order`` 1) or
    nearest neighbour (0, for masks); points pushed outside take the nearest border value.
    """
    shape = array.shape
    extent = np.asarray(shape) * np.asarray(spacing, dtype=np.float64)
    axes = [(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing)]
    displacement = field.on_grid(axes)  # (3, I, J, K) mm
    # grid_sample's normalised coordinates with align_corners=False: -1 and 1 are the outer edges of the grid.
    base = [torch.from_numpy((2.0 * x / e - 1.0).astype(np.float32)) for x, e in zip(axes, extent)]
    mesh = torch.meshgrid(*base, indexing="ij")
    scale = torch.from_numpy((2.0 / extent).astype(np.float32))
    grid = torch.stack([mesh[a] + displacement[a] * scale[a] for a in (2, 1, 0)], dim=-1)[None]
    source = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    mode = "bilinear" if order == 1 else "nearest"
    out = torch.nn.functional.grid_sample(source, grid, mode=mode, padding_mode="border", align_corners=False)
    return out[0, 0].numpy()
