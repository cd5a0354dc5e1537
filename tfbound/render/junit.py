"""Gate verdicts as JUnit XML: one testcase per gate, a failed gate as ``<failure>``."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any


def gates_junit(data: dict[str, Any], suite: str = "tfbound.gates", source: str = "") -> str:
    """``data`` is ``GateReport.to_dict()``; ``source`` names the report that was checked."""
    root = ET.Element(
        "testsuites", name="tfbound", tests=str(data["n_gates"]), failures=str(data["n_failed"])
    )
    ts = ET.SubElement(
        root,
        "testsuite",
        name=suite,
        tests=str(data["n_gates"]),
        failures=str(data["n_failed"]),
        errors="0",
        skipped="0",
    )
    if source:
        props = ET.SubElement(ts, "properties")
        ET.SubElement(props, "property", name="report", value=source)
    for g in data["gates"]:
        case = ET.SubElement(
            ts, "testcase", classname=suite, name=f"{g['gate']} {g['condition'].strip()}", time="0"
        )
        if not g["passed"]:
            failure = ET.SubElement(case, "failure", message=g["reason"], type="GateFailed")
            failure.text = (
                f"gate: {g['gate']}\ncondition: {g['condition']}\nvalue: {g['value']}\n"
                f"threshold: {g['threshold']}\nbaseline: {g['baseline']}\n"
                f"subject: {g['subject']}\nreason: {g['reason']}\n"
            )
        else:
            out = ET.SubElement(case, "system-out")
            out.text = g["reason"]
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
