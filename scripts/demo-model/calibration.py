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
from TokenUNetSegmentLib.pipeline.errors import InputError  # noqa: E402
from TokenUNetSegmentLib.pipeline.robustness import read_results  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="robustness.json files")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args(argv)
    pairs = []
    for path in args.results:
        try:
            results = read_results(path)  # any version's robustness.json
            found_in_file = [confidence_pairs(result) for result in results]
        except InputError as error:
            print(f"{path}: cannot be read as a robustness.json: {error}", file=sys.stderr)  # with what to do
            return 2
        except (KeyError, TypeError, AttributeError) as error:
            print(f"{path}: cannot be read as a robustness.json ({type(error).__name__}: {error})", file=sys.stderr)
            return 2
        for result, found in zip(results, found_in_file, strict=True):
            if not found and result["variants"] and "confidence" not in result["variants"][0]:
                print(
                    f"{path} records no confidences (written before the robustness command kept them)", file=sys.stderr
                )
                return 2
            pairs += found
    summary = summarise(pairs)
    print(format_summary(summary))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "pairs": pairs}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
