"""The module's .ui file, read as data."""

import xml.etree.ElementTree as ET

from .paths import RESOURCES

UI_FILE = RESOURCES / "UI" / "TokenUNetSegment.ui"


def ui_widgets() -> dict:
    """objectName -> (class, {property: value}) of every widget in the .ui file."""
    widgets = {}
    for element in ET.parse(UI_FILE).getroot().iter("widget"):
        properties = {}
        for prop in element.findall("property"):
            value = prop[0]
            properties[prop.get("name")] = (
                [s.text for s in value.findall("string")] if value.tag == "stringlist" else value.text
            )
        assert element.get("name") not in widgets, f"duplicate widget name {element.get('name')}"
        widgets[element.get("name")] = (element.get("class"), properties)
    return widgets
