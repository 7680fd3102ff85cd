"""The training loop: DiceCE on balanced augmented patches, SGD-Nesterov or AdamW with a poly or cosine
schedule, sliding-window validation Dice, best/last checkpoints, resume, DistributedDataParallel under
``torchrun``, and a model package with the training record at the end."""

from __future__ import annotations

import copy
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .. import process_settings
from ..cancel_signals import STOP_SIGNALS, stops_held, unblock_stops
from ..errors import InputError, OutputError
from ..metadata import parse_config, validate_metadata
from ..output_folder import check_free_space, write_file_atomically
from ..package_loader import build_package_network
from ..package_writer import make_metadata, write_package
from ..versions import describe_environment
from .data import UNKNOWN, Case, is_lateralised, load_case, read_datalist
from .loss import PartialDiceCELoss
from .recipe import Recipe
from .sampler import PatchSampler, PatchStream, SamplerSettings
from .statistics import training_statistics

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LOG_FILE = "train.log"
CHECKPOINT_SECONDS = 300.0
PACKAGE_DIR = "package"
LOSS_NAME = "Dice + cross-entropy (marginal over unannotated labels in partial cases)"
RUN_ONLY = ("max_minutes", "threads", "workers")
"""Recipe fields that decide how a run is carried out, not what it learns (a resume may change them freely)."""


def _distributed() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def training_output_bytes(network: torch.nn.Module, resume: bool = False) -> float:
    """What a training run writes at most: checkpoints ``best`` and ``last`` and one being written (weights and up
    to two optimizer moments each), the package's weights, 2 MiB for the log and text files; on ``resume`` the
    checkpoints are already there, so only the one being written and the package."""
    weights = sum(p.numel() * p.element_size() for p in network.parameters())
    checkpoints = 1 if resume else 3
    return 3 * weights * checkpoints + weights + 2 * 2**20


def _log(path: Path, record: dict, echo=None) -> None:
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **record}
    try:
        with open(path, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(record) + "\n")
    except OSError as error:
        raise OutputError(
            f"cannot write the training log {path}: {error.strerror or error}",
            "free some disk space or choose another folder",
        ) from None
    if echo:
        echo(record)


def _optimizer(network, recipe: Recipe):
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            network.parameters(), lr=recipe.lr(), momentum=0.99, nesterov=True, weight_decay=recipe.weight_decay
        )
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(network.parameters(), lr=recipe.lr(), weight_decay=recipe.weight_decay)
    raise InputError(f"unknown optimizer '{recipe.optimizer}'", "use sgd or adamw")


def validate(network, cases: list[Case], cfg: dict, overlap: float, device: torch.device | None = None) -> dict:
    """Sliding-window Dice per label (and the mean over labels present in a case) on preprocessed cases, with the
    windows on ``device`` (the training's: the network stays where it trains)."""
    from ..evaluate import label_metrics
    from ..inference import sliding_window

    names = {label["value"]: label["name"] for label in cfg["labels"]}
    per_label: dict[str, list[float]] = {name: [] for name in names.values()}
    network.eval()
    for case in cases:
        logits, _ = sliding_window(
            network, case.image, cfg["inference"]["roi_size"], overlap, device=device, with_tokens=False
        )
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


@process_settings.held_by_a_run()
@process_settings.random_generators.hold()  # a caller's (a notebook's) random state is not the training's seed
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
    if recipe.threads:  # this thread's count, put back when it returns; other runs' threads keep theirs
        process_settings.use_threads(recipe.threads)
    dev = resolve_device(device) if world == 1 else _device_for_rank(device)
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    set_determinism(seed=recipe.seed + rank)
    torch.manual_seed(recipe.seed)  # the same initial weights on every rank
    network = build_package_network(parse_config(config, "training configuration"))
    if rank == 0:
        check_free_space(output, training_output_bytes(network, resume), "the training run")
    multiple = int(getattr(network, "size_multiple", 1))
    patch = list(recipe.patch_size or config["inference"]["roi_size"])
    if any(p % multiple for p in patch):
        raise InputError(f"patch size {patch} must be a multiple of {multiple} for this network")
    recipe.patch_size = patch
    if recipe.select not in ("best", "last"):
        raise InputError(f"select must be 'best' or 'last', got {recipe.select!r}")
    data = read_datalist(datalist)
    if data["channel_names"] or data["modality"]:  # what the datalist says its images are, against the inputs
        from .datasets import check_datalist_modality

        typed = parse_config(config, "training configuration")
        check_datalist_modality(data, typed.inputs, typed.id, Path(datalist))
    held = set(recipe.hold_out)
    known = {entry["patient"] for split in ("training", "validation") for entry in data[split]}
    if held - known:
        raise InputError(f"hold-out patient(s) {', '.join(sorted(held - known))} are not in the datalist")
    entries = [entry for entry in data["training"] if entry["patient"] not in held]
    if not entries:
        raise InputError("no training case is left after holding out " + ", ".join(sorted(held)))
    roi = np.maximum(patch, config["inference"]["roi_size"])
    train_cases = [load_case(entry, config, multiple, roi) for entry in entries]
    _check_labelled(train_cases, len(config["labels"]))
    val_entries = [entry for entry in data["validation"] if entry["patient"] not in held]
    val_cases = [load_case(entry, config, multiple, roi) for entry in val_entries] or train_cases
    val_split = "validation" if val_entries else "training"
    num_classes = len(config["labels"]) + 1
    if config["architecture"]["out_channels"] != num_classes:
        raise InputError(f"out_channels must be {num_classes} (background + {num_classes - 1} labels)")

    settings = sampler_settings(recipe, config, train_cases)
    sampler = PatchSampler(train_cases, num_classes, settings)

    network = network.to(dev).train()
    model = network
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(network, device_ids=[dev.index] if dev.type == "cuda" else None)
    optimizer = _optimizer(network, recipe)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, recipe.rate_factor)
    loss_fn = PartialDiceCELoss(smooth=1e-5)

    checkpoints = output / CHECKPOINT_DIR
    log_path = output / LOG_FILE
    step, best, history, elapsed_before = 0, {"mean_dice": -1.0, "step": 0}, [], 0.0
    phases: list[dict] = []
    if rank == 0:
        checkpoints.mkdir(parents=True, exist_ok=True)
    learns = json.dumps(_what_weights_belong_to(config, train_cases), sort_keys=True)
    if resume and (checkpoints / "last.pt").exists():
        state = torch.load(checkpoints / "last.pt", map_location="cpu", weights_only=True)
        _check_resumed_run(json.loads(state.get("learns", "null")), json.loads(learns), output)
        try:
            network.load_state_dict(state["network"])
        except RuntimeError:  # a checkpoint from before "learns" was recorded, of another network
            raise InputError(
                f"the configuration's network differs from the run in {output}", "train into a new folder"
            ) from None
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, best, history = state["step"], json.loads(state["best"]), json.loads(state["history"])
        elapsed_before = float(state["elapsed"])
        phases = json.loads(state.get("phases", "[]")) or [{"from_step": 0, "recipe": None}]  # older checkpoints
        scheduler.base_lrs = [recipe.lr() for _ in optimizer.param_groups]  # this phase's rate, not the saved one
        for group in optimizer.param_groups:
            group["initial_lr"] = recipe.lr()
            group["lr"] = recipe.lr() * recipe.rate_factor(step)
        set_determinism(seed=recipe.seed + rank + 7919 * step)
        if rank == 0:
            _log(log_path, {"event": "resume", "step": step}, echo)
    elif rank == 0:
        _log(log_path, {"event": "start", "recipe": asdict(recipe), "world_size": world, "device": str(dev)}, echo)
    if next_phase(phases, recipe, step) and rank == 0 and step:
        _log(log_path, {"event": "phase", "step": step, "recipe": phases[-1]["recipe"]}, echo)

    started = time.monotonic()
    saved_at = [started]

    def save(name: str) -> None:
        state = {
            "network": network.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            "best": json.dumps(best),
            "history": json.dumps(history),
            "phases": json.dumps(phases),
            "elapsed": elapsed_before + time.monotonic() - started,
            "learns": learns,
        }
        # all at once: a full disk leaves the previous checkpoint and no partial file, and exits as a user error
        write_file_atomically(checkpoints / f"{name}.pt", lambda stream: torch.save(state, stream))

    def out_of_time() -> bool:
        if not recipe.max_minutes:
            return False
        late = torch.tensor(float(time.monotonic() - started > 60 * recipe.max_minutes))  # this invocation's time
        if world > 1:
            import torch.distributed as dist

            dist.broadcast(late, 0)
        return bool(late.item())

    losses: list[float] = []
    stopped_early = False
    from torch.utils.data import DataLoader

    stream = PatchStream(sampler, (recipe.seed, rank, step))
    loader = DataLoader(
        stream, batch_size=recipe.batch_size, num_workers=recipe.workers, worker_init_fn=_leave_stops_to_the_main
    )
    iterator = None
    try:
        with stops_held():  # a stop as the workers start is handled once they run (:func:`_leave_stops_to_the_main`)
            iterator = iter(loader)  # and raised here, where the workers it started are ended too
        while step < recipe.steps:
            if out_of_time():
                stopped_early = True
                break
            images, labels, missing = next(iterator)
            images, labels, missing = images.to(dev), labels.long().to(dev), missing.to(dev)
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
                    result = validate(network, val_cases, config, recipe.val_overlap, dev)
                    network.train()  # validation's sliding windows left it in evaluation mode
                    record = {"step": step, "loss": float(np.mean(losses)), "lr": scheduler.get_last_lr()[0], **result}
                    history.append(record)
                    losses = []
                    if result["mean_dice"] > best["mean_dice"]:
                        best = {"step": step, **result}
                        save("best")
                    save("last")
                    saved_at[0] = time.monotonic()
                    _log(log_path, {"event": "validation", **record}, echo)
                if world > 1:
                    import torch.distributed as dist

                    dist.barrier()
            elif rank == 0 and time.monotonic() - saved_at[0] > CHECKPOINT_SECONDS:
                save("last")  # a run stopped from outside loses at most a few minutes
                saved_at[0] = time.monotonic()
                seconds = elapsed_before + saved_at[0] - started
                loss = float(np.mean(losses[-50:]))
                _log(log_path, {"event": "checkpoint", "step": step, "loss": loss, "seconds": round(seconds)})
    finally:
        _end_workers(iterator)
    if rank == 0 and (stopped_early or not (checkpoints / "best.pt").exists()):
        result = validate(network, val_cases, config, recipe.val_overlap, dev)
        history.append({"step": step, "loss": float(np.mean(losses)) if losses else None, **result})
        if result["mean_dice"] > best["mean_dice"]:
            best = {"step": step, **result}
            save("best")
        save("last")
    elapsed = elapsed_before + time.monotonic() - started
    package = None
    if rank == 0:
        _log(log_path, {"event": "end", "step": step, "stopped_early": stopped_early, "seconds": elapsed}, echo)
        chosen = "best" if recipe.select == "best" else "last"
        network.load_state_dict(
            torch.load(checkpoints / f"{chosen}.pt", map_location="cpu", weights_only=True)["network"]
        )
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
            "phases": [
                {**phase, "to_step": end}
                for phase, end in zip(phases, [p["from_step"] for p in phases[1:]] + [step], strict=True)
            ],
            "metrics": {"best": best, "history": history, "packaged": recipe.select},
            "steps_done": step,
            "stopped_early": stopped_early,
            "seconds": round(elapsed, 1),
            "world_size": world,
            "device": str(dev),
            "threads": torch.get_num_threads(),
            "environment": describe_environment(),
        }
        config["training"] = record
        config["training_statistics"] = training_statistics(train_cases, config, settings)
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


def _leave_stops_to_the_main(worker_id: int) -> None:
    """A data loader worker ignores Ctrl-C and SIGTERM: the main process stops the run and ends its workers. Sent to
    the whole process group (a batch system's stop, ``timeout``), SIGTERM killed the workers through torch's handler,
    and the main process's SIGCHLD handler then raised "DataLoader worker ... is killed by signal" inside its cancel:
    an internal error, exit 1, instead of the cancel's 130. (A worker left by a main process that died anyway ends by
    torch's check of its parent.) The worker starts with them blocked (:func:`..cancel_signals.stops_held` around the
    workers' start): one sent before this point was lost in a fork hook, or ended the worker through torch's handler;
    now it is dropped here."""
    import signal

    for signum in STOP_SIGNALS:  # a hang-up too (the terminal closed: its whole process group gets it)
        signal.signal(signum, signal.SIG_IGN)
    unblock_stops()


def _end_workers(iterator) -> None:
    """End the data loader's workers on every way out of the training loop, at once, none left behind: the patches
    they make are no longer wanted. torch's clean-up waits 5 s for a busy worker, sends it SIGTERM, which a worker
    ignores (:func:`_leave_stops_to_the_main`), and waits 5 s more: a stop took 10 s per worker busy with a slow patch
    (20 s with 2), and a second stop after 5 s of that wait cut it short, the worker outliving the run. They are killed
    first, once torch's SIGCHLD check no longer watches them (it would call a killed worker a failure), then torch
    closes its queues; a later stop waits for that (:func:`..cancel_signals.cleaning_up`). torch's private attributes
    (it has no public clean-up) are read with ``getattr``: absent without workers; without the check's removal, torch's
    clean-up runs first, as it would alone."""
    from ..cancel_signals import cleaning_up

    end = getattr(iterator, "_shutdown_workers", None)
    if end is None:
        return
    workers = getattr(iterator, "_workers", [])
    unwatch = getattr(getattr(torch.utils.data._utils, "signal_handling", None), "_remove_worker_pids", None)
    with cleaning_up():
        try:
            if unwatch is not None and getattr(iterator, "_worker_pids_set", False):
                unwatch(id(iterator))
                iterator._worker_pids_set = False
                _kill(workers)
        finally:
            end()
            _kill(workers)


def _kill(workers) -> None:
    for worker in workers:
        if worker.is_alive():
            worker.kill()
    for worker in workers:
        worker.join()


def _check_labelled(cases: list[Case], count: int) -> None:
    """Refuse training cases that, all together, hold no voxel of a model label (empty or unnamed label maps
    would train a background-only model); warn about each case without one."""
    empty = [case.name for case in cases if not ((case.label >= 1) & (case.label <= count)).any()]
    if len(empty) == len(cases):
        raise InputError(
            "no training case holds a voxel of the model's labels (empty label maps, or values no table names?)",
            "check the label files and the datalist's 'labels' table",
        )
    for name in empty:
        log.warning("case %s holds no voxel of the model's labels: it trains only background", name)


def _what_weights_belong_to(config: dict, cases: list[Case]) -> dict:
    """What a checkpoint's weights mean: the network, its inputs and preprocessing, its labels (value and name,
    in order), and the training cases with their files' SHA256 (the package records them) and which file (or 4D
    image's volume) fed each input channel."""
    keys = ("architecture", "inputs", "preprocessing")
    return {
        **{key: config.get(key) for key in keys},
        "labels": [[label["value"], label["name"]] for label in config["labels"]],
        "cases": [[case.name, case.files] for case in cases],
        "channels": [[case.name, list(case.channels)] for case in cases],
    }


def _check_resumed_run(before: dict | None, now: dict, output: Path) -> None:
    """Refuse to resume a run whose configuration or training cases changed (checkpoints without the record
    are not checked)."""
    if before is None:
        return
    changed = [key for key in ("architecture", "inputs", "preprocessing", "labels") if before.get(key) != now[key]]
    if changed:
        raise InputError(
            f"the configuration differs from the run in {output} in {', '.join(changed)}",
            "resume with the run's configuration, or train into a new folder",
        )
    old, new = dict(before.get("cases", [])), dict(now["cases"])
    # the same files in other channels (a datalist's "channels" edited, or written again): other inputs to the weights
    placed, placing = dict(before.get("channels", now["channels"])), dict(now["channels"])
    moved = sum(placed.get(n, placing[n]) != placing[n] for n in placing)
    if old != new or len(before.get("cases", [])) != len(now["cases"]) or moved:  # the datalist's order aside
        counts = {
            "added": len(new.keys() - old.keys()),
            "removed": len(old.keys() - new.keys()),
            "changed": sum(old[n] != new[n] for n in old.keys() & new.keys()),
            "fed to other channels": moved,
        }
        what = ", ".join(f"{count} {word}" for word, count in counts.items() if count)
        raise InputError(
            f"the training cases differ from the run in {output}: {what}",
            "resume with the same datalist and --hold-out, or train into a new folder",
        )


def next_phase(phases: list[dict], recipe: Recipe, step: int) -> bool:
    """Append ``recipe`` to ``phases`` as a new training phase from ``step`` when it differs from the current
    phase's recipe in what it learns (a resume with more steps, other ratios or another patch size); returns
    whether it did. Each phase keeps its full recipe, so a package records every schedule it was trained with."""
    current = {key: value for key, value in asdict(recipe).items() if key not in RUN_ONLY}
    current["learning_rate"] = recipe.lr()
    if phases and phases[-1]["recipe"] == current:
        return False
    phases.append({"from_step": step, "recipe": current})
    return True


def _case_record(case: Case, config: dict) -> dict:
    record = {"name": case.name, "patient": case.patient, "files": case.files, "repeat": case.repeat}
    record["synthesis"] = case.synthesis
    if case.missing:
        names = {label["value"]: label["name"] for label in config["labels"]}
        record["unannotated_labels"] = [names[value] for value in case.missing]
    return record


def sampler_settings(recipe: Recipe, config: dict, cases: list[Case]) -> SamplerSettings:
    """The patch sampler's settings for a recipe: CT windows when every case kept its HU image."""
    windows = None
    if all(case.hu is not None for case in cases):
        intensity = config["preprocessing"]["intensity"]
        channels = intensity if isinstance(intensity, list) else [intensity] * len(config["inputs"])
        windows = [tuple(float(v) for v in setting["window"]) for setting in channels]
    return SamplerSettings(
        patch=tuple(recipe.patch_size),
        strength=recipe.augmentation,
        synthetic_ratio=recipe.synthetic_ratio,
        remap_ratio=recipe.remap_ratio,
        background_ratio=recipe.background_ratio,
        lesion_probability=recipe.lesion_probability,
        large_lesion_share=recipe.large_lesion_share,
        windows=windows,
        flip_axes=tuple(recipe.flip_axes),
    )


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
