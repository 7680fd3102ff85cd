"""On a CUDA GPU: the bundled model's float16 inference agrees with the CPU's result, token maps included, and a
few training steps run and give a package. Skipped where torch sees no CUDA device (CI has none;
``Testing/benchmarks/gpu_check.sh`` runs this file on a lent GPU)."""

import numpy as np
import pytest
import torch
from helpers.paths import SAMPLE_CT
from helpers.training_data import phantom_case, train_config, write_dataset
from TokenUNetSegmentLib.model import build_network, network_names
from TokenUNetSegmentLib.pipeline.device import autocast
from TokenUNetSegmentLib.pipeline.geometry import affine_from_spacing
from TokenUNetSegmentLib.pipeline.package_loader import load_package
from TokenUNetSegmentLib.pipeline.segmentation import segment
from TokenUNetSegmentLib.pipeline.training import Recipe, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("name", network_names())
def test_every_network_runs_under_the_pipelines_cuda_autocast(name):
    """The pipeline's CUDA precision (float16 autocast) on every network, against its float32 CUDA output."""
    torch.manual_seed(0)
    size, options = 64, {}
    if name.startswith("MetaUNETR"):  # permute_mlp's stage widths must divide by its grid sides
        size = 96 if name.endswith("permute_mlp") else 64
        options = {"img_size": size, "feature_size": 48 if name.endswith("permute_mlp") else 24}
    net = build_network(name, 1, 3, **options).cuda().eval()
    x = torch.randn(1, 1, size, size, size, device="cuda")
    with torch.inference_mode():
        full = net(x).float()
        with autocast(torch.device("cuda"), net):
            half = net(x).float()
    difference = float((half - full).abs().max()) / float(full.abs().max())
    assert 0 < difference < 3e-2, difference  # rounded (float16 really ran), but close


@pytest.fixture(scope="module")
def sample_runs():
    return {device: segment([SAMPLE_CT], device=device) for device in ("cpu", "cuda")}


def test_the_sample_on_cuda_agrees_with_the_cpu(sample_runs):
    cpu, gpu = sample_runs["cpu"], sample_runs["cuda"]
    assert gpu.device.startswith("cuda") and cpu.device == "cpu"
    assert gpu.labels.shape == cpu.labels.shape and np.allclose(gpu.affine, cpu.affine)
    assert (gpu.labels == cpu.labels).mean() > 0.995
    for label in cpu.label_table:
        a, b = cpu.labels == label.value, gpu.labels == label.value
        if a.sum() > 500:  # organs of more than 13.5 mL at 3 mm: small ones move more with a few voxels
            assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.97, label.name


def test_token_maps_on_cuda_agree_with_the_cpu(sample_runs):
    cpu, gpu = sample_runs["cpu"].token_maps, sample_runs["cuda"].token_maps
    assert cpu is not None and gpu is not None
    assert cpu.kinds == gpu.kinds
    for kind in cpu.kinds:
        a, b = cpu.coarse[kind].astype(np.float64), gpu.coarse[kind].astype(np.float64)
        assert a.shape == b.shape
        correlation = np.corrcoef(a.ravel(), b.ravel())[0, 1]
        assert correlation > 0.99, (kind, correlation)


def test_training_steps_on_cuda_give_a_package(tmp_path):
    datalist = write_dataset(tmp_path / "data")
    recipe = Recipe(steps=6, batch_size=2, val_every=3, threads=1)
    package_path = train(datalist, train_config(), tmp_path / "run", recipe, device="cuda")
    package = load_package(package_path)
    assert package.config.training["device"].startswith("cuda")
    assert package.config.training["steps_done"] == 6
    image, _ = phantom_case()
    result = segment([(image.astype(np.float32), affine_from_spacing((2.0, 2.0, 2.0)))], package, device="cuda")
    assert result.labels.shape == image.shape
