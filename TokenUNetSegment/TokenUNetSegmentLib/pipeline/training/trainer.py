"""The training loop: DiceCE on balanced augmented patches, SGD-Nesterov or AdamW with a poly or cosine
schedule, sliding-window validation Dice, best/last checkpoints, resume, DistributedDataParallel under
``torchrun``, and a model package with the training record at the end."""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..metadata import parse_config, validate_metadata
from ..package_loader import build_package_network
from ..package_writer import make_metadata, write_package
from ..versions import describe_environment
from .data import (
    UNKNOWN,
    Case,
    crop_size,
    is_lateralised,
    load_case,
    pad_for_crop,
    read_datalist,
    training_transforms,
)
from .loss import PartialDiceCELoss

CHECKPOINT_DIR = "checkpoints"
LOG_FILE = "train.log"
PACKAGE_DIR = "package"
LOSS_NAME = "Dice + cross-entropy (marginal over unannotated labels in partial cases)"


@dataclass
class Recipe:
    """Everything that decides a training run besides the data and the package configuration."""

    steps: int = 1000
    batch_size: int = 2
    patch_size: list[int] | None = None  # default: the package's inference roi_size
    optimizer: str = "sgd"  # sgd (Nesterov, momentum 0.99) or adamw
    learning_rate: float | None = None  # default 0.01 (sgd) or 3e-4 (adamw)
    weight_decay: float = 3e-5
    schedule: str = "poly"  # poly or cosine
    warmup_steps: int = 0
    augmentation: float = 1.0  # strength; 0 turns it off
    flip_axes: list[int] = field(default_factory=list)
    val_every: int = 100
    val_overlap: float = 0.25
    seed: int = 0
    threads: int | None = None
    max_minutes: float | None = None

    def lr(self) -> float:
        return self.learning_rate or (0.01 if self.optimizer == "sgd" else 3e-4)


def _distributed() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _log(path: Path, record: dict, echo=None) -> None:
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **record}
    with open(path, "a", encoding="utf-8") as stream:
        stream.write(json.dumps(record) + "\n")
    if echo:
        echo(record)


def _schedule(recipe: Recipe):
    def factor(step: int) -> float:
        if step < recipe.warmup_steps:
            return (step + 1) / recipe.warmup_steps
        progress = min(1.0, (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps))
        if recipe.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        return (1 - progress) ** 0.9

    return factor


def _optimizer(network, recipe: Recipe):
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            network.parameters(), lr=recipe.lr(), momentum=0.99, nesterov=True, weight_decay=recipe.weight_decay
        )
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(network.parameters(), lr=recipe.lr(), weight_decay=recipe.weight_decay)
    raise InputError(f"unknown optimizer '{recipe.optimizer}'", "use sgd or adamw")


def validate(network, cases: list[Case], cfg: dict, overlap: float) -> dict:
    """Sliding-window Dice per label (and the mean over labels present in a case) on preprocessed cases."""
    from ..evaluate import label_metrics
    from ..inference import sliding_window

    names = {label["value"]: label["name"] for label in cfg["labels"]}
    per_label: dict[str, list[float]] = {name: [] for name in names.values()}
    network.eval()
    for case in cases:
        logits, _ = sliding_window(network, case.image, cfg["inference"]["roi_size"], overlap, with_tokens=False)
        predicted = logits.argmax(0).astype(np.uint8)
        reference = np.where(case.label == UNKNOWN, 0, case.label)  # annotated labels are complete
        scored = [(v, v, n) for v, n in names.items() if v not in case.missing]
        metrics = label_metrics(predicted, reference, scored, case.spacing, hd95=False)
        for name, values in metrics.items():
            if values["dice"] is not None:
                per_label[name].append(values["dice"])
    network.train()
    dice = {name: float(np.mean(v)) for name, v in per_label.items() if v}
    return {"dice": dice, "mean_dice": float(np.mean(list(dice.values()))) if dice else 0.0}


def train(
    datalist: str | Path,
    config: dict,
    output: str | Path,
    recipe: Recipe,
    *,
    resume: bool = False,
    device: str = "auto",
    description: str | None = None,
    authors: str = "TokenUNet training",
    copyright: str = "see the training data's licence",
    license_text: str = "Weights: see the licence of the training data.\n",
    progress=None,
    echo=None,
) -> Path | None:
    """Train the network ``config`` declares on ``datalist``; returns the package path (rank 0) or None.

    ``config`` is a package's ``tokenunet`` section without ``weights`` (id, architecture, inputs,
    preprocessing, inference, labels). Under ``torchrun`` every process trains on its own patches
    (DistributedDataParallel); rank 0 validates, checkpoints and writes the package.
    """
    from monai.utils import set_determinism

    from ..device import resolve_device

    output = Path(output)
    rank, world = _distributed()
    config = copy.deepcopy(config)
    config.pop("weights", None)
    recipe = copy.deepcopy(recipe)
    if config["inference"]["activation"] != "softmax":
        raise InputError("training supports softmax (one label per voxel) packages", "set inference.activation")
    _check_config(config)
    if recipe.flip_axes and is_lateralised(config["labels"]) and 0 in recipe.flip_axes:
        raise InputError("left-right flips (axis 0) would swap the lateralised labels", "drop axis 0 from the flips")
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    dev = resolve_device(device) if world == 1 else _device_for_rank(device)
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    set_determinism(seed=recipe.seed + rank)
    torch.manual_seed(recipe.seed)  # the same initial weights on every rank
    network = build_package_network(parse_config(config, "training configuration"))
    multiple = int(getattr(network, "size_multiple", 1))
    patch = list(recipe.patch_size or config["inference"]["roi_size"])
    if any(p % multiple for p in patch):
        raise InputError(f"patch size {patch} must be a multiple of {multiple} for this network")
    recipe.patch_size = patch
    data = read_datalist(datalist)
    region = crop_size(patch, recipe.augmentation)  # cropped before the spatial augmentation
    roi = np.maximum(region, config["inference"]["roi_size"])
    train_cases = [load_case(entry, config, multiple, roi) for entry in data["training"]]
    val_cases = [load_case(entry, config, multiple, roi) for entry in data["validation"]] or train_cases
    val_split = "validation" if data["validation"] else "training"
    num_classes = len(config["labels"]) + 1
    if config["architecture"]["out_channels"] != num_classes:
        raise InputError(f"out_channels must be {num_classes} (background + {num_classes - 1} labels)")

    from monai.data import CacheDataset, DataLoader

    samples = recipe.batch_size
    items = []
    for case in train_cases:
        image, label = pad_for_crop(case.image, case.label[None], patch, region)
        items += [{"image": image, "label": label, "missing": _missing_mask(case, num_classes)}] * case.repeat
    transform = training_transforms(patch, num_classes, 1, recipe.augmentation, recipe.flip_axes)
    dataset = CacheDataset(items, transform, progress=False)
    loader = DataLoader(dataset, batch_size=1, shuffle=True, num_workers=0)

    network = network.to(dev).train()
    model = network
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(network, device_ids=[dev.index] if dev.type == "cuda" else None)
    optimizer = _optimizer(network, recipe)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(recipe))
    loss_fn = PartialDiceCELoss(smooth=1e-5)

    checkpoints = output / CHECKPOINT_DIR
    log_path = output / LOG_FILE
    step, best, history, elapsed_before = 0, {"mean_dice": -1.0, "step": 0}, [], 0.0
    if rank == 0:
        checkpoints.mkdir(parents=True, exist_ok=True)
    if resume and (checkpoints / "last.pt").exists():
        state = torch.load(checkpoints / "last.pt", map_location="cpu", weights_only=True)
        network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, best, history = state["step"], json.loads(state["best"]), json.loads(state["history"])
        elapsed_before = float(state["elapsed"])
        set_determinism(seed=recipe.seed + rank + 7919 * step)
        if rank == 0:
            _log(log_path, {"event": "resume", "step": step}, echo)
    elif rank == 0:
        _log(log_path, {"event": "start", "recipe": asdict(recipe), "world_size": world, "device": str(dev)}, echo)

    started = time.monotonic()

    def save(name: str) -> None:
        torch.save(
            {
                "network": network.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": step,
                "best": json.dumps(best),
                "history": json.dumps(history),
                "elapsed": elapsed_before + time.monotonic() - started,
            },
            checkpoints / f"{name}.pt.tmp",
        )
        os.replace(checkpoints / f"{name}.pt.tmp", checkpoints / f"{name}.pt")

    def out_of_time() -> bool:
        if not recipe.max_minutes:
            return False
        late = torch.tensor(float(elapsed_before + time.monotonic() - started > 60 * recipe.max_minutes))
        if world > 1:
            import torch.distributed as dist

            dist.broadcast(late, 0)
        return bool(late.item())

    losses: list[float] = []
    stopped_early = False
    iterator = iter(loader)
    while step < recipe.steps:
        if out_of_time():
            stopped_early = True
            break
        batch_images, batch_labels, batch_missing = [], [], []
        while len(batch_images) < samples:
            try:
                batch = next(iterator)
            except StopIteration:
                iterator = iter(loader)
                continue
            for item in batch if isinstance(batch, list) else [batch]:
                batch_images.append(item["image"])
                batch_labels.append(item["label"])
                batch_missing.append(item["missing"].reshape(-1, num_classes))
        images = torch.cat(batch_images[:samples]).to(dev)
        labels = torch.cat(batch_labels[:samples]).long().to(dev)
        missing = torch.cat(batch_missing[:samples]).to(dev)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(images), labels, missing)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 12.0)
        optimizer.step()
        scheduler.step()
        step += 1
        losses.append(float(loss.detach()))
        if progress and rank == 0:
            progress(f"step {step}/{recipe.steps} loss {np.mean(losses[-20:]):.3f}", step / recipe.steps)
        if step % recipe.val_every == 0 or step == recipe.steps:
            if rank == 0:
                result = validate(network, val_cases, config, recipe.val_overlap)
                record = {"step": step, "loss": float(np.mean(losses)), "lr": scheduler.get_last_lr()[0], **result}
                history.append(record)
                losses = []
                if result["mean_dice"] > best["mean_dice"]:
                    best = {"step": step, **result}
                    save("best")
                save("last")
                _log(log_path, {"event": "validation", **record}, echo)
            if world > 1:
                import torch.distributed as dist

                dist.barrier()
    if rank == 0 and (stopped_early or not (checkpoints / "best.pt").exists()):
        result = validate(network, val_cases, config, recipe.val_overlap)
        history.append({"step": step, "loss": float(np.mean(losses)) if losses else None, **result})
        if result["mean_dice"] > best["mean_dice"]:
            best = {"step": step, **result}
            save("best")
        save("last")
    elapsed = elapsed_before + time.monotonic() - started
    package = None
    if rank == 0:
        _log(log_path, {"event": "end", "step": step, "stopped_early": stopped_early, "seconds": elapsed}, echo)
        network.load_state_dict(torch.load(checkpoints / "best.pt", map_location="cpu", weights_only=True)["network"])
        record = {
            "data": {
                "datalist": str(Path(datalist).name),
                "training": [_case_record(c, config) for c in train_cases],
                "validation": [{"name": c.name, "files": c.files} for c in val_cases]
                if val_split == "validation"
                else [],
                "validated_on": val_split,
            },
            "recipe": {**asdict(recipe), "learning_rate": recipe.lr(), "loss": LOSS_NAME},
            "metrics": {"best": best, "history": history},
            "steps_done": step,
            "stopped_early": stopped_early,
            "seconds": round(elapsed, 1),
            "world_size": world,
            "device": str(dev),
            "threads": torch.get_num_threads(),
            "environment": describe_environment(),
        }
        config["training"] = record
        metadata = make_metadata(
            config,
            description=description or f"{config['architecture']['name']} trained with the TokenUNet training tool",
            authors=authors,
            copyright=copyright,
        )
        readme = model_card(config, metadata)
        package = write_package(
            output / PACKAGE_DIR, network.cpu(), metadata, license_text=license_text, readme_text=readme, overwrite=True
        )
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return package


def _case_record(case: Case, config: dict) -> dict:
    record = {"name": case.name, "files": case.files, "repeat": case.repeat}
    if case.missing:
        names = {label["value"]: label["name"] for label in config["labels"]}
        record["unannotated_labels"] = [names[value] for value in case.missing]
    return record


def _missing_mask(case: Case, num_classes: int) -> torch.Tensor:
    mask = torch.zeros(num_classes, dtype=torch.bool)
    mask[list(case.missing)] = True
    return mask


def _device_for_rank(device: str) -> torch.device:
    if device in ("auto", "cuda") and torch.cuda.is_available():
        index = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def _check_config(config: dict) -> None:
    probe = copy.deepcopy(config)
    probe["weights"] = {"file": "models/model.safetensors", "sha256": "0" * 64}
    metadata = make_metadata(probe, description="probe", authors="probe", copyright="probe")
    validate_metadata(metadata, "training configuration")


def model_card(config: dict, metadata: dict) -> str:
    """A short model card from the training record (packages may replace it with a fuller one)."""
    record = config["training"]
    best = record["metrics"]["best"]
    rows = "\n".join(f"| {name} | {dice:.3f} |" for name, dice in best.get("dice", {}).items())
    return (
        f"# {config['id']}\n\n{metadata['description']}\n\n"
        f"- Architecture: {config['architecture']['name']} {json.dumps(config['architecture'].get('parameters', {}))}\n"
        f"- Training: {record['steps_done']} steps in {record['seconds'] / 60:.1f} min on {record['device']} "
        f"({record['world_size']} process(es)); recipe in `configs/metadata.json` (tokenunet.training).\n"
        f"- Validation ({record['data']['validated_on']} cases), best step {best.get('step')}: "
        f"mean Dice {best.get('mean_dice', 0):.3f}\n\n| label | Dice |\n|---|---|\n{rows}\n\n"
        f"Intended use: {metadata['intended_use']}\n"
    )
