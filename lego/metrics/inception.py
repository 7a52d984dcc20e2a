"""The FID InceptionV3 (2048-d pool features) with the pytorch-fid weight layout.

The network is torchvision's ``Inception3`` (1008 classes, no auxiliary head) with the inception
blocks changed the way the TensorFlow FID graph computes them: the average-pooling branches of the
A, C and first E blocks do not count the zero padding, and the last E block max-pools instead of
average-pooling. Input: images in [0, 1], bilinearly resized to 299 x 299 (no antialias) and
mapped to [-1, 1]. Weights: ``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid's release).
Pure torch; no Lightning.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn
from torchvision.models.inception import Inception3, InceptionA, InceptionC, InceptionE


def _avg_pool_no_pad(x: Tensor) -> Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(InceptionA):
    """Inception A block whose pooling branch ignores padding."""

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool_no_pad(x))
        return torch.cat([b1, b5, b3, bp], 1)


class FIDInceptionC(InceptionC):
    """Inception C block whose pooling branch ignores padding."""

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                      self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = layer(bd)
        bp = self.branch_pool(_avg_pool_no_pad(x))
        return torch.cat([b1, b7, bd, bp], 1)


class FIDInceptionE(InceptionE):
    """Inception E block; ``max_pool`` selects the last block's max-pooling branch.

    Args:
        in_channels: Input channels.
        max_pool: Max-pool (last block) instead of padding-free average pooling (first block).
    """

    def __init__(self, in_channels: int, max_pool: bool) -> None:
        super().__init__(in_channels)
        self.max_pool = max_pool

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        if self.max_pool:
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = _avg_pool_no_pad(x)
        return torch.cat([b1, b3, bd, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """InceptionV3 returning the 2048-d pool3 features used by FID.

    Args:
        resize_input: Bilinearly resize inputs to 299 x 299 (align_corners False, no antialias).
    """

    num_features = 2048

    def __init__(self, resize_input: bool = True) -> None:
        super().__init__()
        self.resize_input = resize_input
        net = Inception3(num_classes=1008, aux_logits=False, init_weights=False)
        net.Mixed_5b = FIDInceptionA(192, pool_features=32)
        net.Mixed_5c = FIDInceptionA(256, pool_features=64)
        net.Mixed_5d = FIDInceptionA(288, pool_features=64)
        net.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        net.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        net.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        net.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        net.Mixed_7b = FIDInceptionE(1280, max_pool=False)
        net.Mixed_7c = FIDInceptionE(2048, max_pool=True)
        self.net = net
        self.net.eval()

    def load_weights(self, path: Path) -> None:
        """Load ``pt_inception-2015-12-05-6726825d.pth`` (keys of torchvision's Inception3).

        Raises:
            FileNotFoundError: If the file is missing.
            RuntimeError: If keys are missing or unexpected (BatchNorm counters aside).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: FID Inception weights not found")
        state = torch.load(path, map_location="cpu", weights_only=True)
        own = self.net.state_dict()
        for key in own:
            if key.endswith("num_batches_tracked") and key not in state:
                state[key] = own[key]
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise RuntimeError(
                f"{path}: not a pytorch-fid Inception checkpoint (missing {missing[:5]}, "
                f"unexpected {unexpected[:5]})"
            )
        self.net.load_state_dict(state, strict=True)

    def forward(self, images: Tensor) -> Tensor:
        """Compute ``B x 2048`` features of ``B x 3 x H x W`` images in [0, 1]."""
        x = images.float()
        if self.resize_input and tuple(x.shape[-2:]) != (299, 299):
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2.0 * x - 1.0
        n = self.net
        for layer in (n.Conv2d_1a_3x3, n.Conv2d_2a_3x3, n.Conv2d_2b_3x3, n.maxpool1,
                      n.Conv2d_3b_1x1, n.Conv2d_4a_3x3, n.maxpool2, n.Mixed_5b, n.Mixed_5c,
                      n.Mixed_5d, n.Mixed_6a, n.Mixed_6b, n.Mixed_6c, n.Mixed_6d, n.Mixed_6e,
                      n.Mixed_7a, n.Mixed_7b, n.Mixed_7c, n.avgpool):
            x = layer(x)
        return torch.flatten(x, 1)
