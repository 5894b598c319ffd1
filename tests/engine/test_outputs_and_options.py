"""The declarations the front ends derive from: :mod:`MRISuperResLib.engine.outputs` (the output-map table) and
:mod:`MRISuperResLib.engine.options` (``EnhanceOptions``). No torch, no model: each test runs in milliseconds."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path
from types import SimpleNamespace

import pytest

from MRISuperResLib.engine.options import EnhanceOptions, add_arguments
from MRISuperResLib.engine.outputs import (
    BY_KEY,
    COMPANION_KEYS,
    OPTIONAL_KEYS,
    OUTPUT_KEYS,
    OUTPUT_MAPS,
    companions_help,
    output_map,
)
from MRISuperResLib.errors import MRISuperResError
from MRISuperResLib.imaging.output_paths import companion_paths

MODULE = Path(__file__).resolve().parents[2] / "MRISuperRes" / "MRISuperRes.py"


def test_the_table_names_each_map_once_with_the_names_files_and_nodes_already_in_use() -> None:
    assert OUTPUT_KEYS == ("sr", "baseline", "difference", "consistency", "uncertainty")
    assert [m.provenance_role for m in OUTPUT_MAPS] == ["super-resolved", "baseline", "difference", "consistency",
                                                        "uncertainty"]
    assert [m.label for m in OUTPUT_MAPS] == ["SR", "baseline", "difference", "consistency", "uncertainty"]
    assert [m.option for m in OUTPUT_MAPS] == [None, "--baseline", "--difference", "--consistency", "--uncertainty"]
    assert len({m.process_file for m in OUTPUT_MAPS}) == len(OUTPUT_MAPS)
    assert COMPANION_KEYS == ("baseline", "difference", "consistency") and OPTIONAL_KEYS == ("uncertainty",)
    assert BY_KEY["consistency"].grid == "input" and {m.grid for m in OUTPUT_MAPS if m.key != "consistency"} == {"fine"}
    assert [m.key for m in OUTPUT_MAPS if m.signed] == ["difference"]
    with pytest.raises(KeyError, match="known: sr, baseline"):
        output_map("residual")


def test_companions_are_named_after_the_output() -> None:
    assert companions_help() == ("write baseline, difference and consistency beside each output "
                                 "(<name>_baseline, <name>_difference, <name>_consistency)")
    named = companion_paths(Path("out/t1_sr.NRRD"), COMPANION_KEYS)
    assert [p.name for p in named.values()] == ["t1_sr_baseline.nrrd", "t1_sr_difference.nrrd",
                                               "t1_sr_consistency.nrrd"]
    assert companion_paths(Path("out/series"), ["baseline"])["baseline"] == Path("out/series_baseline.nii.gz")


def parser() -> argparse.ArgumentParser:
    built = argparse.ArgumentParser()
    add_arguments(built)
    return built


@pytest.mark.parametrize("argv", [
    [],
    ["--device", "cuda:1", "--tile", "32", "--overlap", "0.25", "--mask-background", "--threads", "2"],
    ["--no-mask-background", "--flip-ensemble", "--keep-dtype"],
    ["--precision", "bfloat16"],
])
def test_options_survive_the_command_line_both_ways(argv: list[str]) -> None:
    options = EnhanceOptions.from_namespace(parser().parse_args(argv))
    assert EnhanceOptions.from_namespace(parser().parse_args(options.to_argv())) == options
    assert set(options.engine_kwargs()) == {"device", "precision", "tile", "overlap", "threads", "keep_dtype",
                                            "mask_background", "flip_ensemble", "projection"}


def test_to_argv_says_device_and_overlap_and_leaves_other_defaults_out() -> None:
    assert EnhanceOptions().to_argv() == ["--device", "auto", "--overlap", "0.0"]
    argv = EnhanceOptions(device="cpu", tile=32, overlap=0.25, mask_background=False).to_argv()
    assert argv == ["--device", "cpu", "--no-mask-background", "--tile", "32", "--overlap", "0.25"]


def test_out_of_range_options_are_refused_in_one_line() -> None:
    with pytest.raises(MRISuperResError, match="--tile 3 is too small"):
        EnhanceOptions(tile=3).check()
    with pytest.raises(MRISuperResError, match=r"--overlap 1.0 is outside \[0, 1\)"):
        EnhanceOptions(overlap=1.0).check()
    with pytest.raises(MRISuperResError, match="--precision 'float16' is not understood; use auto, float32, bfloat16"):
        EnhanceOptions(precision="float16").check()
    with pytest.raises(MRISuperResError, match="--precision '' is not understood"):
        EnhanceOptions(precision="").check()
    assert EnhanceOptions(precision=" BFloat16").check().precision == "bfloat16"


def parameter_defaults() -> dict[str, object]:
    """The defaults of the Slicer module's parameter node, read from its source (no Slicer needed)."""
    tree = ast.parse(MODULE.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MRISuperResParameterNode")
    return {item.target.id: ast.literal_eval(item.value) for item in node.body
            if isinstance(item, ast.AnnAssign) and item.value is not None}


def test_the_panels_parameter_node_gives_the_options() -> None:
    values = parameter_defaults()
    options = EnhanceOptions.from_parameters(SimpleNamespace(**values))
    assert options == EnhanceOptions(device="auto", tile=None, overlap=0.25, mask_background=True, projection=True)
    values.update(tileSize=48, device="cpu", maskBackground=False, projection=False)
    assert EnhanceOptions.from_parameters(SimpleNamespace(**values)).to_argv() == [
        "--device", "cpu", "--no-mask-background", "--no-projection", "--tile", "48", "--overlap", "0.25"]


def test_only_the_options_that_change_voxels_are_recorded() -> None:
    options = EnhanceOptions(device="cuda", tile=32, threads=2, overlap=0.25, flip_ensemble=True)
    assert options.recorded() == {"precision": "auto", "flip_ensemble": True, "mask_background": None,
                                  "projection": None,
                                  "overlap": 0.25, "keep_dtype": False}
