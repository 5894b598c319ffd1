"""Does an input's intensity range fit the float32 arithmetic the engine and its outputs use?

The network, the B-spline baseline, the consistency map and the written outputs are float32. An input (float64,
int64) can hold values that float32 cannot: beyond about 3.4e38 they become infinite and the result all NaN;
a large offset with a small spread (1e8 +- 50) leaves float32 only a few distinct steps across the spread; a
spread near float32's smallest normal number (1.2e-38) loses its precision. Such inputs are refused in one line
with what to do, before any work, instead of being turned into a wrong result.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

FLOAT32 = np.finfo(np.float32)
#: Headroom below float32's largest value: interpolation overshoot and the network's output must still fit.
HEADROOM = 16.0
#: Fewest float32 steps the intensity spread must span (1/1000 of the spread per step at worst).
MIN_LEVELS = 1000.0


def check_float32_range(array: np.ndarray, name: str) -> None:
    """Refuse ``array`` (finite voxels) when float32 arithmetic cannot represent its intensities faithfully.

    Raises:
        InputError: values beyond ``float32 max / HEADROOM``, a spread below float32's normal range, or (for
            voxels wider than float32: float64, 32- and 64-bit integers) a spread that float32 resolves in fewer
            than ``MIN_LEVELS`` steps at the volume's magnitude.
    """
    if array.dtype.kind not in "fiu" or array.size == 0:
        return
    if array.dtype.kind in "iu" and array.dtype.itemsize <= 2:
        return  # 8- and 16-bit integers always fit
    low, high = float(array.min()), float(array.max())
    magnitude = max(abs(low), abs(high))
    spread = high - low
    if magnitude > float(FLOAT32.max) / HEADROOM:
        raise InputError(
            f"input {name} has values up to {magnitude:.3g}, beyond what the engine's float32 arithmetic and outputs "
            f"hold (about {float(FLOAT32.max) / HEADROOM:.2g} with headroom); rescale the intensities first "
            f"(e.g. divide by {10 ** np.ceil(np.log10(magnitude / 1e6)):.0g})"
        )
    if spread == 0.0:
        return  # a constant volume is refused with its own message by the normaliser
    if spread < float(FLOAT32.tiny) * 1e6:
        raise InputError(
            f"input {name} spans only {spread:.3g} in intensity, below float32's precision (normal values start at "
            f"{float(FLOAT32.tiny):.2g}); rescale the intensities first (e.g. multiply by "
            f"{10 ** np.ceil(np.log10(1.0 / spread)):.0g})"
        )
    if array.dtype == np.float32:
        return  # float32 voxels lose nothing more in float32 arithmetic than they already have
    step = float(np.spacing(np.float32(magnitude)))
    if spread / step < MIN_LEVELS:
        offset = 0.5 * (low + high)
        raise InputError(
            f"input {name} has values around {offset:.6g} that vary by only {spread:.3g}: float32 arithmetic, used "
            f"by the engine and its outputs, resolves steps of {step:.3g} there ({spread / step:.0f} levels); "
            f"subtract the offset first (e.g. {offset:.6g})"
        )
