"""Choosing the compute device and the memory available on it."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch

from ..errors import MRISuperResError
from .options import PRECISIONS


def cpu_has_bfloat16() -> bool:
    """True when this CPU has bfloat16 dot-product instructions (AVX512-BF16 or AMX tiles: AMD Zen 4 and later,
    Intel Cooper Lake / Sapphire Rapids and later).

    Without them oneDNN emulates bfloat16 with float32 arithmetic plus conversions, which is slower than float32.
    """
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


@dataclass(frozen=True)
class DeviceChoice:
    """The device to run on and why.

    Attributes:
        device: the torch device.
        note: a message for the user when the request could not be met as asked (empty otherwise).
        precision: ``auto``, ``float32`` or ``bfloat16`` (:data:`PRECISIONS`), as resolved by
            :func:`select_device`; decides :attr:`autocast_dtype`.
    """

    device: torch.device
    note: str = ""
    precision: str = "auto"

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The network's autocast type (``None``: float32).

        ``auto``: bfloat16 on CUDA GPUs that support it, float16 on other CUDA GPUs, none elsewhere; ``float32``:
        none; ``bfloat16``: bfloat16 on CUDA GPUs that support it and on the CPU (where :func:`select_device`
        checked the instructions), float16 on older CUDA GPUs.
        """
        if self.precision == "float32":
            return None
        if self.device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if self.device.type == "cpu" and self.precision == "bfloat16":
            return torch.bfloat16
        return None

    def describe(self) -> str:
        if self.device.type == "cuda":
            text = f"{self.device} ({torch.cuda.get_device_name(self.device)})"
        elif self.device.type == "cpu":
            threads = torch.get_num_threads()
            text = f"cpu ({threads} thread{'' if threads == 1 else 's'})"
        else:
            text = str(self.device)
        return text + (", bfloat16" if self.device.type == "cpu" and self.autocast_dtype is not None else "")


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def select_device(request: str = "auto", precision: str = "auto") -> DeviceChoice:
    """Resolve ``auto|cpu|cuda|cuda:N|mps`` to a usable device, and the inference precision on it.

    ``auto`` prefers CUDA, then Apple MPS, then the CPU. An unavailable explicit GPU request falls back to the
    CPU with a note saying so (the job still runs); a malformed request raises :class:`MRISuperResError`.
    ``precision`` (:data:`PRECISIONS`): ``bfloat16`` on a CPU without bfloat16 instructions (see
    :func:`cpu_has_bfloat16`) or on MPS runs in float32, on a CUDA GPU without bfloat16 in float16, with a note
    saying so.

    Raises:
        MRISuperResError: a malformed device request or an unknown precision.
    """
    text = (precision or "auto").strip().lower()
    if text not in PRECISIONS:
        raise MRISuperResError(f"precision {precision!r} is not understood; use {', '.join(PRECISIONS)}")
    choice = _select(request)
    kind = choice.device.type
    if text != "bfloat16" or (kind == "cpu" and cpu_has_bfloat16()) or (
            kind == "cuda" and torch.cuda.is_bf16_supported()):
        return replace(choice, precision=text)
    if kind == "cuda":  # autocast_dtype gives float16 there
        missing, runs = "this GPU has no bfloat16", "float16"
    elif kind == "cpu":
        missing, runs = "this CPU has no bfloat16 instructions (AVX512-BF16 or AMX)", "float32"
    else:
        missing, runs = f"{kind.upper()} runs in float32 here", "float32"
    note = "; ".join(part for part in (choice.note, f"--precision bfloat16: {missing}; running in {runs}") if part)
    return replace(choice, note=note, precision=text if kind == "cuda" else "float32")


def precision_name(dtype: torch.dtype | None) -> str:
    """``"bfloat16"``, ``"float16"`` or ``"float32"`` (for ``None``: no autocast) for logs and records."""
    return str(dtype).removeprefix("torch.") if dtype is not None else "float32"


def _select(request: str) -> DeviceChoice:
    text = (request or "auto").strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return DeviceChoice(torch.device("cuda", torch.cuda.current_device()))
        if _mps_available():
            return DeviceChoice(torch.device("mps"))
        return DeviceChoice(torch.device("cpu"))
    if text == "cpu":
        return DeviceChoice(torch.device("cpu"))
    if text == "mps":
        if _mps_available():
            return DeviceChoice(torch.device("mps"))
        return DeviceChoice(torch.device("cpu"), "MPS (Apple GPU) is not available here; running on the CPU")
    if text == "cuda" or text.startswith("cuda:"):
        index_text = text.partition(":")[2] or "0"
        if not index_text.isdigit():
            raise MRISuperResError(f"device {request!r} is not understood; use auto, cpu, cuda, cuda:N or mps")
        index = int(index_text)
        if not torch.cuda.is_available():
            return DeviceChoice(torch.device("cpu"), f"CUDA is not available here; running {request} on the CPU")
        if index >= torch.cuda.device_count():
            return DeviceChoice(
                torch.device("cpu"),
                f"there is no CUDA device {index} (found {torch.cuda.device_count()}); running on the CPU",
            )
        return DeviceChoice(torch.device("cuda", index))
    raise MRISuperResError(f"device {request!r} is not understood; use auto, cpu, cuda, cuda:N or mps")


def available_memory_bytes(device: torch.device) -> int:
    """Free memory on ``device``: free GPU memory for CUDA, available system RAM otherwise."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 << 30
