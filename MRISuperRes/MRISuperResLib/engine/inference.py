"""Running a network over a whole volume in tiles.

A convolutional network run on a bare tile sees zero padding at the tile's faces, which makes seams; so each
window is run with a *halo* of real neighbouring voxels (the network's receptive radius, clipped at the volume's
faces) and its output is cropped back to the window. With a full halo, tiled inference equals whole-volume
inference up to float rounding, so by default the windows only touch (overlap 0) and are pasted in place: this
path imports no MONAI (importing MONAI costs seconds in every process). With ``overlap > 0`` MONAI's
``SlidingWindowInferer`` places the windows and blends them with Gaussian weights (the network's output may be
larger than its input tile: MONAI derives the zoom from the output size). Progress is reported and
cancellation checked between tiles. The tile edge is chosen from the memory available on the device unless given.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import numpy as np
import torch
from torch import nn

from .device import DeviceChoice, available_memory_bytes
from ..errors import CancelledError

ProgressCallback = Callable[[float, str], None]
CancelCheck = Callable[[], bool]

#: Tile edges are multiples of this (keeps convolution kernels efficient and U-Net levels divisible).
TILE_MULTIPLE = 8
#: Largest automatic window per device type, as the edge of a cube of as many voxels (input voxels, halo included):
#: a window of a thin slab may be wider than this edge along its long axes.
MAX_AUTO_TILE = {"cpu": 160, "cuda": 256, "mps": 128}
#: Memory the tiles may use, as a fraction of what is free, and a hard cap on the CPU.
MEMORY_FRACTION = 0.4
CPU_MEMORY_CAP = 3 << 30


def receptive_radius(network: nn.Module) -> int:
    """Input voxels on each side that influence an output voxel, as the network declares (8 if it does not)."""
    return int(getattr(network, "receptive_radius", 8))


def activation_bytes_per_input_voxel(network: nn.Module, probe: int = 16) -> float:
    """Estimate peak activation memory per input voxel from one forward pass on a probe tile.

    Records every leaf module's output size. A feed-forward pass in inference mode keeps about one layer's input
    and output alive, and CPU convolutions (oneDNN) add workspaces of similar size: four times the largest
    activation plus the output matched measured peaks (EDSR-3D on 96^3 and 128^3 tiles, within 10 %).
    """
    sizes: list[int] = []
    hooks = [
        module.register_forward_hook(lambda _m, _i, out: sizes.append(out.numel() if torch.is_tensor(out) else 0))
        for module in network.modules()
        if not list(module.children())
    ]
    parameter = next(network.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    try:
        with torch.inference_mode():
            out = network(torch.zeros(1, 1, probe, probe, probe, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    peak_elements = 4 * max(sizes or [0]) + out.numel()
    return 4.0 * peak_elements / probe**3


def choose_tile(
    network: nn.Module,
    shape: tuple[int, int, int],
    device: torch.device,
    halo: int | None = None,
    multiple: int = TILE_MULTIPLE,
) -> tuple[int, int, int]:
    """Tile shape for ``shape``: as few windows as the free memory allows, of balanced sizes.

    The memory budget sets how many voxels a window (halo included) may hold. Axes are placed shortest first: an
    axis that fits in one window with the voxels left for it (the cube root of the rest for the first, the square
    root for the second) gets one window, no halo along it; a longer axis is split into the fewest windows whose
    core plus a halo on both sides fits, with equal cores rounded up to a multiple of ``multiple``. A thin slab
    (thick slices: 256 x 256 x 64) thus runs in few wide windows rather than in cubes whose halos cost more than
    their cores.
    """
    budget = available_memory_bytes(device) * MEMORY_FRACTION
    if device.type == "cpu":
        budget = min(budget, CPU_MEMORY_CAP)
    per_voxel = activation_bytes_per_input_voxel(network)
    halo = receptive_radius(network) if halo is None else halo
    voxels = min(budget / max(per_voxel, 1.0), float(MAX_AUTO_TILE.get(device.type, 96)) ** 3)
    tile = list(shape)
    for placed, axis in enumerate(sorted(range(3), key=lambda a: shape[a])):
        edge = int(voxels ** (1.0 / (3 - placed)) + 1e-6)
        size = shape[axis]
        window = size
        if size > edge:
            core = max(multiple, (edge - 2 * halo) // multiple * multiple)
            windows = -(-size // core)
            tile[axis] = min(size, -(-(-(-size // windows)) // multiple) * multiple)
            window = min(size, tile[axis] + 2 * halo)
        voxels /= max(window, 1)
    return fit_tile(tuple(tile), shape)  # type: ignore[arg-type]


def fit_tile(tile: tuple[int, int, int], shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """Shrink a tile to the volume along axes where the volume is smaller (no padding waste)."""
    return tuple(min(t, n) for t, n in zip(tile, shape))  # type: ignore[return-value]


def window_starts(size: int, tile: int) -> list[int]:
    """Start indices of touching windows of ``tile`` voxels covering ``size`` voxels along one axis.

    Windows step by ``tile``; the last one is moved back to end at the volume's face (as MONAI's
    ``dense_patch_slices`` places them with no overlap), so no window reaches outside the volume.
    """
    starts = list(range(0, max(size - tile, 0) + 1, tile))
    if starts[-1] + tile < size:
        starts.append(size - tile)
    return starts


def touching_windows(shape: tuple[int, int, int], tile: tuple[int, int, int]) -> list[list[slice]]:
    """The windows (``[i, j, k]`` slices) that cover ``shape`` with no overlap, in C order."""
    per_axis = [[slice(s, s + t) for s in window_starts(n, t)] for n, t in zip(shape, tile)]
    return [[a, b, c] for a in per_axis[0] for b in per_axis[1] for c in per_axis[2]]


def count_tiles(shape: tuple[int, int, int], tile: tuple[int, int, int], overlap: float) -> int:
    """Number of windows visited for this shape, tile and overlap."""
    if overlap == 0:
        return len(touching_windows(shape, tile))
    from monai.data.utils import dense_patch_slices

    interval = [t if t == n else max(int(t * (1 - overlap)), 1) for t, n in zip(tile, shape)]
    return len(dense_patch_slices(shape, tile, interval))


class _TileRunner:
    """The predictor handed to MONAI: runs each window with its halo, reports progress, honours cancellation."""

    def __init__(
        self,
        network: nn.Module,
        volume: torch.Tensor,
        device: DeviceChoice,
        halo: int,
        total: int,
        progress: ProgressCallback | None,
        cancel: CancelCheck | None,
        context: np.ndarray | None = None,
        slice_positions: np.ndarray | None = None,
    ) -> None:
        self.network, self.volume, self.device, self.halo = network, volume, device, halo
        self.total, self.progress, self.cancel = total, progress, cancel
        self.done = 0
        self.context = None if context is None else torch.as_tensor(context, dtype=torch.float32).reshape(1, -1)
        self.slice_positions = slice_positions

    def _extra(self, grown: list[slice]) -> dict[str, torch.Tensor]:
        """The conditioning arguments of one window: the context and its slices' positions in the whole volume."""
        if self.context is None:
            return {}
        extra = {"context": self.context.to(self.device.device)}
        axis = getattr(self.network, "slice_axis", None)
        if self.slice_positions is not None and axis is not None:
            factor = int(self.network.scale[axis])
            window = grown[axis]
            extra["slice_positions"] = torch.from_numpy(
                np.ascontiguousarray(self.slice_positions[window.start * factor:window.stop * factor])
            ).to(self.device.device)
        return extra

    def __call__(self, tiles: torch.Tensor, locations: list[list[slice]]) -> torch.Tensor:
        outputs = []
        for location in locations:
            if self.cancel is not None and self.cancel():
                raise CancelledError("cancelled by the user; nothing was written")
            outputs.append(self._run_window(location[2:]))
            self.done += 1
            if self.progress is not None:
                self.progress(min(self.done / self.total, 1.0), f"tile {min(self.done, self.total)}/{self.total}")
        return torch.cat(outputs)

    def _run_window(self, window: list[slice]) -> torch.Tensor:
        sizes = self.volume.shape[2:]
        grown = [slice(max(0, w.start - self.halo), min(n, w.stop + self.halo)) for w, n in zip(window, sizes)]
        data = self.volume[(slice(None), slice(None), *grown)].to(self.device.device)
        dtype = self.device.autocast_dtype
        autocast = torch.autocast(self.device.device.type, dtype=dtype) if dtype else nullcontext()
        with autocast:
            out = self.network(data, **self._extra(grown)).float()
        factors = [o // i for o, i in zip(out.shape[2:], data.shape[2:])]
        crop = [
            slice((w.start - g.start) * f, (w.stop - g.start) * f) for w, g, f in zip(window, grown, factors)
        ]
        return out[(slice(None), slice(None), *crop)]


def run_tiled(
    network: nn.Module,
    array: np.ndarray,
    device: DeviceChoice,
    *,
    tile: int | tuple[int, int, int] | None = None,
    overlap: float = 0.0,
    halo: int | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
    context: np.ndarray | None = None,
    slice_positions: np.ndarray | None = None,
) -> np.ndarray:
    """Apply ``network`` to a normalised volume ``array`` ``[i, j, k]`` by overlapping tiles.

    Args:
        network: a model following the registry's contract (1 channel in, 1 channel out, maybe larger).
        array: float32 input on the coarse grid.
        device: where the network runs; tiles are stitched in CPU memory.
        tile: tile edge in input voxels (int or per axis); ``None`` chooses from free memory.
        overlap: fraction of a tile shared with its neighbours (blended with Gaussian weights), in ``[0, 1)``.
            With the full halo tiles already agree exactly, so the default is 0; overlap helps when ``halo`` is
            set below the receptive radius to save time.
        halo: context voxels added around each tile; ``None`` uses the network's receptive radius (exact).
        progress: called with ``(fraction, text)`` after each tile.
        cancel: polled before each tile; returning true aborts with :class:`CancelledError`.
        context: conditioning vector ``(dim,)`` for a cross-attention model (:mod:`.conditioning`).
        slice_positions: with ``context``, the position of every output slice along the network's
            ``slice_axis`` in the whole volume (:func:`~.conditioning.slice_positions`); each tile gets its own.

    Returns:
        float32 array of the network's output for the whole volume.
    """
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    shape = tuple(int(n) for n in array.shape)
    network = network.to(device.device).eval()
    halo = receptive_radius(network) if halo is None else int(halo)
    if tile is None:
        roi = choose_tile(network, shape, device.device, halo)  # type: ignore[arg-type]
    else:
        roi = fit_tile((tile,) * 3 if isinstance(tile, int) else tuple(tile), shape)  # type: ignore[arg-type]
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    runner = _TileRunner(network, tensor, device, halo, count_tiles(shape, roi, overlap), progress, cancel,
                         context, slice_positions)
    if overlap == 0:
        return _run_touching(runner, shape, roi)
    from monai.inferers import SlidingWindowInferer

    inferer = SlidingWindowInferer(
        roi_size=roi,
        sw_batch_size=1,
        overlap=overlap,
        mode="gaussian",
        sw_device=torch.device("cpu"),
        device=torch.device("cpu"),
        with_coord=True,
    )
    with torch.inference_mode():
        out = inferer(tensor, runner)
    return out[0, 0].float().numpy()


def _run_touching(runner: _TileRunner, shape: tuple[int, int, int], tile: tuple[int, int, int]) -> np.ndarray:
    """Run touching windows and paste each output in place (windows moved back at a face overlap their
    neighbour; with the full halo both computed the same values there)."""
    out: np.ndarray | None = None
    with torch.inference_mode():
        for window in touching_windows(shape, tile):
            result = runner(runner.volume, [[slice(None), slice(None), *window]])[0, 0].float()
            factors = [o // (w.stop - w.start) for o, w in zip(result.shape, window)]
            if out is None:
                out = np.empty([n * f for n, f in zip(shape, factors)], dtype=np.float32)
            out[tuple(slice(w.start * f, w.stop * f) for w, f in zip(window, factors))] = result.cpu().numpy()
    assert out is not None
    return out


# ------------------------------------------------------------------------------------------------------------------
# Arbitrary-scale (implicit) models


class _Encoder(nn.Module):
    """An implicit model's encoder as a plain module (for the memory estimate of :func:`choose_tile`)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network.encode(x)


def fine_block_start(coarse_index: int, n_in: int, n_out: int) -> int:
    """First fine voxel whose centre lies at or beyond coarse index ``coarse_index - 1/2``.

    Fine voxel ``q`` sits at coarse index ``(q + 0.5) * n_in / n_out - 0.5``; the fine voxels of the coarse cells
    ``[a, b)`` are ``[fine_block_start(a), fine_block_start(b))``, computed in integers so neighbouring blocks
    never overlap or leave a gap.
    """
    return -((n_in - 2 * coarse_index * n_out) // (2 * n_in))


def _balanced_bounds(size: int, core: int) -> list[int]:
    windows = max(1, -(-size // max(1, core)))
    return [round(size * w / windows) for w in range(windows + 1)]


def run_tiled_implicit(
    network: nn.Module,
    array: np.ndarray,
    output_shape: tuple[int, int, int],
    device: DeviceChoice,
    *,
    tile: int | tuple[int, int, int] | None = None,
    halo: int | None = None,
    chunk_points: int = 1 << 17,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
) -> np.ndarray:
    """Apply an arbitrary-scale model to a normalised volume, block by block, onto a fine grid of any shape.

    The model follows the implicit contract of :class:`~MRISuperResLib.models.arssr.ArSSR`: ``encode(x)`` gives a
    feature map on the input grid and ``query(features, positions, offsets)`` decodes values at continuous
    indices of that map. The coarse grid is cut into balanced blocks; each block's encoder runs once on the block
    plus a halo (the model's receptive radius: encoder context and the trilinear neighbour), and the fine voxels
    whose centres fall in the block (``(q + 0.5) * n_in / n_out - 0.5`` in ``[a - 1/2, b - 1/2)``) are decoded in
    chunks of ``chunk_points`` (bounded memory). Decoder coordinates come from the whole volume's grid, so blocks
    join exactly. MONAI's sliding window is not used: with a non-integer scale a block does not map to a whole
    number of fine voxels.

    Args:
        network: an arbitrary-scale model (``arbitrary_scale = True``).
        array: float32 input on the coarse grid.
        output_shape: the fine grid's shape (see :func:`~MRISuperResLib.imaging.geometry.upsampled_grid`).
        device: where the network runs; the result is assembled in CPU memory.
        tile: block edge in input voxels (int or per axis); ``None`` chooses from free memory.
        halo: context voxels around each block; ``None`` uses the network's receptive radius (exact).
        chunk_points: fine voxels decoded at once.
        progress: called with ``(fraction, text)`` after each block.
        cancel: polled before each block; returning true aborts with :class:`CancelledError`.

    Returns:
        float32 array of ``output_shape``.
    """
    shape = tuple(int(n) for n in array.shape)
    output_shape = tuple(int(n) for n in output_shape)
    if len(output_shape) != 3 or any(o < i for o, i in zip(output_shape, shape)):
        raise ValueError(f"output shape {output_shape} must be at least the input shape {shape} on every axis")
    from ..models.arssr import decoder_offsets, fine_grid_positions

    network = network.to(device.device).eval()
    halo = receptive_radius(network) if halo is None else int(halo)
    if tile is None:
        core = choose_tile(_Encoder(network), shape, device.device, halo)  # type: ignore[arg-type]
    else:
        core = fit_tile((tile,) * 3 if isinstance(tile, int) else tuple(tile), shape)  # type: ignore[arg-type]
    bounds = [_balanced_bounds(n, c) for n, c in zip(shape, core)]
    blocks = [
        ((bi[0], bi[1]), (bj[0], bj[1]), (bk[0], bk[1]))
        for bi in zip(bounds[0][:-1], bounds[0][1:])
        for bj in zip(bounds[1][:-1], bounds[1][1:])
        for bk in zip(bounds[2][:-1], bounds[2][1:])
    ]
    volume = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    out = np.zeros(output_shape, dtype=np.float32)
    dtype = device.autocast_dtype
    autocast = (lambda: torch.autocast(device.device.type, dtype=dtype)) if dtype else nullcontext
    with torch.inference_mode():
        for done, block in enumerate(blocks, start=1):
            if cancel is not None and cancel():
                raise CancelledError("cancelled by the user; nothing was written")
            fine = [(fine_block_start(a, n, m), fine_block_start(b, n, m))
                    for (a, b), n, m in zip(block, shape, output_shape)]
            if all(stop > start for start, stop in fine):
                window = [(max(0, a - halo), min(n, b + halo)) for (a, b), n in zip(block, shape)]
                data = volume[(slice(None), slice(None), *[slice(w0, w1) for w0, w1 in window])]
                with autocast():
                    features = network.encode(data.to(device.device))
                positions = fine_grid_positions(shape, output_shape, [f[0] for f in fine], [f[1] for f in fine],
                                                device=device.device)
                origin = torch.tensor([w[0] for w in window], dtype=positions.dtype, device=device.device)
                values = []
                for start in range(0, positions.shape[0], chunk_points):
                    chunk = positions[start:start + chunk_points]
                    with autocast():
                        decoded = network.query(features, (chunk - origin)[None], decoder_offsets(chunk)[None])
                    values.append(decoded[0].float().cpu())
                region = tuple(slice(f0, f1) for f0, f1 in fine)
                out[region] = torch.cat(values).reshape([f1 - f0 for f0, f1 in fine]).numpy()
            if progress is not None:
                progress(done / len(blocks), f"block {done}/{len(blocks)}")
    return out
