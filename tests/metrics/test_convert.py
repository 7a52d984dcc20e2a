import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoProcessor, BlipForConditionalGeneration

from lego.metrics.convert import (
    CheckpointConversionError,
    blip_from_original,
    blip_tokenizer,
    clip_vision_from_original,
    convert_to_dir,
    load_original_state,
)
from tests.metrics.tiny_original import write_original_blip, write_original_clip
from tests.metrics.tiny_weights import write_distilbert_dir

HEAD = 16  # width 32 -> 2 heads: the head split is exercised


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("original")
    tok_dir = write_distilbert_dir(root / "distilbert-base-uncased")
    tokenizer = blip_tokenizer(tok_dir)
    blip = root / "model_base_caption_capfilt_large.pth"
    return {
        "root": root, "tok_dir": tok_dir, "tokenizer": tokenizer, "blip": blip,
        "blip_state": write_original_blip(blip, len(tokenizer)),
        # released head width 64: what the metrics and convert_to_dir use
        "blip64": root / "model_large_caption.pth",
        "blip64_state": write_original_blip(root / "model_large_caption.pth", len(tokenizer),
                                            width=64, text_width=64, seed=3),
        "clip": root / "ViT-L-14.pt", "clip_state": write_original_clip(root / "ViT-L-14.pt"),
        "clip_plain": root / "clip_state.pth",
        "clip_plain_state": write_original_clip(root / "clip_state.pth", torchscript=False,
                                                half=False),
    }


def _ln(x, s, key, eps):
    return F.layer_norm(x, x.shape[-1:], s[f"{key}.weight"], s[f"{key}.bias"], eps)


def _lin(x, s, key):
    return F.linear(x, s[f"{key}.weight"], s[f"{key}.bias"])


def _attend(q, k, v, heads, causal=False):
    b, nq, width = q.shape
    d = width // heads
    q, k, v = (t.reshape(b, t.shape[1], heads, d).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / d**0.5
    if causal:
        scores = scores.masked_fill(torch.ones(nq, nq).triu(1).bool(), float("-inf"))
    return (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, nq, width)


def clip_reference(s, images, heads):
    """OpenAI ``VisionTransformer.forward`` written from the original tensors."""
    width, patch = s["visual.conv1.weight"].shape[0], s["visual.conv1.weight"].shape[-1]
    x = F.conv2d(images, s["visual.conv1.weight"], stride=patch).flatten(2).transpose(1, 2)
    cls = s["visual.class_embedding"].expand(x.shape[0], 1, width)
    x = torch.cat([cls, x], 1) + s["visual.positional_embedding"]
    x = _ln(x, s, "visual.ln_pre", 1e-5)
    layer = 0
    while f"visual.transformer.resblocks.{layer}.ln_1.weight" in s:
        b = f"visual.transformer.resblocks.{layer}"
        attn = nn.MultiheadAttention(width, heads, batch_first=True)  # OpenAI's module
        attn.in_proj_weight.data = s[f"{b}.attn.in_proj_weight"]
        attn.in_proj_bias.data = s[f"{b}.attn.in_proj_bias"]
        attn.out_proj.weight.data = s[f"{b}.attn.out_proj.weight"]
        attn.out_proj.bias.data = s[f"{b}.attn.out_proj.bias"]
        h = _ln(x, s, f"{b}.ln_1", 1e-5)
        x = x + attn(h, h, h, need_weights=False)[0]
        h = _lin(_ln(x, s, f"{b}.ln_2", 1e-5), s, f"{b}.mlp.c_fc")
        x = x + _lin(h * torch.sigmoid(1.702 * h), s, f"{b}.mlp.c_proj")  # QuickGELU
        layer += 1
    return _ln(x[:, 0], s, "visual.ln_post", 1e-5) @ s["visual.proj"]


def blip_vision_reference(s, images, heads):
    """Salesforce BLIP ``VisionTransformer.forward`` (timm blocks, LayerNorm eps 1e-6)."""
    v = "visual_encoder"
    w = s[f"{v}.patch_embed.proj.weight"]
    x = F.conv2d(images, w, s[f"{v}.patch_embed.proj.bias"], stride=w.shape[-1])
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([s[f"{v}.cls_token"].expand(x.shape[0], -1, -1), x], 1) + s[f"{v}.pos_embed"]
    layer = 0
    while f"{v}.blocks.{layer}.norm1.weight" in s:
        b = f"{v}.blocks.{layer}"
        q, k, val = _lin(_ln(x, s, f"{b}.norm1", 1e-6), s, f"{b}.attn.qkv").chunk(3, -1)
        x = x + _lin(_attend(q, k, val, heads), s, f"{b}.attn.proj")
        x = x + _lin(F.gelu(_lin(_ln(x, s, f"{b}.norm2", 1e-6), s, f"{b}.mlp.fc1")), s,
                     f"{b}.mlp.fc2")
        layer += 1
    return _ln(x, s, f"{v}.norm", 1e-6)


def blip_decoder_reference(s, ids, image_embeds, heads):
    """BLIP ``BertLMHeadModel`` logits: causal self-attention, cross-attention, LM head."""
    t, eps = "text_decoder.bert", 1e-12
    x = s[f"{t}.embeddings.word_embeddings.weight"][ids]
    x = _ln(x + s[f"{t}.embeddings.position_embeddings.weight"][: ids.shape[1]], s,
            f"{t}.embeddings.LayerNorm", eps)
    layer = 0
    while f"{t}.encoder.layer.{layer}.output.dense.weight" in s:
        b = f"{t}.encoder.layer.{layer}"
        for part, kv, causal in (("attention", None, True), ("crossattention", image_embeds,
                                                             False)):
            src = x if kv is None else kv
            p = f"{b}.{part}.self"
            ctx = _attend(_lin(x, s, f"{p}.query"), _lin(src, s, f"{p}.key"),
                          _lin(src, s, f"{p}.value"), heads, causal)
            x = _ln(_lin(ctx, s, f"{b}.{part}.output.dense") + x, s,
                    f"{b}.{part}.output.LayerNorm", eps)
        h = F.gelu(_lin(x, s, f"{b}.intermediate.dense"))
        x = _ln(_lin(h, s, f"{b}.output.dense") + x, s, f"{b}.output.LayerNorm", eps)
        layer += 1
    c = "text_decoder.cls.predictions"
    h = _ln(F.gelu(_lin(x, s, f"{c}.transform.dense")), s, f"{c}.transform.LayerNorm", eps)
    return F.linear(h, s[f"{c}.decoder.weight"], s[f"{c}.bias"])


def test_clip_image_embedding_equals_the_original_computation(files):
    torch.manual_seed(0)
    images = torch.randn(2, 3, 32, 32)
    for key in ("clip", "clip_plain"):  # TorchScript archive (float16) and plain state dict
        model = clip_vision_from_original(files[key], head_dim=HEAD)
        assert model.config.image_size == 32 and model.config.patch_size == 8
        assert model.config.num_attention_heads == 2 and model.config.projection_dim == 16
        assert all(p.dtype == torch.float32 for p in model.parameters())
        with torch.no_grad():
            ours = model(pixel_values=images).image_embeds
            ref = clip_reference(files[f"{key}_state"], images, heads=2)
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    archive = load_original_state(files["clip"])
    assert archive["visual.proj"].dtype == torch.float32
    torch.testing.assert_close(archive["visual.proj"], files["clip_state"]["visual.proj"])


def test_blip_vision_and_decoder_equal_the_original_computation(files):
    s = files["blip_state"]
    model = blip_from_original(files["blip"], files["tokenizer"], head_dim=HEAD)
    vision = model.config.vision_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.image_size,
            vision.patch_size) == (32, 2, 32, 16)
    text = model.config.text_config
    assert text.vocab_size == len(files["tokenizer"]) and text.num_hidden_layers == 2
    assert text.bos_token_id == files["tokenizer"].convert_tokens_to_ids("[DEC]")
    torch.manual_seed(0)
    images = torch.randn(2, 3, 32, 32)
    ids = torch.tensor([[text.bos_token_id, 5, 6, 7, 9], [text.bos_token_id, 8, 5, 6, 10]])
    with torch.no_grad():
        embeds = model.vision_model(pixel_values=images).last_hidden_state
        torch.testing.assert_close(embeds, blip_vision_reference(s, images, 2), atol=1e-5,
                                   rtol=1e-5)
        logits = model.text_decoder(input_ids=ids, attention_mask=torch.ones_like(ids),
                                    encoder_hidden_states=embeds).logits
    torch.testing.assert_close(logits, blip_decoder_reference(s, ids, embeds, 2), atol=1e-4,
                               rtol=1e-5)


def test_converted_blip_saved_and_reloaded_captions_identically(files, tmp_path):
    out = convert_to_dir("blip", files["blip64"], tmp_path / "blip", files["tok_dir"])
    reloaded = BlipForConditionalGeneration.from_pretrained(out).eval()
    processor = AutoProcessor.from_pretrained(out)
    assert processor.tokenizer.bos_token == "[DEC]"
    assert processor.tokenizer.convert_tokens_to_ids("[ENC]") == len(files["tokenizer"]) - 1
    model = blip_from_original(files["blip64"], files["tokenizer"])  # default head width 64
    for key, value in model.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key
    torch.manual_seed(1)
    pixels = torch.randn(2, 3, 32, 32)
    prompt = processor.tokenizer(["a picture of "] * 2, return_tensors="pt")
    args = {"pixel_values": pixels, "input_ids": prompt["input_ids"],
            "attention_mask": prompt["attention_mask"], "num_beams": 3, "max_length": 12,
            "min_length": 5}
    with torch.no_grad():
        a, b = model.generate(**args), reloaded.generate(**args)
    assert torch.equal(a, b) and a.shape[1] >= 5
    assert (a[:, 0] == model.config.text_config.bos_token_id).all()


def _rewrite(state, path, wrap):
    torch.save({"model": state} if wrap else state, path)
    return path


def test_unmapped_and_missing_keys_name_the_file_and_the_keys(files, tmp_path):
    tokenizer = files["tokenizer"]
    extra = dict(files["blip_state"])
    extra["visual_encoder.blocks.0.attn.rel_pos.weight"] = torch.zeros(3)
    extra["text_decoder.bert.pooler.dense.weight"] = torch.zeros(3)
    extra["visual_encoder_m.cls_token"] = torch.zeros(3)  # a momentum tower: not captioning
    path = _rewrite(extra, tmp_path / "extra.pth", True)
    with pytest.raises(CheckpointConversionError) as err:
        blip_from_original(path, tokenizer, head_dim=HEAD)
    message = str(err.value)
    assert str(path) in message and "original keys not mapped" in message
    assert "visual_encoder.blocks.0.attn.rel_pos.weight" in message
    assert "text_decoder.bert.pooler.dense.weight" in message
    assert "visual_encoder_m" not in message
    missing = {k: v for k, v in files["blip_state"].items()
               if k != "text_decoder.bert.encoder.layer.1.crossattention.output.dense.bias"}
    path = _rewrite(missing, tmp_path / "missing.pth", True)
    with pytest.raises(CheckpointConversionError, match="left unset: .*layer.1.crossattention"
                       r"\.output\.dense\.bias") as err:
        blip_from_original(path, tokenizer, head_dim=HEAD)
    assert str(path) in str(err.value)
    clip = dict(files["clip_plain_state"])
    clip["visual.transformer.resblocks.1.attn.bias_k"] = torch.zeros(1, 1, 32)
    del clip["visual.ln_post.bias"]
    path = _rewrite(clip, tmp_path / "clip.pt", False)
    with pytest.raises(CheckpointConversionError) as err:
        clip_vision_from_original(path, head_dim=HEAD)
    message = str(err.value)
    assert str(path) in message and "resblocks.1.attn.bias_k" in message
    assert "vision_model.post_layernorm.bias" in message
    resnet = {k: v for k, v in files["clip_plain_state"].items() if k != "visual.conv1.weight"}
    with pytest.raises(CheckpointConversionError, match="missing key 'visual.conv1.weight'"):
        clip_vision_from_original(_rewrite(resnet, tmp_path / "rn.pt", False), head_dim=HEAD)
    with pytest.raises(CheckpointConversionError, match="not a multiple of the head width 64"):
        clip_vision_from_original(files["clip"])  # width 32 with the released head width 64


def test_tokenizer_must_fit_the_decoder_and_files_must_be_checkpoints(files, tmp_path):
    small = write_original_blip(tmp_path / "small.pth", len(files["tokenizer"]) - 1)
    assert small
    with pytest.raises(CheckpointConversionError,
                       match=r"small\.pth: the text decoder has \d+ token embeddings but the "
                       r"tokenizer has \d+ tokens.*bert-base-uncased"):
        blip_from_original(tmp_path / "small.pth", files["tokenizer"], head_dim=HEAD)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointConversionError, match="junk.pth: not a readable checkpoint"):
        load_original_state(tmp_path / "junk.pth")
    torch.save({"model": {"a": [1, 2]}}, tmp_path / "list.pth")
    with pytest.raises(CheckpointConversionError, match="not tensors: \\['a'\\]"):
        load_original_state(tmp_path / "list.pth")
