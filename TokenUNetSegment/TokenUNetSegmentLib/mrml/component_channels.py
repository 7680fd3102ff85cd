"""A vector volume whose components are a multi-channel model's channels, and the names that say which is which.

Slicer loads a 4D NIfTI, or a NRRD whose values per voxel lie on a ``list`` axis (the Medical Segmentation
Decathlon's brain-tumour MRI: FLAIR, T1w, t1gd, T2w), as one ``vtkMRMLVectorVolumeNode``. Its reader also says what
the components are, in the node's VoxelVectorType (Slicer 5.10, ``vtkITKArchetypeImageSeriesReader``): ColorRGB and
ColorRGBA for colour pixels, Spatial for a vector with a measurement frame and no ``list`` axis (a displacement
field), SpatialCovariant for gradients, and Undefined for "scalar or independent scalar components"
(``vtkMRMLVolumeNode.h``). Only independent components can be channels. Other multi-component nodes (diffusion
weighted volumes, MultiVolumeExplorer's frames) are no vector volumes, and their values are no channels either.

Which component holds which channel is never guessed: the user names them in order (the panel's "Input channels",
``logic.process``'s ``channels=``), and the names are matched to the model's channels as the command line's
``--channels`` are (:func:`..pipeline.channels.match_names`: any case, the usual synonyms such as ``t1gd``).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence

import slicer

from ..pipeline.errors import InputError
from .parameters import MAX_INPUTS
from .volume_nodes import scalar_components

FIELD = "Input channels"
"""The panel's field that names the components (``Parameters.inputChannels``), as messages call it."""
NOT_CHANNELS = {
    slicer.vtkMRMLVolumeNode.VoxelVectorTypeColorRGB: "a colour image (RGB)",
    slicer.vtkMRMLVolumeNode.VoxelVectorTypeColorRGBA: "a colour image (RGBA)",
    slicer.vtkMRMLVolumeNode.VoxelVectorTypeSpatial: (
        "a vector field (a direction per voxel, e.g. a displacement field)"
    ),
    slicer.vtkMRMLVolumeNode.VoxelVectorTypeSpatialCovariant: "a vector field (a gradient per voxel)",
}

FRAME_ATTRIBUTE = re.compile(r"axis [03] index (?:type|values)|MultiVolume\.(?:FrameLabels|NumberOfFrames)")
"""Node attributes that say a vector volume's components are the frames of a time series (a DCE series): Slicer keeps
a NRRD's key/value pairs as attributes (``vtkMRMLNRRDStorageNode``), and Sequences' volume sequence files
(``vtkMRMLVolumeSequenceStorageNode``: ``axis 3 index values``) and MultiVolumeExplorer's files
(``MultiVolume.FrameLabels``) write these. A 4D NIfTI keeps no such mark: nothing tells its frames from channels."""


def components_kind(node) -> str | None:
    """What the components of a multi-component volume node hold when they cannot be a model's channels (``a colour
    image (RGB)``, ...), None when they can (a vector volume of independent values)."""
    image = node.GetImageData()
    if image is not None and image.GetPointData().GetTensors() is not None:
        return "diffusion tensors"
    if node.IsA("vtkMRMLDiffusionWeightedVolumeNode"):
        return "diffusion-weighted images (one per gradient direction)"
    if not node.IsA("vtkMRMLVectorVolumeNode"):
        return "several values per voxel of no vector volume (e.g. the frames of one acquisition)"
    frames = next((key for key in node.GetAttributeNames() or () if FRAME_ATTRIBUTE.fullmatch(key)), None)
    if frames is not None:
        return f"the frames of a time series (its attribute '{frames}' lists them)"
    return NOT_CHANNELS.get(node.GetVoxelVectorType())


def takes_components(node, channels: int) -> bool:
    """Whether ``node``, selected as the first input of a model of ``channels`` channels, holds them all as its
    components (a volume of several values per voxel for a multi-channel model)."""
    return node is not None and channels > 1 and scalar_components(node) > 1


def parse_names(text: str) -> list[str]:
    """The names typed in the Input channels field (``FLAIR, T1, T1c, T2``), in order; [] when it is empty.

    Raises:
        InputError: an empty name between commas (as ``--channels``'s check says it).
    """
    from ..pipeline.arguments import channel_names

    if not str(text).strip():
        return []
    try:
        return channel_names(str(text))
    except argparse.ArgumentTypeError as error:
        raise InputError(str(error), f"name each component once in {FIELD}, separated by commas") from None


def names_text(channels) -> str:
    """``logic.process``'s ``channels`` (a list of names, a comma-separated text, or None) as the Input channels
    field holds them.

    Raises:
        InputError: a name with a comma in it (the field separates names with commas).
    """
    if channels is None or isinstance(channels, str):
        return channels or ""
    names = [str(name) for name in channels]
    for name in names:
        if "," in name:
            raise InputError(f"channel name '{name}' holds a comma", "pass one name per component")
    return ",".join(names)


def check_channels_given_for(volumes: Sequence, names: str) -> None:
    """Refuse component names (``logic.process``'s ``channels=``) given for anything but one volume of several
    values per voxel: scalar volumes are taken in the model's channel order, whatever names say.

    Raises:
        InputError: names given with scalar volumes.
    """
    if names.strip() and not (len(volumes) == 1 and scalar_components(volumes[0]) > 1):
        raise InputError(
            "channels= names the components of one vector volume; the volumes given are taken in the model's "
            "channel order",
            "pass the scalar volumes in the model's order without channels=, or one vector volume with channels=",
        )


def check_component_input(parameters, inputs: Sequence[str] | None, model: str) -> tuple[str, ...]:
    """The names of the components of the first input of ``parameters`` (:class:`.parameters.Parameters`), which
    holds every channel of the model (channel names ``inputs``, None when unknown here; ``model``: its id, for
    messages), checked as :func:`check_component_names` does, with no other input selected.

    Raises:
        InputError: another input volume selected too, or what :func:`check_component_names` refuses.
    """
    first = parameters.inputVolume0
    nodes = parameters.inputs(MAX_INPUTS)
    other = next((index for index in range(1, len(nodes)) if nodes[index] is not None), None)
    if other is not None:
        raise InputError(
            f"volume '{first.GetName()}' holds every channel; input volume {other + 1} ('{nodes[other].GetName()}') "
            "is selected too",
            "clear the other input volumes, or select one scalar volume per channel",
        )
    return check_component_names(first, parse_names(parameters.inputChannels), inputs, model)


def check_component_names(node, names: Sequence[str], inputs: Sequence[str] | None, model: str) -> tuple[str, ...]:
    """The names of the components of ``node`` (a volume given alone for a multi-channel model), checked against the
    model's channel names ``inputs`` (None when they cannot be known before its download: the run checks them).

    Raises:
        InputError: components that cannot be channels, a count other than the model's, no names, a count of
            names other than the components', or names that do not name the model's channels one to one.
    """
    from ..pipeline.channels import match_names
    from ..pipeline.metadata import InputChannel

    name, count = node.GetName(), scalar_components(node)
    kind = components_kind(node)
    if kind is not None:
        raise InputError(
            f"volume '{name}' holds {kind}, not the model's channels",
            "select one scalar volume per channel, or a vector volume of the channels' images",
        )
    example = ",".join(inputs) if inputs else "FLAIR,T1,T1c,T2"
    if inputs is not None and count != len(inputs):
        raise InputError(
            f"volume '{name}' has {count} components per voxel; the model takes {len(inputs)} channels "
            f"({', '.join(inputs)})",
            f"select a volume of {len(inputs)} components, or one scalar volume per channel",
        )
    if not names:
        raise InputError(
            f"nothing says which channel each of the {count} components of volume '{name}' holds",
            f"name them in order in {FIELD}, e.g. {example}",
        )
    if len(names) != count:
        raise InputError(
            f"{FIELD} name {len(names)} components; volume '{name}' has {count}",
            f"name each of its {count} components in order, e.g. {example}",
        )
    if inputs is not None:
        where = [f"component {index} in {FIELD}" for index in range(count)]
        match_names(names, [InputChannel(channel) for channel in inputs], model, where)
    return tuple(names)
