import pytest
import torch
import yaml
from diffusers import UNet2DConditionModel

from lego.hub import STABLE_DIFFUSION_15
from lego.models.editing.components import grow_conv_in
from lego.models.editing.conditioning import (
    VLMConditioner,
    assemble_context,
    conditioning_dropout_masks,
)
from lego.models.editing.guidance import sample_generators, sample_seed
from lego.models.editing.sd15 import SD15_UNET
from tests.models.editing.reference_sampler import combine_guidance


def test_dropout_rates_match_five_five_five():
    g = torch.Generator().manual_seed(0)
    n = 200_000
    drop_prompt, drop_image = conditioning_dropout_masks(n, 0.05, generator=g)
    rate = lambda m: m.float().mean().item()  # noqa: E731
    assert rate(drop_prompt & ~drop_image) == pytest.approx(0.05, abs=0.003)
    assert rate(drop_prompt & drop_image) == pytest.approx(0.05, abs=0.003)
    assert rate(~drop_prompt & drop_image) == pytest.approx(0.05, abs=0.003)
    assert rate(~drop_prompt & ~drop_image) == pytest.approx(0.85, abs=0.005)


def test_guidance_combination_matches_formula():
    full = torch.tensor([1.0, 2.0, -3.0])
    image_only = torch.tensor([0.5, 1.0, 1.0])
    uncond = torch.tensor([0.0, -1.0, 2.0])
    out = combine_guidance(full, image_only, uncond, text_scale=7.5, image_scale=1.5)
    expected = torch.tensor(
        [
            0.0 + 7.5 * 0.5 + 1.5 * 0.5,
            -1.0 + 7.5 * 1.0 + 1.5 * 2.0,
            2.0 + 7.5 * -4.0 + 1.5 * -1.0,
        ]
    )
    torch.testing.assert_close(out, expected)
    # Scales of 1 give the fully conditional prediction back.
    torch.testing.assert_close(combine_guidance(full, image_only, uncond, 1.0, 1.0), full)


def test_vlm_conditioner_layers_follow_the_official_defaults():
    torch.manual_seed(23)
    cond = VLMConditioner(vlm_dim=40, cross_attention_dim=32)
    layers = cond.self_attn_mix.layers
    assert len(layers) == 2 and cond.self_attn_mix.norm is None
    layer = layers[0]
    assert layer.norm_first and layer.self_attn.batch_first and layer.self_attn.num_heads == 8
    assert layer.linear1.out_features == 2048 and layer.dropout.p == 0.1
    assert layer.activation_relu_or_gelu == 1  # relu
    for a, b in zip(layers[0].parameters(), layers[1].parameters(), strict=True):
        assert torch.equal(a, b)  # deep copies: identical at initialisation
    cond.eval()
    tokens = cond(torch.randn(2, 6, 40), torch.randn(2, 77, 40))
    assert tokens.shape == (2, 6 + 77, 32)
    ctx = assemble_context(torch.randn(2, 77, 32), tokens)
    assert ctx.shape == (2, 77 + 6 + 77, 32)
    with pytest.raises(ValueError, match="not divisible"):
        VLMConditioner(vlm_dim=8, cross_attention_dim=30)


def test_text_mask_is_an_option():
    torch.manual_seed(0)
    cond = VLMConditioner(vlm_dim=16, cross_attention_dim=16, use_text_mask=True).eval()
    text = torch.randn(1, 77, 16)
    mask = torch.zeros(1, 77, dtype=torch.bool)
    mask[:, :5] = True
    a = cond(torch.randn(1, 3, 16), text, mask)[:, 3:8]
    text2 = text.clone()
    text2[:, 5:] = torch.randn(1, 72, 16)  # padded rows change: masked tokens must not matter
    b = cond(torch.randn(1, 3, 16), text2, mask)[:, 3:8]
    torch.testing.assert_close(a, b)
    cond.register_to_config(use_text_mask=False)
    c = cond(torch.randn(1, 3, 16), text2, mask)[:, 3:8]
    assert not torch.allclose(a, c)


def test_real_size_config_on_meta_device_gives_sd15_shapes_and_410_tokens():
    with open("configs/ego4d/lego.yaml") as f:
        model_args = yaml.safe_load(f)["model"]["init_args"]
    assert model_args["pretrained"] == STABLE_DIFFUSION_15
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(SD15_UNET)
        grow_conv_in(unet, 8)
        cond = VLMConditioner(
            vlm_dim=model_args["vlm_dim"], cross_attention_dim=unet.config.cross_attention_dim
        )
        tokens = cond(torch.empty(1, 256, 5120), torch.empty(1, 77, 5120))
        context = assemble_context(torch.empty(1, 77, 768), tokens)
    assert unet.conv_in.weight.shape == (320, 8, 3, 3)
    assert unet.config.in_channels == 8 and unet.config.cross_attention_dim == 768
    assert context.shape == (1, 410, 768)
    n_params = sum(p.numel() for p in cond.parameters())
    assert n_params == 18_893_824  # method.md 4.2


def test_sample_seeds_are_stable_and_distinct():
    assert sample_seed("a/b", 0) == sample_seed("a/b", 0)
    assert sample_seed("a/b", 0) != sample_seed("a/b", 1) != sample_seed("a/c", 0)
    g1, g2 = sample_generators(["a/b", "a/c"], 0)
    assert torch.equal(
        torch.randn(3, generator=g1), torch.randn(3, generator=sample_generators(["a/b"], 0)[0])
    )
    assert not torch.equal(
        torch.randn(3, generator=g2), torch.randn(3, generator=sample_generators(["a/b"], 0)[0])
    )
