"""The one interchange type for a scalar 3D volume with its geometry.

Conventions (used everywhere in the engine):

* ``array`` is indexed ``[i, j, k]``: image index order, the same order as ITK/SimpleITK indices, NIfTI
  ``i, j, k`` and Slicer IJK. (SimpleITK's and Slicer's numpy views are ``[k, j, i]``; converters transpose.)
* Geometry is physical **LPS** millimetres, as in ITK/DICOM: ``origin`` is the centre of voxel ``(0, 0, 0)``,
  ``spacing`` is along ``i, j, k`` and column ``c`` of ``direction`` is the LPS unit vector of index axis ``c``.
* RAS (Slicer's world frame) differs from LPS by the sign of the first two axes; :data:`LPS_TO_RAS` is the only
  place that conversion is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

#: Homogeneous 4x4 matrix that maps LPS points to RAS points (and back: it is its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class Grid:
    """A cell-centred sampling grid in physical LPS space.

    Attributes:
        shape: number of voxels along ``i, j, k``.
        spacing: voxel size in mm along ``i, j, k``.
        origin: LPS position (mm) of the centre of voxel ``(0, 0, 0)``.
        direction: 3x3 matrix; column ``c`` is the LPS unit vector of index axis ``c``.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "origin", tuple(float(o) for o in self.origin))
        object.__setattr__(self, "direction", np.asarray(self.direction, dtype=np.float64).reshape(3, 3))

    def ijk_to_lps(self) -> np.ndarray:
        """4x4 homogeneous matrix mapping voxel indices ``(i, j, k, 1)`` to LPS mm."""
        matrix = np.eye(4)
        matrix[:3, :3] = self.direction @ np.diag(self.spacing)
        matrix[:3, 3] = self.origin
        return matrix

    def ijk_to_ras(self) -> np.ndarray:
        """4x4 homogeneous matrix mapping voxel indices ``(i, j, k, 1)`` to RAS mm (Slicer's IJKToRAS)."""
        return LPS_TO_RAS @ self.ijk_to_lps()

    @classmethod
    def from_ijk_to_ras(cls, shape: tuple[int, int, int], ijk_to_ras: np.ndarray) -> "Grid":
        """Build a grid from a 4x4 IJK->RAS matrix (as Slicer stores it); inverse of :meth:`ijk_to_ras`."""
        ijk_to_lps = LPS_TO_RAS @ np.asarray(ijk_to_ras, dtype=np.float64)
        columns = ijk_to_lps[:3, :3]
        spacing = np.linalg.norm(columns, axis=0)
        return cls(shape, tuple(spacing), tuple(ijk_to_lps[:3, 3]), columns / spacing)

    def physical_points(self, indices: np.ndarray) -> np.ndarray:
        """LPS mm of continuous voxel indices given as an ``(..., 3)`` array."""
        return indices @ (self.direction @ np.diag(self.spacing)).T + np.asarray(self.origin)

    def same_geometry(self, other: "Grid", tolerance: float = 1e-6) -> bool:
        """True when both grids have the same shape and agree in spacing, origin and direction."""
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=tolerance)
            and np.allclose(self.origin, other.origin, atol=tolerance)
            and np.allclose(self.direction, other.direction, atol=tolerance)
        )


@dataclass(frozen=True)
class Volume:
    """A scalar 3D image: voxel values plus the grid they sit on.

    Attributes:
        array: voxel values indexed ``[i, j, k]`` (see the module docstring); any numeric dtype.
        grid: where the voxels are in LPS space; ``grid.shape == array.shape``.
        metadata: free-form string key/values carried to output files (provenance, description).
    """

    array: np.ndarray
    grid: Grid
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if tuple(self.array.shape) != self.grid.shape:
            raise ValueError(f"array shape {self.array.shape} does not match grid shape {self.grid.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.grid.shape

    @property
    def spacing(self) -> tuple[float, float, float]:
        return self.grid.spacing

    def with_array(self, array: np.ndarray, metadata: dict[str, str] | None = None) -> "Volume":
        """A new volume on the same grid with other voxel values (and optionally other metadata)."""
        return Volume(array, self.grid, dict(self.metadata if metadata is None else metadata))

    def with_grid(self, array: np.ndarray, grid: Grid) -> "Volume":
        """A new volume with other values on another grid, keeping the metadata."""
        return replace(self, array=array, grid=grid, metadata=dict(self.metadata))
