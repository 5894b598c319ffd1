"""Forward models that turn a fine volume into the coarse one a scanner would have measured.

Each model maps an array on a fine cell-centred grid to an array of a given coarser shape covering the same
physical extent (see :mod:`...imaging.geometry`). They serve two purposes: simulating low-resolution training
inputs (:func:`simulate`, which adds noise and bias; :mod:`.acquisition` for scanner-like variation drawn per
sample), and the engine's data-consistency check (:func:`degrade`, deterministic: degrade the super-resolved volume
back onto the input grid and compare with what was measured).

Kinds (``DegradationSpec.kind``, one for all axes or one per axis ``(i, j, k)``), one file each:

* ``"kspace"`` (:mod:`.kspace`) -- k-space truncation: keep the central low frequencies of the Fourier transform,
  as a scanner that acquires a smaller matrix over the same field of view (seed 000; seed 003, eq. 1).
* ``"box"`` (:mod:`.box`) -- a rectangular slice profile: the average over the coarse voxel (minus an optional
  ``gap`` between slices), the partial-volume model of thick 2D slices.
* ``"gaussian"`` (:mod:`.gaussian`) -- a Gaussian profile of full width at half maximum ``fwhm`` coarse voxels,
  sampled at the coarse voxel centres (blur + decimation, seed 000's first approach).

Layout: :mod:`.base` (the :class:`ForwardModel` base class, deterministic per axis, and :data:`REGISTRY`, filled
by ``__init_subclass__``), one file per kind, :mod:`.spec` (:class:`DegradationSpec`, :func:`degrade`),
:mod:`.simulate` (the random part: bias field and k-space noise) and :mod:`.acquisition` (a random draw of a
scanner-like acquisition, then its deterministic application). This package imports every module in its folder,
so a new kind is one new file with a :class:`ForwardModel` subclass that has a ``name``; :data:`KINDS` lists it.

Arrays are indexed ``[i, j, k]``; shapes and factors are in that order. Nothing here imports torch.
"""

from __future__ import annotations

import pkgutil
from importlib import import_module

from .base import DEFAULT_KIND, REGISTRY, ForwardModel, SliceProfile, degrade_axes, forward_model_class, known_kinds
from .box import BoxProfile, box_downsample
from .gaussian import GaussianProfile, gaussian_downsample
from .kspace import KSpaceTruncation, fourier_resample
from .simulate import add_kspace_noise, simulate, smooth_bias_field
from .spec import DegradationSpec, degrade, parse_kind

# Kinds register themselves on import; importing every module of the folder makes a new file a new kind.
for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        import_module(f"{__name__}.{_module.name}")

#: The registered forward models, the default (``"kspace"``) first.
KINDS: tuple[str, ...] = known_kinds()

__all__ = [
    "DEFAULT_KIND", "KINDS", "REGISTRY", "BoxProfile", "DegradationSpec", "ForwardModel", "GaussianProfile",
    "KSpaceTruncation", "SliceProfile", "add_kspace_noise", "box_downsample", "degrade", "degrade_axes",
    "forward_model_class", "fourier_resample", "gaussian_downsample", "known_kinds", "parse_kind", "simulate",
    "smooth_bias_field",
]
