"""Static checks of the MRISuperRes module file against its Qt Designer file (no Qt needed).

Desktop Slicer is not available here, so the names the widget code uses are checked against the ``.ui``: a
renamed widget would otherwise fail only when a clinician opens the module.
"""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "MRISuperRes" / "MRISuperRes.py"
UI = ROOT / "MRISuperRes" / "Resources" / "UI" / "MRISuperRes.ui"


def ui_widgets() -> dict[str, ET.Element]:
    return {w.get("name"): w for w in ET.parse(UI).getroot().iter("widget")}


#: The Qt parts of the widget that the module file composes (they reach the panel as ``widget.ui`` or ``ui``).
WIDGET_PARTS = sorted((ROOT / "MRISuperRes" / "MRISuperResLib" / "gui").glob("enhance_*.py"))


def used_ui_names() -> set[str]:
    """Every ``self.ui.<name>`` in the module file, and every ``<x>.ui.<name>`` or ``ui.<name>`` in its gui parts."""
    tree = ast.parse(MODULE.read_text())
    names = {node.attr for node in ast.walk(tree)
             if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
             and node.value.attr == "ui" and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"}
    for part in WIDGET_PARTS:
        for node in ast.walk(ast.parse(part.read_text())):
            if isinstance(node, ast.Attribute) and (
                    (isinstance(node.value, ast.Attribute) and node.value.attr == "ui")
                    or (isinstance(node.value, ast.Name) and node.value.id == "ui")):
                names.add(node.attr)
    return names


def test_the_widget_parts_are_checked_too() -> None:
    assert WIDGET_PARTS, "no gui/enhance_*.py file"
    assert {"deviceComboBox", "progressBar", "orientationComboBox"} <= used_ui_names()


def parameter_names() -> set[str]:
    """The annotated attributes of the @parameterNodeWrapper class."""
    tree = ast.parse(MODULE.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MRISuperResParameterNode")
    return {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign)}


def test_every_widget_the_code_uses_is_in_the_ui_file() -> None:
    used = used_ui_names()
    assert {"applyButton", "inputSelector", "modelComboBox", "progressBar", "statusLabel"} <= used | set(ui_widgets())
    missing = used - set(ui_widgets())
    assert not missing, f"MRISuperRes.py or its gui parts use widgets missing from MRISuperRes.ui: {sorted(missing)}"


def test_every_bound_widget_names_a_parameter() -> None:
    parameters = parameter_names()
    bound = {}
    for name, widget in ui_widgets().items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[name] = prop.find("string").text
    assert bound, "no widget is bound to the parameter node"
    unknown = {w: p for w, p in bound.items() if p not in parameters}
    assert not unknown, f"widgets bound to parameters the parameter node lacks: {unknown}"


def test_the_ui_file_declares_its_custom_widgets_and_scene_connection() -> None:
    root = ET.parse(UI).getroot()
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    used = {w.get("class") for w in root.iter("widget")}
    custom = {c for c in used if re.match(r"^(qMRML|ctk)", c)}
    assert custom <= declared, f"custom widgets not declared: {sorted(custom - declared)}"
    receivers = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    node_selectors = {w.get("name") for w in root.iter("widget") if w.get("class") == "qMRMLNodeComboBox"}
    assert node_selectors <= receivers


def test_the_module_file_imports_no_engine_code_at_module_level() -> None:
    # Slicer must load the module before torch and the other dependencies are installed.
    tree = ast.parse(MODULE.read_text())
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            assert not any(n.split(".")[0] in {"MRISuperResLib", "torch", "monai", "numpy"} for n in names), names


def _ranges(module: Path) -> dict[str, tuple[float, float]]:
    """``WithinRange(lo, hi)`` of each parameter of the module's parameter-node class."""
    tree = ast.parse(module.read_text())
    ranges = {}
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        for item in (n for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)):
            for call in ast.walk(item.annotation):
                if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "WithinRange":
                    ranges[item.target.id] = tuple(ast.literal_eval(a) for a in call.args)
    return ranges


def test_every_bounded_spin_box_can_show_its_parameters_range() -> None:
    """Slicer's connector sets the spin box range from ``WithinRange`` and keeps the .ui decimals; a bound that
    the decimals round (1e-7 at 6 decimals -> 0) lets the GUI show a value the parameter node refuses."""
    checked = 0
    for module in (MODULE, ROOT / "MRISuperResTraining" / "MRISuperResTraining.py"):
        ranges = _ranges(module)
        ui = module.parent / "Resources" / "UI" / f"{module.stem}.ui"
        for widget in ET.parse(ui).getroot().iter("widget"):
            props = {p.get("name"): p for p in widget.findall("property")}
            parameter = props.get("SlicerParameterName")
            if parameter is None or widget.get("class") not in ("QDoubleSpinBox", "ctkDoubleSpinBox",
                                                                   "ctkSliderWidget"):
                continue
            name = parameter.findtext("string")
            decimals = int(props["decimals"].findtext("number")) if "decimals" in props else 2
            if name in ranges:
                low, high = ranges[name]
                assert round(low, decimals) == low and round(high, decimals) == high, (module.name, name, decimals)
                checked += 1
    assert checked >= 3


def test_the_parameter_node_keeps_one_node_per_output_map_and_asks_for_each_optional_one() -> None:
    from MRISuperResLib.engine.outputs import OUTPUT_MAPS

    parameters = parameter_names()
    kept = {name for name in parameters if name.endswith("Volume")} - {"inputVolume"}
    assert kept == {output.parameter for output in OUTPUT_MAPS}
    for output in OUTPUT_MAPS:
        assert (output.key in parameters) == output.optional, output.key


def _choices(module: Path) -> dict[str, list]:
    """``{parameter: values}`` of the ``Choice([...])`` annotations of the module's parameter node."""
    tree = ast.parse(module.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name.endswith("ParameterNode"))
    choices = {}
    for item in cls.body:
        if isinstance(item, ast.AnnAssign):
            for call in ast.walk(item.annotation):
                if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "Choice":
                    argument = call.args[0]
                    if isinstance(argument, ast.Name):  # a module-level list
                        argument = next(n.value for n in tree.body if isinstance(n, ast.Assign)
                                        and any(getattr(t, "id", "") == argument.id for t in n.targets))
                    choices[item.target.id] = ast.literal_eval(argument)
    return choices


def test_the_precision_selector_offers_exactly_the_engines_precisions() -> None:
    """Slicer's combo-box connector shows a ``Choice`` parameter's values as its items; the module file cannot
    import the engine at module level, so its list is written out and must stay the engine's."""
    from MRISuperResLib.engine.options import EnhanceOptions, PRECISIONS

    assert _choices(MODULE)["precision"] == list(PRECISIONS)
    bound = {w.get("class"): w for w in ui_widgets().values()
             if any(p.get("name") == "SlicerParameterName" and p.findtext("string") == "precision"
                    for p in w.findall("property"))}
    assert list(bound) == ["QComboBox"]
    default = next(n.value for n in ast.walk(ast.parse(MODULE.read_text()))
                   if isinstance(n, ast.AnnAssign) and getattr(n.target, "id", "") == "precision")
    assert ast.literal_eval(default) == EnhanceOptions().precision
