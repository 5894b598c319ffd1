"""Command line, bad input: a clear one-line error (``mrisuperres: error: ...``), a non-zero exit status, no
traceback unless ``--debug``, no partial output file and an untouched input.

Most cases call :func:`MRISuperResLib.cli.app.main` in-process (fast); missing input and a pickled model also run
the installed console script to check the real exit status and stderr.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import (
    SHAPE,
    assert_clean_failure,
    console_script,
    fingerprint,
    image_from_ijk,
    partial_folders,
    run_cli,
    sidecar_of,
    smooth_array,
    terminal_lines,
    write_image,
    write_smooth,
)
from MRISuperResLib.cli import app as cli

# ------------------------------------------------------------------------------------ bad input cases
#
# Each builder gets (tmp_path, good input, tiny model path) and returns (input, output, extra args, phrases).

Case = Callable[[Path, Path, Path], tuple[Path, Path, list[str], tuple[str, ...]]]


def _missing_input(tmp, good, model):
    return tmp / "in" / "nothing.nii.gz", tmp / "out" / "sr.nii.gz", [], ("does not exist", "nothing.nii.gz")


def _garbage_file(tmp, good, model):
    path = tmp / "in" / "garbage.nii.gz"
    path.write_bytes(b"this is not a volume\n" * 50)
    return path, tmp / "out" / "sr.nii.gz", [], ("cannot read", "garbage.nii.gz")


def _empty_file(tmp, good, model):
    path = tmp / "in" / "empty.nrrd"
    path.write_bytes(b"")
    return path, tmp / "out" / "sr.nii.gz", [], ("cannot read", "empty.nrrd")


def _image_2d(tmp, good, model):
    image = sitk.GetImageFromArray(smooth_array()[:, :, 0].T.copy())
    return write_image(tmp / "in" / "slice.nii.gz", image), tmp / "out" / "sr.nii.gz", [], ("2D",)


def _single_slice_3d(tmp, good, model):
    path = write_image(tmp / "in" / "one_slice.nii.gz", image_from_ijk(smooth_array()[:, :, :1]))
    return path, tmp / "out" / "sr.nii.gz", [], ("2D",)


def _image_4d(tmp, good, model):
    volume = image_from_ijk(smooth_array())
    series = sitk.JoinSeries([volume, volume, volume])
    return write_image(tmp / "in" / "fmri.nii.gz", series), tmp / "out" / "sr.nii.gz", [], ("4D", "3 volumes")


def _vector_nifti(tmp, good, model):
    volume = image_from_ijk(smooth_array())
    rgb = sitk.Compose(volume, volume, volume)
    return write_image(tmp / "in" / "rgb.nii.gz", rgb), tmp / "out" / "sr.nii.gz", [], ("vector", "3 components")


def _vector_nrrd(tmp, good, model):
    volume = image_from_ijk(smooth_array())
    field = sitk.Compose(volume, volume)
    return write_image(tmp / "in" / "field.nrrd", field), tmp / "out" / "sr.nii.gz", [], ("vector", "2 components")


def _nan_voxels(ext):
    def build(tmp, good, model):
        array = smooth_array()
        array[3, 4, 5] = np.nan
        array[0, 0, 0] = np.nan
        path = write_image(tmp / "in" / f"nan{ext}", image_from_ijk(array))
        return path, tmp / "out" / "sr.nii.gz", [], ("NaN", "2 NaN or infinite")
    return build


def _inf_voxels(ext):
    def build(tmp, good, model):
        array = smooth_array()
        array[3, 4, 5] = np.inf
        array[1, 2, 3] = -np.inf
        path = write_image(tmp / "in" / f"inf{ext}", image_from_ijk(array))
        return path, tmp / "out" / "sr.nii.gz", [], ("infinite",)
    return build


def _constant_volume(tmp, good, model):
    path = write_image(tmp / "in" / "flat.nii.gz", image_from_ijk(np.full(SHAPE, 7.0, np.float32)))
    return path, tmp / "out" / "sr.nii.gz", [], ("constant",)


def _constant_integer_volume(tmp, good, model):
    path = write_image(tmp / "in" / "flat_int.nrrd", image_from_ijk(np.full(SHAPE, 3, np.int16)))
    return path, tmp / "out" / "sr.nii.gz", [], ("constant",)


def _too_small(tmp, good, model):
    path = write_smooth(tmp / "in" / "thin.nii.gz", shape=(3, 14, 10))
    return path, tmp / "out" / "sr.nii.gz", ["--model", str(model)], ("at least", "4", "3x14x10")


def _pickled_zip_model(tmp, good, model):
    import torch

    pickled = tmp / "models" / "checkpoint.pt"
    pickled.parent.mkdir(exist_ok=True)
    torch.save({"weight": torch.zeros(3)}, pickled)
    return good, tmp / "out" / "sr.nii.gz", ["--model", str(pickled)], ("pickled",)


def _pickled_legacy_model_named_safetensors(tmp, good, model):
    pickled = tmp / "models" / "looks-safe.safetensors"
    pickled.parent.mkdir(exist_ok=True)
    pickled.write_bytes(pickle.dumps({"weight": [0.0, 1.0]}, protocol=2))
    return good, tmp / "out" / "sr.nii.gz", ["--model", str(pickled)], ("pickled",)


def _garbage_model(tmp, good, model):
    bad = tmp / "models" / "garbage.safetensors"
    bad.parent.mkdir(exist_ok=True)
    bad.write_bytes(os.urandom(4096))
    return good, tmp / "out" / "sr.nii.gz", ["--model", str(bad)], ("corrupted",)


def _truncated_model(tmp, good, model):
    bad = tmp / "models" / "truncated.safetensors"
    bad.parent.mkdir(exist_ok=True)
    data = model.read_bytes()
    bad.write_bytes(data[: len(data) - 1000])
    return good, tmp / "out" / "sr.nii.gz", ["--model", str(bad)], ("corrupted",)


def _bitflipped_model(tmp, good, model):
    bad = tmp / "models" / "flipped.safetensors"
    bad.parent.mkdir(exist_ok=True)
    data = bytearray(model.read_bytes())
    header_length = struct.unpack("<Q", bytes(data[:8]))[0]
    position = 8 + header_length + (len(data) - 8 - header_length) // 2
    data[position] ^= 0xFF
    bad.write_bytes(bytes(data))
    return good, tmp / "out" / "sr.nii.gz", ["--model", str(bad)], ("corrupted",)


def _missing_model_file(tmp, good, model):
    return good, tmp / "out" / "sr.nii.gz", ["--model", str(tmp / "models" / "absent.safetensors")], ("does not exist",)


def _unknown_model_name(tmp, good, model):
    return good, tmp / "out" / "sr.nii.gz", ["--model", "no-such-model"], ("unknown model", "no-such-model")


def _scale_model_cannot_do(tmp, good, model):
    return good, tmp / "out" / "sr.nii.gz", ["--model", str(model), "--scale", "3"], ("cannot do scale 3",)


def _anisotropic_scale_model_cannot_do(tmp, good, model):
    return good, tmp / "out" / "sr.nii.gz", ["--model", str(model), "--scale", "1,1,4"], ("cannot do scale 1,1,4",)


def _no_shipped_model_for_scale(tmp, good, model):
    return good, tmp / "out" / "sr.nii.gz", ["--scale", "3"], ("scale 3",)


def _unparsable_scale(tmp, good, model):
    return good, tmp / "out" / "sr.nii.gz", ["--scale", "two"], ("not understood",)


def _shrinking_scale(tmp, good, model):
    return good, tmp / "out" / "sr.nii.gz", ["--scale", "0.5"], ("below 1",)


def _existing_output(tmp, good, model):
    existing = tmp / "out" / "sr.nii.gz"
    existing.write_bytes(b"precious earlier result")
    return good, existing, ["--model", str(model)], ("already exists", "--overwrite")


def _existing_sidecar(tmp, good, model):
    (tmp / "out" / "sr.nii.gz.json").write_text('{"earlier": true}\n')
    return good, tmp / "out" / "sr.nii.gz", ["--model", str(model)], ("already exists", "sr.nii.gz.json")


def _output_folder_under_a_file(tmp, good, model):
    (tmp / "afile").write_text("a file, not a folder\n")
    return good, tmp / "afile" / "sr.nii.gz", ["--model", str(model)], ("does not exist",)


def _output_folder_missing(tmp, good, model):
    return good, tmp / "no_such_folder" / "sr.nii.gz", ["--model", str(model)], ("does not exist",)


def _output_is_input(tmp, good, model):
    return good, good, ["--model", str(model), "--overwrite"], ("is the input",)


def _output_unknown_extension(tmp, good, model):
    return good, tmp / "out" / "sr.txt", ["--model", str(model)], ("unknown extension",)


def _outputs_share_a_path(tmp, good, model):
    out = tmp / "out" / "sr.nii.gz"
    return good, out, ["--model", str(model), "--baseline", str(out)], ("share one path",)


def _tile_too_small(tmp, good, model):
    return good, tmp / "out" / "sr.nii.gz", ["--model", str(model), "--tile", "2"], ("--tile", "at least 4")


def _unknown_precision(tmp, good, model):
    return (good, tmp / "out" / "sr.nii.gz", ["--model", str(model), "--precision", "float16"],
            ("--precision 'float16'", "auto, float32, bfloat16"))


def _overlap_out_of_range(tmp, good, model):
    return good, tmp / "out" / "sr.nii.gz", ["--model", str(model), "--overlap", "1.5"], ("--overlap", "[0, 1)")


def _unknown_device(tmp, good, model):
    return good, tmp / "out" / "sr.nii.gz", ["--model", str(model), "--device", "tpu"], ("device", "not understood")


BAD_CASES: dict[str, Case] = {
    "missing-input": _missing_input,
    "unreadable-input": _garbage_file,
    "empty-input": _empty_file,
    "2d-image": _image_2d,
    "3d-with-one-slice": _single_slice_3d,
    "4d-image": _image_4d,
    "vector-nifti": _vector_nifti,
    "vector-nrrd": _vector_nrrd,
    "nan-voxels-nifti": _nan_voxels(".nii.gz"),
    "nan-voxels-nrrd": _nan_voxels(".nrrd"),
    "inf-voxels-nifti": _inf_voxels(".nii"),
    "inf-voxels-mha": _inf_voxels(".mha"),
    "constant-volume": _constant_volume,
    "constant-integer-volume": _constant_integer_volume,
    "smaller-than-model-needs": _too_small,
    "pickled-model-zip": _pickled_zip_model,
    "pickled-model-legacy": _pickled_legacy_model_named_safetensors,
    "garbage-model": _garbage_model,
    "truncated-model": _truncated_model,
    "bitflipped-model": _bitflipped_model,
    "missing-model-file": _missing_model_file,
    "unknown-model-name": _unknown_model_name,
    "scale-model-cannot-do": _scale_model_cannot_do,
    "anisotropic-scale-model-cannot-do": _anisotropic_scale_model_cannot_do,
    "no-shipped-model-for-scale": _no_shipped_model_for_scale,
    "unparsable-scale": _unparsable_scale,
    "shrinking-scale": _shrinking_scale,
    "existing-output": _existing_output,
    "existing-sidecar": _existing_sidecar,
    "output-folder-under-a-file": _output_folder_under_a_file,
    "output-folder-missing": _output_folder_missing,
    "output-is-input": _output_is_input,
    "output-unknown-extension": _output_unknown_extension,
    "outputs-share-a-path": _outputs_share_a_path,
    "tile-too-small": _tile_too_small,
    "overlap-out-of-range": _overlap_out_of_range,
    "unknown-precision": _unknown_precision,
    "unknown-device": _unknown_device,
}


@pytest.mark.parametrize("case", list(BAD_CASES), ids=list(BAD_CASES))
def test_bad_input_gives_one_line_error_and_writes_nothing(case, layout, tiny_model, capsys):
    tmp = layout["root"]
    source, output, extra, phrases = BAD_CASES[case](tmp, layout["input"], tiny_model)
    fresh_outputs = () if output.exists() or sidecar_of(output).exists() else (output,)
    before = fingerprint(tmp)
    code, out, err = run_cli(capsys, "enhance", source, output, *extra)
    assert code == cli.EXIT_ERROR
    assert_clean_failure(code, err, phrases, root=tmp, before=before, outputs=fresh_outputs)
    assert out == ""


def test_unwritable_output_folder(layout, tiny_model, capsys, monkeypatch):
    """A folder the user cannot write to is refused before any work (os.access reports it not writable)."""
    tmp, out_dir = layout["root"], layout["out"]
    real_access = os.access

    def access(path, mode, *args, **kwargs):
        if Path(path).resolve() == out_dir.resolve() and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    before = fingerprint(tmp)
    code, _, err = run_cli(capsys, "enhance", layout["input"], out_dir / "sr.nii.gz", "--model", tiny_model)
    assert_clean_failure(code, err, ("not writable", str(out_dir)), root=tmp, before=before,
                         outputs=(out_dir / "sr.nii.gz",))


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write to a 0o500 folder")
def test_unwritable_output_folder_by_permissions(layout, tiny_model, capsys):
    tmp, out_dir = layout["root"], layout["out"]
    out_dir.chmod(0o500)
    try:
        if os.access(out_dir, os.W_OK):
            pytest.skip("this user can write to a 0o500 folder")
        before = fingerprint(tmp)
        code, _, err = run_cli(capsys, "enhance", layout["input"], out_dir / "sr.nii.gz", "--model", tiny_model)
        assert_clean_failure(code, err, ("not writable",), root=tmp, before=before, outputs=(out_dir / "sr.nii.gz",))
    finally:
        out_dir.chmod(0o755)


def test_enhance_with_a_single_path_is_a_one_line_error(layout, capsys):
    before = fingerprint(layout["root"])
    code, _, err = run_cli(capsys, "enhance", layout["input"])
    assert_clean_failure(code, err, ("INPUT and an OUTPUT",), root=layout["root"], before=before)


def test_existing_output_is_refused_then_replaced_with_overwrite(layout, tiny_model, capsys):
    tmp, output = layout["root"], layout["out"] / "sr.nii.gz"
    output.write_bytes(b"precious earlier result")
    (layout["out"] / "sr.nii.gz.json").write_text("{}\n")
    before = fingerprint(tmp)
    code, _, err = run_cli(capsys, "enhance", layout["input"], output, "--model", tiny_model)
    assert_clean_failure(code, err, ("already exists",), root=tmp, before=before)
    assert output.read_bytes() == b"precious earlier result"

    input_before = fingerprint(layout["input"].parent)
    code, _, err = run_cli(capsys, "enhance", layout["input"], output, "--model", tiny_model, "--overwrite")
    assert code == 0, err
    image = sitk.ReadImage(str(output))
    assert image.GetSize() == tuple(2 * n for n in SHAPE)
    assert json.loads((layout["out"] / "sr.nii.gz.json").read_text())["run"]["model"] == "tiny-x2"
    assert fingerprint(layout["input"].parent) == input_before
    assert partial_folders(tmp) == []


def test_error_is_a_plain_line_when_stderr_is_not_a_terminal(layout, capsys):
    """Scripts capture stderr (not a terminal): the error must be the only text there, without progress-bar
    fragments drawn before the input was even checked."""
    code, _, err = run_cli(capsys, "enhance", layout["root"] / "in" / "nothing.nii.gz", layout["out"] / "sr.nii.gz")
    assert code == cli.EXIT_ERROR
    assert "\r" not in err, f"progress-bar output mixed into the error: {err!r}"
    assert err.strip().splitlines() == [err.strip()]
    assert err.startswith("mrisuperres: error:")


def test_debug_prints_a_traceback(layout, capsys):
    missing = layout["root"] / "in" / "nothing.nii.gz"
    code, _, err = run_cli(capsys, "--debug", "enhance", missing, layout["out"] / "sr.nii.gz", "--quiet")
    assert code == cli.EXIT_ERROR
    assert "Traceback (most recent call last)" in err
    assert "InputError" in err
    assert terminal_lines(err)[-1].startswith("mrisuperres: error:")
    assert "does not exist" in terminal_lines(err)[-1]


def test_debug_is_accepted_after_the_subcommand(layout, capsys):
    """``mrisuperres enhance IN OUT --debug`` is how users add the flag to a failing command line."""
    missing = layout["root"] / "in" / "nothing.nii.gz"
    code, _, err = run_cli(capsys, "enhance", missing, layout["out"] / "sr.nii.gz", "--quiet", "--debug")
    assert code == cli.EXIT_ERROR, err
    assert "Traceback (most recent call last)" in err


@pytest.mark.parametrize(
    "error, phrase, status",
    [
        (RuntimeError("something broke inside"), "unexpected RuntimeError: something broke inside", cli.EXIT_INTERNAL),
        (RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"), "out of GPU memory", cli.EXIT_INTERNAL),
        (MemoryError(), "out of memory", cli.EXIT_ERROR),
    ],
    ids=["unexpected", "gpu-oom", "memory-error"],
)
def test_unexpected_errors_are_one_line_without_traceback(layout, tiny_model, capsys, monkeypatch, error, phrase,
                                                          status):
    import MRISuperResLib.engine.enhance as enhance_module

    def explode(*args, **kwargs):
        raise error

    monkeypatch.setattr(enhance_module, "enhance_volume", explode)
    before = fingerprint(layout["root"])
    code, _, err = run_cli(capsys, "enhance", layout["input"], layout["out"] / "sr.nii.gz", "--model", tiny_model)
    assert code == status
    assert_clean_failure(code, err, (phrase,), root=layout["root"], before=before,
                         outputs=(layout["out"] / "sr.nii.gz",))

    code, _, err = run_cli(capsys, "--debug", "enhance", layout["input"], layout["out"] / "sr.nii.gz",
                            "--model", tiny_model)
    assert code == status and "Traceback" in err


# ----------------------------------------------------------------------------------- console script


def test_console_script_missing_input(layout):
    tmp = layout["root"]
    before = fingerprint(tmp)
    output = layout["out"] / "sr.nii.gz"
    done = subprocess.run([*console_script(), "enhance", str(tmp / "in" / "nothing.nii.gz"), str(output)],
                          capture_output=True, timeout=120)  # bytes: keep "\r" as the terminal gets it
    assert done.returncode == 1
    assert_clean_failure(done.returncode, done.stderr.decode(), ("does not exist", "nothing.nii.gz"), root=tmp,
                         before=before, outputs=(output,))
    assert done.stdout == b""


def test_console_script_pickled_model(layout):
    import torch

    tmp = layout["root"]
    pickled = tmp / "models" / "model.pth"
    pickled.parent.mkdir()
    torch.save({"head.weight": torch.ones(2, 2)}, pickled)
    before = fingerprint(tmp)
    output = layout["out"] / "sr.nii.gz"
    done = subprocess.run([*console_script(), "enhance", str(layout["input"]), str(output), "--model", str(pickled)],
                          capture_output=True, timeout=120)
    assert done.returncode == 1
    line = assert_clean_failure(done.returncode, done.stderr.decode(), ("pickled",), root=tmp, before=before,
                                outputs=(output,))
    assert "safetensors" in line
