"""Render the extension's screenshot offscreen: the bundled sample CT segmented by the bundled default model.

    .venv/bin/python scripts/render_screenshot.py [--out Resources/Screenshots/TokenUNetSegment.png] [--token N]

Three slice views (CT, the selected token's heatmap, the segments) and a 3D view of the segments, as Slicer
shows them, without the Slicer application. Then name the file in EXTENSION_SCREENSHOTURLS (CMakeLists.txt and
TokenUNet.s4ext).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "TokenUNetSegment"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "Resources" / "Screenshots" / "TokenUNetSegment.png"))
    parser.add_argument("--model", default=None, help="model id or package path (default: the catalog's)")
    parser.add_argument("--token", type=int, default=None, help="token whose map is shown (default: best match)")
    parser.add_argument("--panel", type=int, default=480, help="size of each view in pixels")
    args = parser.parse_args(argv)

    from TokenUNetSegmentLib.mrml.attributes import SOFT_DICE_ATTRIBUTE, TOKEN_ATTRIBUTE
    from TokenUNetSegmentLib.mrml.parameters import Parameters
    from TokenUNetSegmentLib.mrml.render import render_run
    from TokenUNetSegmentLib.mrml.scene import create_scene
    from TokenUNetSegmentLib.mrml.scene_run import SceneRun
    from TokenUNetSegmentLib.pipeline.catalog import ModelStore
    from TokenUNetSegmentLib.pipeline.errors import TokenUNetError
    from TokenUNetSegmentLib.pipeline.run_contract import ExitCode, RunState

    if args.model is None and ModelStore().default_id() is None:
        print("error: the catalog names no default model yet; pass --model ID|PATH", file=sys.stderr)
        return ExitCode.USER_ERROR
    ctx = create_scene()
    sample = ROOT / "TokenUNetSegment" / "Resources" / "Samples" / "AbdomenCT.nii.gz"
    volume = ctx.volumes_logic.AddArchetypeVolume(str(sample), "AbdomenCT", 0)
    try:
        run = SceneRun(
            ctx.scene, Parameters(inputVolume0=volume, show3D=True, model=args.model or ""), mode="inprocess"
        )
    except TokenUNetError as error:
        print(f"error: {error}", file=sys.stderr)
        return ExitCode.USER_ERROR
    if run.run_now() != RunState.COMPLETED:
        print(f"error: {run.error}", file=sys.stderr)
        return ExitCode.USER_ERROR
    heatmap_nodes = run.nodes.heatmap_nodes
    if not heatmap_nodes:
        print("error: the model gives no token heatmaps", file=sys.stderr)
        return ExitCode.USER_ERROR
    if args.token is None:
        heatmap = max(heatmap_nodes, key=lambda n: float(n.GetAttribute(SOFT_DICE_ATTRIBUTE) or 0.0))
    else:
        heatmap = next(n for n in heatmap_nodes if n.GetAttribute(TOKEN_ATTRIBUTE) == str(args.token))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    render_run(ctx.application_logic, ctx.scene, volume, run.nodes.segmentation, heatmap, args.out, args.panel)
    print(f"wrote {args.out} (token {heatmap.GetAttribute(TOKEN_ATTRIBUTE)}: {heatmap.GetName()})")
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
