"""``mrisuperres register``: align a real low-resolution scan with its high-resolution partner.

Registers MOVING (e.g. the low-resolution scan) onto FIXED (the high-resolution scan) by mutual information
(rigid, then affine; see :mod:`MRISuperResLib.processing.registration`; with ``--deformable`` a B-spline
deformation follows, :mod:`MRISuperResLib.processing.deformable`), writes MOVING resampled into FIXED's frame
and saves the transform (ITK convention: fixed -> moving points; Slicer loads it as is). Nothing is written when
the pair cannot be registered. Wired into :mod:`MRISuperResLib.cli.app` by :func:`add_parser` and :func:`run`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import SimpleITK as sitk

    from ..imaging.geometry import Scale
    from ..imaging.volume import Grid, Volume

EXAMPLES = """examples:
  mrisuperres register t1_1mm.nii.gz t2_thick.nii.gz t2_in_t1.nii.gz
  mrisuperres register hr.nii.gz lr.nii.gz lr_aligned.nii.gz --grid coarse:2 --transform lr_to_hr.tfm
  mrisuperres register hr.nrrd lr.nrrd lr_aligned.nrrd --grid moving --rigid-only --json
  mrisuperres register t1_7T.nii.gz t1_3T.nii.gz t1_3T_in_7T.nii.gz --deformable --transform 3T_to_7T.h5
"""


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add the ``register`` subcommand to ``commands`` (the object ``add_subparsers`` returned)."""
    parser = commands.add_parser(
        "register",
        help="align a low-resolution scan with its high-resolution partner (mutual information)",
        description="Register MOVING onto FIXED (rigid, then affine, by Mattes mutual information, so the two "
        "may have different contrasts), write MOVING resampled into FIXED's frame to OUTPUT and save the "
        "transform. A pair that cannot be registered stops with an error and writes nothing.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("fixed", metavar="FIXED", help="reference volume (e.g. the high-resolution scan)")
    parser.add_argument("moving", metavar="MOVING", help="volume to align (e.g. the low-resolution scan)")
    parser.add_argument("output", metavar="OUTPUT", help="MOVING resampled into FIXED's frame (volume file)")
    parser.add_argument("--transform", metavar="FILE",
                        help="where to save the transform (.tfm, .txt, .h5, .mat) [OUTPUT name + .tfm]")
    parser.add_argument("--rigid-only", action="store_true", help="stop after the rigid stage (6 parameters)")
    parser.add_argument("--deformable", action="store_true",
                        help="after the affine stage, add a cubic B-spline deformation (seed 002 registers with "
                        "ANTs' affine + deformable default); the transform is then a composite (.h5 or .tfm)")
    parser.add_argument("--mesh-mm", type=float, default=40.0,
                        help="with --deformable: spacing of the B-spline control points in mm [40]")
    parser.add_argument("--grid", default="fixed",
                        help="output grid: 'fixed' (FIXED's grid), 'moving' (MOVING's own voxel size and shape, "
                        "placed in FIXED's frame: voxel values kept for a rigid transform) or 'coarse:S' (S times "
                        "coarser than FIXED over the same extent; S is one factor or three in i,j,k order, "
                        "e.g. coarse:2 or coarse:1,1,4) [fixed]")
    parser.add_argument("--interpolator", choices=("bspline", "linear", "nearest"), default="bspline",
                        help="interpolation of the resampled volume [bspline]")
    parser.add_argument("--seed", type=int, default=0, help="seed of the metric's random samples [0]")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--json", action="store_true", help="print machine-readable results on stdout")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``mrisuperres register``; returns the exit status (user errors raise ``MRISuperResError``)."""
    from ..errors import MRISuperResError
    from ..imaging.provenance import KEY_PREFIX
    from ..processing.registration import check_transform_path, register, resample_into, stage_transform
    from ..version import __version__
    from ..imaging.volume_io import (
        check_writable_target,
        commit_staged,
        read_volume,
        stage_volume,
        staging_folder,
        strip_volume_extension,
        volume_extension,
    )

    from ..imaging.output_paths import check_no_collisions, written_path

    output = written_path(args.output)  # any letter case in the extension; written lower-case
    transform_path = Path(args.transform) if args.transform else output.with_name(
        f"{strip_volume_extension(output)}.tfm")
    if not volume_extension(output):
        raise MRISuperResError(f"output {output} must be a volume file (.nii.gz, .nii, .nrrd, .nhdr, .mha, .mhd)")
    if output.resolve() == transform_path.resolve():
        raise MRISuperResError("--transform must differ from OUTPUT")
    check_writable_target(output, args.overwrite)
    check_transform_path(transform_path, args.overwrite)
    check_no_collisions({f"the output {output}": [output], f"the transform {transform_path}": [transform_path]},
                        inputs=[args.fixed, args.moving])
    grid_choice = _parse_grid(args.grid)
    if args.deformable and (args.rigid_only or grid_choice[0] == "moving"):
        raise MRISuperResError("--deformable needs the affine stage and a fixed or coarse grid; leave out "
                               "--rigid-only and --grid moving")

    fixed = read_volume(args.fixed)
    moving = read_volume(args.moving)
    if not args.json:
        print(f"registering {args.moving} onto {args.fixed} ({'rigid' if args.rigid_only else 'rigid, then affine'})"
              " ...", file=sys.stderr)
    start = time.perf_counter()
    result = register(fixed, moving, affine=not args.rigid_only, seed=args.seed)
    transform, metric, deformable = result.transform, result.metric, None
    if args.deformable:
        from ..processing.deformable import register_deformable

        if not args.json:
            print(f"affine: Mattes mutual information {result.metric:.4f}; B-spline deformation (control points "
                  f"every {args.mesh_mm:g} mm) ...", file=sys.stderr)
        deformable = register_deformable(fixed, moving, result.transform, mesh_mm=args.mesh_mm, seed=args.seed)
        transform, metric = deformable.transform, deformable.metric_after
    seconds = time.perf_counter() - start
    grid = _output_grid(grid_choice, fixed, moving, transform)
    aligned = resample_into(moving, transform, grid, args.interpolator)
    provenance = {"software": "MRISuperRes", "engine_version": __version__, "role": "registered",
                  "source": Path(args.moving).name, "fixed": Path(args.fixed).name,
                  "transform": transform_path.name, "mattes_mi": f"{metric:.4f}"}
    aligned = aligned.with_array(aligned.array, metadata={f"{KEY_PREFIX}{k}": v for k, v in provenance.items()})

    # Volume and transform appear together or not at all (one staging folder per target folder).
    with contextlib.ExitStack() as stack:
        staged = {folder: stack.enter_context(staging_folder(folder))
                  for folder in {output.parent, transform_path.parent}}
        stage_volume(aligned, staged[output.parent], output.name,
                     description=f"MRISuperRes: {Path(args.moving).name} registered onto {Path(args.fixed).name}")
        stage_transform(transform, staged[transform_path.parent], transform_path.name)
        commit_staged(staged, args.overwrite)

    summary = {
        "fixed": str(args.fixed),
        "moving": str(args.moving),
        "output": str(output),
        "transform": str(transform_path),
        "grid": {"shape": list(grid.shape), "spacing": list(grid.spacing), "origin": list(grid.origin),
                 "direction": grid.direction.tolist()},
        "seconds": round(seconds, 2),
        **result.summary(),
        **({"metric": metric, "deformable": deformable.summary()} if deformable is not None else {}),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        stages = ", ".join(f"{name} {value:.3f}" for name, value in result.stage_metrics.items())
        if deformable is not None:
            stages += f", deformable {deformable.metric_after:.3f}"
        print(f"{args.moving} -> {output}  (Mattes mutual information {metric:.3f} [{stages}], "
              f"{seconds:.1f} s)\ntransform (fixed -> moving) -> {transform_path}")
    return 0


def _parse_grid(text: str) -> tuple[str, Scale | None]:
    from ..errors import MRISuperResError
    from ..imaging.geometry import parse_scale

    if text in ("fixed", "moving"):
        return text, None
    if text.startswith("coarse:"):
        return "coarse", parse_scale(text.split(":", 1)[1])
    raise MRISuperResError(f"--grid {text!r} is not understood; use fixed, moving or coarse:S (e.g. coarse:2)")


def _output_grid(choice: tuple[str, Scale | None], fixed: Volume, moving: Volume, transform: sitk.Transform) -> Grid:
    import numpy as np

    from ..imaging.geometry import resampled_grid
    from ..processing.registration import moving_grid_in_fixed_frame

    kind, scale = choice
    if kind == "fixed":
        return fixed.grid
    if kind == "moving":
        return moving_grid_in_fixed_frame(moving.grid, transform)
    shape = np.maximum(np.rint(np.asarray(fixed.shape) / np.asarray(scale)), 1).astype(int)
    return resampled_grid(fixed.grid, tuple(int(n) for n in shape))
