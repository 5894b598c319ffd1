"""Ship a trained model: copy it into the engine's weights folder, list it in the shipped-model manifest
(``weights/models.json``) and write its model card from a fresh evaluation.

``--default-for KIND`` marks it the default for that kind of scale (``isotropic``, ``anisotropic`` or
``arbitrary``) at its own scales, and takes the mark off the model that held it for a scale the new one also does.

The card (``weights/<name>.md``) states the training data and licences, the forward model, the recipe (command
and config), the validation result, the calibrated data-consistency threshold, per-volume PSNR / SSIM against
cubic B-spline on held-out subjects at several noise levels, and the intended use and limits.

Usage (from the repository root, after the recipe's ``mrisuperres train --config ...`` stages)::

    python scripts/ship_model.py runs/edsr3d-x2-brain-stage3/edsr3d-x2-brain.safetensors \
        --config configs/default_x2.yaml configs/default_x2_stage2.yaml configs/default_x2_stage3.yaml \
        --default-for isotropic --scale 2 --kind kspace \
        --references MNI152 ../shared/data/pairs/IXI002_T1.nii.gz ../shared/data/pairs/IXI002_T2.nii.gz

``MNI152`` stands for the MNI152 2009 template shipped inside nilearn. ``--recard`` re-runs only the held-out
evaluation of an already shipped model (named by its file or name) and replaces that section of its card and its
figures, after an engine change that alters its outputs::

    python scripts/ship_model.py --recard edsr3d-x2-brain --scale 2 --kind kspace --crop 160,160,128 \
        --references ../shared/data/eval ../shared/data/pairs/IXI002_T1.nii.gz ../shared/data/pairs/IXI002_T2.nii.gz MNI152
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "MRISuperRes"))

from MRISuperResLib.engine.checkpoint import file_checksum, load_model_file, read_metadata, save_model  # noqa: E402
from MRISuperResLib.engine.model_manifest import (  # noqa: E402
    DEFAULT_KINDS, MANIFEST_NAME, ManifestEntry, mark_default, read_manifest, write_manifest)
from MRISuperResLib.engine.model_metadata import ModelMetadata  # noqa: E402
from MRISuperResLib.evaluation.evaluate import (  # noqa: E402
    VolumeScores, evaluate_files, evaluation_spec, expand_references, scores_table)
from MRISuperResLib.imaging.geometry import format_scale, format_voxel_range, parse_scale  # noqa: E402
from MRISuperResLib.engine.model_zoo import WEIGHTS_FOLDER  # noqa: E402
from MRISuperResLib.imaging.samples import mni152_t1_path  # noqa: E402

#: Keys save_model takes as arguments; everything else in the metadata travels as ``extra``.
SAVE_ARGUMENTS = ("name", "family", "config", "version", "description", "normalization", "degradation", "training",
                  "metrics", "license")
#: Keys save_model computes itself.
COMPUTED = ("scales", "min_input_size", "created", "engine_version", "parameters", "flops_per_output_voxel",
            "weights_sha256")

LICENCES = {
    "stroke_T1.nii.gz": "neurolabusc/VolumeRenderingData stroke T1w (MIT)",
    "stroke_T2.nii.gz": "neurolabusc/VolumeRenderingData stroke T2w (MIT)",
    "stroke_FLAIR.nii.gz": "neurolabusc/VolumeRenderingData stroke FLAIR (MIT)",
    "seg3D_T1.nii.gz": "neurolabusc/VolumeRenderingData seg3D head T1w, CIBC Seg3D data (MIT)",
    "colin27_T1.nii.gz": "Colin27 T1w average from ANTsX/ANTsPy data (Apache-2.0 repository; Colin27 permissive)",
    "voxelmorph_T1.nii.gz": "voxelmorph/voxelmorph test scan, T1w (Apache-2.0)",
    "uih_uMR770_T1w_head.nii.gz": "raw head T1w 3D GRE, United Imaging uMR 770 3T, 0.5 x 0.5 x 1 mm, "
                                  "neurolabusc/dcm_qa_uih (BSD-2)",
    "siemens_prisma_T1w_head.nii.gz": "raw head T1w MPRAGE, Siemens Prisma fit 3T, neurolabusc/dcm_qa_asl (BSD-2)",
    "philips_achieva_T1w_head.nii.gz": "defaced head T1w 3D TFE, Philips Achieva 3T, 0.7 x 0.67 x 0.67 mm, "
                                       "studyforrest via datalad/example-dicom-structural (ODC-PDDL 1.0)",
    "arc_M2299_T1w_head.nii.gz": "defaced head T1w MPRAGE, chronic stroke, Siemens 3T, Aphasia Recovery Cohort via "
                                 "neurolabusc/CPUsForNeuroimaging (BSD-2 repository; data CC0)",
    "arc_M2299_T2w_head.nii.gz": "same subject and session, T2w 3D SPACE (BSD-2 repository; data CC0)",
    "arc_M2307_T2w_brain.nii.gz": "skull-stripped T2w, chronic stroke, Aphasia Recovery Cohort via "
                                  "rordenlab/niimath-bitmap (CC0)",
    "glioma_T2w_brain.nii.gz": "skull-stripped T2w, glioblastoma (TCIA UPENN-GBM-00002) via "
                               "pwoznicki/AutoRadiomics (Apache-2.0 repository; data CC BY 4.0)",
    "stroke2_T2w_head.nii.gz": "cropped head T2w, stroke, neurolabusc/Clinical (BSD-2)",
}


def _data_name(name: str) -> str:
    """The development data's file name of a training volume (a packed copy unpacks to ``NAME.nii``)."""
    return f"{name}.gz" if name.endswith(".nii") else name


def _licence(name: str) -> str:
    """Source and licence of a training volume, by its development data name."""
    return LICENCES.get(_data_name(name), "see the data README")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="trained model file (runs/<name>/<name>.safetensors); with "
                        "--recard, a shipped model's name or file")
    parser.add_argument("--recard", action="store_true",
                        help="do not ship: re-run the held-out evaluation of a shipped model (after an engine change "
                        "such as a new default) and replace that section of its card and its figures")
    parser.add_argument("--config", type=Path, nargs="+",
                        help="the training config (the recipe); several for a staged recipe, in order")
    parser.add_argument("--default-for", choices=DEFAULT_KINDS, nargs="*", default=[],
                        help="kinds of scale it becomes the default for (un-marks the previous default)")
    parser.add_argument("--scale", required=True, help="scale to evaluate, i,j,k")
    parser.add_argument("--kind", required=True, help="forward model of the evaluation (kspace, box, or i,j,k list)")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.01, 0.02],
                        help="k-space noise levels of the evaluation (fraction of the 99th percentile)")
    parser.add_argument("--references", nargs="+", required=True, help="held-out high-resolution volumes")
    parser.add_argument("--training-time", default="", help="how long the recipe took, for the card")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--crop", help="score a block of at most I,J,K voxels centred on the head (as evaluate --crop)")
    parser.add_argument("--voxel-mm", help="LOW,HIGH: the training volumes' voxel edge range (mm), for a file that "
                        "does not record it (trained before training.voxel_mm existed); goes into the manifest")
    parser.add_argument("--data-note", default="", help="a paragraph for the card's training-data section (e.g. how "
                        "the volumes were packed for a remote GPU)")
    parser.add_argument("--figures", type=Path, default=ROOT / "docs" / "models",
                        help="folder for the evaluation figures (at the middle noise level) [docs/models]")
    return parser.parse_args(argv)


def ship(model_path: Path, default_for: list[str], voxel_mm: tuple[float, float] | None = None) -> Path:
    """Re-save the trained file into the weights folder and list it in the manifest, marked as the default for
    the ``default_for`` kinds of scale (the previous holder of a mark it takes is un-marked)."""
    loaded = load_model_file(model_path)
    # The manifest states every shipped model's training voxel range, the file's own record first.
    voxel_mm = loaded.metadata.trained_voxel_mm or voxel_mm
    metadata = loaded.metadata.to_header()
    arguments = {key: metadata.pop(key) for key in SAVE_ARGUMENTS if key in metadata}
    for key in COMPUTED:
        metadata.pop(key, None)
    # Trained with noisy inputs, the model cleans the background; outside the head that is invention, so the
    # shipped models keep the B-spline baseline there unless the user asks otherwise (--no-mask-background).
    metadata["mask_background"] = True
    for key in ("untrained", "default_for", "card"):  # the default and the card are the manifest's
        metadata.pop(key, None)
    path = save_model(loaded.network, WEIGHTS_FOLDER / f"{arguments['name']}.safetensors", extra=metadata,
                      **arguments)
    entry = ManifestEntry(str(arguments["name"]), path.name, file_checksum(path), f"{arguments['name']}.md",
                          ModelMetadata.from_header(read_metadata(path)).scales, tuple(dict.fromkeys(default_for)),
                          voxel_mm)
    listed = read_manifest(WEIGHTS_FOLDER) if (WEIGHTS_FOLDER / MANIFEST_NAME).is_file() else []
    entries, unmarked = mark_default(listed, entry)
    write_manifest(WEIGHTS_FOLDER, entries)
    for name in unmarked:
        print(f"{name}: no longer the default for {', '.join(entry.default_for)} at the scales {entry.name} does")
    return path


def evaluate(path: Path, references: list[str], scale, kind: str, noises: list[float], threads: int,
             figures: Path, crop: tuple[int, int, int] | None = None) -> dict[float, list[VolumeScores]]:
    loaded = load_model_file(path)
    results = {}
    for noise in noises:
        spec = evaluation_spec(loaded.metadata.degradation, kind, noise)
        figure_folder = figures if noise == noises[len(noises) // 2] else None
        results[noise] = evaluate_files(references, loaded, scale, spec, seed=0, device="cpu", threads=threads,
                                        figure_folder=figure_folder, crop=crop)
        print(f"noise {noise}:\n{scores_table(results[noise], loaded.name, scale)}\n", flush=True)
    return results


def _simulation_text(training: dict) -> list[str]:
    """How the training inputs were simulated: the nominal forward model, or scanner-like acquisitions (naming only
    what was drawn: slice profiles for a model with thick axes, windows and partial Fourier when used)."""
    config = training.get("config", {})
    data = config.get("data", {})
    every = data.get("resimulate_every", "?")
    if data.get("acquisition") is None:
        return ["High-resolution volumes are degraded on the fly (re-simulated every "
                f"{every} steps) with the forward model below, after a random contrast remapping (Gaussian-mixture "
                "intensity resampling) on part of the draws, so that the model does not learn one contrast's "
                "intensities.", ""]
    from MRISuperResLib.processing.degradation.acquisition import AcquisitionRanges

    ranges = AcquisitionRanges.from_dict(data["acquisition"])
    thick_axes = len(set(config.get("model", {}).get("config", {}).get("scale", []))) > 1
    windows = [w for w in ranges.windows if w != "none"]
    parts = []
    if thick_axes:
        gaps = ("contiguous (no gap)" if ranges.gap[1] == 0 else
                f"with gaps of {ranges.gap[0]:g}-{ranges.gap[1]:g} of the slice spacing")
        parts.append(f"slice profiles {' or '.join(ranges.thick_profiles)} along thick axes, {gaps}")
    if windows:
        taper = f"; Tukey taper {ranges.tukey_alpha[0]:g}-{ranges.tukey_alpha[1]:g}" if "tukey" in windows else ""
        parts.append(f"k-space apodisation ({', '.join(ranges.windows)}{taper})")
    else:
        parts.append("unfiltered k-space (no apodisation window)")
    if ranges.partial_fourier_probability > 0:
        parts.append(f"partial Fourier ({ranges.partial_fourier[0]:g}-{ranges.partial_fourier[1]:g} acquired) on "
                     f"{ranges.partial_fourier_probability:.0%} of draws")
    parts += [f"complex k-space noise {ranges.noise[0]:g}-{ranges.noise[1]:g} of the 99th percentile (Rician "
              f"magnitudes)", f"smooth bias fields up to +-{ranges.bias:.0%}",
              f"gamma contrast {ranges.gamma[0]:g}-{ranges.gamma[1]:g} on {ranges.gamma_probability:.0%} of draws, and "
              "Gaussian-mixture contrast remapping on part of them"]
    scanner = thick_axes or windows or ranges.partial_fourier_probability > 0
    opening = "Every training input is a different simulated scanner" if scanner else "Every training input is drawn anew"
    return [f"{opening} (`data.acquisition`, drawn per volume and re-simulated every {every} steps): "
            f"{'; '.join(parts)}. The nominal forward model below is what validation, the consistency map and the "
            "tables use.", ""]


def card(path: Path, config_paths: list[Path], scale, kind: str, results: dict[float, list[VolumeScores]],
         references: list[str], training_time: str, data_note: str = "", crop: str | None = None) -> str:
    meta = ModelMetadata.from_header(read_metadata(path))
    voxels = meta.trained_voxel_mm
    for entry in read_manifest(WEIGHTS_FOLDER):
        if entry.file == path.name and voxels is None:
            voxels = entry.voxel_mm
    training = meta.training
    consistency = meta.consistency
    validation = meta.validation
    degradation = meta.degradation or {}
    normalization = meta.normalization or {}
    recipe = [p.relative_to(ROOT) if p.is_absolute() else p for p in config_paths]
    lines = [
        f"# Model card: {meta.name}",
        "",
        f"{meta.description}.",
        "",
        "| | |",
        "|---|---|",
        f"| file | `{path.name}` ({path.stat().st_size / 1e6:.1f} MB, safetensors; weights SHA-256 "
        f"`{(meta.weights_sha256 or '')[:16]}...`) |",
        f"| family | `{meta.family}`, {(meta.parameters or 0) / 1e6:.2f} M parameters, config `{meta.config}` |",
        f"| scale | {format_scale(scale)} (i, j, k order); whether it is a default: `default_for` in "
        f"`{MANIFEST_NAME}` |",
        f"| engine | {meta.engine_version}; created {meta.created} |",
        f"| licence | {meta.license} |",
        "",
        "## Intended use",
        "",
        "Research and visual reading aid for brain MRI (T1w, T2w, FLAIR) acquired at lower resolution than wanted: "
        "it sharpens what a B-spline upsampling would show. Every output is **AI-generated, not acquired**: read it "
        "beside the input, the difference map (what the network added) and the data-consistency map (where the "
        "result disagrees with the measured data). Not for diagnosis on its own, not for non-brain anatomy, not for "
        "volumes whose acquisition differs from the forward model below.",
        "",
        "## Training data",
        "",
        "Licence-clean volumes only (the project's development data; none are shipped):",
        "",
        *[f"- training: `{_data_name(name)}`: {_licence(name)}" for name in training.get("train", [])],
        *[f"- validation (model selection only): `{_data_name(name)}`: {_licence(name)}"
          for name in training.get("validation", [])],
        "",
        *_simulation_text(training),
        *([data_note, ""] if data_note else []),
        *([f"Voxel sizes of the high-resolution training volumes: {format_voxel_range(voxels)} mm; `enhance` warns "
           "when an output's voxels lie more than 2x outside that range.", ""] if voxels else []),
        "## Forward model (what the model undoes)",
        "",
        f"- kind per axis: `{degradation['kind']}` (kspace: central k-space kept, i.e. a lower-resolution "
        "acquisition; box: contiguous thick slices, each the mean of the fine slices it covers)",
        f"- complex Gaussian k-space noise, standard deviation drawn in {degradation['noise']} of the 99th "
        "percentile of the low-resolution image (magnitude taken: Rician)",
        f"- smooth multiplicative bias field of amplitude {degradation.get('bias', 0)} (training augmentation)",
        f"- intensities normalised per volume to the {normalization.get('lower_percentile')}-"
        f"{normalization.get('upper_percentile')} percentile range (the same at inference)",
        "",
        "## Recipe",
        "",
        "```",
        *[f"mrisuperres train --config {config}" for config in recipe],
        "```",
        "",
        f"{training.get('steps')} steps (best validation at step {training.get('best_step')}), seed "
        f"{training.get('seed')}, code revision `{training.get('code_revision', '?')}`. {training_time}",
        "",
        f"Validation ({', '.join(training.get('validation', []))}, cropped, noise drawn from the training range): "
        f"PSNR {validation.get('psnr', float('nan')):.2f} dB vs B-spline {validation.get('baseline_psnr', float('nan')):.2f} dB, "
        f"SSIM {validation.get('ssim', float('nan')):.4f} vs {validation.get('baseline_ssim', float('nan')):.4f}.",
        "",
    ]
    lines += evaluation_section(str(meta.name), scale, kind, results, references, crop)
    threshold = consistency.get("threshold")
    lines += [
        "## Trust",
        "",
        f"- Data-consistency threshold: **{threshold:.4f}** NRMSE (in units of the input's 1-99 percentile range) "
        f"= {consistency.get('rule', '')}; validation values {[round(v, 4) for v in consistency.get('validation_values', [])]}. "
        "`enhance` reports the score of every run and warns (`consistency_suspicious` in the summary and the JSON "
        "sidecar) above it: the result then disagrees with the measured data more than on any validation scan."
        if threshold is not None else "- Data-consistency threshold: not calibrated.",
        "- Uncertainty: `--uncertainty` (flip ensemble) shows where the output changes under flips of the input.",
        "- Background masking is **on by default** for this model: outside the head (the input's foreground mask) "
        "the output is the B-spline baseline, so nothing is invented there (`--no-mask-background` turns it off; "
        "trained on noisy inputs, the network would otherwise also clean the background).",
        "- Provenance (model, version, checksum, scale, date, \"AI-generated, not acquired\") is written into every "
        "output file and its JSON sidecar.",
        "",
        "## Limits",
        "",
        f"- Trained on {len(training.get('train', []))} volumes of adult heads and brains: no children, no contrast "
        "agent, little pathology beyond chronic stroke and one glioma.",
        "- Only simulated acquisitions were seen (above); real scanners' point-spread functions, motion and "
        "parallel-imaging noise differ. Check the consistency map on real inputs.",
        "- Intensities outside the 1-99 percentile range are clipped at the network's input (the B-spline skip "
        "keeps the real values).",
        f"- Card written {datetime.date.today().isoformat()} by `scripts/ship_model.py`.",
        "",
    ]
    return "\n".join(lines)


def evaluation_section(name: str, scale, kind: str, results: dict[float, list[VolumeScores]], references: list[str],
                       crop: str | None = None) -> list[str]:
    """The card's "Held-out evaluation" section (its lines, ending with a blank one)."""
    lines = [
        "## Held-out evaluation",
        "",
        "Subjects never seen in training or validation: "
        + ", ".join(f"`{Path(r).name}`" for r in references)
        + f". Command: `mrisuperres evaluate <references> --model {name} --scale {format_scale(scale)} "
        f"--kind {kind} --noise <level>{f' --crop {crop}' if crop else ''}`. The low-resolution input is simulated "
        "from each reference with the forward model (no bias field); the model runs with its defaults (background "
        "masking on, data-consistency projection on); PSNR in dB inside the head (whole volume in brackets), SSIM "
        "inside the head, consistency NRMSE of the network's output against the input.",
        "",
    ]
    for noise, scores in results.items():
        gains = [s.gain for s in scores]
        ssim_gains = [s.ssim_sr - s.ssim_baseline for s in scores]
        lines += [f"### k-space noise {noise:g}", "",
                  scores_table(scores, name, scale).split("\n", 2)[2], "",
                  f"Gain over B-spline: mean {np.mean(gains):+.2f} dB (min {min(gains):+.2f}, max {max(gains):+.2f}); "
                  f"SSIM gain mean {np.mean(ssim_gains):+.4f} (min {min(ssim_gains):+.4f}).", ""]
    return lines


#: The card line a re-run adds (replacing an earlier one).
RECARD_LINE = "- Held-out evaluation re-run"


def recard(path: Path, results: dict[float, list[VolumeScores]], scale, kind: str, references: list[str],
           crop: str | None = None) -> str:
    """The shipped model's card with its "Held-out evaluation" section replaced by ``results`` (the rest, written
    when it was shipped, is kept)."""
    text = path.with_suffix(".md").read_text()
    start, end = text.index("## Held-out evaluation"), text.index("## Trust")
    meta = ModelMetadata.from_header(read_metadata(path))
    section = "\n".join(evaluation_section(str(meta.name), scale, kind, results, references, crop))
    today = datetime.date.today().isoformat()
    kept = [line for line in text[end:].rstrip("\n").split("\n") if not line.startswith(RECARD_LINE)]
    tail = "\n".join(kept) + f"\n{RECARD_LINE} {today} by `scripts/ship_model.py --recard`.\n"
    return text[:start] + section + "\n" + tail


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    scale = parse_scale(args.scale)
    references = [str(path) for path in expand_references(
        [str(mni152_t1_path()) if r == "MNI152" else r for r in args.references])]
    crop = tuple(int(v) for v in args.crop.split(",")) if args.crop else None
    voxel_mm = tuple(float(v) for v in args.voxel_mm.split(",")) if args.voxel_mm else None
    if args.recard:
        shipped = WEIGHTS_FOLDER / f"{Path(args.model).stem}.safetensors"
        if not shipped.is_file():
            print(f"error: {shipped} is not a shipped model", file=sys.stderr)
            return 2
    elif not args.config:
        print("error: --config is required to ship a model (the recipe for its card)", file=sys.stderr)
        return 2
    else:
        shipped = ship(args.model, args.default_for, voxel_mm)  # type: ignore[arg-type]
    figures = args.figures / shipped.stem
    figures.mkdir(parents=True, exist_ok=True)
    results = evaluate(shipped, references, scale, args.kind, args.noise, args.threads, figures, crop)  # type: ignore[arg-type]
    if args.recard:
        text = recard(shipped, results, scale, args.kind, references, args.crop)
    else:
        text = card(shipped, [c.resolve() for c in args.config], scale, args.kind, results, references,
                    args.training_time, args.data_note, args.crop)
    shipped.with_suffix(".md").write_text(text)
    print(shipped, shipped.with_suffix(".md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
