"""``mrisuperres report``: one self-contained HTML review page for a cohort's manifest(s).

One row per scan (its latest manifest row): a thumbnail strip (input | SR | SR - B-spline on the SR's middle
axial slice), status, consistency NRMSE against the model's calibrated threshold, time, device, model checksum,
errors and warnings, and links to the input, the SR and its sidecar. Flagged scans (consistency above the
threshold) come first, worst first, then failed scans, then the rest by input path.

The page has no external assets: thumbnails are PNG images embedded as base64 ``data:`` URIs (drawn with
matplotlib), the style sheet is inline, and links are relative to the page so the page and the cohort's folders
can move together. The input panel shows the input's voxels as acquired (nearest neighbour on the SR slice); the
difference panel is the ``difference`` companion when one was written, else SR minus a cubic B-spline
interpolation of the input on that slice.
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import html
import io
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from ..errors import InputError, MRISuperResError, OutputError
from .manifest import latest_rows, read_manifest
from ..imaging.provenance import AI_NOTICE
from ..version import __version__

#: Thumbnail panels, left to right.
PANELS = ("input", "SR", "SR - B-spline")

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; margin-bottom: 0.2em; }
.notice { color: #8a4b00; }
.counts span { margin-right: 1.2em; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #ddd; padding: 6px 8px; text-align: left; vertical-align: top; font-size: 0.9em; }
th { background: #f4f4f4; position: sticky; top: 0; }
tr.flagged { background: #fff1e6; }
tr.failed { background: #fdecec; }
.badge { display: inline-block; padding: 1px 6px; border-radius: 3px; font-size: 0.85em; font-weight: 600; }
.badge.flagged { background: #d9480f; color: #fff; }
.badge.failed { background: #c92a2a; color: #fff; }
.badge.done { background: #2b8a3e; color: #fff; }
.badge.skipped { background: #5c7cfa; color: #fff; }
img.strip { max-width: 480px; height: auto; display: block; }
.error { color: #c92a2a; }
.warning { color: #8a4b00; }
code { font-size: 0.85em; }
"""


def _middle_slices(input_path: Path, sr_path: Path,
                   difference_path: Path | None) -> dict[str, tuple[np.ndarray, float]]:
    """The three panels on the SR's middle axial slice (LPS-oriented), with their pixel aspect (height/width)."""
    import SimpleITK as sitk

    from ..imaging.volume_io import read_volume, to_sitk

    def oriented(path: Path) -> sitk.Image:
        return sitk.DICOMOrient(sitk.Cast(to_sitk(read_volume(path)), sitk.sitkFloat32), "LPS")

    sr = oriented(sr_path)
    k = sr.GetSize()[2] // 2
    reference = sr[:, :, k:k + 1]
    source = to_sitk(read_volume(input_path))
    source = sitk.Cast(source, sitk.sitkFloat32)
    as_acquired = sitk.Resample(source, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0,
                                sitk.sitkFloat32)
    if difference_path is not None and difference_path.exists():
        difference = sitk.Resample(oriented(difference_path), reference, sitk.Transform(),
                                   sitk.sitkNearestNeighbor, 0.0, sitk.sitkFloat32)
    else:
        baseline = sitk.Resample(source, reference, sitk.Transform(), sitk.sitkBSpline, 0.0, sitk.sitkFloat32)
        difference = reference - baseline
    spacing = reference.GetSpacing()
    aspect = spacing[1] / spacing[0]

    def plane(image: sitk.Image) -> np.ndarray:
        return sitk.GetArrayFromImage(image)[0]  # [j, i]: rows anterior to posterior, patient right on the left

    return {"input": (plane(as_acquired), aspect), "SR": (plane(reference), aspect),
            "SR - B-spline": (plane(difference), aspect)}


def thumbnail_png(input_path: Path, sr_path: Path, difference_path: Path | None = None, *, dpi: int = 72) -> bytes:
    """A PNG strip (input | SR | SR - B-spline) of the SR's middle axial slice.

    Raises:
        MRISuperResError: matplotlib is missing, or a volume cannot be read.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MRISuperResError("reports need matplotlib; install it: pip install 'mrisuperres[figure]'") from None
    panels = _middle_slices(input_path, sr_path, difference_path)
    low, high = np.percentile(panels["input"][0], [1.0, 99.5])
    limit = float(np.percentile(np.abs(panels["SR - B-spline"][0]), 99.5)) or 1.0
    figure, axes = plt.subplots(1, len(PANELS), figsize=(2.2 * len(PANELS), 2.4))
    try:
        for axis, name in zip(axes, PANELS):
            image, aspect = panels[name]
            if name == "SR - B-spline":
                axis.imshow(image, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect=aspect)
            else:
                axis.imshow(image, cmap="gray", vmin=low, vmax=high if high > low else low + 1, aspect=aspect)
            axis.set_title(name, fontsize=9)
            axis.set_xticks([])
            axis.set_yticks([])
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=dpi)
    finally:
        plt.close(figure)
    return buffer.getvalue()


def order_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flagged scans first (highest consistency NRMSE first), then failed ones, then the rest by input."""

    def key(row: dict[str, Any]) -> tuple:
        if row.get("flagged") and row.get("status") != "failed":
            return (0, -(row.get("consistency_nrmse") or 0.0), row["input"])
        if row.get("status") == "failed":
            return (1, 0.0, row["input"])
        return (2, 0.0, row["input"])

    return sorted(rows, key=key)


def _link(path_text: str, page_folder: Path, label: str | None = None) -> str:
    if not path_text:
        return ""
    path = Path(path_text)
    shown = html.escape(label or path_text)
    if not path.is_absolute() and not path.exists():
        return f"<code>{shown}</code>"  # a node name from a Slicer scene, not a file
    try:
        target = quote(Path(os.path.relpath(path.resolve(), page_folder.resolve())).as_posix())
    except ValueError:  # another drive on Windows
        target = path.resolve().as_uri()
    return f'<a href="{html.escape(target)}">{shown}</a>'


def _sidecar_of(output: str) -> Path | None:
    from ..imaging.output_paths import sidecar_path

    if not output:
        return None
    side = sidecar_path(output)
    return side if side.exists() else None


def _difference_of(output: str) -> Path | None:
    import json

    side = _sidecar_of(output)
    if side is None:
        return None
    try:
        path = json.loads(side.read_text()).get("run", {}).get("outputs", {}).get("difference")
    except (OSError, ValueError):
        return None
    return Path(path) if path else None


def _row_html(number: int, row: dict[str, Any], page_folder: Path, thumbnails: bool) -> str:
    status = row["status"]
    flagged = bool(row.get("flagged")) and status != "failed"
    classes = " ".join(c for c in ("scan", status, "flagged" if flagged else "") if c)
    strip = ""
    if thumbnails and status != "failed" and row.get("output") and Path(row["output"]).exists() \
            and Path(row["input"]).exists():
        try:
            png = thumbnail_png(Path(row["input"]), Path(row["output"]), _difference_of(row["output"]))
            strip = (f'<img class="strip" alt="input, SR and difference of {html.escape(Path(row["input"]).name)}"'
                     f' src="data:image/png;base64,{base64.b64encode(png).decode()}">')
        except Exception as error:  # a thumbnail that cannot be drawn must not stop the page
            strip = f'<span class="error">no thumbnail: {html.escape(" ".join(str(error).split())[:200])}</span>'
    score, threshold = row.get("consistency_nrmse"), row.get("consistency_threshold")
    score_text = "" if score is None else f"{score:.4f}"
    if score is not None and threshold is not None:
        score_text += f" ({'>' if score > threshold else '&le;'} {threshold:.4f})"
    badges = f'<span class="badge {status}">{status}</span>'
    if flagged:
        badges = '<span class="badge flagged">flagged</span> ' + badges
    side = _sidecar_of(row.get("output", ""))
    files = "<br>".join(part for part in (
        "in: " + _link(row["input"], page_folder),
        ("SR: " + _link(row["output"], page_folder)) if row.get("output") and status != "failed" else "",
        ("sidecar: " + _link(str(side), page_folder, side.name)) if side is not None else "",
    ) if part)
    notes = ""
    if row.get("error"):
        notes += f'<div class="error">{html.escape(row["error"])}</div>'
    if row.get("warnings"):
        notes += "".join(f'<div class="warning">{html.escape(w)}</div>' for w in row["warnings"].split(" | "))
    seconds = "" if row.get("seconds") is None else f"{row['seconds']:.1f}"
    sha = row.get("model_sha256", "")
    model = html.escape(row.get("model", "")) + (f'<br><code title="{html.escape(sha)}">{html.escape(sha[:12])}</code>'
                                                 if sha else "")
    return (f'<tr class="{classes}" data-status="{status}" data-flagged="{str(flagged).lower()}" '
            f'data-input="{html.escape(row["input"])}">'
            f"<td>{number}</td><td>{strip}</td><td>{files}{notes}</td><td>{badges}</td><td>{score_text}</td>"
            f"<td>{seconds}</td><td>{html.escape(row.get('device', ''))}</td><td>{model}</td></tr>")


def render_report(manifests: Sequence[str | os.PathLike], page: str | os.PathLike, *, thumbnails: bool = True,
                  title: str | None = None) -> str:
    """The review page's HTML for ``manifests`` (CSV or JSON Lines, read in order), to be saved at ``page``.

    Raises:
        InputError: a manifest is missing or not a manifest, or they hold no rows.
    """
    rows = []
    for manifest in manifests:
        rows.extend(read_manifest(manifest))
    rows = order_rows(latest_rows(rows))
    if not rows:
        raise InputError(f"manifest {', '.join(map(str, manifests))} has no rows yet; run the cohort first")
    page_folder = Path(page).resolve().parent
    counts = {status: sum(r["status"] == status for r in rows) for status in ("done", "skipped", "failed")}
    flagged = sum(bool(r.get("flagged")) and r["status"] != "failed" for r in rows)
    title = title or f"MRISuperRes cohort review: {Path(manifests[0]).name}"
    sources = ", ".join(_link(str(Path(m)), page_folder, Path(m).name) for m in manifests)
    body = "\n".join(_row_html(n, row, page_folder, thumbnails) for n, row in enumerate(rows, 1))
    made = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{_STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p class="notice">Super-resolved volumes are {AI_NOTICE}. Review flagged scans (consistency above the model's
calibrated threshold) before use.</p>
<p class="counts" id="counts"><span>{len(rows)} scans</span><span>{counts['done']} done</span>
<span>{counts['skipped']} skipped</span><span>{counts['failed']} failed</span><span>{flagged} flagged</span></p>
<p>Manifest: {sources}. Thumbnails: the SR's middle axial slice; input as acquired (nearest neighbour), SR, and
SR minus the B-spline baseline (red: the network added intensity). Made {made} by MRISuperRes {__version__}.</p>
<table id="scans"><thead><tr><th>#</th><th>input | SR | SR - B-spline</th><th>files</th><th>status</th>
<th>consistency NRMSE (threshold)</th><th>seconds</th><th>device</th><th>model</th></tr></thead>
<tbody>
{body}
</tbody></table>
</body></html>
"""


def write_report(manifests: Sequence[str | os.PathLike], page: str | os.PathLike, *, overwrite: bool = False,
                 thumbnails: bool = True) -> Path:
    """Write the review page atomically; return its path.

    Raises:
        InputError: see :func:`render_report`.
        OutputError: ``page`` exists (without ``overwrite``) or its folder is missing or not writable.
    """
    from ..imaging.volume_io import check_writable_target, staging_folder

    page = Path(page)
    check_writable_target(page, overwrite, volume_format=False)
    text = render_report(manifests, page, thumbnails=thumbnails)
    with staging_folder(page.parent) as staging:
        staged = staging / page.name
        staged.write_text(text, encoding="utf-8")
        os.replace(staged, page)
    return page


def add_parser(commands: Any) -> None:
    """Register ``mrisuperres report``."""
    parser = commands.add_parser(
        "report", help="write an HTML review page for a cohort's manifest",
        description="Write a self-contained HTML page with one row per scan of MANIFEST (CSV or .jsonl, from "
        "'enhance --manifest'; several manifests, e.g. one per shard, are merged): thumbnails of input, SR and "
        "difference, consistency score, status, links to the files; flagged scans first.")
    parser.add_argument("manifests", nargs="+", metavar="MANIFEST", type=Path)
    parser.add_argument("-o", "--output", type=Path, metavar="HTML",
                        help="the page to write [<first manifest's name>.html beside it]")
    parser.add_argument("--no-thumbnails", action="store_true", help="leave the thumbnails out (fast, small)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing page")


def run(args: argparse.Namespace) -> int:
    """``mrisuperres report``: write the page and print its path."""
    page = args.output or args.manifests[0].with_suffix(".html")
    if page.suffix.lower() not in (".html", ".htm"):
        raise OutputError(f"the report {page} must end in .html")
    write_report(args.manifests, page, overwrite=args.overwrite, thumbnails=not args.no_thumbnails)
    print(page, file=sys.stdout)
    return 0
