import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from lego.metrics.blip import BLIPCaptionSimilarity
from lego.metrics.egovlp import EgoVLP
from tests.metrics.tiny_weights import (
    tiny_egovlp_config,
    write_blip_dir,
    write_distilbert_dir,
    write_official_egovlp,
)


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("blip")
    torch.manual_seed(0)
    write_official_egovlp(root / "egovlp.pth", EgoVLP(tiny_egovlp_config(4)), 16)
    return root / "egovlp.pth", write_distilbert_dir(root / "distilbert-base-uncased"), \
        write_blip_dir(root / "blip-image-captioning-base")


def test_caption_then_egovlp_text_cosine(parts):
    ckpt, tok_dir, blip_dir = parts
    metric = BLIPCaptionSimilarity(blip_dir, ckpt, tok_dir)
    torch.manual_seed(0)
    frames = torch.rand(2, 3, 40, 60)
    descriptions = ["the man picks up the red cup", "the left hand cuts the bread"]
    metric.update(frames, descriptions)
    captions = metric.captions
    assert len(captions) == 2 and all(isinstance(c, str) and c for c in captions)
    assert not any(c.startswith("a picture of") for c in captions)  # prompt removed
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)

    def embed(text):
        t = tokenizer([text], padding=True, truncation=True, return_tensors="pt")
        with torch.no_grad():
            return metric.egovlp.compute_text(t["input_ids"], t["attention_mask"])

    expected = [F.cosine_similarity(embed(c), embed(d)).item()
                for c, d in zip(captions, descriptions, strict=True)]
    assert metric.compute().item() == pytest.approx(sum(expected) / 2 * 100, rel=1e-4)
    # the caption is deterministic (beam search) and depends on the frame
    again = metric.caption(frames)
    assert again == captions


def test_generation_settings_are_the_papers(parts):
    ckpt, tok_dir, blip_dir = parts
    metric = BLIPCaptionSimilarity(blip_dir, ckpt, tok_dir)
    assert (metric.prompt, metric.num_beams, metric.max_length, metric.min_length) == (
        "a picture of ", 3, 20, 5)
    with pytest.raises(ValueError, match="2 frames but 1 descriptions"):
        metric.update(torch.rand(2, 3, 32, 32), ["only one"])
