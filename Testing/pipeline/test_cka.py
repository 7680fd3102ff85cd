"""Linear CKA: known facts of the measure, the stage x stage matrix between networks, and the CLI."""

import json
import runpy
import sys

import numpy as np
import pytest
import torch
from TokenUNetSegmentLib.model import build_network
from TokenUNetSegmentLib.pipeline.cka import cka_matrix, linear_cka, main, stage_feature_matrices

TINY_TOKEN_UNET = ["--a", "NoToken", "--a-option", "channels=(4, 8, 16, 32)"]
TINY_METAUNETR = ["--b", "MetaUNETR-conv", "--b-option", "feature_size=12"]


def random_orthogonal(size):
    return torch.linalg.qr(torch.randn(size, size, dtype=torch.float64))[0]


@pytest.mark.parametrize(("samples", "features"), [(50, 10), (10, 50)])  # feature form and Gram form
def test_cka_of_a_representation_with_itself_is_one(samples, features):
    x = torch.randn(samples, features)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(("samples", "features"), [(60, 12), (12, 60)])
def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling(samples, features):
    x, y = torch.randn(samples, features, dtype=torch.float64), torch.randn(samples, 7, dtype=torch.float64)
    y = y + x[:, :7]  # related, so the value is not trivially 0 or 1
    reference = linear_cka(x, y)
    assert 0.05 < reference < 0.99
    q = random_orthogonal(features)
    assert linear_cka(x @ q, y) == pytest.approx(reference, abs=1e-10)
    assert linear_cka(x @ q, x) == pytest.approx(1.0, abs=1e-10)
    assert linear_cka(3.5 * x, 0.01 * y) == pytest.approx(reference, abs=1e-10)
    assert linear_cka(x + 5.0, y) == pytest.approx(reference, abs=1e-10)  # centred


def test_cka_is_not_invariant_to_anisotropic_scaling():
    x = torch.randn(100, 5, dtype=torch.float64)
    assert linear_cka(x, x * torch.tensor([10.0, 1, 1, 1, 0.1], dtype=torch.float64)) < 0.9


def test_cka_of_independent_random_features_is_near_zero():
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(4000, 6, generator=generator), torch.randn(4000, 6, generator=generator)
    assert linear_cka(x, y) < 0.02


def test_debiased_cka_is_near_zero_for_independent_features_where_the_plain_one_is_not():
    generator = torch.Generator().manual_seed(2)
    x, y = torch.randn(50, 20, generator=generator), torch.randn(50, 20, generator=generator)
    assert linear_cka(x, y) > 0.2  # the known bias of about p / n
    assert abs(linear_cka(x, y, debiased=True)) < 0.05
    assert linear_cka(x, x, debiased=True) == pytest.approx(1.0, abs=1e-12)
    q = random_orthogonal(20).float()
    related = y + x
    assert linear_cka(3.0 * x @ q, related, debiased=True) == pytest.approx(linear_cka(x, related, debiased=True))
    with pytest.raises(ValueError, match="at least 4 samples when debiased"):
        linear_cka(x[:3], y[:3], debiased=True)


def test_cka_is_symmetric_and_accepts_numpy():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 4)), rng.normal(size=(30, 9))
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x))
    assert linear_cka(x, y) == pytest.approx(linear_cka(torch.from_numpy(x), torch.from_numpy(y)))


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (torch.randn(10, 3), torch.randn(11, 3), "same number of samples"),
        (torch.randn(10), torch.randn(10, 3), "2D \\(samples, features\\)"),
        (torch.randn(1, 3), torch.randn(1, 3), "at least 2 samples"),
        (torch.ones(10, 3), torch.randn(10, 3), "constant"),
    ],
)
def test_bad_matrices_raise_value_error(x, y, message):
    with pytest.raises(ValueError, match=message):
        linear_cka(x, y)


def test_stage_by_stage_matrix_of_a_network_with_itself_has_a_unit_diagonal():
    net = build_network("NoToken", 1, 2, channels=(4, 8, 16, 32))
    inputs = [torch.randn(1, 1, 16, 16, 16) for _ in range(4)]
    matrix = cka_matrix(net, net, inputs)
    assert matrix.shape == (4, 4)
    np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-9)
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-9)
    assert ((matrix > 0) & (matrix <= 1 + 1e-9)).all()
    np.testing.assert_allclose(np.diag(cka_matrix(net, net, inputs, pooling="flatten")), 1.0, atol=1e-9)


def test_samples_are_positions_of_the_coarsest_grid_or_whole_inputs():
    net = build_network("NoToken", 1, 2, channels=(4, 8, 16, 32))
    inputs = [torch.randn(1, 1, 16, 16, 16) for _ in range(3)]
    positions = stage_feature_matrices(net, inputs)  # stage grids 16, 8, 4, 2: 2^3 positions per input
    assert [tuple(m.shape) for m in positions] == [(24, 4), (24, 8), (24, 16), (24, 32)]
    pooled = stage_feature_matrices(net, inputs, pooling="mean")
    assert [tuple(m.shape) for m in pooled] == [(3, 4), (3, 8), (3, 16), (3, 32)]
    flat = stage_feature_matrices(net, inputs, pooling="flatten")
    assert [m.shape[1] for m in flat] == [4 * 16**3, 8 * 8**3, 16 * 4**3, 32 * 2**3]
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        cka_matrix(net, net, inputs, pooling="max")


def test_cli_compares_two_families_and_saves_json_and_heatmap(tmp_path, capsys):
    out = tmp_path / "cka"
    argv = [*TINY_TOKEN_UNET, *TINY_METAUNETR, "--size", "64", "--samples", "3", "--out", str(out), "--debiased"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "debiased linear CKA (positions, 3 samples of 64^3): rows NoToken, columns MetaUNETR-conv" in printed
    record = json.loads((out / "cka.json").read_text())
    assert (record["a"], record["b"], record["samples"], record["size"]) == ("NoToken", "MetaUNETR-conv", 3, 64)
    matrix = np.array(record["matrix"])
    assert matrix.shape == (4, 4) and np.isfinite(matrix).all() and (matrix <= 1 + 1e-9).all()
    assert record["debiased"] is True and record["pooling"] == "positions"
    assert (out / "cka.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--a", "NoSuchNet", "--b", "NoToken"], "unknown network 'NoSuchNet'"),
        ([*TINY_TOKEN_UNET, *TINY_METAUNETR, "--size", "48"], "multiple of 32"),
        ([*TINY_TOKEN_UNET, "--b", "NoToken", "--b-option", "channels"], "must look like NAME=VALUE"),
        ([*TINY_TOKEN_UNET, "--b", "NoToken", "--samples", "1"], "--samples: must be at least 2"),
        ([*TINY_TOKEN_UNET, "--b", "NoToken", "--b-weights", "missing.safetensors"], "weights file not found"),
        (
            ["--a", "8Token", "--b", "8Token", "--samples", "3", "--pooling", "mean", "--debiased"],
            "--debiased needs at least 4 samples; --samples 3 with --pooling mean gives 3",
        ),
    ],
)
def test_cli_user_errors_give_one_line_and_exit_code_2(argv, message, capsys, tmp_path, monkeypatch):
    from TokenUNetSegmentLib.pipeline import cka

    if "--debiased" in argv:  # refused before the networks are built (before: after 4 s of work)
        monkeypatch.setattr(cka, "_build", lambda *a, **k: pytest.fail("built before the check"))
    assert main([*argv, "--size", "16", "--out", str(tmp_path)] if "--size" not in argv else argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_two_samples_of_whole_inputs_are_refused_as_giving_a_cka_of_1_whatever_the_networks(
    capsys, tmp_path, monkeypatch
):
    """``--pooling mean`` (or ``flatten``) ``--samples 2`` (found by hostile) (before: a matrix of 1.000 printed and
    written, as if the stages were alike: the linear CKA of 2 centred samples is 1 for any features)."""
    from TokenUNetSegmentLib.pipeline import cka

    monkeypatch.setattr(cka, "_build", lambda *a, **k: pytest.fail("built before the check"))
    for pooling in ("mean", "flatten"):
        argv = ["--a", "8Token", "--b", "NoToken", "--samples", "2", "--pooling", pooling, "--size", "16"]
        assert main([*argv, "--out", str(tmp_path / "cka")]) == 2
        err = capsys.readouterr().err
        assert "--samples 2 with --pooling " + pooling in err and "at least 3" in err and err.count("\n") == 1, err
    assert not (tmp_path / "cka").exists()


def test_weights_of_another_network_or_a_folder_are_named_with_what_does_not_fit(capsys, tmp_path):
    """``--a-weights`` of a network of other widths (found by hostile) (before: "... do not fit network '8Token':
    Error(s) in loading state_dict for TokenUNet:", torch's first line, which says nothing of what differs); a folder
    (before: "weights file not found", though it is there)."""
    from safetensors.torch import save_file

    other = build_network("8Token", 1, 2, channels=(4, 8, 16, 32))
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(tmp_path / "other.safetensors"))
    for weights, words in [(tmp_path / "other.safetensors", "size mismatch for "), (tmp_path, "is a folder")]:
        argv = ["--a", "8Token", "--b", "8Token", "--a-weights", str(weights), "--size", "16", "--samples", "2"]
        assert main([*argv, "--out", str(tmp_path / "cka")]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err


@pytest.mark.filterwarnings("ignore:.*found in sys.modules after import:RuntimeWarning")  # imported by this file
def test_cli_runs_as_a_module_and_fails_cleanly(monkeypatch, capsys):
    """``python -m TokenUNetSegmentLib.pipeline.cka`` (its ``__main__`` entry, run here without a new interpreter)."""
    monkeypatch.setattr(sys, "argv", ["cka", "--a", "Nope", "--b", "NoToken"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("TokenUNetSegmentLib.pipeline.cka", run_name="__main__", alter_sys=True)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("cka: error: unknown network 'Nope'; choose one of NoToken")
    assert len(err.strip().splitlines()) == 1


def test_samples_that_cannot_fit_are_refused_before_they_are_made(tmp_path, monkeypatch, capsys):
    """Before: the check counted the inputs but not the stage maps kept of each (here 2000 x 5.7 MB: passed under
    1 GiB; ``cka --samples 100000 --size 32`` allocated until the machine ran out). Now the need is measured on one
    sample and refused before the samples are made (exit 2, nothing written)."""
    from TokenUNetSegmentLib.pipeline import cli
    from TokenUNetSegmentLib.pipeline.memory import format_size

    monkeypatch.setenv("TOKENUNET_MEMORY_LIMIT", "1G")
    argv = ["cka", "--a", "8Token", "--b", "8Token", "--size", "32", "--samples", "2000"]
    assert cli.main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "2000 samples of 1 x 32^3 need about" in err and "use fewer --samples" in err, err
    assert not any(tmp_path.iterdir())
    assert (format_size(1023.6 * 2**10), format_size(999 * 2**10)) == ("1024 KiB", "999 KiB")  # not 1.02e+03 KiB


def test_options_that_the_command_sets_itself_are_refused_in_one_line(tmp_path, capsys):
    """``--a-option in_channels=4`` or ``out_channels=3`` (before: internal error TypeError "got multiple values for
    argument 'in_channels'", exit 1)."""
    from TokenUNetSegmentLib.pipeline import cli

    for option, says in [("in_channels=4", "--in-channels"), ("out_channels=3", "out_channels")]:
        argv = ["cka", "--a", "8Token", "--b", "8Token", "--size", "16", "--a-option", option]
        assert cli.main([*argv, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and says in err and err.count("\n") == 1, err
    assert not any(tmp_path.iterdir())


def test_weights_that_give_no_finite_features_are_refused_not_written_as_nan(tmp_path, capsys):
    """Weights holding NaN, or so large that a stage's features overflow float32 (before: a matrix of NaN printed and
    written to cka.json as ``NaN``, which is no JSON, exit 0)."""
    from safetensors.torch import save_file
    from TokenUNetSegmentLib.pipeline import cli

    state = build_network("8Token", 1, 2).state_dict()
    first = next(key for key, value in state.items() if key.endswith("weight") and value.is_floating_point())
    broken = {key: value.clone() for key, value in state.items()}
    broken[first][...] = float("nan")
    save_file(broken, tmp_path / "nan.safetensors")
    save_file({k: v * 1e30 if v.is_floating_point() else v for k, v in state.items()}, tmp_path / "huge.safetensors")
    for weights, says in [
        ("nan.safetensors", f"weights nan.safetensors hold NaN or infinite values ({first})"),
        ("huge.safetensors", "stage 2 of network '8Token' (--a) gives NaN or infinite features"),
    ]:
        argv = ["cka", "--a", "8Token", "--b", "8Token", "--size", "32", "--samples", "3"]
        assert cli.main([*argv, "--a-weights", str(tmp_path / weights), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1, err
        assert not (tmp_path / "o").exists()
