import math

import pytest
import torch
from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionInstructPix2PixPipeline

from lego.models.editing import InstructPix2PixModule, LegoDiffusionModule
from lego.models.editing.components import SAMPLING_SPACING
from lego.models.editing.conditioning import assemble_context
from lego.models.editing.guidance import sample_generators
from tests.models.editing.editing_helpers import make_batch
from tests.models.editing.reference_sampler import guided_sample

FAST = dict(sampler="DPMSolverMultistepScheduler", num_inference_steps=3, ema_decay=None, seed=7)


def build(cls, pretrained, **kwargs):
    torch.manual_seed(0)
    module = cls(pretrained=str(pretrained), **{**FAST, **kwargs})
    module.configure_model()
    return module.eval()


def test_ip2p_hparams_leave_out_vlm_options(synthego_backbone):
    module = InstructPix2PixModule(pretrained=str(synthego_backbone))
    assert "vlm_dim" not in module.hparams and module.hparams.pretrained == str(synthego_backbone)
    assert not isinstance(module, LegoDiffusionModule)  # IP2P is the base; LEGO extends it
    assert issubclass(LegoDiffusionModule, InstructPix2PixModule)
    lego = LegoDiffusionModule(pretrained=str(synthego_backbone), vlm_dim=16)
    assert lego.hparams.vlm_dim == 16 and lego.uses_vlm


def test_trainable_parameters_follow_freeze_option(synthego_backbone):
    trained = build(LegoDiffusionModule, synthego_backbone, vlm_dim=16)
    frozen = build(LegoDiffusionModule, synthego_backbone, vlm_dim=16, freeze_vlm_projection=True)

    def trainable(m):
        return {id(p) for group in m.configure_optimizers().param_groups for p in group["params"]}

    unet = {id(p) for p in trained.unet.parameters()}
    vlm = {id(p) for p in trained.vlm_conditioner.parameters()}
    assert trainable(trained) == unet | vlm
    assert trainable(frozen) == {id(p) for p in frozen.unet.parameters()}
    opt = trained.configure_optimizers()
    assert opt.defaults["lr"] == 1e-4 and opt.defaults["weight_decay"] == 0.01
    assert not any(p.requires_grad for p in trained.vae.parameters())
    assert not any(p.requires_grad for p in trained.text_encoder.parameters())


@pytest.mark.parametrize("prediction_type", ["sample", "epsilon"])
def test_loss_decreases_on_a_fixed_batch(synthego_backbone, prediction_type):
    module = build(
        LegoDiffusionModule,
        synthego_backbone,
        vlm_dim=16,
        prediction_type=prediction_type,
        conditioning_dropout=0.0,
    ).train()
    batch = make_batch(4, dim=16)
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=2e-3)

    def loss_at_fixed_noise():
        torch.manual_seed(123)
        return module.diffusion_loss(batch)

    first = None
    for _ in range(25):
        loss = loss_at_fixed_noise()
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        last = loss_at_fixed_noise().item()
    assert last < 0.5 * first, (first, last)


def test_vlm_tokens_are_zero_when_prompt_dropped(synthego_backbone, monkeypatch):
    module = build(LegoDiffusionModule, synthego_backbone, vlm_dim=16)
    batch = make_batch(3, dim=16)
    seen = {}
    original = module.unet.forward

    def spy(sample, timestep, encoder_hidden_states, **kw):
        seen["ctx"], seen["x"] = encoder_hidden_states.detach(), sample.detach()
        return original(sample, timestep, encoder_hidden_states=encoder_hidden_states, **kw)

    monkeypatch.setattr(module.unet, "forward", spy)
    drops = (torch.tensor([True, True, False]), torch.tensor([False, True, True]))
    monkeypatch.setattr(
        "lego.models.editing.ip2p.conditioning_dropout_masks", lambda *a, **k: drops
    )
    module.diffusion_loss(batch)
    ctx, x = seen["ctx"], seen["x"]
    assert ctx.shape == (3, 77 + 4 + 77, 32)
    null = module.null_text(1)[0]
    torch.testing.assert_close(ctx[0, :77], null)
    assert torch.count_nonzero(ctx[:2, 77:]) == 0 and torch.count_nonzero(ctx[2, 77:]) > 0
    assert not torch.allclose(ctx[2, :77], null)
    latent = x[:, 48:]
    assert torch.count_nonzero(latent[1:]) == 0 and torch.count_nonzero(latent[0]) > 0


def test_sampling_is_per_sample_deterministic(synthego_backbone):
    module = build(LegoDiffusionModule, synthego_backbone, vlm_dim=16)
    pair = make_batch(2, dim=16)
    alone = make_batch(1, dim=16, start=1, seed=0)
    # make_batch draws frames in sequence: rebuild sample 1 exactly as in the pair
    alone.input_frames = pair.input_frames[1:]
    frames_pair = module.generate(pair)
    frames_alone = module.generate(alone)
    assert frames_pair.shape == (2, 3, 32, 32)
    assert torch.isfinite(frames_pair).all()  # raw (x + 1) / 2: the steps clamp, not generate
    torch.testing.assert_close(frames_pair[1:], frames_alone, atol=1e-4, rtol=0)  # << 1/255
    outputs = module.test_step(pair, 0)
    assert outputs.frames.min() >= 0 and outputs.frames.max() <= 1
    torch.testing.assert_close(outputs.raw_frames, frames_pair)
    torch.testing.assert_close(outputs.frames, frames_pair.clamp(0, 1))
    module.seed = 8
    assert not torch.allclose(module.generate(alone), frames_alone)


def test_bad_inputs_name_the_samples(synthego_backbone):
    module = build(LegoDiffusionModule, synthego_backbone, vlm_dim=16)
    wrong_dim = make_batch(2, dim=12)
    with pytest.raises(ValueError, match=r"width 12 .*vlm_dim=16.*clip0/act0"):
        module.generate(wrong_dim)
    one_d = make_batch(2, dim=16)
    one_d.vlm_text = one_d.vlm_text[:, 0, :]
    with pytest.raises(ValueError, match=r"vlm_text must be N x D.*clip0/act0"):
        module.generate(one_d)
    nan = make_batch(3, dim=16)
    nan.vlm_image[1, 0, 0] = math.nan
    with pytest.raises(
        ValueError, match=r"NaN or inf in vlm_image of sample\(s\) \['clip1/act1'\]"
    ):
        module.generate(nan)
    inf = make_batch(3, dim=16)
    inf.target_frames[2, 0, 0, 0] = math.inf
    with pytest.raises(ValueError, match=r"target frame of sample\(s\) \['clip2/act2'\]"):
        module.diffusion_loss(inf)
    missing = make_batch(2)
    with pytest.raises(ValueError, match=r"carries no 'vlm_image'.*vlm_dim: null"):
        module.generate(missing)


def test_nan_loss_stops_training_with_a_message(synthego_backbone):
    module = build(InstructPix2PixModule, synthego_backbone)
    with torch.no_grad():
        module.unet.conv_out.bias.fill_(math.nan)
    with pytest.raises(FloatingPointError, match=r"non-finite training loss .*clip0/act0"):
        module.training_step(make_batch(2), 0)


def test_caches_do_not_change_results(synthego_backbone):
    plain = build(InstructPix2PixModule, synthego_backbone)
    cached = build(InstructPix2PixModule, synthego_backbone, text_cache_size=8, latent_cache_size=8)
    batch = make_batch(3)
    for _ in range(2):  # second pass is served from the caches
        torch.testing.assert_close(cached.encode_text(batch.texts), plain.encode_text(batch.texts))
        torch.testing.assert_close(
            cached.encode_input_latents(batch.input_frames),
            plain.encode_input_latents(batch.input_frames),
        )
    assert len(cached._text_cache) == len(set(batch.texts)) and len(cached._latent_cache) == 3


def test_ip2p_sampler_matches_stock_diffusers_pipeline(kl_backbone):
    module = build(
        InstructPix2PixModule,
        kl_backbone,
        sampler="EulerAncestralDiscreteScheduler",
        num_inference_steps=4,
    )
    batch = make_batch(2)
    ours = module.generate(batch).clamp(0, 1)  # the stock pipeline clamps, as our test step does
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=module.vae,
        text_encoder=module.text_encoder,
        tokenizer=module.tokenizer,
        unet=module.unet,
        scheduler=EulerAncestralDiscreteScheduler.from_config(
            module.noise_scheduler.config, **SAMPLING_SPACING  # the paper's spacing, as ours
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    stock = pipe(
        prompt=list(batch.texts),
        image=batch.input_frames,
        num_inference_steps=4,
        guidance_scale=7.5,
        image_guidance_scale=1.5,
        generator=sample_generators(batch.sample_ids, module.seed),
        output_type="pt",
    ).images
    assert ours.shape == stock.shape == (2, 3, 32, 32)
    torch.testing.assert_close(ours, stock, atol=1e-5, rtol=0)


def test_gradient_checkpointing_option(synthego_backbone):
    module = build(InstructPix2PixModule, synthego_backbone, gradient_checkpointing=True).train()
    assert module.unet.is_gradient_checkpointing
    module.diffusion_loss(make_batch(2)).backward()
    assert module.unet.conv_in.weight.grad is not None
    assert not build(InstructPix2PixModule, synthego_backbone).unet.is_gradient_checkpointing


def test_ema_averages_the_vlm_conditioner_with_the_unet(synthego_backbone):
    """Sampling pairs the averaged UNet with the averaged conditioner, never the live one."""
    module = build(LegoDiffusionModule, synthego_backbone, vlm_dim=16, ema_decay=0.5)
    assert len(module.ema.shadow_params) == len(list(module.unet.parameters())) + len(
        list(module.vlm_conditioner.parameters()))
    averaged = [p.detach().clone() for p in module.vlm_conditioner.parameters()]
    with torch.no_grad():
        for p in module.vlm_conditioner.parameters():
            p.add_(1.0)  # the live conditioner moves on; the EMA (not stepped) does not
    module.on_test_epoch_start()
    for p, a in zip(module.vlm_conditioner.parameters(), averaged, strict=True):
        torch.testing.assert_close(p, a)
    module.on_test_epoch_end()
    live = next(module.vlm_conditioner.parameters())
    assert torch.equal(live, averaged[0] + 1.0)
    _, conditioner = module.sampling_modules()
    torch.testing.assert_close(next(conditioner.parameters()), averaged[0])
    frozen = build(LegoDiffusionModule, synthego_backbone, vlm_dim=16, ema_decay=0.5,
                   freeze_vlm_projection=True)
    assert len(frozen.ema.shadow_params) == len(list(frozen.unet.parameters()))


def test_checkpoint_ema_of_other_weights_is_refused(synthego_backbone):
    lego = build(LegoDiffusionModule, synthego_backbone, vlm_dim=16, ema_decay=0.5)
    ip2p = build(InstructPix2PixModule, synthego_backbone, ema_decay=0.5)
    checkpoint = {}
    ip2p.on_save_checkpoint(checkpoint)
    with pytest.raises(ValueError, match=r"EMA holds 2\d+ tensors .* averages 3\d+ \(UNet and VLM"):
        lego.on_load_checkpoint(checkpoint)


@pytest.mark.parametrize("vlm_dim", [None, 16], ids=["ip2p", "lego"])
@pytest.mark.parametrize(
    "sampler", ["EulerAncestralDiscreteScheduler", "DPMSolverMultistepScheduler"]
)
def test_pipeline_sampling_equals_the_former_loop(synthego_backbone, sampler, vlm_dim):
    """Sampling moved to diffusers' IP2P pipeline; frames equal the hand-written loop's."""
    cls = LegoDiffusionModule if vlm_dim else InstructPix2PixModule
    extra = {"vlm_dim": vlm_dim} if vlm_dim else {}
    module = build(cls, synthego_backbone, sampler=sampler, num_inference_steps=4, **extra)
    with torch.no_grad():
        for p in module.unet.conv_in.parameters():  # untrained widening gives the image no say
            p.add_(0.05 * torch.randn_like(p))
    batch = make_batch(3, dim=vlm_dim)
    ours = module.generate(batch)
    with torch.no_grad():
        vlm = module.condition_tokens(batch)
        latents = guided_sample(
            module.unet,
            module.sampling_scheduler(module.noise_scheduler.config),
            image_latents=module.encode_input_latents(batch.input_frames),
            context=assemble_context(module.encode_text(list(batch.texts)), vlm),
            null_context=assemble_context(
                module.null_text(3), torch.zeros_like(vlm) if vlm is not None else None
            ),
            num_inference_steps=4,
            text_scale=module.text_guidance_scale,
            image_scale=module.image_guidance_scale,
            generators=module.generators(batch),
        )
        expected = module.decode(module.vae, latents)
    assert ours.shape == (3, 3, 32, 32)
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=1e-4)
