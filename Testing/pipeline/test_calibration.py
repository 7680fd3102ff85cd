"""The confidence's calibration figures: pairs from robustness results, Spearman, AUC, bands."""

import json
from pathlib import Path

import numpy as np
import pytest
from TokenUNetSegmentLib.pipeline.calibration import auc, confidence_pairs, format_summary, spearman, summarise


def test_spearman_and_auc_match_their_definitions():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) is None
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=50), rng.normal(size=50)
    x[:5] = x[0]  # ties: mean ranks
    n = len(x)
    rx = np.array([(x < v).sum() + ((x == v).sum() + 1) / 2 for v in x])
    ry = np.array([(y < v).sum() + ((y == v).sum() + 1) / 2 for v in y])
    assert spearman(x, y) == pytest.approx(np.corrcoef(rx, ry)[0, 1])
    assert n == 50
    scores, positive = rng.random(40), rng.random(40) > 0.5
    brute = np.mean([1.0 if s > t else 0.5 if s == t else 0.0 for s in scores[positive] for t in scores[~positive]])
    assert auc(scores, positive) == pytest.approx(brute)
    assert auc([0.1, 0.9], [False, True]) == 1.0
    assert auc([0.1, 0.9], [True, True]) is None


def robustness_result():
    return {
        "case": "P",
        "labels": ["liver", "spleen"],
        "variants": [
            {"variant": "plain", "dice": {"liver": 0.9, "spleen": 0.8},
             "confidence": {"liver": 0.85, "spleen": 0.7, "stomach": 0.6}, "flags": {"liver": ["cut_off"]}},
            # the slab holds no spleen, yet one was found: a false find, Dice 0; the stomach has no reference
            {"variant": "slab", "dice": {"liver": 0.5}, "confidence": {"liver": 0.45, "spleen": 0.1},
             "flags": {"spleen": ["fragmented"]}},
            {"variant": "noise", "dice": {"liver": 0.0, "spleen": 0.2}, "confidence": {}},  # nothing found
        ],
    }  # fmt: skip


def test_pairs_are_the_organs_found_whose_truth_is_known():
    pairs = confidence_pairs(robustness_result())
    assert [(p["variant"], p["label"], p["confidence"], p["dice"]) for p in pairs] == [
        ("plain", "liver", 0.85, 0.9),
        ("plain", "spleen", 0.7, 0.8),
        ("slab", "liver", 0.45, 0.5),
        ("slab", "spleen", 0.1, 0.0),
    ]
    assert pairs[0]["flags"] == ["cut_off"] and pairs[3]["flags"] == ["fragmented"]


def test_the_summary_counts_bands_and_flags():
    summary = summarise(confidence_pairs(robustness_result()))
    assert summary["organs"] == 4 and summary["spearman"] == pytest.approx(1.0) and summary["auc"] == 1.0
    bands = {b["band"]: b for b in summary["bands"]}
    assert bands["0.0-0.2"] == {"band": "0.0-0.2", "organs": 1, "mean_dice": 0.0, "good_share": 0.0}
    assert bands["0.8-1.0"]["organs"] == 1 and bands["0.8-1.0"]["good_share"] == 1.0
    assert bands["0.2-0.4"]["organs"] == 0 and bands["0.2-0.4"]["mean_dice"] is None
    assert summary["mean_dice_flagged"] == 0.0  # cut_off alone does not count as flagged
    assert summary["mean_dice_unflagged"] == pytest.approx((0.9 + 0.8 + 0.5) / 3, abs=1e-3)
    text = format_summary(summary)
    assert "4 organs found" in text and "| 0.8-1.0 | 1 | 0.90 | 100 % |" in text and "| 0.2-0.4 | 0 | - | - |" in text


def test_the_script_pools_robustness_files_and_refuses_ones_without_confidences(tmp_path, capsys):
    import importlib.util
    import json

    from helpers.paths import SCRIPTS

    spec = importlib.util.spec_from_file_location("demo_calibration", SCRIPTS / "demo-model" / "calibration.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    (tmp_path / "one.json").write_text(json.dumps(robustness_result()))
    (tmp_path / "two.json").write_text(json.dumps([robustness_result()]))  # a datalist patient with several cases
    assert (
        script.main([str(tmp_path / "one.json"), str(tmp_path / "two.json"), "--json", str(tmp_path / "s.json")]) == 0
    )
    assert "8 organs found" in capsys.readouterr().out
    assert json.loads((tmp_path / "s.json").read_text())["summary"]["organs"] == 8
    old = {"labels": ["liver"], "variants": [{"variant": "plain", "dice": {"liver": 0.9}}]}
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert script.main([str(tmp_path / "old.json")]) == 2
    capsys.readouterr()
    # before: a traceback (FileNotFoundError, JSONDecodeError, KeyError 'variants')
    (tmp_path / "evaluation.json").write_text(json.dumps({"labels": {}}))
    (tmp_path / "broken.json").write_text("{")
    for name in ("missing.json", "evaluation.json", "broken.json"):
        assert script.main([str(tmp_path / name)]) == 2
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith("error: ") and line.count(name) == 1 and "robustness" in line, line


def load_script():
    import importlib.util

    from helpers.paths import SCRIPTS

    spec = importlib.util.spec_from_file_location("demo_calibration", SCRIPTS / "demo-model" / "calibration.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


@pytest.mark.parametrize(
    ("variants", "says"),
    [
        (["plain"], "$.results[0].variants[0]: expected object, got str"),
        ([{"variant": "plain", "confidence": {"liver": 0.5}}], "$.results[0].variants[0]: missing required key 'dice'"),
        ([{"variant": "plain", "dice": [1]}], "$.results[0].variants[0].dice: expected object, got list"),
        (
            [{"variant": "plain", "dice": {}, "confidence": {"liver": "x"}}],
            ".confidence.liver: expected number, got str",
        ),
        ([{"variant": "plain", "dice": {}, "confidence": [1]}], ".confidence: expected object or null, got list"),
        ([{"variant": "plain", "dice": {}, "flags": [1]}], ".flags: expected object or null, got list"),
        ([{"dice": {"liver": 0.5}}], "$.results[0].variants[0]: missing required key 'variant'"),
        ([], "$.results[0].variants: needs at least 1 item"),
    ],
)
def test_malformed_variants_are_refused_in_one_plain_line(tmp_path, capsys, monkeypatch, variants, says):
    """A robustness.json whose variants are not as ``robustness`` writes them (hand-edited, cut, another tool's).
    Before: "PATH: cannot be read as a robustness.json (AttributeError: 'str' object has no attribute 'get')", a
    ValueError traceback (exit 1) for a confidence that is no number, and a summary of nothing (exit 0) for no
    variant; every error named the file twice and had no ``error:`` prefix. Now one line as the command line's
    errors (``error: what (what to do)``), exit 2."""
    monkeypatch.chdir(tmp_path)
    document = {"format": "tokenunet-robustness", "version": 2, "results": [{"labels": ["liver"], "variants": []}]}
    document["results"][0]["variants"] = variants
    Path("robustness.json").write_text(json.dumps(document))
    assert load_script().main(["robustness.json"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: robustness.json is malformed at $.results[0].") and says in line, line
    assert line.endswith(" (give a robustness.json written by tokenunet robustness)"), line


def test_the_scripts_json_is_written_all_at_once_where_the_home_folder_is(tmp_path, capsys, monkeypatch):
    """``--json '~/c.json'`` (a tilde the shell left) and ``--json`` naming a folder (found by review2; before: a
    FileNotFoundError traceback, exit 1 (written into ``./~/`` where such a folder was), no "wrote" line; an
    IsADirectoryError traceback, exit 1)."""
    script = load_script()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    variant = {"variant": "plain", "dice": {"liver": 0.9}, "confidence": {"liver": 0.8}, "flags": {"liver": []}}
    document = {
        "format": "tokenunet-robustness",
        "version": 2,
        "results": [{"labels": ["liver"], "variants": [variant]}],
    }
    Path("robustness.json").write_text(json.dumps(document))
    assert script.main(["robustness.json", "--json", "~/c.json"]) == 0
    written = (tmp_path / "home" / "c.json").resolve()
    assert json.loads(written.read_text())["pairs"] and not (tmp_path / "~").exists()
    assert capsys.readouterr().err.splitlines()[-1] == f"wrote {written}"
    (tmp_path / "taken").mkdir()
    assert script.main(["robustness.json", "--json", "taken"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: ") and "taken" in line, line
    assert (tmp_path / "taken").is_dir() and not list((tmp_path / "taken").iterdir())


def test_the_scripts_json_may_not_be_one_of_its_inputs(tmp_path, capsys, monkeypatch):
    """Before: ``calibration.py a.json b.json --json b.json`` replaced the robustness file ``b.json`` by the summary."""
    script = load_script()
    monkeypatch.chdir(tmp_path)
    variant = {"variant": "plain", "dice": {"liver": 0.9}, "confidence": {"liver": 0.8}, "flags": {"liver": []}}
    document = json.dumps({"format": "tokenunet-robustness", "version": 2, "results": [
        {"labels": ["liver"], "variants": [variant]}]})  # fmt: skip
    for name in ("a.json", "b.json"):
        Path(name).write_text(document)
    Path("link.json").symlink_to("b.json")
    for out in ("b.json", "./b.json", "link.json", str(tmp_path / "a.json")):
        assert script.main(["a.json", "b.json", "--json", out]) == 2
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith(f"error: --json {Path(out).name} is the robustness file ") and "elsewhere" in line, line
        assert [Path(name).read_text() for name in ("a.json", "b.json")] == [document, document]
    assert script.main(["a.json", "--json", "b.json"]) == 0  # a file that is no input is replaced, as before
    assert "summary" in json.loads(Path("b.json").read_text())
