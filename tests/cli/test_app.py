"""Command-line interface: ``mrisuperres enhance | models``, bad-input handling, batch runs and interruption.

Requirement under test: bad input gives a clear one-line error (``mrisuperres: error: ...``), a non-zero exit
status, no traceback unless ``--debug``, no partial output file and an untouched input; label-map-like integer
volumes give a warning; outputs are written atomically, and Ctrl-C / SIGTERM leave nothing behind.

Most cases call :func:`MRISuperResLib.cli.app.main` in-process (fast); missing input, a pickled model and the
interruption tests run the installed console script to check the real exit status and stderr.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pickle
import pty
import shutil
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import manifest_default

from MRISuperResLib.cli import app as cli
from MRISuperResLib.engine.model_zoo import shipped_models
from MRISuperResLib.version import __version__

ROOT = Path(__file__).resolve().parents[2]
PARTIAL_PREFIX = ".mrisuperres-partial-"
#: Input shape (i, j, k) of the small test volumes and their spacing in mm.
SHAPE = (12, 14, 10)
SPACING = (2.0, 2.0, 2.0)


# --------------------------------------------------------------------------------------------- helpers


def console_script() -> list[str]:
    """The installed ``mrisuperres`` console script (falls back to ``python -m MRISuperResLib.cli``)."""
    for candidate in (Path(sys.executable).parent / "mrisuperres", ROOT / ".venv" / "bin" / "mrisuperres"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return [str(candidate)]
    found = shutil.which("mrisuperres")
    return [found] if found else [sys.executable, "-m", "MRISuperResLib.cli"]


def write_image(path: Path, image: sitk.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def image_from_ijk(array: np.ndarray, spacing=SPACING) -> sitk.Image:
    """A SimpleITK image from an ``[i, j, k]`` array (SimpleITK's numpy view is ``[k, j, i]``)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array).transpose(2, 1, 0)))
    image.SetSpacing(tuple(float(s) for s in spacing))
    return image


def smooth_array(shape=SHAPE, seed: int = 0) -> np.ndarray:
    """A smooth random float32 ``[i, j, k]`` array with values around 100..200."""
    rng = np.random.default_rng(seed)
    image = sitk.GetImageFromArray(rng.random(tuple(reversed(shape))).astype(np.float32))
    if min(shape) >= 4:  # the recursive Gaussian needs 4 voxels along every axis
        image = sitk.SmoothingRecursiveGaussian(image, 1.0)
    smooth = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return (100.0 + 100.0 * smooth).astype(np.float32)


def write_smooth(path: Path, shape=SHAPE, seed: int = 0) -> Path:
    return write_image(path, image_from_ijk(smooth_array(shape, seed)))


def fingerprint(root: Path) -> dict[str, tuple]:
    """Every file and folder under ``root`` (hidden ones too) with content hash, size and mtime."""
    result: dict[str, tuple] = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        if path.is_dir():
            result[relative] = ("dir",)
        else:
            stat = path.stat()
            result[relative] = (hashlib.sha256(path.read_bytes()).hexdigest(), stat.st_size, stat.st_mtime_ns)
    return result


def terminal_lines(stderr: str) -> list[str]:
    """The non-empty lines a terminal would show for ``stderr`` (``\\r`` returns to column 0 and overwrites)."""
    shown = []
    for raw in stderr.replace("\r\n", "\n").split("\n"):
        columns: list[str] = []
        for segment in raw.split("\r"):
            columns[: len(segment)] = list(segment)
        line = "".join(columns).rstrip()
        if line.strip():
            shown.append(line)
    return shown


def partial_folders(root: Path) -> list[Path]:
    return [p for p in root.rglob(f"{PARTIAL_PREFIX}*")]


def sidecar_of(path: Path) -> Path:
    """The JSON sidecar of an output: its full file name plus ``.json``."""
    return path.with_name(path.name + ".json")


def run_main(capsys: pytest.CaptureFixture, *argv) -> tuple[int, str, str]:
    """Run ``cli.main`` in-process; argparse exits become return codes."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean_failure(
    code: int,
    stderr: str,
    phrases: tuple[str, ...],
    *,
    root: Path,
    before: dict[str, tuple],
    outputs: tuple[Path, ...] = (),
) -> str:
    """Check one bad-input run: non-zero exit, ONE ``mrisuperres: error:`` line naming the problem, no traceback,
    nothing written or changed under ``root`` (outputs, sidecars, staging folders, the input itself)."""
    assert code != 0, f"expected a non-zero exit status; stderr: {stderr!r}"
    assert "Traceback" not in stderr, stderr
    lines = terminal_lines(stderr)
    assert len(lines) == 1, f"expected exactly one error line, got {lines!r}"
    line = lines[0]
    assert line.startswith("mrisuperres: error:"), line
    for phrase in phrases:
        assert phrase in line, f"{phrase!r} not in {line!r}"
    for output in outputs:
        assert not output.exists(), f"{output} was written"
        assert not sidecar_of(output).exists(), f"sidecar {sidecar_of(output)} was written"
    assert partial_folders(root) == [], "a staging folder was left behind"
    assert fingerprint(root) == before, "files under the test folder were created, changed or removed"
    return line


@pytest.fixture(autouse=True)
def _restore_sigterm():
    """``cli.main`` installs a SIGTERM handler; keep the test process's own handler afterwards."""
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.fixture()
def layout(tmp_path: Path) -> dict[str, Path]:
    """``in/t1.nii.gz`` (12x14x10 smooth float32, 2 mm) and an empty ``out/`` folder."""
    (tmp_path / "out").mkdir()
    return {"root": tmp_path, "input": write_smooth(tmp_path / "in" / "t1.nii.gz"), "out": tmp_path / "out"}


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
    "unknown-device": _unknown_device,
}


@pytest.mark.parametrize("case", list(BAD_CASES), ids=list(BAD_CASES))
def test_bad_input_gives_one_line_error_and_writes_nothing(case, layout, tiny_model, capsys):
    tmp = layout["root"]
    source, output, extra, phrases = BAD_CASES[case](tmp, layout["input"], tiny_model)
    fresh_outputs = () if output.exists() or sidecar_of(output).exists() else (output,)
    before = fingerprint(tmp)
    code, out, err = run_main(capsys, "enhance", source, output, *extra)
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
    code, _, err = run_main(capsys, "enhance", layout["input"], out_dir / "sr.nii.gz", "--model", tiny_model)
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
        code, _, err = run_main(capsys, "enhance", layout["input"], out_dir / "sr.nii.gz", "--model", tiny_model)
        assert_clean_failure(code, err, ("not writable",), root=tmp, before=before, outputs=(out_dir / "sr.nii.gz",))
    finally:
        out_dir.chmod(0o755)


def test_enhance_with_a_single_path_is_a_one_line_error(layout, capsys):
    before = fingerprint(layout["root"])
    code, _, err = run_main(capsys, "enhance", layout["input"])
    assert_clean_failure(code, err, ("INPUT and an OUTPUT",), root=layout["root"], before=before)


def test_existing_output_is_refused_then_replaced_with_overwrite(layout, tiny_model, capsys):
    tmp, output = layout["root"], layout["out"] / "sr.nii.gz"
    output.write_bytes(b"precious earlier result")
    (layout["out"] / "sr.nii.gz.json").write_text("{}\n")
    before = fingerprint(tmp)
    code, _, err = run_main(capsys, "enhance", layout["input"], output, "--model", tiny_model)
    assert_clean_failure(code, err, ("already exists",), root=tmp, before=before)
    assert output.read_bytes() == b"precious earlier result"

    input_before = fingerprint(layout["input"].parent)
    code, _, err = run_main(capsys, "enhance", layout["input"], output, "--model", tiny_model, "--overwrite")
    assert code == 0, err
    image = sitk.ReadImage(str(output))
    assert image.GetSize() == tuple(2 * n for n in SHAPE)
    assert json.loads((layout["out"] / "sr.nii.gz.json").read_text())["run"]["model"] == "tiny-x2"
    assert fingerprint(layout["input"].parent) == input_before
    assert partial_folders(tmp) == []


def test_error_is_a_plain_line_when_stderr_is_not_a_terminal(layout, capsys):
    """Scripts capture stderr (not a terminal): the error must be the only text there, without progress-bar
    fragments drawn before the input was even checked."""
    code, _, err = run_main(capsys, "enhance", layout["root"] / "in" / "nothing.nii.gz", layout["out"] / "sr.nii.gz")
    assert code == cli.EXIT_ERROR
    assert "\r" not in err, f"progress-bar output mixed into the error: {err!r}"
    assert err.strip().splitlines() == [err.strip()]
    assert err.startswith("mrisuperres: error:")


def test_debug_prints_a_traceback(layout, capsys):
    missing = layout["root"] / "in" / "nothing.nii.gz"
    code, _, err = run_main(capsys, "--debug", "enhance", missing, layout["out"] / "sr.nii.gz", "--quiet")
    assert code == cli.EXIT_ERROR
    assert "Traceback (most recent call last)" in err
    assert "InputError" in err
    assert terminal_lines(err)[-1].startswith("mrisuperres: error:")
    assert "does not exist" in terminal_lines(err)[-1]


def test_debug_is_accepted_after_the_subcommand(layout, capsys):
    """``mrisuperres enhance IN OUT --debug`` is how users add the flag to a failing command line."""
    missing = layout["root"] / "in" / "nothing.nii.gz"
    code, _, err = run_main(capsys, "enhance", missing, layout["out"] / "sr.nii.gz", "--quiet", "--debug")
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
    code, _, err = run_main(capsys, "enhance", layout["input"], layout["out"] / "sr.nii.gz", "--model", tiny_model)
    assert code == status
    assert_clean_failure(code, err, (phrase,), root=layout["root"], before=before,
                         outputs=(layout["out"] / "sr.nii.gz",))

    code, _, err = run_main(capsys, "--debug", "enhance", layout["input"], layout["out"] / "sr.nii.gz",
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


# ------------------------------------------------------------------------------------- label maps


def test_label_map_like_volume_warns_but_succeeds(layout, tiny_model, capsys):
    labels = np.zeros(SHAPE, np.uint8)
    labels[2:10, 3:11, 2:8] = 1
    labels[4:8, 5:9, 3:7] = 2
    labels[5:7, 6:8, 4:6] = 3
    source = write_image(layout["root"] / "in" / "labels.nii.gz", image_from_ijk(labels))
    before = fingerprint(source.parent)
    output = layout["out"] / "labels_sr.nii.gz"
    code, out, err = run_main(capsys, "enhance", source, output, "--model", tiny_model, "--quiet")
    assert code == 0, err
    warnings = [line for line in terminal_lines(err) if line.startswith("mrisuperres: warning:")]
    assert len(warnings) == 1, err
    assert "label map" in warnings[0] and "4 distinct" in warnings[0]
    assert "mrisuperres: error" not in err
    assert output.is_file() and sidecar_of(output).is_file()
    assert fingerprint(source.parent) == before


def test_intensity_volume_gives_no_label_map_warning(layout, tiny_model, capsys):
    array = np.rint(smooth_array() * 10).astype(np.int16)  # integer, but many distinct values
    source = write_image(layout["root"] / "in" / "t1_int.nrrd", image_from_ijk(array))
    code, _, err = run_main(capsys, "enhance", source, layout["out"] / "sr.nrrd", "--model", tiny_model, "--quiet")
    assert code == 0, err
    assert "label map" not in err


# ---------------------------------------------------------------------------------- success paths


def test_single_file_with_all_companions_and_json(layout, tiny_model, capsys):
    out_dir = layout["out"]
    paths = {
        "sr": out_dir / "t1_sr.nii.gz",
        "baseline": out_dir / "t1_bspline.nii.gz",
        "difference": out_dir / "t1_diff.nrrd",
        "consistency": out_dir / "t1_dc.mha",
    }
    before = fingerprint(layout["input"].parent)
    code, out, err = run_main(
        capsys, "enhance", layout["input"], paths["sr"], "--model", tiny_model, "--scale", "2", "--device", "cpu",
        "--baseline", paths["baseline"], "--difference", paths["difference"], "--consistency", paths["consistency"],
        "--tile", "8", "--overlap", "0.25", "--json",
    )
    assert code == 0, err
    result = json.loads(out)  # stdout is only the JSON document
    for key in ("timings_s", "device", "outputs", "consistency_nrmse"):
        assert key in result
    assert result["device"].startswith("cpu")
    assert result["outputs"] == {role: str(path) for role, path in paths.items()}
    assert np.isfinite(result["consistency_nrmse"]) and result["consistency_nrmse"] >= 0
    assert result["timings_s"]["total"] > 0 and "inference" in result["timings_s"]
    assert result["input_shape"] == list(SHAPE)
    assert result["output_shape"] == [2 * n for n in SHAPE]
    assert result["model"] == "tiny-x2" and result["scale"] == "2"

    for role, path in paths.items():
        assert path.is_file(), role
        image = sitk.ReadImage(str(path))
        expected = SHAPE if role == "consistency" else tuple(2 * n for n in SHAPE)
        assert image.GetSize() == expected, role
        assert image.GetSpacing() == pytest.approx(SPACING if role == "consistency" else (1.0, 1.0, 1.0)), role
        sidecar = json.loads(sidecar_of(path).read_text())
        assert sidecar["run"]["model"] == "tiny-x2", role
        assert sidecar["provenance"], role
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(
        [p.name for p in paths.values()] + [sidecar_of(p).name for p in paths.values()])
    assert fingerprint(layout["input"].parent) == before
    assert "Traceback" not in err and "mrisuperres: error" not in err


def test_single_file_human_summary_and_no_sidecar(layout, tiny_model, capsys):
    output = layout["out"] / "sr.nii.gz"
    code, out, err = run_main(capsys, "enhance", layout["input"], output, "--model", tiny_model, "--no-sidecar")
    assert code == 0, err
    assert f"{layout['input']} -> {output}" in out
    assert "consistency NRMSE" in out
    assert sorted(p.name for p in layout["out"].iterdir()) == ["sr.nii.gz"]



def test_figure_is_written_with_the_outputs(layout, tiny_model, capsys):
    pytest.importorskip("matplotlib")
    figure = layout["out"] / "t1.png"
    code, out, err = run_main(capsys, "enhance", layout["input"], layout["out"] / "sr.nii.gz", "--model", tiny_model,
                              "--figure", figure, "--json")
    assert code == 0, err
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(out)["outputs"]["figure"] == str(figure)
    assert partial_folders(layout["root"]) == []


@pytest.mark.parametrize("where", ["existing", "missing-folder"])
def test_bad_figure_path_is_refused_before_anything_is_written(layout, tiny_model, capsys, where):
    """The --figure PNG is an output like the others: an existing file (without --overwrite) or a missing folder
    must be refused up front, not after the volumes were written."""
    pytest.importorskip("matplotlib")
    if where == "existing":
        figure = layout["out"] / "t1.png"
        figure.write_bytes(b"earlier figure")
        phrase = "already exists"
    else:
        figure = layout["root"] / "no_such_folder" / "t1.png"
        phrase = "does not exist"
    output = layout["out"] / "sr.nii.gz"
    before = fingerprint(layout["root"])
    code, _, err = run_main(capsys, "enhance", layout["input"], output, "--model", tiny_model, "--figure", figure)
    assert_clean_failure(code, err, (phrase,), root=layout["root"], before=before, outputs=(output,))


def test_progress_bar_is_shown_on_a_terminal(layout, tiny_model, capsys, monkeypatch):
    import io

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    code = cli.main(["enhance", str(layout["input"]), str(layout["out"] / "sr.nii.gz"), "--model", str(tiny_model)])
    monkeypatch.undo()
    assert code == 0
    shown = terminal.getvalue()
    assert "%|" in shown and "super-resolving" in shown and "t1.nii.gz" in shown
    # the bar is cleared when done: nothing is left on the terminal
    assert terminal_lines(shown) == []


def test_several_inputs_into_a_folder_with_companions(tmp_path, tiny_model, capsys):
    a = write_smooth(tmp_path / "in" / "a.nii.gz", seed=1)
    b = write_smooth(tmp_path / "in" / "b.nrrd", seed=2)
    out_dir = tmp_path / "results"  # created by the run
    before = fingerprint(tmp_path / "in")
    code, out, err = run_main(capsys, "enhance", a, b, out_dir, "--model", tiny_model, "--companions", "--quiet")
    assert code == 0, err
    expected = set()
    for stem, ext in (("a", ".nii.gz"), ("b", ".nrrd")):
        for suffix in ("_sr", "_sr_baseline", "_sr_difference", "_sr_consistency"):
            expected |= {f"{stem}{suffix}{ext}", f"{stem}{suffix}{ext}.json"}
    assert {p.name for p in out_dir.iterdir()} == expected
    assert sitk.ReadImage(str(out_dir / "a_sr.nii.gz")).GetSize() == tuple(2 * n for n in SHAPE)
    assert sitk.ReadImage(str(out_dir / "b_sr_consistency.nrrd")).GetSize() == SHAPE
    assert f"{a} -> {out_dir / 'a_sr.nii.gz'}" in out and f"{b} -> {out_dir / 'b_sr.nrrd'}" in out
    assert fingerprint(tmp_path / "in") == before


def test_folder_of_inputs_into_an_output_folder_json(tmp_path, tiny_model, capsys):
    scans = tmp_path / "scans"
    write_smooth(scans / "s1.nii.gz", seed=1)
    write_smooth(scans / "s2.mha", seed=2)
    (scans / "notes.txt").write_text("not a volume\n")
    out_dir = tmp_path / "enhanced"
    out_dir.mkdir()
    before = fingerprint(scans)
    code, out, err = run_main(capsys, "enhance", scans, out_dir, "--model", tiny_model, "--json")
    assert code == 0, err
    payload = json.loads(out)
    assert payload["failed"] == []
    assert [Path(r["input"]).name for r in payload["results"]] == ["s1.nii.gz", "s2.mha"]
    for result in payload["results"]:
        for key in ("timings_s", "device", "outputs", "consistency_nrmse"):
            assert key in result
    assert {p.name for p in out_dir.iterdir()} == {"s1_sr.nii.gz", "s1_sr.nii.gz.json", "s2_sr.mha",
                                                  "s2_sr.mha.json"}
    assert payload["results"][1]["outputs"]["sr"] == str(out_dir / "s2_sr.mha")
    assert fingerprint(scans) == before


def test_empty_input_folder_is_a_one_line_error(tmp_path, tiny_model, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("nothing here\n")
    before = fingerprint(tmp_path)
    code, _, err = run_main(capsys, "enhance", tmp_path / "empty", tmp_path / "out", "--model", tiny_model)
    assert_clean_failure(code, err, ("holds no volume files",), root=tmp_path, before=before)


def _bad_nan(path: Path) -> Path:
    array = smooth_array()
    array[1, 1, 1] = np.nan
    return write_image(path.with_name("bad.nrrd"), image_from_ijk(array))  # NRRD keeps NaN (NIfTI: see above)


def _bad_constant(path: Path) -> Path:
    return write_image(path.with_name("bad.nii.gz"), image_from_ijk(np.full(SHAPE, 5.0, np.float32)))


def _bad_small(path: Path) -> Path:
    return write_smooth(path.with_name("bad.nii.gz"), shape=(12, 3, 10))


def _bad_unreadable(path: Path) -> Path:
    bad = path.with_name("bad.nii.gz")
    bad.write_bytes(b"\x00garbage" * 100)
    return bad


@pytest.mark.parametrize("make_bad", [_bad_nan, _bad_constant, _bad_small, _bad_unreadable],
                         ids=["nan", "constant", "too-small", "unreadable"])
def test_batch_with_one_bad_input_writes_the_others(tmp_path, tiny_model, capsys, make_bad):
    good1 = write_smooth(tmp_path / "in" / "good1.nii.gz", seed=1)
    bad = make_bad(tmp_path / "in" / "x")
    good2 = write_smooth(tmp_path / "in" / "good2.nii.gz", seed=2)
    out_dir = tmp_path / "out"
    before = fingerprint(tmp_path / "in")
    code, out, err = run_main(capsys, "enhance", good1, bad, good2, out_dir, "--model", tiny_model, "--quiet")
    assert code == cli.EXIT_ERROR
    assert "Traceback" not in err
    assert {p.name for p in out_dir.iterdir()} == {"good1_sr.nii.gz", "good1_sr.nii.gz.json", "good2_sr.nii.gz",
                                                  "good2_sr.nii.gz.json"}
    errors = [line for line in terminal_lines(err) if line.startswith("mrisuperres: error:")]
    assert len(errors) == 1, err
    assert bad.name in errors[0], f"the error line does not say which input failed: {errors[0]!r}"
    assert "1 of 3 inputs failed" in err
    assert fingerprint(tmp_path / "in") == before
    assert partial_folders(tmp_path) == []


def test_batch_refuses_single_file_companion_options(tmp_path, tiny_model, capsys):
    a = write_smooth(tmp_path / "in" / "a.nii.gz")
    b = write_smooth(tmp_path / "in" / "b.nii.gz", seed=3)
    before = fingerprint(tmp_path)
    code, _, err = run_main(capsys, "enhance", a, b, tmp_path / "in", "--baseline", tmp_path / "base.nii.gz",
                            "--model", tiny_model)
    assert_clean_failure(code, err, ("--companions",), root=tmp_path, before=before)


def test_batch_output_that_is_a_file_is_refused(tmp_path, tiny_model, capsys):
    a = write_smooth(tmp_path / "in" / "a.nii.gz")
    b = write_smooth(tmp_path / "in" / "b.nii.gz", seed=3)
    (tmp_path / "out.nii.gz").write_bytes(b"a file")
    before = fingerprint(tmp_path)
    code, _, err = run_main(capsys, "enhance", a, b, tmp_path / "out.nii.gz", "--model", tiny_model)
    assert_clean_failure(code, err, ("must be a folder",), root=tmp_path, before=before)


# ---------------------------------------------------------------------------- models, version, help


def test_models_lists_the_shipped_model(capsys):
    names = [entry.name for entry in shipped_models()]
    assert names, "no model is shipped"
    code, out, err = run_main(capsys, "models")
    assert code == 0 and err == ""
    for name in names:
        assert name in out
    assert "default" in out


def test_default_model_restores_thick_slices_along_i(layout, capsys):
    """Without --model, 4,1,1 picks the shipped 1,1,4 model and runs it with the thick axis moved to k."""
    target = layout["out"] / "t1_iso.nii.gz"
    code, out, err = run_main(capsys, "enhance", layout["input"], target, "--scale", "4,1,1", "--device", "cpu",
                              "--threads", "1", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["model"] == manifest_default((4.0, 1.0, 1.0)) and result["axis_order"] == "jki"
    assert result["output_shape"] == [4 * SHAPE[0], SHAPE[1], SHAPE[2]]
    assert sitk.ReadImage(str(target)).GetSpacing() == pytest.approx((SPACING[0] / 4, SPACING[1], SPACING[2]))


def test_models_json(capsys):
    code, out, _ = run_main(capsys, "models", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [row["name"] for row in rows] == [entry.name for entry in shipped_models()]
    for row in rows:
        assert {"name", "family", "scales", "parameters", "size_mb", "default_for", "description", "path"} <= set(row)
        assert Path(row["path"]).is_file() and row["parameters"] > 0
    assert any("isotropic" in row["default_for"] for row in rows)


def test_version(capsys):
    code, out, _ = run_main(capsys, "--version")
    assert code == 0
    assert out.strip() == f"mrisuperres {__version__}"


def test_no_compress_writes_raw_nrrd_and_metaimage_with_the_same_voxels(layout, tiny_model, capsys):
    outputs = {}
    for flag in ((), ("--no-compress",)):
        target = layout["out"] / f"sr{len(flag)}.nrrd"
        base = layout["out"] / f"base{len(flag)}.mha"
        code, _, err = run_main(capsys, "enhance", layout["input"], target, "--model", tiny_model, "--baseline", base,
                                "--quiet", "--device", "cpu", *flag)
        assert code == 0, err
        header = target.read_bytes()[:1000]
        assert (b"encoding: raw" in header) == bool(flag) and (b"encoding: gzip" in header) != bool(flag)
        assert (b"CompressedData = True" in base.read_bytes()[:1000]) != bool(flag)
        outputs[flag] = (sitk.GetArrayFromImage(sitk.ReadImage(str(target))),
                         sitk.GetArrayFromImage(sitk.ReadImage(str(base))))
    for plain, packed in zip(outputs[()], outputs[("--no-compress",)]):
        np.testing.assert_array_equal(plain, packed)


def test_enhance_help_has_examples(capsys):
    code, out, _ = run_main(capsys, "enhance", "--help")
    assert code == 0
    assert "examples" in out
    assert "mrisuperres enhance" in out
    for option in ("--model", "--scale", "--device", "--baseline", "--difference", "--consistency", "--tile",
                   "--overlap", "--json", "--overwrite", "--companions"):
        assert option in out, option


def test_top_level_help_has_examples(capsys):
    code, out, _ = run_main(capsys, "--help")
    assert code == 0
    assert "examples" in out and "enhance" in out and "models" in out


def test_no_arguments_prints_help_and_fails(capsys):
    code, out, _ = run_main(capsys)
    assert code != 0
    assert "usage:" in out and "enhance" in out


# ----------------------------------------------------------------------------------- interruption


def test_interrupt_while_writing_leaves_nothing(layout, tiny_model, capsys, monkeypatch):
    """Ctrl-C after one output was staged: no output, no sidecar, no staging folder, exit status 130."""
    import MRISuperResLib.engine.output_writer as writer_module

    real_stage = writer_module.stage_volume
    calls = []

    def stage_then_interrupt(*args, **kwargs):
        real_stage(*args, **kwargs)
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(writer_module, "stage_volume", stage_then_interrupt)
    tmp, out_dir = layout["root"], layout["out"]
    before = fingerprint(tmp)
    code, _, err = run_main(capsys, "enhance", layout["input"], out_dir / "sr.nii.gz", "--model", tiny_model,
                            "--baseline", out_dir / "base.nii.gz", "--consistency", out_dir / "dc.nii.gz")
    assert code == cli.EXIT_INTERRUPTED
    assert len(calls) >= 2  # the outputs are staged side by side: the third may be staged too, then removed
    assert "interrupted" in err and "Traceback" not in err
    assert list(out_dir.iterdir()) == []
    assert fingerprint(tmp) == before


@pytest.fixture(scope="module")
def big_volume(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 96^3 volume: with --tile 16 --threads 1 and the shipped model it takes minutes, so it is interrupted."""
    rng = np.random.default_rng(5)
    array = (100 + 50 * rng.random((96, 96, 96))).astype(np.float32)
    return write_image(tmp_path_factory.mktemp("big") / "big.nii.gz", image_from_ijk(array))


def _read_into(fd: int, chunks: list[bytes]) -> None:
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:  # EIO once the child closed the terminal
            return
        if not data:
            return
        chunks.append(data)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_console_script_interrupted_leaves_no_partial_output(big_volume, tmp_path, signum):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    output = out_dir / "big_sr.nii.gz"
    before_input = fingerprint(big_volume.parent)
    # stderr on a pseudo-terminal, as for a user pressing Ctrl-C at a shell
    master, slave = pty.openpty()
    # a real terminal has a size; tqdm draws nothing on a 0-column pseudo-terminal
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    process = subprocess.Popen(
        [*console_script(), "enhance", str(big_volume), str(output), "--tile", "16", "--threads", "1",
         "--device", "cpu", "--baseline", str(out_dir / "big_base.nii.gz")],
        stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL,
        # The default SIGINT disposition of an interactive shell, whatever the test runner inherited.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    os.close(slave)
    chunks: list[bytes] = []
    reader = threading.Thread(target=_read_into, args=(master, chunks), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if b"super-resolving" in b"".join(chunks):
                break
            time.sleep(0.1)
        assert process.poll() is None, "the run ended before it could be interrupted"
        assert b"super-resolving" in b"".join(chunks), "no progress was shown within 60 s"
        time.sleep(0.5)
        process.send_signal(signum)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(timeout=5)
        os.close(master)
    stderr = b"".join(chunks).decode(errors="replace")
    assert process.returncode == cli.EXIT_INTERRUPTED, stderr[-2000:]
    assert "Traceback" not in stderr
    lines = terminal_lines(stderr)
    assert lines and "interrupted" in lines[-1] and lines[-1].startswith("mrisuperres:"), lines[-3:]
    assert list(out_dir.iterdir()) == [], "output or a staging folder was left behind"
    assert fingerprint(big_volume.parent) == before_input


def test_interrupt_while_the_command_line_loads_is_one_line(monkeypatch, capsys):
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["models"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "mrisuperres: interrupted; no partial output was written"
