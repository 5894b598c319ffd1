"""Plain helpers shared by test files (fixtures live in ``conftest.py``): tiny models, oblique grids, smooth
test functions, small scans and a tiny training configuration; for the command-line tests, images from
``[i, j, k]`` arrays, folder fingerprints, what a terminal shows, and the check of a clean failure."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MRISuperResLib import models
from MRISuperResLib.engine.checkpoint import save_model
from MRISuperResLib.imaging.volume import Grid

ROOT = Path(__file__).resolve().parents[1]


def make_tiny_model(path: Path, scale=(2, 2, 2), global_skip: str = "baseline", seed: int = 0,
                    random_tail: bool = True, **metadata) -> Path:
    """Save a tiny EDSR-3D (8 channels, 1 block) with random weights (non-zero tail) to ``path``."""
    import torch

    torch.manual_seed(seed)
    config = {"scale": list(scale), "channels": 8, "blocks": 1, "kernel_size": 3, "res_scale": 1.0,
              "upsample_features": 2, "global_skip": global_skip}
    network = models.create("edsr3d", **config)
    if random_tail:
        torch.nn.init.normal_(network.tail.conv.weight, std=0.05)
    return save_model(network, path, name=path.stem, family="edsr3d", config=config, **metadata)


WEIGHTS_MANIFEST = ROOT / "MRISuperRes" / "MRISuperResLib" / "weights" / "models.json"


def manifest_default(scale) -> str:
    """The shipped model that ``weights/models.json`` marks the default for the kind of ``scale`` (read from the
    file itself, independently of the engine's resolver)."""
    import json

    kind = "isotropic" if scale[0] == scale[1] == scale[2] else "anisotropic"
    names = [m["name"] for m in json.loads(WEIGHTS_MANIFEST.read_text(encoding="utf-8"))["models"]
             if kind in m["default_for"]
             and (m["scales"] == "any" or any(sorted(s) == sorted(scale) for s in m["scales"]))]
    assert len(names) == 1, f"{len(names)} shipped defaults for {kind} scale {scale}: {names}"
    return names[0]


def write_catalogue(folder: Path, defaults: dict[str, list[str]] | None = None) -> Path:
    """List every model file in ``folder`` in its ``models.json``, as ``scripts/ship_model.py`` does; ``defaults``
    maps a model name to the kinds of scale it is the default for."""
    from MRISuperResLib.engine.checkpoint import file_checksum, read_metadata
    from MRISuperResLib.engine.model_manifest import ManifestEntry, write_manifest
    from MRISuperResLib.engine.model_metadata import ModelMetadata

    entries = []
    for path in sorted(folder.glob("*.safetensors")):
        metadata = ModelMetadata.from_header(read_metadata(path))
        name = metadata.name or path.stem
        entries.append(ManifestEntry(name, path.name, file_checksum(path), None, metadata.scales,
                                     tuple((defaults or {}).get(name, ()))))
    return write_manifest(folder, entries)


def rotation_matrix(axis: tuple[float, float, float], angle: float) -> np.ndarray:
    """Right-handed 3x3 rotation by ``angle`` radians about ``axis`` (Rodrigues' formula)."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    cross = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
    return np.eye(3) + np.sin(angle) * cross + (1.0 - np.cos(angle)) * cross @ cross


def oblique_grid(shape: tuple[int, int, int], spacing: tuple[float, float, float] = (2.0, 2.5, 3.0)) -> Grid:
    """An oblique (rotated, right-handed) grid with a non-zero origin and the given spacing."""
    return Grid(shape, spacing, (-12.5, 30.25, 7.75), rotation_matrix((1.0, 2.0, 3.0), 0.4))


def smooth_function(points: np.ndarray) -> np.ndarray:
    """A smooth, strictly positive function of LPS position (mm, ``(..., 3)``); wavelengths of 25-40 mm."""
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    return (
        100.0
        + 30.0 * np.sin(2 * np.pi * (x + 0.5 * y) / 40.0 + 0.2)
        + 20.0 * np.cos(2 * np.pi * (y - z) / 30.0)
        + 10.0 * np.sin(2 * np.pi * z / 25.0) * np.cos(2 * np.pi * x / 35.0)
    )


def sample_smooth_function(grid: Grid, shift: float = 0.0) -> np.ndarray:
    """:func:`smooth_function` at the voxel centres of ``grid`` (float64), optionally ``shift`` voxels off
    along every index axis."""
    axes = [np.arange(n, dtype=np.float64) + shift for n in grid.shape]
    indices = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    return smooth_function(grid.physical_points(indices))


def randomized(network, seed: int = 0, std: float = 0.2, perturb: bool = False):  # type: ignore[no-untyped-def]
    """Give every parameter seeded random values (``perturb``: add them instead), so that untrained
    zero-initialised layers do not hide mistakes; returns the network in eval mode."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in network.parameters():
            noise = std * torch.randn(parameter.shape, generator=generator)
            parameter.add_(noise) if perturb else parameter.copy_(noise)
    return network.eval()


def smooth_bias(grid: Grid) -> np.ndarray:
    """A smooth multiplicative field (about 0.7 to 1.4 over a head): a linear ramp plus a quadratic bump."""
    indices = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in grid.shape], indexing="ij"), axis=-1)
    points = grid.physical_points(indices)
    x = (points - points.reshape(-1, 3).mean(axis=0)) / 80.0
    return np.exp(0.35 * x[..., 0] - 0.25 * x[..., 1] + 0.3 * x[..., 2] ** 2 - 0.2 * x[..., 1] * x[..., 2])


def coefficient_of_variation(values: np.ndarray) -> float:
    return float(values.std() / values.mean())


#: Shape of :func:`write_scan`'s scans.
SHAPE = (12, 14, 10)


def write_scan(path: Path, seed: int = 0, shape=SHAPE, noise: bool = False, sigma: float = 1.0) -> Path:
    """A small float32 volume (2 mm): random voxels smoothed with a Gaussian of ``sigma`` voxels, or white noise
    when ``noise``; ``path``'s folder is created."""
    rng = np.random.default_rng(seed)
    array = rng.random(tuple(reversed(shape))).astype(np.float32)
    image = sitk.GetImageFromArray(array)
    if not noise and min(shape) >= 4:  # the recursive Gaussian needs four voxels along every axis
        image = sitk.SmoothingRecursiveGaussian(image, sigma)
    image = sitk.RescaleIntensity(image, 100.0, 200.0)
    image.SetSpacing((2.0, 2.0, 2.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.Cast(image, sitk.sitkFloat32), str(path))
    return path


def run_main(capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str, str]:
    from MRISuperResLib.cli import app as cli

    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ------------------------------------------------------------------------------------ command-line tests
#: Prefix of the staging folders the command line writes outputs into before moving them in place.
PARTIAL_PREFIX = ".mrisuperres-partial-"
#: Voxel spacing (mm) of the small command-line test volumes (their shape is :data:`SHAPE`).
SPACING = (2.0, 2.0, 2.0)


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


def run_cli(capsys: pytest.CaptureFixture, *argv) -> tuple[int, str, str]:
    """Run ``cli.main`` in-process; argparse exits become return codes (unlike :func:`run_main`)."""
    from MRISuperResLib.cli import app as cli

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


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for torchrun's rendezvous: a fixed port can still be held by an earlier run)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tiny_config(paths: list[Path], output: Path, **overrides) -> dict:
    config = {
        "name": "tiny",
        "output_dir": str(output),
        "seed": 3,
        "model": {"family": "edsr3d", "config": {"scale": [2, 2, 2], "channels": 8, "blocks": 1,
                                                  "upsample_features": 2, "global_skip": "baseline"}},
        "data": {"train": [str(p) for p in paths[:2]], "validation": [str(paths[2])], "patch_size": [8, 8, 8],
                 "batch_size": 2, "resimulate_every": 4, "degradation": {"kind": "kspace", "noise": [0, 0.02]}},
        "augment": {"gmm_contrast": 0.5},
        "optim": {"lr": 0.002},
        "run": {"steps": 12, "validate_every": 5, "checkpoint_every": 3, "log_every": 2, "device": "cpu",
                "early_stop_patience": 0},
    }
    for section, values in overrides.items():
        if isinstance(values, dict):
            config.setdefault(section, {}).update(values)
        else:
            config[section] = values
    return config


# ------------------------------------------------------------------------------------- Slicer training logic
#: The network of every Slicer training test run: 8 channels, one block (a few thousand parameters).
TINY_NETWORK = {"channels": 8, "blocks": 1, "upsample_features": 2, "global_skip": "baseline"}


def tiny_settings(output: Path, name: str = "tiny", **overrides):  # type: ignore[no-untyped-def]
    """``TrainingSettings`` of a tiny CPU run (one thread, 6 steps, 8-voxel patches) publishing into ``output``."""
    from MRISuperResLib.slicer.training import TrainingSettings

    values = dict(name=name, output_folder=output, model_config=dict(TINY_NETWORK), patch_size=(8, 8, 8),
                  batch_size=2, steps=6, validate_every=3, log_every=1, checkpoint_every=1, threads=1,
                  device="cpu", validation_crop=(12, 12, 12))
    values.update(overrides)
    return TrainingSettings(**values)


def brain_scene(volume, count: int = 3):  # type: ignore[no-untyped-def]
    """A scene with ``count`` brain "subjects" (the 4 mm MNI152 at different intensity scales), as nodes."""
    import slicer

    from MRISuperResLib.slicer.volumes import add_volume_node

    scene = slicer.vtkMRMLScene()
    nodes = [add_volume_node(scene, volume.with_array(volume.array * gain), f"brain{index}")
             for index, gain in enumerate((1.0, 0.8, 1.2, 0.9)[:count])]
    return scene, nodes


def low_resolution_copy(volume, degrees: float = 4.0):  # type: ignore[no-untyped-def]
    """``volume`` block-averaged to twice its voxel size, then rotated and shifted (a real pair's misalignment)."""
    from MRISuperResLib.imaging.geometry import resampled_grid
    from MRISuperResLib.imaging.volume import Volume
    from MRISuperResLib.processing.degradation import box_downsample

    shape = tuple(n // 2 for n in volume.shape)
    usable = tuple(n * 2 for n in shape)
    coarse = box_downsample(volume.array[: usable[0], : usable[1], : usable[2]].astype(np.float32), shape)
    grid = resampled_grid(Grid(usable, volume.spacing, volume.grid.origin, volume.grid.direction), shape)
    rotation = rotation_matrix((1.0, 0.5, -0.3), np.deg2rad(degrees))
    return Volume(coarse, Grid(shape, grid.spacing, tuple(np.asarray(grid.origin) + (3.0, -2.0, 2.5)),
                               rotation @ grid.direction))


def snapshot(node) -> tuple:  # type: ignore[no-untyped-def]
    """Everything of a volume node the training logic must leave alone."""
    import slicer
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    attributes = {name: node.GetAttribute(name) for name in node.GetAttributeNames() or ()}
    return (node.GetMTime(), node.GetImageData().GetMTime(), slicer.util.arrayFromVolume(node).copy().tobytes(),
            slicer.util.arrayFromVTKMatrix(matrix).tobytes(), attributes, node.GetTransformNodeID(), node.GetName())
