import math
import os
import pickle

import pytest
import torch

from lego.metrics.egovlp import (
    CheckpointError,
    EgoVLP,
    EgoVLPConfig,
    EgoVLPSimilarity,
    build_egovlp,
    config_from_state_dict,
    load_egovlp_weights,
    read_checkpoint,
)
from lego.metrics.egovlp.model import DividedAttention
from tests.metrics.tiny_weights import tiny_egovlp_config, write_official_egovlp

# --- full-size architecture (meta device: no memory, no time) ---------------------------------


@pytest.mark.parametrize(("frames", "total"), [(4, 180_925_184), (16, 180_934_400)])
def test_full_size_key_names_shapes_and_parameter_count(frames, total):
    with torch.device("meta"):
        model = EgoVLP(EgoVLPConfig(num_frames=frames))
    sd = model.state_dict()
    assert len(sd) == 327
    assert sum(p.numel() for p in model.parameters()) == total
    assert sum(k.startswith("text_model.") for k in sd) == 100
    assert sum(k.startswith("video_model.") for k in sd) == 223
    video = sum(p.numel() for p in model.video_model.parameters())
    assert video == 114_168_576 + 768 * (frames - 4)
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["video_model.cls_token"] == (1, 1, 768)
    assert shapes["video_model.pos_embed"] == (1, 197, 768)
    assert shapes["video_model.temporal_embed"] == (1, frames, 768)
    assert shapes["video_model.patch_embed.proj.weight"] == (768, 3, 16, 16)
    assert shapes["video_model.blocks.11.timeattn.qkv.weight"] == (2304, 768)
    assert shapes["video_model.blocks.0.mlp.fc1.weight"] == (3072, 768)
    assert shapes["video_model.norm.weight"] == (768,)
    assert shapes["text_model.embeddings.word_embeddings.weight"] == (30522, 768)
    assert shapes["text_model.transformer.layer.5.ffn.lin2.weight"] == (768, 3072)
    assert shapes["txt_proj.1.weight"] == (256, 768)
    assert shapes["vid_proj.0.weight"] == (256, 768)
    block = [k.split(".")[3] for k in sd if k.startswith("video_model.blocks.0.")]
    assert list(dict.fromkeys(block)) == ["norm1", "attn", "timeattn", "norm2", "mlp", "norm3"]
    groups = list(dict.fromkeys(k.split(".")[0] for k in sd))
    assert groups == ["text_model", "video_model", "txt_proj", "vid_proj"]
    config = config_from_state_dict({"module." + k: v for k, v in sd.items()}, frames)
    sizes = (config.embed_dim, config.depth, config.num_heads, config.image_size)
    assert sizes == (768, 12, 12, 224)
    assert (config.text.n_layers, config.text.n_heads, config.text.vocab_size) == (6, 12, 30522)


# --- official checkpoint layout ----------------------------------------------------------------


def test_official_checkpoint_loads_strictly_through_the_restricted_loader(tmp_path):
    torch.manual_seed(0)
    source = EgoVLP(tiny_egovlp_config(4))
    path = tmp_path / "egovlp.pth"
    state = write_official_egovlp(path, source, temporal_rows=16)
    data = read_checkpoint(path)
    assert type(data["config"]).__name__.startswith("Placeholder")
    assert "parse_config.ConfigParser" in repr(data["config"])
    model = build_egovlp(path, num_frames=4)
    for key, value in model.state_dict().items():
        expected = state["module." + key]
        if key == "video_model.temporal_embed":
            expected = expected[:, :4]  # 16 rows truncated to the model's 4 frames
        assert torch.equal(value, expected), key
    x = torch.rand(2, 4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.compute_video(x), source.compute_video(x), atol=1e-6)


def test_temporal_embed_is_zero_padded_for_more_frames(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "four.pth"
    state = write_official_egovlp(path, EgoVLP(tiny_egovlp_config(4)), temporal_rows=4)
    model = build_egovlp(path, num_frames=16)
    embed = model.video_model.temporal_embed
    assert embed.shape == (1, 16, 64)
    assert torch.equal(embed[:, :4], state["module.video_model.temporal_embed"])
    assert torch.count_nonzero(embed[:, 4:]) == 0


def test_unprefixed_state_dict_and_strictness(tmp_path):
    torch.manual_seed(0)
    source = EgoVLP(tiny_egovlp_config(4))
    sd = source.state_dict()
    torch.save({"state_dict": sd}, tmp_path / "plain.pth")
    target = EgoVLP(tiny_egovlp_config(4))
    load_egovlp_weights(target, tmp_path / "plain.pth")
    assert torch.equal(target.vid_proj[0].weight, source.vid_proj[0].weight)
    broken = dict(sd)
    broken.pop("txt_proj.1.bias")
    broken["extra.weight"] = torch.zeros(1)
    torch.save({"state_dict": broken}, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match=r"missing \['txt_proj.1.bias'\].*unexpected"):
        load_egovlp_weights(EgoVLP(tiny_egovlp_config(4)), tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "nope.pth")


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_loader_never_runs_code_from_the_file(tmp_path):
    marker = tmp_path / "pwned"
    torch.manual_seed(0)
    sd = {"module." + k: v for k, v in EgoVLP(tiny_egovlp_config(4)).state_dict().items()}
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": sd, "config": _Exploit(marker)}, path)
    data = read_checkpoint(path)
    assert not marker.exists()
    assert "system" in repr(data["config"])
    # the plain pickle route would have run it: prove the payload is real
    pickle.loads(pickle.dumps(_Exploit(marker)))
    assert marker.exists()


# --- forward computation -------------------------------------------------------------------------


def _naive_divided_attention(attn, x, frames, over_time):
    b, n, d = x.shape
    h = attn.num_heads
    c = d // h
    patches = (n - 1) // frames
    q, k, v = attn.qkv(x).reshape(b, n, 3, h, c).unbind(2)
    out = torch.zeros(b, n, h, c)

    def attend(qi, idx):
        w = torch.einsum("bhc,bjhc->bhj", qi, k[:, idx]) / math.sqrt(c)
        return torch.einsum("bhj,bjhc->bhc", w.softmax(-1), v[:, idx])

    out[:, 0] = attend(q[:, 0], list(range(n)))
    for f in range(frames):
        for p in range(patches):
            token = 1 + f * patches + p
            if over_time:
                group = [1 + g * patches + p for g in range(frames)]
            else:
                group = [1 + f * patches + g for g in range(patches)]
            out[:, token] = attend(q[:, token], [0, *group])
    return attn.proj(out.reshape(b, n, d))


@pytest.mark.parametrize("over_time", [True, False])
def test_divided_attention_matches_a_naive_reference(over_time):
    torch.manual_seed(0)
    attn = DividedAttention(16, 2)
    frames, patches = 3, 4
    x = torch.randn(2, 1 + frames * patches, 16)
    with torch.no_grad():
        fast = attn(x, frames, over_time)
        slow = _naive_divided_attention(attn, x, frames, over_time)
    assert torch.allclose(fast, slow, atol=1e-5)


def test_fewer_frames_use_the_first_temporal_rows():
    torch.manual_seed(0)
    big = EgoVLP(tiny_egovlp_config(16)).eval()
    small = EgoVLP(tiny_egovlp_config(4)).eval()
    sd = big.state_dict()
    sd["video_model.temporal_embed"] = sd["video_model.temporal_embed"][:, :4]
    small.load_state_dict(sd)
    x = torch.rand(1, 4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(big.compute_video(x), small.compute_video(x))
    with pytest.raises(ValueError, match="at most 4"):
        small.compute_video(torch.rand(1, 5, 3, 32, 32))


# --- the metric --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("egovlp")
    torch.manual_seed(0)
    write_official_egovlp(root / "egovlp.pth", EgoVLP(tiny_egovlp_config(4)), 16)
    write_official_egovlp(root / "epic_mir_plus.pth", EgoVLP(tiny_egovlp_config(16)), 16)
    return root


@pytest.mark.parametrize(("name", "frames"), [("egovlp.pth", 4), ("epic_mir_plus.pth", 16)])
def test_context_clip_ordering_on_a_known_sequence(checkpoints, name, frames):
    metric = EgoVLPSimilarity(checkpoints / name, num_frames=frames, context=True)
    pre = torch.full((3, 8, 8), 0.25)
    x = torch.full((3, 8, 8), 0.75)
    clip = metric.clip(x, pre)
    values = clip[:, 0, 0, 0].tolist()
    assert values == [0.25] * (frames // 2) + [0.75] * (frames // 2)
    plain = EgoVLPSimilarity(checkpoints / name, num_frames=frames, context=False)
    assert plain.clip(x, None)[:, 0, 0, 0].tolist() == [0.75] * frames
    with pytest.raises(ValueError, match="context"):
        metric.clip(x, None)


def test_similarity_values(checkpoints):
    metric = EgoVLPSimilarity(checkpoints / "egovlp.pth", num_frames=4)
    torch.manual_seed(0)
    a, b = torch.rand(2, 3, 48, 64), torch.rand(2, 3, 48, 64)
    metric.update(a, a)
    assert metric.compute().item() == pytest.approx(100.0, abs=1e-3)
    metric.reset()
    metric.update(a, b)
    model = metric.model
    clips = torch.stack([metric.preprocess(f.unsqueeze(0).expand(4, -1, -1, -1)) for f in a])
    clips_b = torch.stack([metric.preprocess(f.unsqueeze(0).expand(4, -1, -1, -1)) for f in b])
    with torch.no_grad():
        ea, eb = model.compute_video(clips), model.compute_video(clips_b)
    expected = torch.nn.functional.cosine_similarity(ea, eb).mean().item() * 100
    assert metric.compute().item() == pytest.approx(expected, rel=1e-4)
    assert clips.shape == (2, 4, 3, 32, 32)


def test_preprocess_is_short_side_resize_then_centre_crop(checkpoints):
    metric = EgoVLPSimilarity(checkpoints / "egovlp.pth", num_frames=4)
    frame = torch.zeros(1, 3, 32, 64)
    frame[..., 16:48] = 1.0  # the centre half is white: it fills the 32 x 32 centre crop
    out = metric.preprocess(frame) * metric.std + metric.mean
    assert out.shape == (1, 3, 32, 32)
    assert torch.allclose(out, torch.ones_like(out), atol=1e-5)
