"""ProxEditPipeline: DDIM inversion, proximal guidance, guidance toward the input, MasaCtrl."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    DDIMInverseScheduler,
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    ImagePipelineOutput,
    UNet2DConditionModel,
)
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from transformers import CLIPTextModel, CLIPTokenizer

from lego.models.editing.autoencoder import PixelUnshuffleAutoencoder
from lego.models.editing.bootstrap import write_diffusion_backbone
from lego.pipelines import MutualAttentionState, MutualSelfAttentionProcessor, ProxEditPipeline
from lego.pipelines.mutual_attention import mutual_self_attention
from lego.pipelines.proxedit import (
    dilate,
    proximal_guidance,
    proximal_threshold,
    split_prediction,
)
from lego.synthego import vocabulary
from lego.synthego.render import render
from lego.synthego.scene import make_scene

SYNTHEGO_SD = Path(__file__).resolve().parents[2] / "pretrained" / "synthego-sd"
SOURCE = "a red cup at the upper left of the table."
TARGET = "a blue bowl at the lower right of the table."


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run faster (and far more steadily on a busy 2-core machine) on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(root: Path, vae_class: type, **scheduler_kwargs) -> ProxEditPipeline:
    """A ProxEditPipeline on a backbone folder written by ``write_diffusion_backbone``."""
    scheduler = DDIMScheduler.from_pretrained(
        root,
        subfolder="scheduler",
        **{"clip_sample": False, "set_alpha_to_one": False, **scheduler_kwargs},
    )
    pipe = ProxEditPipeline(
        vae=vae_class.from_pretrained(root / "vae"),
        text_encoder=CLIPTextModel.from_pretrained(root / "text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(root / "tokenizer"),
        unet=UNet2DConditionModel.from_pretrained(root / "unet"),
        scheduler=scheduler,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> Path:
    """Pixel-unshuffle autoencoder (48 latent channels, factor 4), random 7-layer UNet, 32 px."""
    root = tmp_path_factory.mktemp("proxedit-tiny")
    return write_diffusion_backbone(root, vocabulary(), resolution=32, hidden_size=32)


@pytest.fixture(scope="module")
def pipe(backbone) -> ProxEditPipeline:
    return build(backbone, PixelUnshuffleAutoencoder)


@pytest.fixture(scope="module")
def sd_pipe() -> ProxEditPipeline:
    """The shipped (trained) SynthEgo text-to-image model, loaded from its SD pipeline folder."""
    loaded = ProxEditPipeline.from_pretrained(SYNTHEGO_SD)
    loaded.set_progress_bar_config(disable=True)
    return loaded


def frame(size: int, clip: int = 0) -> PIL.Image.Image:
    """A SynthEgo input frame."""
    return render(make_scene(0, "val", clip), None, size, size)[0]


def encode(pipe: ProxEditPipeline, image) -> torch.Tensor:
    pixels = pipe.image_processor.preprocess(image)
    return pipe.vae.encode(pixels).latent_dist.mode() * pipe.vae.config.scaling_factor


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


class Recorder:
    """``callback_on_step_end`` keeping the tensors of every step."""

    def __init__(self) -> None:
        self.steps: list[dict] = []

    def __call__(self, pipe, step, timestep, tensors):
        self.steps.append({"t": int(timestep), **tensors})
        return {}


# ------------------------------------------------------------------------------------------------
# Building blocks


@pytest.mark.parametrize("kind", ["epsilon", "sample", "v_prediction"])
def test_split_prediction_recovers_eps_and_x0(kind):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    alpha = 0.3
    z = alpha**0.5 * x0 + (1 - alpha) ** 0.5 * eps
    output = {
        "epsilon": eps,
        "sample": x0,
        "v_prediction": alpha**0.5 * eps - (1 - alpha) ** 0.5 * x0,
    }
    got_eps, got_x0 = split_prediction(output[kind], z, alpha, kind)
    torch.testing.assert_close(got_eps, eps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_x0, x0, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="prediction_type"):
        split_prediction(eps, z, alpha, "flow")


def test_threshold_keeps_one_minus_quantile_per_sample():
    g = torch.Generator().manual_seed(0)
    scales = torch.tensor([1.0, 10.0, 0.1, 3.0]).view(4, 1, 1, 1)
    delta = torch.randn(4, 4, 16, 16, generator=g) * scales
    n = delta[0].numel()
    for q in (0.4, 0.7, 0.9):
        lam = proximal_threshold(delta, q)
        assert lam.shape == (4, 1, 1, 1)
        kept = (delta.abs() > lam).flatten(1).float().mean(1)
        assert torch.all((kept - (1 - q)).abs() <= 1.0 / n), (q, kept)
        # Per sample: a sample's threshold ignores its batch-mates (and scales with it).
        for i in range(4):
            torch.testing.assert_close(lam[i : i + 1], proximal_threshold(delta[i : i + 1], q))
        assert lam[1].item() > 50 * lam[2].item()
        _, mask = proximal_guidance(delta, q, "l0", mask_rule="selected")
        torch.testing.assert_close(mask.flatten(1).mean(1), kept)
    # A negative quantile is a fixed threshold; 0 keeps every nonzero entry.
    assert torch.all(proximal_threshold(delta, -0.5) == 0.5)
    assert torch.all(proximal_threshold(delta, 0.0) == 0.0)
    with pytest.raises(ValueError, match="quantile"):
        proximal_threshold(delta, 1.5)
    with pytest.raises(ValueError, match="quantile"):
        proximal_threshold(delta, float("nan"))


def test_proximal_variants():
    g = torch.Generator().manual_seed(1)
    delta = torch.randn(3, 4, 8, 8, generator=g)
    lam = proximal_threshold(delta, 0.6)
    keep = delta.abs() > lam
    soft = torch.sign(delta) * torch.clamp(delta.abs() - lam, min=0)
    l0, mask = proximal_guidance(delta, 0.6, "l0", mask_rule="selected")
    torch.testing.assert_close(l0, soft)  # the official "l0" is the soft threshold
    torch.testing.assert_close(mask, keep.float())
    l1, _ = proximal_guidance(delta, 0.6, "l1")
    torch.testing.assert_close(l1, torch.where(keep, delta - 2 * lam * torch.sign(delta), 0.0))
    hard, _ = proximal_guidance(delta, 0.6, "hard")
    torch.testing.assert_close(hard, torch.where(keep, delta, 0.0))
    assert torch.equal(hard[keep], delta[keep])
    same, _ = proximal_guidance(delta, 0.6, None)
    assert torch.equal(same, delta)
    # The prox is the same under both mask rules; "selected" gives every mode the same mask and
    # "official" tests the prox itself (the default).
    for mode in ("l0", "l1", "hard", None):
        prox, selected = proximal_guidance(delta, 0.6, mode, mask_rule="selected")
        again, official = proximal_guidance(delta, 0.6, mode, mask_rule="official")
        assert torch.equal(prox, again)
        assert torch.equal(selected, keep.float())
        assert torch.equal(official, (prox.abs() > lam).float())
        assert torch.equal(proximal_guidance(delta, 0.6, mode)[1], official)
    with pytest.raises(ValueError, match="proximal"):
        proximal_guidance(delta, 0.6, "l2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mask_rule"):
        proximal_guidance(delta, 0.6, "l0", mask_rule="both")  # type: ignore[arg-type]


def test_official_mask_on_a_hand_made_tensor():
    """λ = 1: the official mask is |Δ| > 2λ for l0, > 3λ for l1, > λ for hard (and None)."""
    magnitudes = torch.tensor([0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 10.0])
    signs = torch.tensor([1.0, -1.0, -1.0, 1.0, 1.0, -1.0, 1.0, -1.0])
    delta = (magnitudes * signs).view(1, 1, 1, 8)
    expected = {
        "l0": [0, 0, 0, 0, 1, 1, 1, 1],  # |prox| = |Δ| − 1
        "l1": [0, 0, 0, 0, 0, 0, 1, 1],  # |prox| = ||Δ| − 2|: 0.5 at 1.5 (sign flipped), 0.5 at 2.5
        "hard": [0, 0, 1, 1, 1, 1, 1, 1],  # |prox| = |Δ|
        None: [0, 0, 1, 1, 1, 1, 1, 1],
    }
    selected = torch.tensor([0, 0, 1, 1, 1, 1, 1, 1.0]).view(1, 1, 1, 8)
    for mode, values in expected.items():
        prox, mask = proximal_guidance(delta, -1.0, mode, mask_rule="official")
        assert torch.equal(mask, torch.tensor(values, dtype=delta.dtype).view(1, 1, 1, 8)), mode
        assert torch.equal(mask, (prox.abs() > 1.0).float()), mode
        _, same = proximal_guidance(delta, -1.0, mode, mask_rule="selected")
        assert torch.equal(same, selected), mode
    l1, _ = proximal_guidance(delta, -1.0, "l1")
    assert l1[0, 0, 0, 2] == 0.5 and l1[0, 0, 0, 4] == 0.5  # the sign flip of λ < |Δ| < 2λ


@pytest.mark.parametrize("q", [0.5, 0.7, 0.9])
def test_official_mask_fraction_on_a_gaussian(q):
    """Official rule, quantile q: l0 edits the entries with |Δ| > 2λ, l1 those with |Δ| > 3λ."""
    g = torch.Generator().manual_seed(2)
    delta = torch.randn(4, 4, 64, 64, generator=g) * torch.tensor([1.0, 5.0, 0.2, 2.0]).view(
        4, 1, 1, 1
    )
    n = delta[0].numel()
    lam = proximal_threshold(delta, q)
    for mode, factor in (("l0", 2), ("l1", 3), ("hard", 1)):
        _, mask = proximal_guidance(delta, q, mode)
        fraction = mask.flatten(1).mean(1)
        expected = (delta.abs() > factor * lam).flatten(1).float().mean(1)  # from the sample
        # Equal up to float rounding at the boundary (a few entries at most).
        assert torch.all((fraction - expected).abs() <= 3.0 / n), (mode, fraction, expected)
        if mode == "hard":
            assert torch.all((fraction - (1 - q)).abs() <= 1.0 / n)
        else:  # far fewer entries than the 1 − q the threshold selects
            assert torch.all(fraction < 0.5 * (1 - q)), (mode, fraction)


@pytest.mark.parametrize("mask_rule", ["selected", "official"])
def test_dilation_of_a_single_pixel(mask_rule):
    delta = torch.zeros(1, 2, 11, 11)
    delta[0, 0, 5, 5] = 1.0
    delta[0, 1, 0, 0] = -1.0
    delta[0, 1, 8, 8] = 0.375  # selected (|Δ| > λ) but not official (|prox(Δ)| = 0.125 <= λ)
    _, mask0 = proximal_guidance(delta, -0.25, "l0", dilate_mask=0, mask_rule=mask_rule)
    assert mask0.sum() == (3 if mask_rule == "selected" else 2)
    delta[0, 1, 8, 8] = 0.0
    _, mask0 = proximal_guidance(delta, -0.25, "l0", dilate_mask=0, mask_rule=mask_rule)
    assert mask0.sum() == 2
    _, mask1 = proximal_guidance(delta, -0.25, "l0", dilate_mask=1, mask_rule=mask_rule)
    assert mask1[0, 0].sum() == 9 and torch.all(mask1[0, 0, 4:7, 4:7] == 1)
    assert mask1[0, 1].sum() == 4 and torch.all(mask1[0, 1, :2, :2] == 1)  # clipped at the corner
    _, mask2 = proximal_guidance(delta, -0.25, "l0", dilate_mask=2, mask_rule=mask_rule)
    assert mask2[0, 0].sum() == 25 and mask2[0, 1].sum() == 9
    with pytest.raises(ValueError, match="radius"):
        dilate(mask0, -1)


# ------------------------------------------------------------------------------------------------
# DDIM inversion and reconstruction


def test_ddim_matches_diffusers_schedulers(pipe):
    """Inversion equals DDIMInverseScheduler, sampling DDIMScheduler.step (eps model, leading)."""
    image = frame(32)
    z0 = encode(pipe, image)
    embeds = pipe._encode_prompt([SOURCE], torch.device("cpu"))
    steps = 10
    trajectory = pipe.invert(z0, embeds, steps)
    assert len(trajectory) == steps + 1 and torch.equal(trajectory[0], z0)
    inverse = DDIMInverseScheduler.from_config(pipe.scheduler.config)
    inverse.set_timesteps(steps)
    z = z0
    with torch.no_grad():
        for k, t in enumerate(inverse.timesteps, start=1):
            z = inverse.step(pipe.unet(z, t, encoder_hidden_states=embeds).sample, t, z).prev_sample
            assert relative(trajectory[k], z) < 1e-5
        scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        scheduler.set_timesteps(steps)
        for t in scheduler.timesteps:
            z = scheduler.step(
                pipe.unet(z, t, encoder_hidden_states=embeds).sample, t, z
            ).prev_sample
    out = pipe(
        SOURCE,
        image,
        source_prompt=SOURCE,
        num_inference_steps=steps,
        guidance_scale=1.0,
        proximal=None,
        output_type="latent",
    ).images
    assert relative(out, z) < 1e-5


def test_inversion_then_sampling_reconstructs(sd_pipe):
    """Trained model (x0-prediction): the reconstruction error falls with the steps.

    Measured (64 px SynthEgo frame, relative L2 in latent space): 0.44 at 5 steps, 0.25 at 50,
    1.35 for a random latent of the same mean and std.
    """
    image = frame(64)
    z0 = encode(sd_pipe, image)
    errors = {}
    for steps in (5, 50):
        out = sd_pipe(
            SOURCE,
            image,
            source_prompt=SOURCE,
            num_inference_steps=steps,
            guidance_scale=1.0,
            proximal=None,
            inversion_guidance=False,
            output_type="latent",
        ).images
        errors[steps] = relative(out, z0)
    g = torch.Generator().manual_seed(0)
    baseline = relative(torch.randn(z0.shape, generator=g) * z0.std() + z0.mean(), z0)
    print(f"reconstruction: {errors}, random baseline {baseline:.3f}")
    assert errors[50] < 0.3
    assert errors[50] < 0.7 * errors[5]
    assert errors[50] < 0.25 * baseline


# ------------------------------------------------------------------------------------------------
# Guidance toward the input


@pytest.mark.parametrize(
    ("mask_rule", "low", "high"),
    # Quantile 0.5: "selected" edits half the entries, "official" those with |Δ| > 2λ (measured
    # 0.18 to 0.21 of the entries over the 6 steps).
    [("selected", 0.4, 0.6), ("official", 0.1, 0.3)],
)
def test_inversion_guidance_restores_trajectory_outside_mask(pipe, mask_rule, low, high):
    image = frame(32)
    z0 = encode(pipe, image)
    record = Recorder()
    out = pipe(
        TARGET,
        image,
        source_prompt=SOURCE,
        num_inference_steps=6,
        quantile=0.5,
        recon_t=1000,  # every step
        recon_lr=1.0,
        dilate_mask=0,
        mask_rule=mask_rule,
        output_type="latent",
        callback_on_step_end=record,
        callback_on_step_end_tensor_inputs=["latents", "mask"],
    ).images
    mask = record.steps[-1]["mask"]
    outside = mask == 0
    kept = mask.mean().item()
    assert low < kept < high, kept
    torch.testing.assert_close(out[outside], z0[outside], atol=1e-5, rtol=0)
    assert (out[~outside] - z0[~outside]).abs().max() > 0.1
    # Without inversion guidance nothing is copied.
    free = pipe(
        TARGET,
        image,
        source_prompt=SOURCE,
        num_inference_steps=6,
        quantile=0.5,
        recon_t=1000,
        inversion_guidance=False,
        output_type="latent",
    ).images
    assert (free[outside] - z0[outside]).abs().max() > 0.1
    # recon_t below every timestep: no guidance either.
    late = pipe(
        TARGET,
        image,
        source_prompt=SOURCE,
        num_inference_steps=6,
        quantile=0.5,
        recon_t=1,
        output_type="latent",
    ).images
    torch.testing.assert_close(late, free)


def test_mask_rule_reaches_the_first_step(pipe):
    """The first step's mask is ``proximal_guidance`` of that step's Δ, recomputed by hand."""
    image = frame(32)
    steps = 4
    device = torch.device("cpu")
    c_src = pipe._encode_prompt([SOURCE], device)
    c_tgt = pipe._encode_prompt([TARGET], device)
    z_n = pipe.invert(encode(pipe, image), c_src, steps)[-1]
    t = pipe.scheduler.timesteps[0]
    with torch.no_grad():
        eps, _ = pipe._predict(torch.cat([z_n, z_n]), t, torch.cat([c_src, c_tgt]))
    eps_uncond, eps_cond = eps.chunk(2)
    delta = eps_cond - eps_uncond
    masks, outputs = {}, {}
    for rule in ("selected", "official"):
        record = Recorder()
        outputs[rule] = pipe(
            TARGET,
            image,
            source_prompt=SOURCE,
            num_inference_steps=steps,
            quantile=0.5,
            recon_t=1000,
            dilate_mask=0,
            mask_rule=rule,
            output_type="latent",
            callback_on_step_end=record,
            callback_on_step_end_tensor_inputs=["mask"],
        ).images
        masks[rule] = record.steps[0]["mask"]
        _, expected = proximal_guidance(delta, 0.5, "l0", mask_rule=rule)
        torch.testing.assert_close(masks[rule], expected, atol=0, rtol=0)
    # The official mask is a strict subset of the selected one.
    assert torch.all(masks["official"] <= masks["selected"])
    assert masks["official"].sum() < 0.5 * masks["selected"].sum()
    assert (outputs["official"] - outputs["selected"]).abs().max() > 1e-2


def test_same_prompt_has_empty_mask_and_returns_the_input(pipe):
    """prompt == source: Δ = 0, so λ = 0, the mask is empty and inversion guidance copies z*."""
    image = frame(32)
    z0 = encode(pipe, image)
    record = Recorder()
    out = pipe(
        SOURCE,
        image,
        source_prompt=SOURCE,
        num_inference_steps=4,
        recon_t=1000,
        output_type="latent",
        callback_on_step_end=record,
        callback_on_step_end_tensor_inputs=["mask"],
    ).images
    assert all(step["mask"].sum() == 0 for step in record.steps)
    torch.testing.assert_close(out, z0, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("mask_rule", "quantile"),
    # Dilated by 1, the edited fraction is about 0.54 ("selected", 0.9) and 0.36 ("official", 0.7).
    [("selected", 0.9), ("official", 0.7)],
)
def test_reconstruction_guidance_restores_input_outside_mask(backbone, mask_rule, quantile):
    """With ᾱ = 1 after the last step, the output is the corrected x0: z_0 outside the mask."""
    pipe = build(backbone, PixelUnshuffleAutoencoder, set_alpha_to_one=True)
    image = frame(32)
    z0 = encode(pipe, image)
    record = Recorder()
    out = pipe(
        TARGET,
        image,
        source_prompt=SOURCE,
        num_inference_steps=5,
        quantile=quantile,
        recon_t=1000,
        dilate_mask=1,
        mask_rule=mask_rule,
        inversion_guidance=False,
        reconstruction_guidance=True,
        output_type="latent",
        callback_on_step_end=record,
        callback_on_step_end_tensor_inputs=["mask"],
    ).images
    outside = record.steps[-1]["mask"] == 0
    assert 0.1 < outside.float().mean() < 0.9, outside.float().mean()
    torch.testing.assert_close(out[outside], z0[outside], atol=1e-4, rtol=0)
    assert (out[~outside] - z0[~outside]).abs().max() > 0.1


# ------------------------------------------------------------------------------------------------
# Mutual self-attention


def test_mutual_processor_reads_source_keys_and_values():
    torch.manual_seed(0)
    attn = Attention(query_dim=16, heads=2, dim_head=8)
    x = torch.randn(3, 5, 16)  # [source | uncond | cond], one sample
    state = MutualAttentionState(start_step=0, start_layer=0, source_rows=1)
    state.begin_forward(0)
    with torch.no_grad():
        mixed = MutualSelfAttentionProcessor(state)(attn, x)
        plain = AttnProcessor2_0()(attn, x)
        # Target row j by hand: its queries, the source row's keys and values.
        q = attn.to_q(x).view(3, 5, 2, 8).transpose(1, 2)
        k = attn.to_k(x[:1]).view(1, 5, 2, 8).transpose(1, 2)
        v = attn.to_v(x[:1]).view(1, 5, 2, 8).transpose(1, 2)
        weights = torch.softmax(q @ k.transpose(-1, -2) / 8**0.5, dim=-1)
        expected = attn.to_out[0]((weights @ v).transpose(1, 2).reshape(3, 5, 16))
    torch.testing.assert_close(mixed, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mixed[:1], plain[:1])  # the source attends to itself
    assert (mixed[1:] - plain[1:]).abs().max() > 1e-2
    assert state.active == [(0, 0)]
    # Inactive (layer before start_layer): exactly the default processor.
    late = MutualAttentionState(start_step=0, start_layer=1, source_rows=1)
    with torch.no_grad():
        torch.testing.assert_close(MutualSelfAttentionProcessor(late)(attn, x), plain)
    assert late.active == [] and late.layer == 1


def test_mutual_attention_active_from_start_step_and_layer(pipe):
    before = dict(pipe.unet.attn_processors)
    image = frame(32)
    kwargs = {"num_inference_steps": 6, "source_prompt": SOURCE, "output_type": "latent"}
    out = pipe(
        TARGET, image, mutual_attention=True, mutual_start_step=2, mutual_start_layer=1, **kwargs
    )
    state = pipe.mutual_attention_state
    assert state.num_layers == 7  # 2 down, 1 mid, 4 up self-attention layers
    expected = {(s, layer) for s in range(2, 6) for layer in range(1, 7)}
    assert len(state.active) == len(expected) and set(state.active) == expected
    after = pipe.unet.attn_processors
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)
    plain = pipe(TARGET, image, **kwargs).images
    difference = (out.images - plain).abs().max().item()
    assert difference > 1e-2, difference
    # Never active (start after the last step): the target is exactly the plain edit.
    never = pipe(TARGET, image, mutual_attention=True, mutual_start_step=6, **kwargs).images
    assert pipe.mutual_attention_state.active == []
    torch.testing.assert_close(never, plain, atol=1e-5, rtol=1e-5)


def test_mutual_attention_restores_processors_after_an_error(pipe):
    before = dict(pipe.unet.attn_processors)

    def fail(*args):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        pipe(
            TARGET,
            frame(32),
            num_inference_steps=2,
            mutual_attention=True,
            callback_on_step_end=fail,
        )
    after = pipe.unet.attn_processors
    assert all(after[k] is before[k] for k in before)
    state = MutualAttentionState()
    with mutual_self_attention(pipe.unet, state):
        installed = pipe.unet.attn_processors
        assert sum(isinstance(p, MutualSelfAttentionProcessor) for p in installed.values()) == 7
        assert all(
            (isinstance(p, MutualSelfAttentionProcessor)) == name.endswith("attn1.processor")
            for name, p in installed.items()
        )


# ------------------------------------------------------------------------------------------------
# Interface


def test_output_types_and_shapes(pipe):
    images = torch.stack([torch.from_numpy(np.array(frame(32, c))) for c in (0, 1)])
    tensor = images.permute(0, 3, 1, 2).float() / 255
    kwargs = {"source_prompt": SOURCE, "num_inference_steps": 3}
    latent = pipe(TARGET, tensor, output_type="latent", **kwargs).images
    assert latent.shape == (2, 48, 8, 8)
    pt = pipe(TARGET, tensor, output_type="pt", **kwargs).images
    assert pt.shape == (2, 3, 32, 32) and 0 <= pt.min() and pt.max() <= 1
    # The autoencoder is lossless: "pt" is the decoded latent.
    decoded = torch.nn.functional.pixel_shuffle(latent / pipe.vae.config.scaling_factor, 4)
    torch.testing.assert_close(pt, (decoded / 2 + 0.5).clamp(0, 1))
    array = pipe(TARGET, tensor, output_type="np", **kwargs).images
    assert array.shape == (2, 32, 32, 3)
    pil = pipe([TARGET, SOURCE], [frame(32, 0), frame(32, 1)], output_type="pil", **kwargs).images
    assert len(pil) == 2 and pil[0].size == (32, 32)
    (tuple_images,) = pipe(TARGET, tensor, output_type="latent", return_dict=False, **kwargs)
    torch.testing.assert_close(tuple_images, latent)


@pytest.mark.parametrize("mutual", [False, True])
def test_deterministic_and_batch_independent(pipe, mutual):
    """Two calls agree exactly; with the per-sample quantile a sample ignores its batch-mates."""
    kwargs = {
        "source_prompt": SOURCE,
        "num_inference_steps": 4,
        "output_type": "latent",
        "mutual_attention": mutual,
        "mutual_start_step": 1,
        "mutual_start_layer": 3,
    }
    batch = pipe([TARGET, SOURCE], [frame(32, 0), frame(32, 1)], **kwargs).images
    again = pipe([TARGET, SOURCE], [frame(32, 0), frame(32, 1)], **kwargs).images
    assert torch.equal(batch, again)
    alone = pipe(TARGET, frame(32, 0), **kwargs).images
    # Measured max difference 9e-5 (batched vs single UNet arithmetic), latents of std ~2.
    torch.testing.assert_close(batch[:1], alone, atol=1e-3, rtol=0)


def test_proximal_modes_in_the_pipeline(pipe):
    kwargs = {"source_prompt": SOURCE, "num_inference_steps": 3, "output_type": "latent"}
    outputs = {
        mode: pipe(TARGET, frame(32), proximal=mode, **kwargs).images
        for mode in ("l0", "l1", "hard", None)
    }
    assert all(torch.isfinite(out).all() for out in outputs.values())
    for a, b in [("l0", "l1"), ("l0", "hard"), ("l0", None), ("hard", None)]:
        assert (outputs[a] - outputs[b]).abs().max() > 1e-3, (a, b)


def test_kl_autoencoder_backbone(tmp_path):
    root = write_diffusion_backbone(
        tmp_path, vocabulary(), resolution=32, hidden_size=32, autoencoder="kl", seed=1
    )
    kl = build(root, AutoencoderKL)
    assert kl.vae_scale_factor == 2
    kwargs = {"num_inference_steps": 2}
    assert kl(TARGET, frame(32), output_type="latent", **kwargs).images.shape == (1, 4, 16, 16)
    assert kl(TARGET, frame(32), output_type="pt", **kwargs).images.shape == (1, 3, 32, 32)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"quantile": 1.5}, "quantile"),
        ({"proximal": "l2"}, "proximal"),
        ({"prompt": [TARGET, TARGET]}, "prompt"),
        ({"source_prompt": [SOURCE] * 3}, "source_prompt"),
        ({"image": torch.rand(1, 3, 30, 30)}, "not divisible"),
        ({"output_type": "jpeg"}, "output_type"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"dilate_mask": -1}, "dilate_mask"),
        ({"mask_rule": "both"}, "mask_rule"),
        ({"mutual_start_layer": -1}, "mutual_start"),
        ({"callback_on_step_end_tensor_inputs": ["noise"]}, "callback"),
    ],
)
def test_bad_arguments(pipe, kwargs, message):
    arguments = {"prompt": TARGET, "image": frame(32), "num_inference_steps": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        pipe(**arguments)


@pytest.mark.parametrize("mask_rule", ["official", "selected"])
def test_module_passes_mask_rule_to_the_pipeline(backbone, monkeypatch, mask_rule):
    """ProxEditModule validates ``mask_rule`` and hands it to the pipeline (no model loaded)."""
    from lego.models.editing import ProxEditModule
    from tests.models.editing.editing_helpers import make_batch

    assert ProxEditModule(pretrained=str(backbone)).mask_rule == "official"
    with pytest.raises(ValueError, match="mask_rule"):
        ProxEditModule(pretrained=str(backbone), mask_rule="both")  # type: ignore[arg-type]
    module = ProxEditModule(pretrained=str(backbone), mask_rule=mask_rule)
    assert module.hparams["mask_rule"] == mask_rule
    calls = []

    def fake_pipeline(**kwargs):
        calls.append(kwargs)
        return ImagePipelineOutput(images=torch.zeros(2, 48, 8, 8))

    monkeypatch.setattr(module, "pipeline", lambda: fake_pipeline)
    monkeypatch.setattr(module, "decode", lambda vae, latents: latents)
    module.vae = None
    module.generate(make_batch(2, size=32))
    assert len(calls) == 1 and calls[0]["mask_rule"] == mask_rule


def test_scheduler_must_be_ddim(pipe):
    components = dict(pipe.components)
    components["scheduler"] = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    with pytest.raises(ValueError, match="DDIMScheduler"):
        ProxEditPipeline(**components)


# ------------------------------------------------------------------------------------------------
# Loading a text-to-image folder


def test_from_pretrained_text_to_image_folder(sd_pipe):
    scheduler = sd_pipe.scheduler
    assert isinstance(scheduler, DDIMScheduler)
    assert scheduler.config.prediction_type == "sample"  # kept from the folder's DPM-Solver
    assert scheduler.config.timestep_spacing == "linspace"
    assert not scheduler.config.clip_sample and not scheduler.config.set_alpha_to_one
    assert isinstance(sd_pipe.vae, PixelUnshuffleAutoencoder) and sd_pipe.vae_scale_factor == 4
    out = sd_pipe(TARGET, frame(64), source_prompt=SOURCE, num_inference_steps=4)
    assert out.images[0].size == (64, 64)
    # An explicit scheduler is kept.
    custom = DDIMScheduler.from_config(scheduler.config, timestep_spacing="leading")
    again = ProxEditPipeline.from_pretrained(SYNTHEGO_SD, scheduler=custom)
    assert again.scheduler is custom
