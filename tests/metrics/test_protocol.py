import io

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from lego.metrics.protocol import (
    decode,
    encode,
    finalize,
    get_protocol,
    output_size,
    postprocess,
    save_frame,
    to_uint8,
)

OFFICIAL, CLEAN = get_protocol("official"), get_protocol("clean")


def test_output_size_follows_the_metadata_aspect():
    assert output_size(1080, 1920) == (256, 455)
    assert output_size(480, 854) == (256, 455)
    assert output_size(256, 456) == (256, 456)
    assert output_size(64, 64) == (256, 256)
    with pytest.raises(ValueError, match="positive"):
        output_size(0, 10)


def test_min_max_stretch_truncates_on_a_known_image():
    frame = torch.tensor([0.2, 0.3, 0.45, 0.7]).view(1, 2, 2).expand(3, 2, 2)
    out = to_uint8(frame, "minmax")
    # (g - 0.2) / 0.5 * 255 = 0, 51, 127.5 -> 127 (truncated, not rounded), 255
    assert out[..., 0].tolist() == [[0, 51], [127, 255]]
    clamped = to_uint8(frame, "clamp")
    assert clamped[..., 0].tolist() == [[51, 76], [115, 178]]  # round(g * 255)


def test_official_postprocess_resizes_stretches_and_jpeg_roundtrips():
    photo = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float() / 255.0
    frame = torch.nn.functional.interpolate(photo[None], size=(64, 64), mode="bilinear")[0]
    frame = frame * 0.5 + 0.2  # a low-contrast output: the stretch must undo it
    size = output_size(480, 854)
    out = postprocess(frame, OFFICIAL, size)
    assert out.shape == (3, 256, 455)
    # the reference: bicubic resize, min-max to uint8, PIL JPEG at quality 75, read back
    resized = torch.nn.functional.interpolate(frame[None], size=size, mode="bicubic",
                                              align_corners=False)[0]
    lo, hi = resized.min(), resized.max()
    stretched = ((resized - lo) / (hi - lo) * 255).permute(1, 2, 0).numpy().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(stretched).save(buffer, format="JPEG", quality=75)
    expected = np.array(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    assert torch.equal(out, torch.from_numpy(expected).permute(2, 0, 1).float() / 255.0)
    assert out.min() < 0.05 and out.max() > 0.95
    # JPEG is lossy: the official image differs from the lossless one
    lossless = torch.from_numpy(stretched).permute(2, 0, 1).float() / 255.0
    assert 0 < (out - lossless).abs().mean() < 0.05


def test_clean_postprocess_is_lossless_clamp():
    torch.manual_seed(0)
    frame = torch.rand(3, 20, 30) * 1.2 - 0.1
    out = postprocess(frame, CLEAN)
    expected = frame.clamp(0, 1).mul(255).round().div(255)
    assert torch.allclose(out, expected)
    assert torch.equal(decode(encode(finalize(frame, CLEAN), CLEAN)), out)


def test_save_frame_uses_the_protocol_format(tmp_path):
    frame = torch.rand(3, 16, 16)
    jpg = save_frame(frame, tmp_path / "c" / "a" / "f.jpg", OFFICIAL, size=(32, 48))
    png = save_frame(frame, tmp_path / "c" / "a" / "f.jpg", CLEAN)
    assert jpg.suffix == ".jpg" and Image.open(jpg).format == "JPEG"
    assert Image.open(jpg).size == (48, 32)
    assert png.suffix == ".png" and Image.open(png).format == "PNG"
    with pytest.raises(ValueError, match="unknown protocol"):
        get_protocol("paper")
