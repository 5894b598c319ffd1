"""What kind of image a file holds, in words a user recognises, to refuse anything but a scalar 3D volume.

The engine enhances one scalar 3D volume. Everything else (a single 2D slice, a 4D time series, a 5D NIfTI
with a vector or tensor per voxel, RGB colour, complex-valued k-space or phase data) is refused with a message
that names what the file really is, so that the user knows what to extract from it.

Shapes follow the NIfTI / ITK convention: axes 1-3 are space, axis 4 is time (or another series of volumes),
axis 5 holds the components of a vector or tensor per voxel (NIfTI ``dim[5]``), axes 6-7 are anything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ImageKind:
    """The layout and voxel type of an image, as read from its header (no voxels needed).

    Attributes:
        size: voxels along every axis, in file order (``i, j, k[, t[, component ...]]``).
        components: values per voxel stored interleaved as ITK pixels (3 for RGB, 2 for complex as ITK sees it).
        pixel_type: ITK's name of the voxel type, e.g. ``"32-bit float"``, ``"vector of 8-bit unsigned integer"``.
        is_complex: the voxels are complex numbers (NIfTI complex64/128, NRRD/MetaImage complex).
        is_rgb: the voxels are RGB(A) colours (NIfTI RGB24/RGBA32, or 3-4 unsigned 8-bit components).
        intent: NIfTI intent name when the header gives one (``"vector"``, ``"symmetric matrix"``...), else ``""``.
    """

    size: tuple[int, ...]
    components: int = 1
    pixel_type: str = ""
    is_complex: bool = False
    is_rgb: bool = False
    intent: str = ""

    def spatial_size(self) -> tuple[int, ...]:
        """The first three axes (fewer for a 2D file)."""
        return self.size[:3]

    def extra_axes(self) -> tuple[int, ...]:
        """Sizes beyond the three spatial axes (time, components, ...), trailing singleton axes dropped."""
        extra = list(self.size[3:])
        while extra and extra[-1] == 1:
            extra.pop()
        return tuple(extra)


def _dims(size: Sequence[int]) -> str:
    return "x".join(str(int(n)) for n in size)


def refusal(kind: ImageKind) -> str | None:
    """Why ``kind`` cannot be enhanced, as the end of a one-line message (``"is a ..."``), or ``None`` when it is a
    scalar 3D volume (possibly with singleton time or component axes, which the reader drops).

    The phrases name the kind first (``2D image``, ``4D time series with 3 volumes``, ``5D image``, ``RGB colour
    image``, ``complex-valued image``, ``vector image with N components per voxel``) and say what to give instead.
    """
    spatial = kind.spatial_size()
    extra = kind.extra_axes()
    if kind.is_complex:
        return (f"is a complex-valued image ({_dims(kind.size)}, real and imaginary part per voxel, e.g. raw k-space "
                "or phase data); give a magnitude volume")
    if kind.is_rgb:
        return (f"is an RGB colour image ({_dims(kind.size)}, a vector image with {max(kind.components, 3)} "
                "components per voxel, e.g. a screenshot or a colour-coded map); give a greyscale scalar volume")
    if kind.components > 1:
        what = f" ({kind.intent})" if kind.intent else " (e.g. a displacement field, a vector or a tensor)"
        return (f"is a vector image with {kind.components} components per voxel{what}, size {_dims(kind.size)}; "
                "give a single scalar volume")
    if len(extra) == 2 and kind.size[3] == 1:
        # NIfTI dimension 5 holds the components of a vector or tensor per voxel.
        intent = f", intent {kind.intent}" if kind.intent else ""
        return (f"is a 5D image of size {_dims(kind.size)}: a vector image with {extra[1]} components per voxel "
                f"(a vector or tensor along NIfTI dimension 5{intent}); give a single scalar 3D volume")
    if len(extra) == 1:
        return (f"is a 4D time series with {extra[0]} volumes (size {_dims(kind.size)}, e.g. fMRI, diffusion or "
                "several echoes); extract one 3D volume first")
    if extra:
        return (f"is a {len(kind.size)}D image of size {_dims(kind.size)} ({extra[0]} volumes along axis 4 and more "
                "along further axes); give a single scalar 3D volume")
    if len(spatial) < 3 or any(n < 2 for n in spatial):
        if sum(n >= 2 for n in spatial) <= 1:
            return f"is a 1D line of voxels (size {_dims(kind.size)}); give a 3D volume"
        return (f"is a 2D image (size {_dims(kind.size)}: a single slice); give a 3D volume with at least 2 voxels "
                "along every axis")
    return None


def kind_of_sitk_info(size: Sequence[int], components: int, pixel_type: str) -> ImageKind:
    """An :class:`ImageKind` from what SimpleITK's ``ImageFileReader.ReadImageInformation`` reports."""
    name = pixel_type.lower()
    is_complex = "complex" in name
    is_rgb = ("rgb" in name) or (components in (3, 4) and name == "vector of 8-bit unsigned integer")
    return ImageKind(tuple(int(n) for n in size), 1 if is_complex else int(components), pixel_type,
                     is_complex=is_complex, is_rgb=is_rgb and not is_complex)
