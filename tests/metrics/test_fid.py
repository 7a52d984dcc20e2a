import numpy as np
import pytest
import torch
from scipy import linalg
from torchvision.models.inception import InceptionA

from lego.metrics.fid import InceptionFID
from lego.metrics.inception import FIDInceptionA, FIDInceptionV3
from tests.metrics.tiny_weights import random_inception, write_inception


def _frechet(a, b):
    """Closed-form Frechet distance of two Gaussians fitted to feature rows (numpy/scipy).

    With few samples the covariances are low-rank, so tr(sqrt(S1 S2)) is computed exactly from
    the small matrix X2 X1^T X1 X2^T / (n1 - 1)(n2 - 1), which has the same non-zero spectrum.
    """
    x1, x2 = a - a.mean(0), b - b.mean(0)
    s1 = x1.T @ x1 / (len(a) - 1)
    s2 = x2.T @ x2 / (len(b) - 1)
    small = x2 @ x1.T @ x1 @ x2.T / ((len(a) - 1) * (len(b) - 1))
    tr_covmean = np.trace(linalg.sqrtm(small).real)
    diff = a.mean(0) - b.mean(0)
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    return write_inception(tmp_path_factory.mktemp("fid") / "pt_inception-2015-12-05-6726825d.pth")


def test_fid_equals_closed_form_on_the_same_features(inception_file):
    torch.manual_seed(0)
    real = torch.rand(6, 3, 40, 56)
    fake = (real * 0.5 + torch.rand(6, 3, 40, 56) * 0.5).clamp(0, 1)
    metric = InceptionFID(inception_file)
    metric.update(real[:3], real=True)
    metric.update(real[3:], real=True)
    metric.update(fake, real=False)
    net = FIDInceptionV3()
    net.load_weights(inception_file)
    with torch.no_grad():
        fr, ff = net(real).double().numpy(), net(fake).double().numpy()
    assert fr.shape == (6, 2048) and fr.std() > 0
    expected = _frechet(fr, ff)
    assert expected > 0
    assert metric.compute().item() == pytest.approx(expected, rel=1e-3, abs=1e-4)


def test_inception_loads_pytorch_fid_layout_strictly(inception_file, tmp_path):
    net = FIDInceptionV3()
    net.load_weights(inception_file)
    ref = random_inception(0)
    x = torch.rand(1, 3, 299, 299)
    with torch.no_grad():
        assert torch.allclose(net(x), ref(x))
    state = torch.load(inception_file, weights_only=True)
    assert "fc.weight" in state and state["fc.weight"].shape == (1008, 2048)
    del state["Mixed_7c.branch_pool.conv.weight"]
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(RuntimeError, match="Mixed_7c.branch_pool.conv.weight"):
        FIDInceptionV3().load_weights(bad)
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        FIDInceptionV3().load_weights(tmp_path / "nowhere.pth")


def test_fid_block_pools_without_padding():
    torch.manual_seed(0)
    fid_block, tv_block = FIDInceptionA(8, pool_features=4), InceptionA(8, pool_features=4)
    tv_block.load_state_dict(fid_block.state_dict())
    fid_block.eval(), tv_block.eval()
    x = torch.rand(1, 8, 7, 7) + 1.0
    with torch.no_grad():
        a, b = fid_block(x), tv_block(x)
    # identical except the pooling branch at the border (count_include_pad=False)
    assert torch.allclose(a[:, :-4], b[:, :-4])
    assert not torch.allclose(a[:, -4:, 0, 0], b[:, -4:, 0, 0])
    assert torch.allclose(a[:, -4:, 3, 3], b[:, -4:, 3, 3])


def test_fid_resizes_any_size_and_needs_two_images(inception_file):
    metric = InceptionFID(inception_file)
    metric.update(torch.rand(1, 3, 30, 50), real=True)
    metric.update(torch.rand(1, 3, 30, 50), real=False)
    with pytest.raises(RuntimeError, match="More than one sample"):
        metric.compute()
