"""Pack the training volumes small enough to travel to a leased GPU machine, and unpack them there.

The copy that travels to such a machine is size-limited (about 64 MiB with the code and SimpleITK), so the training
volumes are packed lossily, in ways that keep what training uses:

* volumes finer than 0.9 mm are resampled to about 1 mm by k-space truncation (what the scanner would have
  acquired at 1 mm; the cell-centred grid keeps its extent);
* intensities inside a dilated head mask are quantised to 2 % of the volume's 99th percentile (error rms 0.58 %,
  below the noise of these scans);
* the background outside the head is dropped and, on unpacking, re-drawn as Rayleigh noise of the scale measured
  on it (magnitude images' background statistics), so the inputs keep their noisy air.

Usage:
    python scripts/device_pack.py pack ../shared/data/train .devpack/train     # here (nibabel, numpy, scipy)
    python scripts/device_pack.py unpack .devpack/train /tmp/train             # there: writes NAME.nii
Nothing here is part of the product; the card of a model trained from a packed copy says so.
"""

from __future__ import annotations

import argparse
import json
import lzma
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "MRISuperRes"))

FINEST_MM = 0.9
STEP_OF_P99 = 0.02
HEAD_DILATION = 6


def _pack_one(source: str, folder: str) -> tuple[str, dict, str]:
    import nibabel as nib
    from scipy import ndimage

    from MRISuperResLib.processing.degradation import fourier_resample

    started = time.time()
    image = nib.load(source)
    array = np.asarray(image.dataobj, dtype=np.float32)
    affine = image.affine.copy()
    zooms = np.array(image.header.get_zooms()[:3], dtype=float)
    shape = tuple(int(round(n * z / 1.0)) if z < FINEST_MM else n for n, z in zip(array.shape, zooms))
    if shape != array.shape:
        factors = np.array(array.shape, dtype=float) / np.array(shape)
        array = fourier_resample(array, shape)
        affine[:3, 3] += affine[:3, :3] @ ((factors - 1.0) / 2.0)
        affine[:3, :3] = affine[:3, :3] * factors[None, :]
    p99 = float(np.percentile(array, 99))
    median_bright = float(np.median(array[array > np.percentile(array, 50)]))
    head = ndimage.binary_fill_holes(ndimage.binary_closing(array > 0.1 * median_bright, iterations=2))
    head = ndimage.binary_dilation(head, iterations=HEAD_DILATION)
    background = array[~head]
    rayleigh = float(background.mean() / np.sqrt(np.pi / 2)) if background.size else 0.0
    step = max(p99 * STEP_OF_P99, 1e-6)
    quantised = np.where(head, np.round(array / step), 0).astype(np.int16)
    name = Path(source).name.split(".nii")[0]
    (Path(folder) / f"{name}.xz").write_bytes(lzma.compress(np.ascontiguousarray(quantised).tobytes(), preset=6))
    entry = {"shape": list(quantised.shape), "step": step, "affine": affine.tolist(), "rayleigh_scale": rayleigh,
             "resampled_from": list(image.shape[:3]) if shape != image.shape[:3] else None}
    size = (Path(folder) / f"{name}.xz").stat().st_size
    return name, entry, (f"{name}: {image.shape[:3]} -> {quantised.shape}, head {head.mean():.2f}, "
                         f"background Rayleigh {rayleigh:.2f}, step {step:.3g}, {size / 1e6:.1f} MB, "
                         f"{time.time() - started:.0f} s")


def pack(source: Path, folder: Path, workers: int) -> None:
    if not source.is_dir():
        raise SystemExit(f"device_pack: {source} {'is not a folder' if source.exists() else 'does not exist'}; "
                         "give the folder of training volumes")
    files = sorted(source.glob("*.nii*"))
    if not files:
        raise SystemExit(f"device_pack: no NIfTI volumes (*.nii, *.nii.gz) in {source}; give the training folder")
    folder.mkdir(parents=True, exist_ok=True)
    index = {}
    with ProcessPoolExecutor(workers) as pool:
        for name, entry, line in pool.map(_pack_one, [str(f) for f in files], [str(folder)] * len(files)):
            index[name] = entry
            print(line, flush=True)
    (folder / "volumes.json").write_text(json.dumps(index, indent=1))
    total = sum(p.stat().st_size for p in folder.iterdir())
    print(f"{len(index)} volumes, {total / 1e6:.1f} MB in {folder}")


def unpack(folder: Path, target: Path) -> None:
    import nibabel as nib
    from concurrent.futures import ThreadPoolExecutor

    if not (folder / "volumes.json").is_file():
        raise SystemExit(f"device_pack: {folder} is not a packed folder (no volumes.json); pack one first")
    index = json.loads((folder / "volumes.json").read_text())
    target.mkdir(parents=True, exist_ok=True)

    def restore(number: int, name: str, entry: dict) -> str:
        quantised = np.frombuffer(lzma.decompress((folder / f"{name}.xz").read_bytes()), dtype=np.int16)
        array = quantised.reshape(entry["shape"]).astype(np.float32) * entry["step"]
        if entry["rayleigh_scale"] > 0:
            background = quantised.reshape(entry["shape"]) == 0
            rng = np.random.default_rng(number)  # one stream per volume: the same air whatever the thread order
            array[background] = rng.rayleigh(entry["rayleigh_scale"], int(background.sum()))
        image = nib.Nifti1Image(array, np.array(entry["affine"]))
        image.set_qform(np.array(entry["affine"]), code=1)
        image.set_sform(np.array(entry["affine"]), code=1)
        # Uncompressed: gzip of float noise took most of the unpacking time, while the GPU waited.
        nib.save(image, target / f"{name}.nii")
        return f"{name}: {array.shape}"

    with ThreadPoolExecutor(max_workers=8) as pool:
        for line in pool.map(restore, range(len(index)), index, index.values()):
            print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack")
    packing.add_argument("source", type=Path)
    packing.add_argument("folder", type=Path)
    packing.add_argument("--workers", type=int, default=2)
    unpacking = commands.add_parser("unpack")
    unpacking.add_argument("folder", type=Path)
    unpacking.add_argument("target", type=Path)
    args = parser.parse_args(argv)
    if args.command == "pack":
        pack(args.source, args.folder, args.workers)
    else:
        unpack(args.folder, args.target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
