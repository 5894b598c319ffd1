"""Show that a context-conditioned 2.5D U-Net uses its context (seed 002 conditioning).

Synthetic subjects: balls of random intensities on a smooth background inside a head-like sphere. Every subject's
low-resolution input is the k-space truncation (x2) of the same kind of anatomy, but the high-resolution target
depends on the categorical variable ``group``: group A's target is the anatomy itself, group B's the anatomy with
its contrast inverted inside the head (as a T1w / T2w pair shows one anatomy with opposite contrasts). The input
cannot tell the groups apart; only the context can. Training uses real pairs (``data.pairs``) so the input of
both groups is the same acquisition. After a short CPU training, held-out subjects of both groups are enhanced with
their correct context and with the wrong one; the PSNR against the expected output shows whether the model uses
the context.

Usage: ``python scripts/conditioning_demo.py [--steps 300] [--folder /tmp/conditioning-demo]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MRISuperRes"))

from MRISuperResLib.engine.checkpoint import load_model_file  # noqa: E402
from MRISuperResLib.processing.degradation import DegradationSpec, degrade  # noqa: E402
from MRISuperResLib.engine.enhance import enhance_volume  # noqa: E402
from MRISuperResLib.imaging.geometry import resampled_grid  # noqa: E402
from MRISuperResLib.evaluation.metrics import psnr  # noqa: E402
from MRISuperResLib.processing.normalization import PercentileNormalizer  # noqa: E402
from MRISuperResLib.training.config import config_from_dict  # noqa: E402
from MRISuperResLib.training.loop import Trainer  # noqa: E402
from MRISuperResLib.imaging.volume import Grid, Volume  # noqa: E402
from MRISuperResLib.imaging.volume_io import write_volume  # noqa: E402

SIZE = 32
GRID = Grid((SIZE,) * 3, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3))
LOW_GRID = resampled_grid(GRID, (SIZE // 2,) * 3)


def anatomy(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Balls of random intensities on a smooth background inside a sphere; and the sphere (the head)."""
    rng = np.random.default_rng(seed)
    i, j, k = np.meshgrid(*[np.arange(SIZE) + 0.5] * 3, indexing="ij")
    head = (i - SIZE / 2) ** 2 + (j - SIZE / 2) ** 2 + (k - SIZE / 2) ** 2 < (0.45 * SIZE) ** 2
    volume = 300 + 300 * ndimage.zoom(rng.random((4, 4, 4)), SIZE / 4, order=3)
    for _ in range(10):
        centre = rng.uniform(6, SIZE - 6, 3)
        inside = (i - centre[0]) ** 2 + (j - centre[1]) ** 2 + (k - centre[2]) ** 2 < rng.uniform(3, 7) ** 2
        volume[inside] = rng.uniform(200, 1000)
    return (volume * head).astype(np.float32), head


def target(volume: np.ndarray, head: np.ndarray, group: str) -> np.ndarray:
    """Group A: the anatomy; group B: its contrast inverted inside the head (same intensity range)."""
    if group == "A":
        return volume
    inside = volume[head]
    return np.where(head, inside.max() + inside.min() - volume, 0.0).astype(np.float32)


def low_resolution(volume: np.ndarray) -> Volume:
    return Volume(degrade(volume, LOW_GRID.shape, DegradationSpec()), LOW_GRID)


def make_data(folder: Path) -> tuple[list[dict], list[str], dict[str, dict[str, str]]]:
    """Four training pairs (two per group) and one validation volume (group A); contexts by file name."""
    folder.mkdir(parents=True, exist_ok=True)
    pairs, validation, subjects = [], [], {}
    for number in range(5):
        group = "AB"[number % 2]
        volume, head = anatomy(number)
        high = write_volume(Volume(target(volume, head, group), GRID), folder / f"subject{number}_{group}.nii.gz")
        subjects[high.name] = {"group": group, "age": str(40 + 5 * number)}
        if number < 4:
            low = write_volume(low_resolution(volume), folder / f"subject{number}_low.nii.gz")
            pairs.append({"high": str(high), "low": str(low), "register": False})
        else:
            validation.append(str(high))
    return pairs, validation, subjects


def config(folder: Path, steps: int) -> dict:
    pairs, validation, subjects = make_data(folder / "data")
    return {
        "name": "conditioned-demo", "output_dir": str(folder / "run"), "seed": 0,
        "model": {"family": "unet25d", "config": {
            "scale": [2, 2, 2], "input_slices": 3, "channels": 16, "channel_mult": [1, 2], "res_blocks": 1,
            "groups": 4, "attention_heads": 1, "self_attention": False, "cross_attention_stages": [1, 2, 3]}},
        "data": {"pairs": pairs, "validation": validation, "scale": [2, 2, 2],
                 "degradation": {"kind": "kspace"}, "patch_size": [8, 8, 8], "batch_size": 4,
                 "foreground_fraction": 1.0, "crop_foreground": False, "resimulate_every": 100000,
                 "context": {"variables": {"group": {"kind": "categorical", "categories": ["A", "B"]},
                                           "age": {"kind": "numeric", "offset": 50, "scale": 20},
                                           "slice_position": {"kind": "slice_position"}},
                             "subjects": subjects}},
        "augment": {"flips": True, "rot90": True, "intensity_scale": [1.0, 1.0], "intensity_shift": [0.0, 0.0]},
        "loss": {"l1": 1.0},
        "optim": {"lr": 0.002, "schedule": "none"},
        "run": {"steps": steps, "validate_every": steps, "checkpoint_every": steps, "log_every": 10,
                "device": "cpu", "amp": False, "threads": 1, "early_stop_patience": 0},
    }


def evaluate(model_path: Path) -> list[dict[str, float | str]]:
    """PSNR on two held-out subjects (one per group) with the correct and the wrong group."""
    loaded = load_model_file(model_path)
    rows = []
    for number, group in ((5, "A"), (6, "B")):
        volume, head = anatomy(number)
        low = low_resolution(volume)
        # The model's output is de-normalised with the input's percentiles; the target's own are matched to them.
        reference = target(volume, head, group)
        low_map = PercentileNormalizer.fit(low.array, 1.0, 99.0)
        reference = low_map.denormalize(PercentileNormalizer.fit(reference, 1.0, 99.0).normalize(reference, clip=False))
        scores: dict[str, float | str] = {"subject": f"subject{number} (group {group})"}
        for label, value in (("correct", group), ("wrong", "B" if group == "A" else "A")):
            result = enhance_volume(low, loaded, 2, device="cpu", consistency=False, mask_background=False,
                                    context={"group": value, "age": 60})
            scores[label] = psnr(result.sr.array, reference, head)
        scores["bspline"] = psnr(result.baseline.array, reference, head)
        rows.append(scores)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/conditioning-demo"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    trainer = Trainer(config_from_dict(config(args.folder, args.steps)), show_progress=False)
    result = trainer.run()
    print("| held-out subject | PSNR B-spline | PSNR SR, correct context | PSNR SR, wrong context |")
    print("|---|---|---|---|")
    for row in evaluate(result.model_path):
        print(f"| {row['subject']} | {row['bspline']:.2f} | {row['correct']:.2f} | {row['wrong']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
