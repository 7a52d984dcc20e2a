import numpy as np
import pytest
import torch
from skimage import data
from skimage.metrics import peak_signal_noise_ratio

from lego.metrics.psnr import MeanPSNR


def _photos():
    return [data.astronaut(), data.coffee(), data.chelsea()]


def _to_tensor(array):
    return torch.from_numpy(array).permute(2, 0, 1).float().div(255.0)


def test_mean_of_per_image_psnr_equals_scikit_image():
    rng = np.random.default_rng(0)
    metric = MeanPSNR()
    expected = []
    for photo in _photos():
        noisy = np.clip(photo.astype(np.int16) + rng.integers(-30, 31, photo.shape), 0, 255)
        noisy = noisy.astype(np.uint8)
        expected.append(peak_signal_noise_ratio(photo, noisy, data_range=255))
        metric.update(_to_tensor(noisy)[None], _to_tensor(photo)[None])  # sizes differ per call
    assert metric.compute().item() == pytest.approx(np.mean(expected), abs=1e-4)


def test_batch_update_is_per_image_not_pooled():
    photo = _to_tensor(data.astronaut()[:128, :128])
    a = (photo + 0.01).clamp(0, 1)
    b = (photo + 0.2).clamp(0, 1)
    metric = MeanPSNR()
    metric.update(torch.stack([a, b]), torch.stack([photo, photo]))
    direct = [10 * torch.log10(1 / ((x - photo) ** 2).mean()) for x in (a, b)]
    assert metric.compute().item() == pytest.approx(float(sum(direct) / 2), abs=1e-4)
    pooled = 10 * torch.log10(1 / (((a - photo) ** 2).mean() + ((b - photo) ** 2).mean()) * 2)
    assert abs(metric.compute().item() - pooled.item()) > 1.0
