"""The module's parameters: a plain dataclass stored in a ``vtkMRMLScriptedModuleNode`` (saved with the scene).

Values are written the way Slicer's ``parameterNodeWrapper`` writes them (numbers with ``str``, booleans as
``True``/``False``, strings as they are, nodes as a node reference with the field's name), so the GUI can bind
the same parameter node to its widgets through ``SlicerParameterName`` without a second copy of the state.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

MAX_INPUTS = 4
DEVICES = ("auto", "cpu", "cuda", "mps")
RUN_MODES = ("subprocess", "inprocess")
HEATMAP_KINDS = ("gather", "broadcast", "both")
HEATMAP_GRIDS = ("auto", "input", "token")


def _node(class_name: str, *shown_too: str):
    """A node-valued field of ``class_name``; its selector also lists the subclasses ``shown_too`` (a selector
    lists the classes it names, without their subclasses)."""
    return field(default=None, metadata={"node": class_name, "selector": (class_name, *shown_too)})


@dataclass
class Parameters:
    """What a run needs and how its results are shown (field names are the GUI's ``SlicerParameterName``)."""

    # the first input may be a vector volume holding every channel as its components (named in inputChannels)
    inputVolume0: object = _node("vtkMRMLScalarVolumeNode", "vtkMRMLVectorVolumeNode")
    inputVolume1: object = _node("vtkMRMLScalarVolumeNode")
    inputVolume2: object = _node("vtkMRMLScalarVolumeNode")
    inputVolume3: object = _node("vtkMRMLScalarVolumeNode")
    inputChannels: str = ""  # what each component of a vector volume input holds, in order: "FLAIR,T1,T1c,T2"
    outputSegmentation: object = _node("vtkMRMLSegmentationNode")
    model: str = ""  # model id or package path; "" = the catalog's default
    device: str = "auto"  # one of DEVICES or cuda:N: the panel lists what the computer has (no fixed choices)
    runMode: str = field(default="subprocess", metadata={"choices": RUN_MODES})
    show3D: bool = False
    largestComponent: bool = False
    heatmaps: bool = True
    heatmapKind: str = field(default="gather", metadata={"choices": HEATMAP_KINDS})
    heatmapGrid: str = field(default="token", metadata={"choices": HEATMAP_GRIDS})
    attentionSegments: bool = True
    attentionThreshold: float = field(default=0.5, metadata={"range": (0.01, 1.0)})
    heatmapOpacity: float = field(default=0.6, metadata={"range": (0.0, 1.0)})
    selectedHeatmap: object = _node("vtkMRMLScalarVolumeNode")
    probabilities: bool = False
    testTimeAugmentation: bool = False

    def inputs(self, count: int | None = None) -> list:
        """The first ``count`` input volume nodes (all set ones when ``count`` is None)."""
        nodes = [getattr(self, f"inputVolume{i}") for i in range(MAX_INPUTS)]
        if count is None:
            return [n for n in nodes if n is not None]
        return nodes[:count]

    def validate(self) -> list[str]:
        """Problems with the plain values (empty when fine)."""
        problems = []
        if not valid_model(self.model):
            problems.append(f"'{str(self.model)[:60]}' is neither a model id nor a package path")
        if not valid_device(self.device):
            problems.append(f"unknown device '{self.device}'")
        if self.runMode not in RUN_MODES:
            problems.append(f"unknown run mode '{self.runMode}'")
        if self.heatmapKind not in HEATMAP_KINDS:
            problems.append(f"unknown heatmap kind '{self.heatmapKind}'")
        if self.heatmapGrid not in HEATMAP_GRIDS:
            problems.append(f"unknown heatmap grid '{self.heatmapGrid}'")
        for name, what in (("attentionThreshold", "attention threshold"), ("heatmapOpacity", "heatmap opacity")):
            low, high = value_range(name)
            if not low <= getattr(self, name) <= high:
                problems.append(f"the {what} must be in [{low}, {high}]")
        return problems

    @property
    def kinds(self) -> list[str]:
        return ["gather", "broadcast"] if self.heatmapKind == "both" else [self.heatmapKind]


def valid_model(model: str) -> bool:
    """``""`` (the catalog's default), a model id matched in full, or a package path (a folder or ``.zip``)."""
    from ..pipeline.metadata import model_id_problem

    if not isinstance(model, str):
        return False
    is_path = any(separator in model for separator in ("/", "\\")) or model.lower().endswith(".zip")
    return model == "" or model_id_problem(model) is None or (is_path and "\x00" not in model)


def valid_device(device: str) -> bool:
    """``auto``, ``cpu``, ``cuda``, ``mps`` or ``cuda:N``."""
    kind, _, index = device.partition(":")
    return device in DEVICES or (kind == "cuda" and index.isdigit())


def choices(name: str) -> tuple | None:
    """The allowed values of a field (for combo boxes), or None."""
    return next((f.metadata.get("choices") for f in fields(Parameters) if f.name == name), None)


def value_range(name: str) -> tuple[float, float] | None:
    """The (minimum, maximum) of a numeric field (for sliders), or None."""
    return next((f.metadata.get("range") for f in fields(Parameters) if f.name == name), None)


def node_fields() -> dict[str, str]:
    """Field name -> MRML class of the node-valued parameters."""
    return {f.name: f.metadata["node"] for f in fields(Parameters) if "node" in f.metadata}


def selector_types(name: str) -> list[str]:
    """The MRML classes the selector of a node-valued field lists (its ``nodeTypes`` in the .ui file)."""
    return next(list(f.metadata["selector"]) for f in fields(Parameters) if f.name == name)


def value_fields() -> dict[str, type]:
    """Field name -> Python type of the plain parameters."""
    types = {"str": str, "bool": bool, "int": int, "float": float}
    return {
        f.name: types[f.type if isinstance(f.type, str) else f.type.__name__]
        for f in fields(Parameters)
        if "node" not in f.metadata
    }


def write_parameters(node, parameters: Parameters) -> None:
    """Store every field in the scripted-module node (one Modified event)."""
    was = node.StartModify()
    try:
        for name, kind in value_fields().items():
            value = getattr(parameters, name)
            node.SetParameter(name, ("True" if value else "False") if kind is bool else str(value))
        for name in node_fields():
            value = getattr(parameters, name)
            node.SetParameter(name, "")
            node.SetNodeReferenceID(name, value.GetID() if value is not None else None)
    finally:
        node.EndModify(was)


def read_parameters(node) -> Parameters:
    """The parameters stored in the node; fields it lacks (or cannot parse) keep their defaults."""
    parameters = Parameters()
    for name, kind in value_fields().items():
        if not node.GetParameter(name):
            continue
        text = node.GetParameter(name)
        try:
            value = text == "True" if kind is bool else kind(text)
        except ValueError:
            continue
        setattr(parameters, name, value)
    for name, class_name in node_fields().items():
        value = node.GetNodeReference(name)
        setattr(parameters, name, value if value is not None and value.IsA(class_name) else None)
    return parameters


def parameter_node(scene, module_name: str = "TokenUNetSegment", create: bool = True):
    """The module's parameter node in ``scene`` (a singleton tagged with the module name)."""
    node = scene.GetSingletonNode(module_name, "vtkMRMLScriptedModuleNode")
    if node is None and create:
        import slicer

        node = slicer.vtkMRMLScriptedModuleNode()
        node.SetName(module_name)
        node.SetSingletonTag(module_name)
        node.SetModuleName(module_name)
        write_parameters(node, Parameters())
        node = scene.AddNode(node)
    return node
