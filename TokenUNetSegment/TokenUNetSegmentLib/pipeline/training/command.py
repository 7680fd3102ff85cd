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
    from .recipe import Recipe

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
    parser.add_argument(
        "--synthetic-ratio",
        type=float,
        default=default.synthetic_ratio,
        help="share of patches synthesised from tissue maps (SynthSeg-style CT; "
        'cases with "synthesis": false excluded)',
    )
    parser.add_argument(
        "--remap-ratio",
        type=float,
        default=default.remap_ratio,
        help="share of the other patches whose tissues get another contrast phase",
    )
    parser.add_argument(
        "--background-ratio",
        type=float,
        default=default.background_ratio,
        help="share of patches centred anywhere rather than on an organ (hard background)",
    )
    parser.add_argument("--lesion-probability", type=float, default=default.lesion_probability)
    parser.add_argument(
        "--hold-out",
        nargs="*",
        default=[],
        metavar="PATIENT",
        help="leave these patients' cases out (leave-one-patient-out folds; see the datalist's \"patient\")",
    )
    parser.add_argument(
        "--select",
        choices=("best", "last"),
        default=default.select,
        help="package the best validated checkpoint or the last one",
    )
    parser.add_argument("--workers", type=int, default=default.workers, help="processes that draw patches")
    parser.add_argument("--val-every", type=int, default=default.val_every, help="validate every N steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="CPU threads per process")
    parser.add_argument(
        "--max-minutes",
        type=float,
        help="stop this invocation after this long (a --resume continues) and package the selected checkpoint",
    )
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
    from .recipe import Recipe
    from .trainer import _distributed, train

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
        synthetic_ratio=args.synthetic_ratio,
        remap_ratio=args.remap_ratio,
        background_ratio=args.background_ratio,
        lesion_probability=args.lesion_probability,
        hold_out=list(args.hold_out),
        select=args.select,
        workers=args.workers,
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


def _datalist_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "layout",
        choices=("totalsegmentator", "decathlon", "folders"),
        help="totalsegmentator: <case>/ct.nii.gz + segmentations/; decathlon: dataset.json "
        "(MSD, nnU-Net raw, AMOS); folders: --images and --labels paired by number (BTCV)",
    )
    parser.add_argument("root", nargs="?", help="the dataset folder (totalsegmentator, decathlon)")
    parser.add_argument("--images", help="folders: the image folder")
    parser.add_argument("--labels", help="folders: the label folder")
    parser.add_argument("--table", default="btcv", help="folders: btcv, amos, totalsegmentator or a JSON name table")
    parser.add_argument("--config", help="the model configuration whose labels to match (report and 'partial')")
    parser.add_argument("--splits", nargs="+", default=["train"], help="totalsegmentator: meta.csv splits to train on")
    parser.add_argument(
        "--validation-splits", nargs="*", default=["val"], help="totalsegmentator: splits to validate on"
    )
    parser.add_argument(
        "--structures",
        choices=("all", "model"),
        default="all",
        help="totalsegmentator: read every mask (full maps for synthesis) or only the model's",
    )
    parser.add_argument("--validation-fraction", type=float, default=0.0, help="decathlon, folders: share held out")
    parser.add_argument("--out", "-o", required=True, help="the datalist JSON to write")


def run_datalist(args: argparse.Namespace) -> int:
    from . import datasets

    labels = [label["name"] for label in load_config(args.config)["labels"]] if args.config else None
    if args.layout == "folders":
        if not (args.images and args.labels):
            raise InputError("the folders layout needs --images and --labels")
        datalist, report = datasets.folders(args.images, args.labels, args.table, labels, args.validation_fraction)
    elif not args.root:
        raise InputError(f"the {args.layout} layout needs the dataset folder")
    elif args.layout == "totalsegmentator":
        datalist, report = datasets.totalsegmentator(
            args.root, labels, tuple(args.splits), tuple(args.validation_splits), args.structures
        )
    else:
        datalist, report = datasets.decathlon(args.root, labels, args.validation_fraction)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(datalist, indent=2) + "\n", encoding="utf-8")
    cases = len(datalist["training"]), len(datalist.get("validation", []))
    print(f"wrote {out}: {cases[0]} training and {cases[1]} validation cases, {report['structures']} structures")
    if labels:
        print(f"model labels found: {', '.join(report['matched'])}")
        if report["missing"]:
            print(f"model labels not in the dataset (cases marked partial): {', '.join(report['missing'])}")
    return 0
