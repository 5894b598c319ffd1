"""Choosing the compute device and the memory available on it."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..errors import MRISuperResError


@dataclass(frozen=True)
class DeviceChoice:
    """The device to run on and why.

    Attributes:
        device: the torch device.
        note: a message for the user when the request could not be met as asked (empty otherwise).
    """

    device: torch.device
    note: str = ""

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """bf16 on CUDA GPUs that support it, fp16 on other CUDA GPUs, none elsewhere (full float32)."""
        if self.device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def describe(self) -> str:
        if self.device.type == "cuda":
            return f"{self.device} ({torch.cuda.get_device_name(self.device)})"
        if self.device.type == "cpu":
            return f"cpu ({torch.get_num_threads()} threads)"
        return str(self.device)


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def select_device(request: str = "auto") -> DeviceChoice:
    """Resolve ``auto|cpu|cuda|cuda:N|mps`` to a usable device.

    ``auto`` prefers CUDA, then Apple MPS, then the CPU. An unavailable explicit GPU request falls back to the
    CPU with a note saying so (the job still runs); a malformed request raises :class:`MRISuperResError`.
    """
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
