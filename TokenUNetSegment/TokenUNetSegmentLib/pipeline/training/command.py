"""The ``train`` command: ``tokenunet train DATALIST --config CONFIG.json --out FOLDER [recipe options]``.

Data-parallel: ``torchrun --nproc_per_node N -m TokenUNetSegmentLib.pipeline train ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..cli import ProgressPrinter
from ..errors import InputError


def _arguments(parser: argparse.ArgumentParser) -> None:
    from .trainer import Recipe

    default = Recipe()
    parser.add_argument("datalist", help="decathlon-style datalist JSON (training/validation cases, label names)")
    parser.add_argument(
        "--config",
        required=True,
        help="JSON with the package's 'tokenunet' section (id, architecture, inputs, preprocessing, "
        "inference, labels), or an existing package whose configuration to train",
    )
    parser.add_argument("--out", "-o", required=True, help="output folder (log, checkpoints, package/)")
    parser.add_argument("--id", dest="model_id", help="model id of the package (default: the config's)")
    parser.add_argument("--steps", type=int, default=default.steps)
    parser.add_argument("--batch-size", type=int, default=default.batch_size, help="patches per step and process")
    parser.add_argument("--patch-size", type=int, nargs=3, help="patch size (default: the inference roi_size)")
    parser.add_argument("--optimizer", choices=("sgd", "adamw"), default=default.optimizer)
    parser.add_argument("--lr", type=float, help="learning rate (default 0.01 sgd, 3e-4 adamw)")
    parser.add_argument("--weight-decay", type=float, default=default.weight_decay)
    parser.add_argument("--schedule", choices=("poly", "cosine"), default=default.schedule)
    parser.add_argument("--warmup-steps", type=int, default=0)
    parser.add_argument("--augmentation", type=float, default=1.0, help="augmentation strength (0 = none)")
    parser.add_argument("--flip-axes", type=int, nargs="*", default=[], help="random flips along these axes")
    parser.add_argument("--val-every", type=int, default=default.val_every, help="validate every N steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="CPU threads per process")
    parser.add_argument("--max-minutes", type=float, help="stop after this long and package the best checkpoint")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pt")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--description", help="package description")
    parser.add_argument("--progress", choices=("auto", "bar", "json", "none"), default="auto")


def load_config(path: str) -> dict:
    """The ``tokenunet`` section from a JSON file (bare or within a metadata.json) or a package."""
    source = Path(path)
    if source.is_dir() or source.suffix.lower() == ".zip":
        from ..package_source import read_metadata

        return read_metadata(source).config.to_dict()
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"cannot read the training configuration {path}: {error}") from None
    return data.get("tokenunet", data)


def run_train(args: argparse.Namespace) -> int:
    from .trainer import Recipe, _distributed, train

    config = load_config(args.config)
    if args.model_id:
        config["id"] = args.model_id
    recipe = Recipe(
        steps=args.steps,
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        optimizer=args.optimizer,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        schedule=args.schedule,
        warmup_steps=args.warmup_steps,
        augmentation=args.augmentation,
        flip_axes=list(args.flip_axes),
        val_every=args.val_every,
        seed=args.seed,
        threads=args.threads,
        max_minutes=args.max_minutes,
    )
    rank, _ = _distributed()
    printer = ProgressPrinter(args.progress if rank == 0 else "none")

    def echo(record: dict) -> None:
        if record.get("event") == "validation":
            printer.close()
            printer.last = ""
            print(
                f"step {record['step']}: loss {record['loss']:.4f}, validation mean Dice {record['mean_dice']:.4f}",
                file=sys.stderr,
            )

    try:
        package = train(
            args.datalist,
            config,
            args.out,
            recipe,
            resume=args.resume,
            device=args.device,
            description=args.description,
            progress=printer,
            echo=echo,
        )
    finally:
        printer.close()
    if package is not None:
        print(f"wrote {package}")
    return 0
