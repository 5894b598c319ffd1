"""The README's demo: a real sample brain shipped in nilearn, enhanced and scored against its 1 mm truth."""

from __future__ import annotations

from pathlib import Path

import pytest

from MRISuperResLib.cli.app import main


def test_demo_writes_every_output_and_scores_them(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                  mni_volume) -> None:
    assert main(["demo", "--output-dir", str(tmp_path), "--quiet", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    for name in ("mni152_t1_2mm.nii.gz", "mni152_t1_sr.nii.gz", "mni152_t1_bspline.nii.gz",
                 "mni152_t1_difference.nii.gz", "mni152_t1_consistency.nii.gz", "mni152_t1_figure.png",
                 "mni152_t1_sr.nii.gz.json"):
        assert (tmp_path / name).is_file(), name
    assert "B-spline baseline" in printed and "gain over baseline" in printed
