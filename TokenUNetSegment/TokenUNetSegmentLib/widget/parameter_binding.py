"""The module's parameters as a Slicer ``parameterNodeWrapper`` class, for binding the .ui widgets
(``SlicerParameterName``) to the same parameter node the MRML layer reads. Imports nothing of Qt itself: the
wrapper is built on first use, inside the application."""

from __future__ import annotations

import dataclasses
import typing

from ..mrml.parameters import Parameters, choices, node_fields, selector_types, value_fields, value_range

PARAMETER_NAME = "SlicerParameterName"  # the .ui's dynamic property that binds a widget to a parameter


def parameter_wrapper_class():
    """A ``parameterNodeWrapper`` class with the fields of :class:`Parameters` (same names, same storage)."""
    import slicer
    from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper

    annotations, defaults = {}, {}
    nodes, values = node_fields(), value_fields()
    for field in dataclasses.fields(Parameters):
        if field.name in nodes:
            annotations[field.name] = getattr(slicer, nodes[field.name])
            continue
        kind = values[field.name]
        extra = []
        if choices(field.name):
            extra.append(Choice(list(choices(field.name))))
        if value_range(field.name):
            extra.append(WithinRange(*value_range(field.name)))
        annotations[field.name] = typing.Annotated[(kind, *extra)] if extra else kind
        defaults[field.name] = field.default
    namespace = {"__annotations__": annotations, **defaults}
    return parameterNodeWrapper(type("TokenUNetSegmentParameterNode", (), namespace))


def connect_gui(wrapped, ui):
    """Bind the .ui widgets to ``wrapped`` (``connectGui``) and give back what the binding takes from them; the tag
    ``disconnectGui`` needs.

    The wrapper's node connector sets a selector's ``nodeTypes`` to its parameter's one class (Slicer 5.10
    ``guiConnectors.qMRMLNodeComboBoxToNodeConnector``), dropping the vector volumes the first input selector lists
    too (``showChildNodeTypes`` is off): they are listed again, and the node the parameter holds is shown again.
    """
    tag = wrapped.connectGui(ui)
    widgets = {widget.property(PARAMETER_NAME): widget for widget in vars(ui).values() if hasattr(widget, "property")}
    for name, class_name in node_fields().items():
        selector = widgets.get(name)
        if selector is not None and selector_types(name) != [class_name]:
            selector.nodeTypes = selector_types(name)
            selector.setCurrentNode(getattr(wrapped, name))
    return tag
