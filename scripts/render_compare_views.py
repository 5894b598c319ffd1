"""Render the compare layout (input | SR | difference over SR, linked) of a real brain to a PNG, headless.

A 2 mm acquisition of the MNI152 T1 template (shipped in nilearn) is simulated with the default model's forward
model, put into a slicer-core scene, enhanced x2 with the shipped default model (``EnhanceLogic``) and shown with
``slicer_layout.show_compare_views``. Each panel is the RGBA image that view's ``vtkMRMLSliceLogic`` composites
for display (reslicing at the view's pixel grid, window/level, colour table, foreground blending): the pixels a
Slicer slice view shows, from Slicer's own code. matplotlib only lays the three images out with a controller-like
bar in each view's layout colour, and a colour bar for the difference map.

Usage: python scripts/render_compare_views.py [--output docs/compare_views.png] [--orientation Axial]
       [--opacity 0.5] [--size 420 480]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "MRISuperRes"))

from MRISuperResLib.processing.degradation import DegradationSpec  # noqa: E402
from MRISuperResLib.evaluation.evaluate import simulated_pair  # noqa: E402
from MRISuperResLib.engine.model_zoo import load_model  # noqa: E402
from MRISuperResLib.imaging.samples import mni152_t1_path  # noqa: E402
from MRISuperResLib.slicer.layout import COMPARE_VIEWS, CompareViews, composite_node, show_compare_views  # noqa: E402
from MRISuperResLib.slicer.outputs import EnhanceLogic, EnhanceNodes  # noqa: E402
from MRISuperResLib.slicer.volumes import add_volume_node  # noqa: E402
from MRISuperResLib.imaging.volume_io import read_volume  # noqa: E402

SCALE = (2.0, 2.0, 2.0)


def enhanced_scene(model: str = "default") -> tuple[Any, Any, EnhanceNodes]:
    """A slicer-core scene holding the simulated 2 mm MNI152 T1 and its x2 outputs (scene, input node, outputs)."""
    import slicer

    loaded = load_model(model, SCALE)
    spec = DegradationSpec.from_dict(loaded.metadata.degradation)
    _, low = simulated_pair(read_volume(mni152_t1_path()), SCALE, spec, seed=0)
    scene = slicer.vtkMRMLScene()
    input_node = add_volume_node(scene, low, "T1_2mm")
    outputs = EnhanceLogic(scene).enhance(input_node, model=loaded, scale=SCALE, device="cpu")
    return scene, input_node, outputs


def view_titles(views: CompareViews) -> list[str]:
    """Two lines per view, as its slice controller shows it: label and view name, then the background (``B``) and
    foreground (``F``, with its opacity) volumes."""
    titles = []
    for view in COMPARE_VIEWS:
        composite = composite_node(views.scene, view)
        layers = f"B: {views.scene.GetNodeByID(composite.GetBackgroundVolumeID()).GetName()}"
        if composite.GetForegroundVolumeID():
            foreground = views.scene.GetNodeByID(composite.GetForegroundVolumeID()).GetName()
            layers += f"   F: {foreground} ({composite.GetForegroundOpacity():.0%})"
        titles.append(f"{view.label}  {view.name}\n{layers}")
    return titles


def difference_colormap(difference_node: Any) -> tuple[Any, float, float]:
    """The difference node's colour table as a matplotlib colour map, with its display range (min, max)."""
    from matplotlib.colors import ListedColormap

    display = difference_node.GetDisplayNode()
    table = display.GetColorNode()
    colours = [table.GetLookupTable().GetTableValue(index)[:3] for index in range(table.GetNumberOfColors())]
    return ListedColormap(colours), display.GetWindowLevelMin(), display.GetWindowLevelMax()


def save_panels(views: CompareViews, images: dict[str, np.ndarray], difference_node: Any, path: Path,
                title: str) -> Path:
    """Lay out the three view images left to right with their bars and the difference colour bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    height, width = next(iter(images.values())).shape[:2]
    figure, axes = plt.subplots(1, 3, figsize=(3 * width / 100, height / 100 + 1.5), dpi=100,
                                gridspec_kw={"wspace": 0.02}, facecolor="black")
    for axis, view, text in zip(axes, COMPARE_VIEWS, view_titles(views), strict=True):
        axis.imshow(images[view.name][..., :3], interpolation="nearest")
        axis.set_xticks([])
        axis.set_yticks([])
        for spine in axis.spines.values():
            spine.set_edgecolor(view.color)
            spine.set_linewidth(3)
        axis.set_title(text, color="white", fontsize=8.5, loc="left", backgroundcolor=view.color, pad=6)
    colormap, low, high = difference_colormap(difference_node)
    legend_axis = axes[2].inset_axes((0.15, -0.07, 0.7, 0.025))
    bar = figure.colorbar(ScalarMappable(Normalize(low, high), colormap), cax=legend_axis, orientation="horizontal")
    bar.set_label(f"{difference_node.GetName()} (SR - baseline)", color="white", fontsize=8)
    bar.ax.tick_params(colors="white", labelsize=7)
    figure.suptitle(title, color="white", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, facecolor=figure.get_facecolor(), bbox_inches="tight")
    plt.close(figure)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "compare_views.png")
    parser.add_argument("--orientation", default="Axial", choices=["Axial", "Coronal", "Sagittal"])
    parser.add_argument("--opacity", type=float, default=0.5, help="difference map opacity over the SR (0..1)")
    parser.add_argument("--size", type=int, nargs=2, default=(420, 480), metavar=("WIDTH", "HEIGHT"),
                        help="pixels of each view")
    parser.add_argument("--model", default="default")
    args = parser.parse_args(argv)

    scene, input_node, outputs = enhanced_scene(args.model)
    views = show_compare_views(scene, input_node, outputs.sr, outputs.difference, orientation=args.orientation,
                               opacity=args.opacity)
    images = views.render(tuple(args.size))
    title = (f"MRISuperRes compare layout ({args.orientation}): {outputs.summary['model']} x2 on a simulated 2 mm "
             "MNI152 T1 - AI-generated, not acquired\nlinked slice views as Slicer's slice logic composites them "
             "(slicer-core, headless)")
    path = save_panels(views, images, outputs.difference, args.output, title)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
