"""Token heatmaps -> float volume nodes (heat colors, 0..1 window) and a "token attention" segmentation.

Every node of one run goes into a subject-hierarchy folder beside the input volume. A heatmap node carries
its token, map kind and best-matching label as node attributes; the attention segmentation references its
heatmap nodes, so its threshold can be changed later without the run's result.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
import slicer

from .attributes import (
    BEST_LABEL_ATTRIBUTE,
    HEATMAP_ROLE,
    KIND_ATTRIBUTE,
    RUN_ATTRIBUTE,
    SOFT_DICE_ATTRIBUTE,
    THRESHOLD_ATTRIBUTE,
    TOKEN_ATTRIBUTE,
)
from .segmentation_nodes import add_segment, hierarchy_item, made_segment_ids, new_segmentation_node, subject_hierarchy
from .volume_nodes import array_to_world, local_to_world, mask_bounds, oriented_image, set_volume_from_array

HEAT_TABLE_TAG = "TokenUNetHeat"
HEAT_TABLE_NAME = "TokenUNet Heat"
DEFAULT_THRESHOLD = 0.5
SEGMENT_SPACING_MM = 3.0  # maps coarser than this (token grids: 12-24 mm) are cut on a finer grid
MAX_REFINEMENT = 8


def heat_rgb(t: np.ndarray) -> np.ndarray:
    """The heat scale: black -> red -> yellow -> white for t in [0, 1]; shape (..., 3)."""
    t = np.clip(np.asarray(t, float), 0.0, 1.0)
    return np.stack([np.clip(3 * t, 0, 1), np.clip(3 * t - 1, 0, 1), np.clip(3 * t - 2, 0, 1)], axis=-1)


def heat_color_node(scene):
    """The scene's heat color table (created once per scene, 256 entries, saved with the scene)."""
    node = scene.GetSingletonNode(HEAT_TABLE_TAG, "vtkMRMLColorTableNode")
    if node is not None:
        return node
    node = slicer.vtkMRMLColorTableNode()
    node.SetName(HEAT_TABLE_NAME)
    node.SetSingletonTag(HEAT_TABLE_TAG)
    node.SetTypeToUser()
    node.SetNumberOfColors(256)
    for index, (r, g, b) in enumerate(heat_rgb(np.linspace(0.0, 1.0, 256))):
        node.SetColor(index, f"{index}", float(r), float(g), float(b), 1.0)
    scene.AddNode(node)
    return node


def token_color(token: int, count: int) -> tuple[float, float, float]:
    """Distinct, bright colors for ``count`` tokens (evenly spaced hues)."""
    return colorsys.hsv_to_rgb((token / max(1, count)) % 1.0, 0.85, 1.0)


def run_folder(scene, reference, name: str, run_id: str) -> int:
    """A new subject-hierarchy folder for one run's maps, beside ``reference`` (the input volume)."""
    hierarchy = subject_hierarchy(scene)
    parent = (
        hierarchy.GetItemParent(hierarchy_item(scene, reference))
        if reference is not None
        else hierarchy.GetSceneItemID()
    )
    folder = hierarchy.CreateFolderItem(parent, name)
    hierarchy.SetItemAttribute(folder, RUN_ATTRIBUTE, run_id)
    return folder


def add_map_volume(
    scene,
    array_ijk: np.ndarray,
    world_affine: np.ndarray,
    name: str,
    reference=None,
    folder: int | None = None,
    attributes: dict | None = None,
    color_node=None,
):
    """A float32 volume node for a map in [0, 1] (heat colors, window 0..1), under the reference's transform."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", scene.GenerateUniqueName(name))
    if reference is not None:
        transform = reference.GetParentTransformNode()
        node.SetAndObserveTransformNodeID(transform.GetID() if transform is not None else None)
    set_volume_from_array(node, np.asarray(array_ijk, np.float32), world_affine)
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID((color_node or heat_color_node(scene)).GetID())
    display.SetAutoWindowLevel(False)
    display.SetWindowLevelMinMax(0.0, 1.0)
    for key, value in (attributes or {}).items():
        node.SetAttribute(key, str(value))
    if folder is not None:
        subject_hierarchy(scene).SetItemParent(hierarchy_item(scene, node), folder)
    return node


def heatmap_name(token: int, kind: str, best_label: str | None) -> str:
    return f"Token {token:02d} {kind}" + (f" - {best_label}" if best_label else "")


def add_heatmaps(
    scene, token_maps, token_matches, world_affine, kinds, reference=None, folder=None, grid: str = "input"
) -> list:
    """One volume node per token and map kind, from a result's :class:`TokenMaps`.

    ``grid="input"``: each map resampled onto the input grid (``world_affine``); ``grid="token"``: the coarse
    token grid with its own geometry (same place in space, far less memory; Slicer interpolates on display).
    """
    best = {(m["kind"], m["token"]): m for m in token_matches}
    nodes = []
    for kind in kinds:
        for token in range(token_maps.num_tokens):
            match = best.get((kind, token), {})
            attributes = {
                TOKEN_ATTRIBUTE: token,
                KIND_ATTRIBUTE: kind,
                BEST_LABEL_ATTRIBUTE: match.get("best_label", ""),
                SOFT_DICE_ATTRIBUTE: match.get("soft_dice", ""),
            }
            if grid == "token":
                array, affine = token_maps.coarse[kind][token], token_maps.coarse_grid.affine
            else:
                array, affine = token_maps.get(kind, token), world_affine
            nodes.append(
                add_map_volume(
                    scene,
                    array,
                    affine,
                    heatmap_name(token, kind, match.get("best_label")),
                    reference,
                    folder,
                    attributes,
                )
            )
    return nodes


def add_attention_segmentation(
    scene,
    heatmap_nodes: list,
    threshold: float = DEFAULT_THRESHOLD,
    reference=None,
    folder=None,
    name: str = "Token attention",
):
    """A segmentation with one segment per heatmap node: its map thresholded at ``threshold``."""
    node = new_segmentation_node(scene, name, reference)
    for heatmap in heatmap_nodes:
        node.AddNodeReferenceID(HEATMAP_ROLE, heatmap.GetID())
    if reference is not None:
        node.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    if folder is not None:
        subject_hierarchy(scene).SetItemParent(hierarchy_item(scene, node), folder)
    update_attention_segments(node, threshold)
    return node


def update_attention_segments(node, threshold: float) -> None:
    """Rebuild the token segments of an attention segmentation at a new threshold (0 < threshold <= 1); segments
    the user added to it are kept."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"the attention threshold must be in (0, 1], got {threshold}")
    segmentation = node.GetSegmentation()
    references = range(node.GetNumberOfNodeReferences(HEATMAP_ROLE))
    heatmap_nodes = [h for h in (node.GetNthNodeReference(HEATMAP_ROLE, i) for i in references) if h is not None]
    to_local = np.linalg.inv(local_to_world(node))
    was = node.StartModify()
    try:
        for segment_id in made_segment_ids(node, TOKEN_ATTRIBUTE):  # the user's own segments stay
            segmentation.RemoveSegment(segment_id)
        for heatmap in heatmap_nodes:
            token = int(heatmap.GetAttribute(TOKEN_ATTRIBUTE) or 0)
            array = slicer.util.arrayFromVolume(heatmap).transpose(2, 1, 0)
            image = threshold_image(array, threshold, to_local @ array_to_world(heatmap))
            label = heatmap.GetAttribute(BEST_LABEL_ATTRIBUTE) or ""
            name = f"Token {token:02d}" + (f" - {label}" if label else "")
            add_segment(
                node,
                name,
                token_color(token, len(heatmap_nodes)),
                image,
                1,
                {TOKEN_ATTRIBUTE: token, KIND_ATTRIBUTE: heatmap.GetAttribute(KIND_ATTRIBUTE) or ""},
            )
        node.SetAttribute(THRESHOLD_ATTRIBUTE, f"{threshold:g}")
    finally:
        node.EndModify(was)


def refinement(affine: np.ndarray) -> int:
    """How many times finer than its map's grid a token segment is cut: about :data:`SEGMENT_SPACING_MM`
    (a token grid's 12-24 mm voxels would give blocks), at most :data:`MAX_REFINEMENT`; 1 for grids of at most
    3 mm (input grids of CTs and MRIs as they are)."""
    spacing = float(np.linalg.norm(np.asarray(affine)[:3, :3], axis=0).max())
    return int(min(MAX_REFINEMENT, max(1, math.ceil(spacing / SEGMENT_SPACING_MM - 1e-6))))


def threshold_image(array: np.ndarray, threshold: float, affine: np.ndarray):
    """The oriented image of ``array >= threshold`` (an (i, j, k) map with its IJK -> world ``affine``).

    A coarse map is first upsampled :func:`refinement` times by trilinear interpolation, as slice views show it
    (``align_corners=False``: each voxel's value at its centre), over the block that can reach the threshold
    only: an interpolated value lies between its neighbours', so it sits next to a voxel at the threshold.
    """
    factor, hot = refinement(affine), array >= threshold
    if factor == 1 or not hot.any():
        return _cropped_mask_image(hot, affine)
    lo, hi = mask_bounds(hot)
    lo = [max(0, a - 1) for a in lo]
    hi = [min(size, b + 1) for b, size in zip(hi, array.shape, strict=True)]
    fine = np.asarray(array, np.float32)
    for axis in range(3):  # separable: one axis at a time, on the block's fine voxels only
        index = np.arange(lo[axis] * factor, hi[axis] * factor)
        position = (index + 0.5) / factor - 0.5  # in the map's voxels
        below = np.floor(position).astype(int)
        weight = (position - below).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(3)])
        below_values = np.take(fine, np.clip(below, 0, array.shape[axis] - 1), axis=axis)
        above_values = np.take(fine, np.clip(below + 1, 0, array.shape[axis] - 1), axis=axis)
        fine = below_values + weight * (above_values - below_values)
    # fine voxel n (over the whole grid) sits at map coordinate (n + 0.5) / factor - 0.5
    to_map = np.diag([1.0 / factor] * 3 + [1.0])
    to_map[:3, 3] = 0.5 / factor - 0.5
    return _cropped_mask_image(fine >= threshold, np.asarray(affine) @ to_map, [a * factor for a in lo])


def _cropped_mask_image(mask: np.ndarray, affine: np.ndarray, origin=(0, 0, 0)):
    """An oriented image of the mask's bounding block (keeps the index extent of the grid ``affine`` maps, in
    which the mask starts at index ``origin``); empty if none."""
    if not mask.any():
        return oriented_image(np.zeros((0, 0, 0), np.uint8), affine)
    lo, hi = mask_bounds(mask)
    block = mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].astype(np.uint8)
    return oriented_image(block, affine, offset=[a + o for a, o in zip(lo, origin, strict=True)])


def show_in_slice_views(scene, foreground, opacity: float, background=None) -> None:
    """Show ``foreground`` (e.g. a heatmap) over ``background`` in every slice view of the scene."""
    composites = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    for index in range(composites.GetNumberOfItems()):
        composite = composites.GetItemAsObject(index)
        if background is not None:
            composite.SetBackgroundVolumeID(background.GetID())
        composite.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
        composite.SetForegroundOpacity(float(opacity))
