"""The ``batch`` command: many cases with one model, loaded (and torch imported) once.

``tokenunet batch CASE... [--datalist FILE.json [--section KEY]] --out ROOT`` writes each case's output folder,
exactly as ``segment`` would, to ``ROOT/<case name>/`` (same files, all at once, same lock, a previous TokenUNet
result replaced and any other folder refused), and ``ROOT/batch.json``: every case with its inputs, status (done,
failed, skipped, cancelled or pending), error, timings, labels found and flags, rewritten atomically after each case
so that it is consistent whenever the batch stops. The arguments, the model, the output root and every case's
folder are checked before any case runs; a case that fails (a damaged file, a wrong modality, too big for memory) is
recorded with ``segment``'s message and the batch goes on. Its state: ``completed`` (every case done or skipped),
``completed_with_failures``, ``failed`` (every case failed, or the batch stopped on a full disk or a model that does
not load) or ``cancelled``; a root that turns unwritable or is removed stops the batch with a line that says how far
it got. Exit code: 0 when every case is done or skipped, 2 when any failed from a user error, 1 when any failed from
an internal error, 130 when cancelled (SIGTERM, Ctrl-C, at once wherever the case is: it is dropped as ``segment``
drops it, finished cases stay and the line says so). With ``--progress json`` stderr carries ``segment``'s events,
with a :class:`.run_contract.CaseEvent` as each case starts and ends; progress fractions are the whole batch's.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path

from .arguments import channel_names, user_path
from .cancel_signals import cleaning_up
from .cli import ProgressPrinter
from .locks import hidden_sibling, lock_path
from .result_key import RESULT_OPTIONS, RESULT_OPTIONS_WHEN_SET
from .run_contract import CaseEvent, ErrorEvent, ExitCode, ResultEvent, one_line
from .segment_command import add_run_options

BATCH_MARK = "tokenunet_batch"  # the key that tells an earlier batch.json from a file of the user's
BATCH_VERSION = 1
RESERVE_TAG = ".tokenunet-reserve"
RESERVE_BYTES, RESERVE_PER_CASE = 64 * 1024, 8 * 1024  # room for batch.json twice over (a case: 1-3 KB in it)
OPTIONS = ("device", "batch_size", *RESULT_OPTIONS, *RESULT_OPTIONS_WHEN_SET)  # the run options recorded in batch.json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "cases",
        nargs="*",
        metavar="CASE",
        help="one case each: a volume file (NIfTI, NRRD, MHA) or a DICOM series folder (one that holds DICOM files "
        "itself); any other folder is a folder of cases: each volume file and DICOM subfolder in it, in name order "
        "(subfolders that all hold one DICOM study are one case, read as segment reads the folder; for a "
        "multi-channel model, each subfolder of volume files is one case, as BraTS lays them out). nnU-Net's "
        "channel files CASE_0000.nii.gz, CASE_0001.nii.gz, ... of one case id are one case, CASE (in a folder, or "
        "given one by one too; see --channels); named pipes (FIFOs), sockets and devices in a folder are left out",
    )
    parser.add_argument(
        "--datalist",
        type=user_path,
        help='a MONAI datalist (JSON) whose entries\' "image" (one path, a list of channel paths for a '
        'multi-channel model, or one 4D image whose volumes "channels" or its dataset.json names) are cases; '
        '"label" is ignored',
    )
    parser.add_argument(
        "--channels",
        type=channel_names,
        help="what nnU-Net's channel files of each case in a folder (CASE_0000.nii.gz, CASE_0001.nii.gz, ...) hold, in "
        "the order of their numbers, or the volumes of each 4D image CASE, comma-separated, e.g. "
        "FLAIR,T1,T1c,T2 (the model's channel names, any case, synonyms such as t1gd); default: their dataset.json "
        '(beside the files or beside their imagesTr/imagesTs folder); a datalist\'s entries name theirs in "channels"',
    )
    parser.add_argument(
        "--section",
        help="the datalist's list of cases, e.g. validation or testing (default: its only list)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="skip a case whose folder holds a finished result of the same model (id, version and weights) on the "
        "same, unchanged input files with the same options that shape the outputs (--device, --batch-size and "
        "--progress aside)",
    )
    add_run_options(parser, out_help="output root: one folder per case (its file or folder name), and batch.json")


class ModelLoadError(Exception):
    """The package failed to load (its weights): the batch stops, as it would have before its first case."""

    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


def run_batch(args: argparse.Namespace, cancel: threading.Event | None = None) -> int:
    """Run every case of ``args`` with one model; returns the exit code (errors of the whole batch raise)."""
    from .batch_cases import BATCH_FILE, cases_from_datalist, cases_from_paths, check_case_names
    from .cancel_signals import restore_handlers
    from .catalog import ModelStore
    from .errors import CancelledError, InputError, OutputError
    from .locks import DestinationLock
    from .output_folder import check_file_destination, json_with_keys, resolve_destination, result_held
    from .outputs import output_folder
    from .package_source import read_metadata
    from .segment_command import check_options, install_cancel_handlers
    from .training.datasets import check_datalist_file_modality

    check_options(args)
    if args.section is not None and args.datalist is None:
        raise InputError("--section chooses a list of the --datalist, and there is none", "add --datalist FILE.json")
    if args.channels is not None and not args.cases:
        raise InputError(
            '--channels names the channels of the CASE files; a datalist\'s entries name theirs in "channels"',
            "drop --channels, or give the files as CASE",
        )
    printer = ProgressPrinter(args.progress)
    store = ModelStore(getattr(args, "catalog", None))
    model_inputs = store.input_names(args.model)  # without a download: None where it is not known yet
    if args.channels is not None and model_inputs is not None and len(model_inputs) == 1:
        raise InputError(
            f"--channels names the channels of a multi-channel model's files; model '{args.model}' takes one "
            f"({model_inputs[0]})",
            "drop --channels",
        )
    local = store.local_path(args.model)  # its channels' filename patterns, where the package is here
    model_channels = read_metadata(local).config.inputs if local is not None else None
    cases, notes = cases_from_paths(args.cases, args.channels, model_inputs, model_channels)
    if args.datalist is not None:
        cases += cases_from_datalist(args.datalist, args.section)
    if not cases:
        raise InputError("no cases to segment", "give volume files, DICOM folders, folders of cases or --datalist")
    root = resolve_destination(args.out)
    check_case_names(cases, root)
    if root.exists() and not root.is_dir():
        raise OutputError(f"the output root {root} is a file, not a folder", "choose a folder")
    held = result_held(root)
    if held is not None:  # its cases would be mixed into that result, as files of the user's
        raise OutputError(f"the output root {root} holds {held}", "choose another folder for the batch")
    for place in [root / BATCH_FILE, *(root / case.name for case in cases)]:  # writes stay inside the root
        if place.is_symlink():
            raise OutputError(
                f"{place} is a link (to {os.readlink(place)}): batch writes its files only inside --out",
                "remove the link, or choose another --out",
            )
    summary_path = check_file_destination(root / BATCH_FILE, json_with_keys(BATCH_MARK))
    protected = store.protected_folders()
    for case in cases:  # a folder of the user's at a case's place is refused before any case runs
        output_folder(root / case.name, protected).check()
    package_path = store.resolve(args.model, None, cancel)
    metadata = read_metadata(package_path)
    if args.datalist is not None:  # what it says its images are, against the model, before any case is read
        check_datalist_file_modality(Path(args.datalist), metadata.config)
    for note in notes:
        printer.note(note)
    created = _make_folders(root)
    lock = DestinationLock(summary_path, "batch")
    cancel = cancel or threading.Event()
    handlers, batch = [], None
    try:
        try:
            lock.acquire()  # two batches on one root would overwrite each other's batch.json
            handlers = install_cancel_handlers(cancel)
            batch = Batch(args, cases, root, summary_path, metadata, package_path, printer, cancel, protected)
            return batch.run()
        finally:
            try:
                with cleaning_up():
                    lock.release()
                    _remove_empty(created)  # refused or stopped before batch.json: no folder of ours left behind
            finally:
                restore_handlers(handlers)  # after: a second stop does not cut the lock's release short
    except KeyboardInterrupt:  # one that got past the batch once batch.json was written: say what stays
        if batch is None or not batch.saved:
            raise
        raise CancelledError("interrupted", batch.kept()) from None


class SpaceReserve:
    """A hidden file of zeros beside batch.json, made when the batch starts: when the disk fills up, it is deleted so
    that batch.json can still be rewritten to say how far the batch got (a file cannot be replaced all at once on a
    disk without room for its new copy)."""

    def __init__(self, path: Path):
        self.path = path
        self.used = False
        self.held = False

    def make(self, size: int) -> None:
        """Hold ``size`` bytes (nothing, without a word, where the disk has not even that much room)."""
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)  # a crash's leftover, or a link: never written through
            with open(self.path, "xb") as stream:
                self.held = True
                stream.write(bytes(size))
                stream.flush()
                os.fsync(stream.fileno())
        except OSError:
            self.remove()
        except BaseException:  # a stop while it is written
            self.remove()
            raise

    def give_up(self) -> bool:
        """Free the room for one more batch.json; False when there is none to free."""
        if not self.held:
            return False
        self.remove()
        self.used = True
        return True

    def remove(self) -> None:
        if self.held:
            self.held = False
            with contextlib.suppress(OSError):
                self.path.unlink()


class CasePrinter:
    """The batch's printer for one case: its warnings and notes name the case (``warning: ct7: ...``) and its
    warnings are kept for batch.json; progress and events go to the batch's printer."""

    def __init__(self, printer: ProgressPrinter, name: str):
        self.printer, self.name = printer, name
        self.warnings: list[str] = []

    def warning(self, message: str) -> None:
        self.warnings.append(message)
        self.printer.warning(self._named(message))

    def note(self, message: str) -> None:
        self.printer.note(self._named(message))

    def _named(self, message: str) -> str:
        """``message`` led by the case's name, once: a reader's words may already start with it (its folder's)."""
        return message if message.startswith(f"{self.name}: ") else f"{self.name}: {message}"

    def __call__(self, stage: str, fraction: float) -> None:
        self.printer(stage, fraction)

    def __getattr__(self, name: str):
        return getattr(self.printer, name)


class Batch:
    """One batch run: its cases' records (``batch.json``'s), the model once loaded, the progress."""

    def __init__(
        self, args, cases, root: Path, summary_path: Path, metadata, package_path, printer, cancel, protected=()
    ):
        self.args, self.cases, self.root, self.summary_path = args, cases, root, summary_path
        self.metadata, self.package_path, self.printer, self.cancel = metadata, package_path, printer, cancel
        self.package = None
        self.protected = protected
        self.texts: dict[int, tuple] = {}  # the encoded text of each ended case (see encoded())
        self.reserve = SpaceReserve(lock_path(summary_path).with_name(hidden_sibling(summary_path, RESERVE_TAG)))
        self.started = time.perf_counter()
        self.saved = False  # whether batch.json was written
        self.records = [
            {"name": case.name, "inputs": list(case.inputs), "folder": str(root / case.name), "status": "pending"}
            for case in cases
        ]
        for record, case in zip(self.records, cases, strict=True):
            if case.channels:
                record["channels"] = list(case.channels)
        self.document = {
            BATCH_MARK: BATCH_VERSION,
            "state": "running",
            "started": _now(),
            "finished": None,
            "seconds": None,
            "model": {"id": metadata.id, "version": metadata.version, "path": str(package_path)},
            "options": {name: getattr(args, name) for name in OPTIONS},
            "counts": {},
            "cases": self.records,
        }

    def run(self) -> int:
        from .errors import CancelledError, OutputError

        try:
            self.reserve.make(RESERVE_BYTES + RESERVE_PER_CASE * len(self.cases))  # inside: a stop here removes it
            self.save()
            for index, case in enumerate(self.cases):
                if self.cancel.is_set():
                    raise CancelledError()
                self.check_still_there(index)
                self.run_case(index, case)
                self.save()
                if self.reserve.used:  # the disk is full: stop while batch.json can still say so
                    stopped = f"the batch stopped after case {index + 1} of {len(self.cases)}"
                    self.document["error"] = f"the disk is full: {stopped}"
                    self.finish("failed")
                    raise OutputError(
                        f"{self.document['error']}; {self.summary_path.name} says which cases are done",
                        "free some disk space, then run the batch again with --resume",
                    )
            return self.finish(self.outcome())
        except (CancelledError, KeyboardInterrupt):
            if not self.saved:  # stopped before batch.json: nothing of the batch stays (run_batch removes its root)
                raise
            with cleaning_up():
                return self.finish("cancelled")
        except ModelLoadError as failure:
            self.document["error"] = f"the model failed to load: {ErrorEvent.from_error(failure.error).message}"
            self.finish("failed")
            raise failure.error from None
        finally:
            with cleaning_up():
                self.reserve.remove()

    def run_case(self, index: int, case) -> None:
        """Segment one case into its folder and record how it went; a cancel or Ctrl-C is recorded, then raised."""
        from .batch_cases import placed_by_patterns
        from .errors import CancelledError, InputError
        from .outputs import output_folder
        from .segment_command import open_case, segment_case

        record, count = self.records[index], len(self.cases)
        printer = CasePrinter(self.printer, case.name)
        printer.emit(CaseEvent(index + 1, count, case.name, "started", record["folder"]))
        started = time.perf_counter()
        folder = None

        def progress(stage: str, fraction: float) -> None:
            printer(stage, (index + min(max(fraction, 0.0), 1.0)) / count)

        try:
            if case.refused is not None:  # found unfit before the batch began (a channel file missing)
                raise InputError(*case.refused)
            if case.by_patterns:  # a case folder's files: placed by their names, never by their order
                case, left = placed_by_patterns(case, self.metadata.config.inputs)
                record["inputs"] = list(case.inputs)
                if left:
                    printer.note(f"left out {', '.join(left)}: no channel's file name pattern matches it")
            earlier = self.finished_before(case, Path(record["folder"])) if self.args.resume else None
            if earlier is not None:
                reason = "a finished result of the same model, inputs and options"
                record.update(status="skipped", reason=reason, **_earlier_fields(earlier))
                self.report(index, record, time.perf_counter() - started)
                return
            progress("start", 0.0)
            folder = output_folder(record["folder"], self.protected, holder="batch")
            folder.open()
            config, model, args = self.metadata.config, self.metadata.id, self.args
            opened = open_case(
                list(case.inputs),
                case.channels,
                config,
                model,
                folder,
                args,
                printer,
                case.named_by,
                case.source,
            )
            volumes = self.read(opened)
            if self.cancel.is_set():
                raise CancelledError()
            result, files, _ = segment_case(
                opened, volumes, self.package, folder, self.args, printer, progress, self.cancel
            )
        except (CancelledError, KeyboardInterrupt):
            with cleaning_up():
                printer.close()
                if folder is not None and folder.committed:  # stopped after its result was put in place: done
                    record.update(status="done", **_earlier_fields(_report_of(folder.destination)))
                    record.update(warnings=printer.warnings)
                else:
                    if folder is not None:
                        folder.abort()
                    record.update(status="cancelled")
                self.report(index, record, time.perf_counter() - started)
            raise
        except ModelLoadError:
            if folder is not None:
                folder.abort()
            raise
        except Exception as error:  # the case fails, the batch goes on
            printer.close()
            if getattr(self.args, "debug", False):
                traceback.print_exc()
            if folder is not None:
                folder.abort()  # the previous result stays as it was
            event = ErrorEvent.from_error(error)
            failure = {"message": event.message, "hint": event.hint, "category": event.category}
            record.update(status="failed", error={**failure, "type": event.error_type}, warnings=printer.warnings)
            self.report(index, record, time.perf_counter() - started, event)
            return
        record.update(status="done", **_result_fields(result, folder.destination, files), warnings=printer.warnings)
        self.report(index, record, time.perf_counter() - started)

    def read(self, opened) -> list:
        """The case's voxels; for the first case read, while torch is imported and the package loaded. Read in a
        thread either way: the main thread waits for it where a stop (:mod:`.cancel_signals`) reaches it at once, not
        after the reader's C++ call."""
        from .background import BackgroundCall
        from .segment_command import load_package_at, load_while_reading

        if self.package is not None:
            return BackgroundCall(opened.read, "TokenUNet read").result()

        def load() -> None:  # kept when the case's own voxels fail to read
            try:
                self.package = load_package_at(self.package_path)
            except Exception as error:
                raise ModelLoadError(error) from error

        return load_while_reading(load, opened.read)[1]

    def finished_before(self, case, folder: Path) -> dict | None:
        """The report of ``folder``'s result when it is a complete result of this model (id, version and weights) made
        from what this run would make it from (:mod:`.result_key`: the same input files, unchanged, and the options
        that shape the files); else None."""
        from .output_folder import complete_result
        from .result_key import made_from

        if not complete_result(folder):
            return None
        report = _report_of(folder)
        package = report.get("package")
        if not isinstance(package, dict):
            return None
        model = self.metadata
        same_model = (package.get("id"), package.get("version"), package.get("weights_sha256")) == (
            model.id,
            model.version,
            model.config.weights.sha256,
        )
        same_source = report.get("made_from") == made_from(case.inputs, case.channels, self.args)
        return report if same_model and same_source else None

    def report(self, index: int, record: dict, seconds: float, error: ErrorEvent | None = None) -> None:
        """The case's line on stdout and its end event."""
        record["seconds"] = round(seconds, 3)
        count, status = len(self.cases), record["status"]
        line = f"[{index + 1}/{count}] {record['name']}: {status}"
        if status == "done":
            line += f", {record['labels_found']} labels found, {seconds:.1f} s -> {record['folder']}"
            if record.get("flags"):
                line += f" (flags: {', '.join(record['flags'])})"
        elif error is not None:
            line += ": " + (one_line("", error.message, error.hint) if error.category == "user" else error.line())
        elif status == "skipped":
            line += f" ({record['reason']})"
        self.printer.close()
        print(line, flush=True)
        self.printer.emit(
            CaseEvent(
                index + 1,
                count,
                record["name"],
                status,
                record["folder"],
                error.message if error is not None else "",
                error.category if error is not None else "",
                round(seconds, 3),
            )
        )

    def save(self) -> None:
        """Write batch.json all at once (a reader never sees half of it); on a full disk, into the room the reserve
        held (then the batch stops, see run())."""
        from .errors import OutputError
        from .output_folder import write_file_atomically

        counts = {status: 0 for status in ("done", "failed", "skipped", "cancelled", "pending")}
        for record in self.records:
            counts[record["status"]] += 1
        self.document["counts"] = counts
        head = json.dumps({key: value for key, value in self.document.items() if key != "cases"}, indent=2)
        cases = ",\n".join(self.encoded(index, record) for index, record in enumerate(self.records))
        text = f'{head[:-2]},\n  "cases": [\n{cases}\n  ]\n}}\n' if cases else head[:-2] + ',\n  "cases": []\n}\n'
        if self.saved:
            self.check_still_there(None)
        try:
            write_file_atomically(self.summary_path, text)
        except OutputError as error:  # a full disk: the reserve's room, once
            if not self.saved:
                raise  # before any case: the error as it is
            if not self.reserve.give_up():
                raise self.unsaved(error) from None
            try:
                write_file_atomically(self.summary_path, text)  # in the room the reserve held
            except OutputError as again:  # not for want of room: a read-only or lost file system, no permission
                raise self.unsaved(again) from None
        self.saved = True

    def check_still_there(self, index: int | None) -> None:
        """Stop (before case ``index``) when batch.json, once written, is gone: the root was deleted or moved away,
        or the file deleted. Going on would make the root again, with the later cases only, a batch.json that calls
        the earlier ones done, and no lock."""
        from .errors import OutputError

        if not self.saved or self.summary_path.is_file():
            return
        where = f"before case {index + 1} of {len(self.cases)}" if index is not None else "at its end"
        raise OutputError(
            f"{self.summary_path} was removed while the batch ran: stopped {where}, nothing more written there",
            "run the batch again; --resume skips finished cases still there",
        )

    def unsaved(self, error) -> Exception:
        """The error that stops a batch whose batch.json can no longer be rewritten, saying how far it got and what
        stays (batch.json itself says 'running': every rewrite but the last says so)."""
        from .errors import OutputError

        ended = sum(record["status"] != "pending" for record in self.records)
        finished = sum(record["status"] in ("done", "skipped") for record in self.records)
        return OutputError(
            f"{error.message}; stopped after case {ended} of {len(self.cases)} with {finished} finished "
            f"case{'' if finished == 1 else 's'} kept; {self.summary_path.name} still says 'running'",
            "make it writable, then rerun with --resume",
        )

    def kept(self) -> str:
        """What a cancelled batch leaves (the finished cases' folders, batch.json) and how to go on."""
        finished = sum(record["status"] in ("done", "skipped") for record in self.records)
        cases = f"{finished} finished case{'' if finished == 1 else 's'} in {self.root} and " if finished else ""
        return f"kept: {cases}{self.summary_path} (run the batch again with --resume to do the rest)"

    def encoded(self, index: int, record: dict) -> str:
        """A case's text in batch.json (``json.dumps(document, indent=2)``'s), kept until its status or time changes
        (a record changes only so): each save encodes only what changed, not every case again (quadratic over a batch
        of thousands)."""
        mark = (record["status"], record.get("seconds"))
        kept = self.texts.get(index)
        if kept is not None and kept[0] == mark:
            return kept[1]
        text = "    " + json.dumps(record, indent=2).replace("\n", "\n    ")
        self.texts[index] = (mark, text)
        return text

    def outcome(self) -> str:
        """The state of a batch that went through every case: ``completed`` (every case done or skipped),
        ``completed_with_failures`` (some failed) or ``failed`` (every case failed: nothing to show for it)."""
        statuses = {record["status"] for record in self.records}
        if "failed" not in statuses:
            return "completed"
        return "failed" if statuses == {"failed"} else "completed_with_failures"

    def finish(self, state: str) -> int:
        """Record the batch's end, print its summary; the exit code."""
        seconds = time.perf_counter() - self.started
        self.document.update(state=state, finished=_now(), seconds=round(seconds, 3))
        self.save()
        counts, count = self.document["counts"], len(self.cases)
        every_case_failed = counts["failed"] == count
        parts = [f"{counts[status]} {status}" for status in ("done", "failed", "skipped") if counts[status]]
        not_run = counts["cancelled"] + counts["pending"]
        if not_run:
            parts.append(f"{not_run} not run")
        told = f"{', '.join(parts) or 'nothing'} of {count} cases"
        if every_case_failed:
            told = f"all {count} cases failed" if count > 1 else "its one case failed"
        self.printer.close()
        print(f"batch {state.replace('_', ' ')}: {told} in {seconds:.1f} s; see {self.summary_path}")
        if state == "cancelled":
            event = ErrorEvent("cancelled", "cancelled", self.kept(), "CancelledError")
            if self.printer.json:
                self.printer.emit(event)
            else:
                print(event.line(), file=sys.stderr)
            return ExitCode.CANCELLED
        if "error" in self.document:  # stopped before its end (a full disk)
            return ExitCode.USER_ERROR
        categories = {record["error"]["category"] for record in self.records if record["status"] == "failed"}
        if not categories:
            files = {
                "batch": self.summary_path.name,
                **{r["name"]: r["name"] for r in self.records if r["status"] == "done"},
            }
            self.printer.emit(ResultEvent(str(self.root), files, (), round(seconds, 3)))
            return ExitCode.OK
        category = "internal" if "internal" in categories else "user"
        message = f"{counts['failed']} of {count} cases failed"
        if every_case_failed:
            message = f"all {count} cases failed, none done" if count > 1 else "the batch's one case failed"
        event = ErrorEvent(message, category, f"see {self.summary_path}", "BatchError")
        if self.printer.json:
            self.printer.emit(event)
        else:
            print(f"error: {message} (see {self.summary_path})", file=sys.stderr)
        return event.exit_code


def _result_fields(result, destination: Path, files: dict) -> dict:
    """What batch.json keeps of a done case: labels found, flags, device, timings, its files."""
    assessment = result.assessment
    found = (
        assessment.found
        if assessment is not None
        else [label.name for label in result.label_table if result.volumes_ml.get(label.name, 0.0) > 0]
    )
    return {
        "labels_found": len(found),
        "labels": found,
        "flags": [flag.code for flag in assessment.flags] if assessment is not None else [],
        "summary": assessment.summary if assessment is not None else "",
        "device": str(result.device),
        "timings": {stage: round(float(value), 3) for stage, value in result.timings.items()},
        "files": {role: str(path.relative_to(destination)) for role, path in files.items()},
    }


def _earlier_fields(report: dict) -> dict:
    """What batch.json keeps of a skipped case's earlier result, from its report.json (as for a done case, its
    warnings too: the batch.json that listed them is rewritten)."""
    labels = [item for item in report.get("labels") or [] if isinstance(item, dict)]
    found = [
        item.get("name")
        for item in labels
        if not any(isinstance(flag, dict) and flag.get("code") == "not_found" for flag in item.get("flags") or [])
    ]
    flags = [flag.get("code") for flag in report.get("flags") or [] if isinstance(flag, dict)]
    warnings = [text for text in report.get("warnings") or [] if isinstance(text, str)]
    summary = report.get("summary", "")
    return {"labels_found": len(found), "labels": found, "flags": flags, "summary": summary, "warnings": warnings}


def _report_of(folder: Path) -> dict:
    """The report.json of a result folder (empty when it cannot be read)."""
    from .errors import TokenUNetError
    from .json_files import read_json_file
    from .outputs import REPORT_FILE

    try:
        report = read_json_file(folder / REPORT_FILE)
    except TokenUNetError:
        return {}
    return report if isinstance(report, dict) else {}


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; the ones created, outermost first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir(exist_ok=True)
    return list(reversed(missing))


def _remove_empty(folders: list[Path]) -> None:
    """Remove the ``folders`` this run created, innermost first, as long as they are empty."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            return


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
