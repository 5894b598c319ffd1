"""Static checks of the Qt module MRISuperResTraining (widget names, parameter names, CMake lists): no Qt needed."""

from __future__ import annotations

import ast
import xml.etree.ElementTree as ElementTree

from helpers import ROOT

MODULE = ROOT / "MRISuperResTraining"


# ------------------------------------------------------------------------------------------ the Qt module
def _module_tree() -> ast.Module:
    return ast.parse((MODULE / "MRISuperResTraining.py").read_text())


def _ui_widgets() -> dict[str, ElementTree.Element]:
    tree = ElementTree.parse(MODULE / "Resources" / "UI" / "MRISuperResTraining.ui")
    return {widget.get("name"): widget for widget in tree.iter("widget")}


def _panel_trees() -> list[ast.Module]:
    """The module file and the panel's parts in ``MRISuperResLib/gui/training_*.py``."""
    parts = sorted((ROOT / "MRISuperRes" / "MRISuperResLib" / "gui").glob("training_*.py"))
    assert parts, "the panel's parts are in MRISuperResLib/gui/training_*.py"
    return [_module_tree()] + [ast.parse(path.read_text()) for path in parts]


def test_every_widget_the_module_uses_exists_in_its_ui_file() -> None:
    used = {node.attr for tree in _panel_trees() for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute) and node.value.attr == "ui"
            and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"}
    widgets = _ui_widgets()
    assert used and not used - set(widgets), f"not in the .ui file: {sorted(used - set(widgets))}"
    assert {"pairsTableWidget", "registrationResultLabel", "statusLabel", "progressBar"} <= used


def test_parameter_names_in_the_ui_file_are_parameters_of_the_parameter_node() -> None:
    wrappers = [node for node in ast.walk(_module_tree()) if isinstance(node, ast.ClassDef)
                and any(isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in node.decorator_list)]
    assert len(wrappers) == 1
    parameters = {item.target.id for item in wrappers[0].body if isinstance(item, ast.AnnAssign)}
    bound = {}
    for name, widget in _ui_widgets().items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[name] = prop.findtext("string")
    assert bound and set(bound.values()) <= parameters, sorted(set(bound.values()) - parameters)
    assert len(set(bound.values())) == len(bound), "one parameter bound to two widgets"


def test_the_module_keeps_engine_imports_inside_functions_and_cmake_lists_its_files() -> None:
    tree = _module_tree()
    top_level = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    for node in top_level:
        module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
        assert not (module or "").startswith("MRISuperResLib"), "import MRISuperResLib inside functions"
    cmake = (MODULE / "CMakeLists.txt").read_text()
    for name in ("${MODULE_NAME}.py", "Resources/UI/${MODULE_NAME}.ui", "Resources/Icons/${MODULE_NAME}.png"):
        assert name in cmake
    classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    assert {"MRISuperResTraining", "MRISuperResTrainingWidget", "MRISuperResTrainingLogic",
            "MRISuperResTrainingTest"} <= classes
    assert "MRISuperResLib.slicer.training" in (MODULE / "MRISuperResTraining.py").read_text()
