"""The module's parameters as a Slicer ``parameterNodeWrapper`` class, for binding the .ui widgets
(``SlicerParameterName``) to the same parameter node the MRML layer reads. Imports nothing of Qt itself: the
wrapper is built on first use, inside the application."""

from __future__ import annotations

import dataclasses
import typing

from ..mrml.parameters import Parameters, choices, node_fields, value_fields, value_range


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
