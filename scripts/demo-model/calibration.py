"""How well the confidence ranked the results of one or more robustness runs, pooled: Spearman, AUC, bands.

    .venv/bin/python scripts/demo-model/calibration.py RUN/robustness.json [...] [--json OUT.json]

Each file is a ``tokenunet robustness`` output (it records every found organ's confidence). Pool held-out
patients only (a leave-one-patient-out fold on the patient it left out) to judge the confidence honestly.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "TokenUNetSegment"))

from TokenUNetSegmentLib.pipeline.calibration import confidence_pairs, format_summary, summarise  # noqa: E402
from TokenUNetSegmentLib.pipeline.errors import InputError, TokenUNetError  # noqa: E402
from TokenUNetSegmentLib.pipeline.output_folder import refuse_output_over_inputs, write_file_atomically  # noqa: E402
from TokenUNetSegmentLib.pipeline.robustness import read_results  # noqa: E402
from TokenUNetSegmentLib.pipeline.run_contract import ErrorEvent  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="robustness.json files")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args(argv)
    try:
        if args.json:  # before anything is read: --json may not replace a robustness file it summarises
            inputs = [(f"the robustness file {path}", path) for path in args.results]
            refuse_output_over_inputs(args.json, "--json", inputs, "this script reads", "write the summary elsewhere")
        pairs = pooled_pairs(args.results)
        summary = summarise(pairs)
        if args.json:  # all at once ('~' the home folder), before the summary: a closed stdout then loses only text
            written = write_file_atomically(
                args.json, json.dumps({"summary": summary, "pairs": pairs}, indent=2) + "\n"
            )
    except TokenUNetError as error:  # one line, as the command line's errors: what is wrong (the file), what to do
        print(ErrorEvent.from_error(error).line(), file=sys.stderr)
        return 2
    print(format_summary(summary))
    if args.json:
        print(f"wrote {written}", file=sys.stderr)
    return 0


def pooled_pairs(paths: list[Path]) -> list[dict]:
    """The (confidence, Dice) pairs of every case in the files ``paths``; raises :class:`InputError` for a file that is
    no robustness.json (read_results names it and says why) or records no confidences."""
    pairs = []
    for path in paths:
        for result in read_results(path):  # any version's robustness.json, its variants checked
            found = confidence_pairs(result)
            if not found and "confidence" not in result["variants"][0]:
                raise InputError(
                    f"{path} records no confidences (written before the robustness command kept them)",
                    "run tokenunet robustness again to record them",
                )
            pairs += found
    return pairs


if __name__ == "__main__":
    raise SystemExit(main())
