"""Plain helpers shared by test files (fixtures live in ``conftest.py``): tiny models, oblique grids, smooth
test functions, small scans and a tiny training configuration."""

from __future__ import annotations

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
