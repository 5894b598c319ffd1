"""Former home of the scanner-like acquisition simulation, now :mod:`.degradation.acquisition`; kept so that
``from MRISuperResLib.processing.acquisition import ...`` keeps working."""

from __future__ import annotations

from .degradation.acquisition import (
    MIN_PARTIAL_FOURIER,
    WINDOWS,
    Acquisition,
    AcquisitionRanges,
    acquire,
    apodisation_window,
    partial_fourier_mask,
    slice_profiles,
)

__all__ = ["MIN_PARTIAL_FOURIER", "WINDOWS", "Acquisition", "AcquisitionRanges", "acquire", "apodisation_window",
           "partial_fourier_mask", "slice_profiles"]
