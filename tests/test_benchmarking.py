import xml.etree.ElementTree as ET

import pytest

from ipi_mts.benchmarking import method_xml, parse_method
from ipi_mts.errors import UserError

MODELS = {"pair": "water-pair", "conventional": "water-baseline", "reference": "qtip4pf"}


def test_methods_map_to_time_steps_and_levels():
    assert parse_method("reference", MODELS)[:2] == (0.5, None)
    dt, n, ffs, placement = parse_method("split:3:inner", MODELS)
    assert (dt, n, placement) == (3.0, 6, "inner")
    assert [f[1] for f in ffs] == ["qtip4pf-inter", "qtip4pf-intra"]
    dt, n, ffs, placement = parse_method("pair:2", MODELS)
    assert (dt, n, placement) == (2.0, 4, None)
    assert [(f[1], f[2]) for f in ffs] == [("water-pair", "slow"), ("water-pair", "fast")]
    with pytest.raises(UserError, match="not a multiple"):
        parse_method("pair:1.2", MODELS)
    with pytest.raises(UserError, match="unknown benchmark method"):
        parse_method("magic:2", MODELS)


def test_inputs_are_ipi_xml_with_the_right_dynamics():
    xml, dt = method_xml("split:4:inner", MODELS, "inputs/water-64/init.xyz", 1.0, "nvt", thermostat="pile_l")
    root = ET.fromstring(xml)
    dyn = root.find("system/motion/dynamics")
    assert dyn.get("mode") == "mts" and dyn.get("thermostat_placement") == "inner"
    assert dyn.findtext("nmts").strip() == "[1, 8]" and root.findtext("total_steps") == "250"
    assert dyn.find("thermostat").get("mode") == "pile_l"
    xml, _ = method_xml("split:4:inner", MODELS, "inputs/water-64/init.xyz", 1.0, "nve")
    dyn = ET.fromstring(xml).find("system/motion/dynamics")
    assert dyn.get("mode") == "nve" and dyn.find("thermostat") is None
    xml, dt = method_xml("conventional", MODELS, "inputs/water-64/init.xyz", 0.5, "nvt")
    assert dt == 0.5 and "{model: water-baseline}" in xml
