import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPModel

from lego.metrics.clip_similarity import CLIP_MEAN, CLIP_STD, CLIPImageSimilarity
from tests.metrics.tiny_weights import write_clip_dir


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return write_clip_dir(tmp_path_factory.mktemp("clip") / "clip-vit-large-patch14")


def test_vision_tower_loads_every_weight_of_a_full_clip_checkpoint(clip_dir):
    metric = CLIPImageSimilarity(clip_dir)
    full = CLIPModel.from_pretrained(clip_dir)
    ours = metric.model.state_dict()
    theirs = full.state_dict()
    vision_keys = [k for k in theirs if k.startswith(("vision_model.", "visual_projection."))]
    assert sorted(ours) == sorted(vision_keys)
    for key in vision_keys:
        assert torch.equal(ours[key], theirs[key]), key


def test_similarity_equals_clip_image_features_with_a_224_style_squash(clip_dir):
    metric = CLIPImageSimilarity(clip_dir)
    full = CLIPModel.from_pretrained(clip_dir).eval()
    torch.manual_seed(0)
    a, b = torch.rand(3, 3, 40, 70), torch.rand(3, 3, 40, 70)
    metric.update(a, b)
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)

    def feats(x):
        x = F.interpolate(x, size=(32, 32), mode="bicubic", align_corners=False)
        out = full.get_image_features(pixel_values=(x - mean) / std)
        out = out if isinstance(out, torch.Tensor) else out.pooler_output
        return F.normalize(out, dim=-1)

    with torch.no_grad():
        expected = (feats(a) * feats(b)).sum(-1).mean().item() * 100
    assert metric.compute().item() == pytest.approx(expected, rel=1e-4)
    metric.reset()
    metric.update(a, a)
    assert metric.compute().item() == pytest.approx(100.0, abs=1e-3)


def test_missing_vision_weights_are_an_error(clip_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    broken.mkdir()
    for f in clip_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    state = load_file(broken / "model.safetensors")
    del state["visual_projection.weight"]
    save_file(state, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(RuntimeError, match="visual_projection.weight"):
        CLIPImageSimilarity(broken)
