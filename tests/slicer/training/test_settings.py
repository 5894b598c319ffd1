"""The Training module's presets and small helpers (MRISuperResLib.slicer.training.presets, .job, .monitor)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

slicer = pytest.importorskip("slicer")

from helpers import ROOT  # noqa: E402

from MRISuperResLib.errors import InputError  # noqa: E402
from MRISuperResLib.slicer import training as slicer_training  # noqa: E402
from MRISuperResLib.slicer.training import (  # noqa: E402
    PRESETS,
    format_duration,
    last_error_line,
    parse_patch_size,
    read_log,
)

# ------------------------------------------------------------------------------------------------ settings
def test_presets_name_a_family_and_small_ones_build(single_thread) -> None:
    from MRISuperResLib import models

    assert slicer_training.DEFAULT_PRESET in PRESETS
    for name, preset in PRESETS.items():
        assert name.startswith(preset.family) and preset.family in models.FAMILIES
        assert preset.size in ("small", "seed") and preset.description()
        config = preset.model_config((2, 2, 2))
        if preset.size == "small":
            assert models.parameter_count(models.create(preset.family, **config)) > 0


def test_small_helpers_read_logs_and_format_times(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_text("step,time_s,loss,val_psnr\n2,1.0,0.5,\n4,2.0,0.25,30.5\n")
    assert read_log(log) == [{"step": 2.0, "time_s": 1.0, "loss": 0.5},
                             {"step": 4.0, "time_s": 2.0, "loss": 0.25, "val_psnr": 30.5}]
    assert read_log(tmp_path / "absent.csv") == []
    process_log = tmp_path / "process.log"
    process_log.write_text("step 3: validation\nmrisuperres: error: first\nTraceback\nmrisuperres: error: last one\n")
    assert last_error_line(process_log) == "mrisuperres: error: last one"
    process_log.write_text("Killed\n\n")
    assert last_error_line(process_log) == "Killed"
    assert [format_duration(s) for s in (None, 12.4, 245, 3725)] == ["-", "12 s", "4 min 05 s", "1 h 02 min"]
    assert parse_patch_size("24") == (24, 24, 24) and parse_patch_size(" 32, 32,12") == (32, 32, 12)
    for bad in ("", "24,24", "3", "a,b,c"):
        with pytest.raises(InputError, match="one or three whole numbers >= 4"):
            parse_patch_size(bad)


def test_a_scale_that_is_not_one_is_refused_as_input_error() -> None:
    from MRISuperResLib.slicer.training import parse_training_scale

    assert parse_training_scale("1,1,4") == (1, 1, 4) and parse_training_scale(2) == (2, 2, 2)
    for bad, message in (("two", "scale"), ("0.5", "below 1"), ("1.5", "whole factors")):
        with pytest.raises(InputError, match=message):
            parse_training_scale(bad)


def test_the_presets_load_without_the_engine_or_slicer() -> None:
    """The Qt module file reads the preset names while Slicer loads it, before PyTorch may be installed."""
    import subprocess
    import sys

    code = ("import sys; from MRISuperResLib.slicer.training.presets import PRESET_NAMES, PRESETS; "
            "assert PRESET_NAMES == tuple(PRESETS); "
            "print(sorted(m for m in ('torch', 'numpy', 'slicer', 'vtk', 'yaml') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "MRISuperRes")})
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
