import warnings

import lpips
import pytest
import torch

from lego.metrics.perceptual import LPIPSDistance
from tests.metrics.tiny_weights import write_lpips_trunk


@pytest.mark.parametrize("net", ["alex", "squeeze", "vgg"])
def test_lpips_equals_the_lpips_package_with_the_same_weights(tmp_path, net):
    trunk = write_lpips_trunk(tmp_path / f"{net}.pth", net, seed=3)
    metric = LPIPSDistance(trunk, net=net, input_range="signed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False).eval()
    features = torch.load(trunk, weights_only=True)
    for name, param in reference.net.named_parameters():
        index_and_param = name.split(".", 1)[1]
        param.data.copy_(features["features." + index_and_param])
    torch.manual_seed(0)
    a, b = torch.rand(3, 3, 64, 64), torch.rand(3, 3, 64, 64)
    metric.update(a, b)
    with torch.no_grad():
        expected = reference(a * 2 - 1, b * 2 - 1).flatten()
    assert metric.compute().item() == pytest.approx(expected.mean().item() * 100, rel=1e-5)


def test_official_feeds_unit_range_unchanged(tmp_path):
    trunk = write_lpips_trunk(tmp_path / "alex.pth", "alex")
    signed = LPIPSDistance(trunk, input_range="signed")
    unit = LPIPSDistance(trunk, input_range="unit")
    torch.manual_seed(1)
    a, b = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        direct = unit.lpips(a, b, normalize=False).flatten()  # [0,1] given as if [-1,1]
    unit.update(a, b)
    signed.update(a, b)
    assert unit.compute().item() == pytest.approx(direct.mean().item() * 100, rel=1e-5)
    assert unit.compute().item() != pytest.approx(signed.compute().item(), rel=1e-3)
    same = LPIPSDistance(trunk)
    same.update(a, a)
    assert same.compute().item() == pytest.approx(0.0, abs=1e-6)


def test_trunk_file_errors_name_the_file_and_weight(tmp_path):
    trunk = write_lpips_trunk(tmp_path / "alex.pth", "alex")
    state = torch.load(trunk, weights_only=True)
    del state["features.3.weight"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(KeyError, match="features.3.weight"):
        LPIPSDistance(tmp_path / "broken.pth")
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        LPIPSDistance(tmp_path / "absent.pth")
