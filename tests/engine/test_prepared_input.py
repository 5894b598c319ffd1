"""Reading an enhance input before torch is loaded (MRISuperResLib.engine.prepared_input)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from helpers import sample_smooth_function
from MRISuperResLib.engine.prepared_input import prepare_input, wanted_mask, wants_dicom_source
from MRISuperResLib.processing.masks import foreground_mask
from MRISuperResLib.imaging.volume import Grid, Volume
from MRISuperResLib.imaging.volume_io import write_volume

ROOT = Path(__file__).resolve().parents[2]


def smooth_volume(shape: tuple[int, int, int]) -> Volume:
    """A head-like blob: a smooth function inside a sphere, zero outside (so the head mask is not everything)."""
    grid = Grid(shape, (1.5, 1.5, 2.0), (0.0, 0.0, 0.0))
    index = np.indices(shape).reshape(3, -1).T
    inside = np.linalg.norm((index - (np.asarray(shape) - 1) / 2) / np.asarray(shape), axis=1) < 0.35
    values = (sample_smooth_function(grid) + 2.0).ravel() * 100 * inside
    return Volume(values.reshape(shape).astype(np.float32), grid)


def test_prepared_input_is_the_read_volume_and_its_head_mask(tmp_path: Path) -> None:
    volume = smooth_volume((20, 22, 18))
    path = write_volume(volume, tmp_path / "in.nii.gz")
    prepared = prepare_input(path, foreground=True)
    np.testing.assert_array_equal(prepared.volume.array, volume.array)
    expected = foreground_mask(prepared.volume)
    assert prepared.foreground is not None and prepared.foreground.shape == (20, 22, 18)
    assert 0 < prepared.foreground.mean() < 1
    np.testing.assert_array_equal(prepared.foreground, expected)
    assert set(prepared.timings or {}) == {"read", "head_mask"}
    assert prepare_input(path).foreground is None


def test_reading_and_masking_an_input_never_imports_torch(tmp_path: Path) -> None:
    # The command line reads while torch loads on another thread; importing torch here would serialise them.
    path = write_volume(smooth_volume((16, 16, 16)), tmp_path / "in.nii.gz")
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'MRISuperRes')!r}); "
            "from MRISuperResLib.cli import app, cohort; from MRISuperResLib.engine import model_zoo; "
            "from MRISuperResLib.imaging import output_paths; "
            "from MRISuperResLib.engine.prepared_input import prepare_input; "
            f"prepare_input({str(path)!r}, foreground=True); "
            "model_zoo.resolve_model('default', (2.0, 2.0, 2.0)); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'monai')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_mask_and_dicom_source_choices() -> None:
    assert wanted_mask(None, {"mask_background": True}) and not wanted_mask(None, {})
    assert wanted_mask(True, {}) and not wanted_mask(False, {"mask_background": True})
    assert wants_dicom_source([Path("out/sr.nii.gz"), Path("out/series")])
    assert not wants_dicom_source([Path("out/SR.NII.GZ"), Path("out/sr.nrrd")])
