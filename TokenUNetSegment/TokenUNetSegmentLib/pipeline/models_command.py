"""The ``models`` command: ``list``, ``info ID``, ``import PACKAGE|WEIGHTS``, ``remove ID``.

``list`` and ``info`` read metadata only (no torch, no MONAI); ``import`` loads the package to check it fully.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

from .arguments import text, user_text_path
from .catalog import ModelEntry, ModelStore
from .errors import TokenUNetError
from .metadata import PackageMetadata, check_model_id
from .package_source import read_metadata
from .run_contract import ExitCode

WEIGHTS_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="list bundled, cached and downloadable models")
    listing.add_argument("--json", action="store_true", help="print the list as JSON")
    info = sub.add_parser("info", help="show a model's metadata")
    info.add_argument("model", type=text("a model id or package path"), help="id or package path")
    info.add_argument("--json", action="store_true", help="print the metadata as JSON")
    imp = sub.add_parser("import", help="import a package (folder or .zip), or weights (.safetensors/.pt/.pth/.ckpt)")
    imp.add_argument(
        "path",
        type=user_text_path("a package folder, .zip or weights file"),
        help="package folder, .zip or weights file",
    )
    imp.add_argument("--overwrite", action="store_true", help="replace a cached model of the same id")
    imp.add_argument("--like", help="for weights files: the model whose configuration they fit")
    imp.add_argument("--id", dest="new_id", help="for weights files: the new model id")
    remove = sub.add_parser("remove", help="delete a cached model")
    remove.add_argument("model", help="id of a cached model (bundled models cannot be removed)")


def run_models(args: argparse.Namespace) -> int:
    store = ModelStore(getattr(args, "catalog", None))
    if args.action == "list":
        print(_listing(store.entries(), args.json, store))
    elif args.action == "info":
        path = store.resolve(args.model)
        metadata = read_metadata(path)
        print(json.dumps(metadata.to_dict(), indent=2) if args.json else describe(metadata, path))
    elif args.action == "import":
        path = _import(store, args)
        print(f"imported {path.name} into {path}")
    else:
        path = store.remove(args.model)
        print(f"removed {args.model} ({path})")
    return ExitCode.OK


def _listing(entries: list[ModelEntry], as_json: bool, store: ModelStore) -> str:
    if as_json:
        rows = [
            {
                "id": e.id,
                "source": e.source,
                "available": e.available,
                "description": e.description,
                "path": str(e.path) if e.path else None,
                "url": e.url,
            }
            for e in entries
        ]
        return json.dumps(rows, indent=2)
    if not entries:
        return f"no models (catalog {store.catalog_path}, cache {store.cache_dir})"
    width = max(len(e.id) for e in entries)
    return "\n".join(f"{e.id:<{width}}  {e.source:<12}  {e.description}" for e in entries)


def describe(metadata: PackageMetadata, path: Path) -> str:
    """The ``models info`` text of a package."""
    config = metadata.config
    arch, pre = config.architecture, config.preprocessing
    return (
        f"id:           {config.id}\npath:         {path}\nversion:      {metadata.version}\n"
        f"description:  {metadata.description}\narchitecture: {arch.name} "
        f"({arch.in_channels} -> {arch.out_channels} channels)\n"
        f"inputs:       {', '.join(f'{i.name} ({i.modality})' for i in config.inputs)}\n"
        f"spacing:      {list(pre.spacing) if pre.spacing else None} mm, orientation {pre.orientation}\n"
        f"labels:       {', '.join(f'{label.value} {label.name}' for label in config.labels)}\n"
        f"weights:      {config.weights or 'none'}\n"
        f"copyright:    {metadata.copyright}"
    )


def _import(store: ModelStore, args: argparse.Namespace) -> Path:
    source = Path(args.path)
    if source.suffix.lower() not in WEIGHTS_SUFFIXES:
        given = [option for option, value in (("--like", args.like), ("--id", args.new_id)) if value]
        if given:  # before: ignored, the package imported under its own id
            raise TokenUNetError(
                f"{' and '.join(given)} {'apply' if len(given) > 1 else 'applies'} only to a weights file "
                f"({', '.join(WEIGHTS_SUFFIXES)}); a package keeps the id in its metadata",
                f"drop {' and '.join(given)}",
            )
        return store.import_package(source, overwrite=args.overwrite)
    from .package_writer import package_from_weights

    if not (args.like and args.new_id):
        raise TokenUNetError(
            "importing a weights file needs --like MODEL and --id NEW_ID",
            "MODEL is the package whose configuration the weights fit",
        )
    check_model_id(args.new_id)
    owner = next((m["id"] for m in store.catalog()["models"] if m["id"].lower() == args.new_id.lower()), None)
    if owner is not None:  # refused before the weights are read (the import would refuse it at the end)
        raise TokenUNetError(f"the id '{args.new_id}' belongs to the catalog's model '{owner}'", "choose another --id")
    target = store.cache_dir / args.new_id
    if os.path.lexists(target) and not args.overwrite:
        raise TokenUNetError(f"model '{args.new_id}' is already in the cache", "remove it or pass --overwrite")
    store._make_cache()
    with tempfile.TemporaryDirectory(prefix=".weights-", dir=store.cache_dir) as scratch:
        built = package_from_weights(source, store.load(args.like), args.new_id, Path(scratch) / "pkg")
        path = store.import_package(built, overwrite=args.overwrite)
        shutil.rmtree(built, ignore_errors=True)
    return path
