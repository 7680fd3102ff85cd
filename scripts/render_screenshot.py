"""Render the extension's screenshot offscreen: the bundled sample CT segmented by the bundled default model.

    .venv/bin/python scripts/render_screenshot.py [--out Resources/Screenshots/TokenUNetSegment.png] [--token N]
        [--overwrite]

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


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SMALLEST_PANEL = 32
"""Pixels of the smallest view drawn (0 or less aborts VTK's renderer and PNG writer)."""


def panel_size(text: str) -> int:
    """``--panel``: a whole number of pixels, at least :data:`SMALLEST_PANEL`."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of pixels, got {text!r}") from None
    if value < SMALLEST_PANEL:
        raise argparse.ArgumentTypeError(f"must be at least {SMALLEST_PANEL} pixels, got {value}")
    return value


def is_picture(path: Path) -> bool:
    """Whether the file at ``path`` is a PNG (an earlier screenshot, replaced without asking; another file is not)."""
    with open(path, "rb") as stream:
        return stream.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE


def check_token(token: int, model) -> None:
    """Refuse a ``--token`` the model does not have, from its configuration (before it runs).

    Raises:
        InputError: naming the model's tokens.
    """
    from TokenUNetSegmentLib.model.variants import declared_token_count
    from TokenUNetSegmentLib.pipeline.catalog import ModelStore
    from TokenUNetSegmentLib.pipeline.errors import InputError
    from TokenUNetSegmentLib.pipeline.package_source import read_metadata

    metadata = read_metadata(ModelStore().resolve(model))
    architecture = metadata.config.architecture
    count = declared_token_count(architecture.name, architecture.build_arguments())
    if count is not None and not 0 <= token < count:
        raise InputError(f"--token {token}: model '{metadata.id}' has tokens 0 to {count - 1}", "choose one of them")


def main(argv=None) -> int:
    """The script; a stop (Ctrl-C, SIGTERM, a hang-up) ends it as it ends the command line: one "interrupted" line,
    exit 130 (before: Ctrl-C printed Python's traceback; SIGTERM ended it at once), the picture written whole or not
    at all."""
    import threading

    from TokenUNetSegmentLib.pipeline.cancel_signals import install_cancel_handlers, restore_handlers
    from TokenUNetSegmentLib.pipeline.run_contract import ErrorEvent

    previous = install_cancel_handlers(threading.Event())
    try:
        return render(argv)
    except KeyboardInterrupt as stop:
        event = ErrorEvent.from_error(stop)
        print("\n" + event.line(), file=sys.stderr)
        return event.exit_code
    finally:
        restore_handlers(previous)


def render(argv=None) -> int:
    """Parse ``argv``, segment the sample and write the picture; the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "Resources" / "Screenshots" / "TokenUNetSegment.png"))
    parser.add_argument("--model", default=None, help="model id or package path (default: the catalog's)")
    parser.add_argument("--token", type=int, default=None, help="token whose map is shown (default: best match)")
    parser.add_argument("--panel", type=panel_size, default=480, help="size of each view in pixels (at least 32)")
    parser.add_argument("--overwrite", action="store_true", help="replace a file at --out that is no PNG")
    args = parser.parse_args(argv)

    from TokenUNetSegmentLib.mrml.attributes import SOFT_DICE_ATTRIBUTE, TOKEN_ATTRIBUTE
    from TokenUNetSegmentLib.mrml.parameters import Parameters
    from TokenUNetSegmentLib.mrml.render import render_run
    from TokenUNetSegmentLib.mrml.scene import create_scene
    from TokenUNetSegmentLib.mrml.scene_run import SceneRun
    from TokenUNetSegmentLib.pipeline.catalog import ModelStore
    from TokenUNetSegmentLib.pipeline.errors import TokenUNetError
    from TokenUNetSegmentLib.pipeline.output_folder import check_file_destination
    from TokenUNetSegmentLib.pipeline.run_contract import ExitCode, RunState

    if args.model is None and ModelStore().default_id() is None:
        print("error: the catalog names no default model yet; pass --model ID|PATH", file=sys.stderr)
        return ExitCode.USER_ERROR
    try:  # before the run: a wrong option or place is said at once, not after it
        out = check_file_destination(args.out, args.overwrite or is_picture)
        if args.token is not None:
            check_token(args.token, args.model)
    except TokenUNetError as error:
        print(f"error: {error}", file=sys.stderr)
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
    try:  # the picture is written whole or not at all (a full disk: the previous one stays)
        out.parent.mkdir(parents=True, exist_ok=True)
        render_run(ctx.application_logic, ctx.scene, volume, run.nodes.segmentation, heatmap, str(out), args.panel)
    except TokenUNetError as error:
        print(f"error: {error}", file=sys.stderr)
        return ExitCode.USER_ERROR
    print(f"wrote {out} (token {heatmap.GetAttribute(TOKEN_ATTRIBUTE)}: {heatmap.GetName()})")
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
