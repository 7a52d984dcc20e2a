"""The SynthEgo backbone builders, end to end on tiny settings, and their scores."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
from transformers import AutoProcessor, LlavaForConditionalGeneration

from lego.metrics.description_accuracy import parse_description
from lego.models.editing.components import load_components
from lego.synthego import world
from lego.zoo.scenes import ObjectFact, caption, render_pool
from lego.zoo.text_to_image import TextToImageRecipe, palette_scores, train_text_to_image
from lego.zoo.vlm import QUESTIONS, VLMRecipe, patch_labels, question_answer, train_vlm


def test_pool_is_deterministic_and_never_a_dataset_split():
    a = render_pool(3, 4, progress=False)
    b = render_pool(3, 4, progress=False)
    assert torch.equal(a.frames, b.frames) and a.objects == b.objects
    assert a.frames.shape == (4, 3, 64, 64) and a.frames.dtype == torch.uint8
    assert all(3 <= len(o) <= 5 for o in a.objects)
    easy = render_pool(3, 5, part="zooeasy", max_objects=2, progress=False)
    assert [len(o) for o in easy.objects] == [1, 2, 1, 2, 1]
    other = render_pool(4, 4, progress=False)
    assert not torch.equal(a.frames, other.frames)


def test_caption_lists_every_object_in_reading_order():
    objects = (
        ObjectFact("bowl", "red", "lower left", "left", (0, 0, 1, 1)),
        ObjectFact("cup", "green", "upper right", "right", (0, 0, 1, 1)),
        ObjectFact("knife", "blue", "upper left", "left", (0, 0, 1, 1)),
    )
    assert caption(objects) == (
        "a blue knife at the upper left, a green cup at the upper right and a red bowl at the "
        "lower left of the table."
    )
    assert caption(objects[:1]) == "a red bowl at the lower left of the table."


def test_palette_scores_rendered_frames_high_and_blank_frames_zero():
    pool = render_pool(0, 12, part="zooval", progress=False)
    frames = pool.frames.float() / 255.0
    truth = palette_scores(frames, pool.objects)
    # a looser test never finds fewer objects
    loose = palette_scores(frames, pool.objects, tolerance=50.0, min_pixels=4)
    assert loose["objects_in_colour"] >= truth["objects_in_colour"]
    assert truth["objects_in_colour"] == pytest.approx(100.0)
    assert truth["objects_at_place"] >= 90.0
    assert truth["uncaptioned_colours"] == pytest.approx(0.0)
    blank = palette_scores(torch.full_like(frames, 0.5), pool.objects)
    assert blank["objects_in_colour"] == 0.0 and blank["scenes_all_in_colour"] == 0.0


def test_pretraining_answers_state_the_true_fields():
    fact = ObjectFact("onion", "cyan", "lower middle", "right", (0, 0, 1, 1))
    question, answer = question_answer("about", (fact,), 0)
    assert "onion" in question
    parsed = parse_description(answer)
    assert (parsed.colour, parsed.object, parsed.place, parsed.hand) == (
        "cyan", "onion", "lower middle", "right")
    for kind in QUESTIONS:
        assert question_answer(kind, (fact,), 0)[1].strip()
    with pytest.raises(ValueError, match="unknown question kind"):
        question_answer("why", (fact,), 0)


def test_patch_labels_mark_the_patch_of_each_object_centre():
    fact = ObjectFact("cup", "red", "upper right", "right", (40, 4, 56, 14))
    labels = patch_labels((fact,), 64, 16)
    assert labels.shape == (16, 4)
    assert labels.nonzero()[:, 0].unique().tolist() == [0 * 4 + 3]
    assert labels[3].tolist() == [
        1 + world.OBJECT_TYPES.index("cup"), 1 + list(world.COLOURS).index("red"),
        1 + world.PLACES.index("upper right"), 2,
    ]


def test_text_to_image_builder_writes_a_stock_pipeline(tmp_path):
    recipe = TextToImageRecipe(scenes=16, steps=2, batch_size=4, eval_scenes=4, sample_steps=2)
    out = tmp_path / "sd"
    scores = train_text_to_image(out, recipe, progress=False, log=lambda _: None)
    assert set(scores) == {"objects_in_colour", "scenes_all_in_colour", "objects_at_place",
                           "uncaptioned_colours", "objects_in_colour_loose",
                           "scenes_all_in_colour_loose"}
    assert scores["objects_in_colour_loose"] >= scores["objects_in_colour"]
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    card = (out / "README.md").read_text()
    assert "library_name: diffusers" in card and "objects_in_colour" in card
    record = json.loads((out / "training.json").read_text())
    assert record["training"]["steps"] == 2 and record["settings"]["seed"] == 0
    assert (out / "samples.png").is_file()
    for cls in (StableDiffusionPipeline, StableDiffusionImg2ImgPipeline):
        pipe = cls.from_pretrained(out)
        assert pipe.unet.config.in_channels == 48
        assert pipe.scheduler.config.prediction_type == "sample"
    image = torch.rand(1, 3, 64, 64)
    img2img = StableDiffusionImg2ImgPipeline.from_pretrained(out)
    img2img.set_progress_bar_config(disable=True)
    frame = img2img(prompt="a red cup at the upper left of the table.", image=image,
                    strength=0.5, num_inference_steps=4, output_type="pt").images
    assert frame.shape == (1, 3, 64, 64)
    parts = load_components(out, "sample")  # the IP2P / LEGO loader widens conv_in, as for SD
    assert parts.unet.config.in_channels == 96


def test_text_to_image_builder_is_deterministic(tmp_path):
    recipe = TextToImageRecipe(scenes=8, steps=2, batch_size=2, eval_scenes=2, sample_steps=1)
    for name in ("a", "b"):
        train_text_to_image(tmp_path / name, recipe, progress=False, log=lambda _: None)
    a = StableDiffusionPipeline.from_pretrained(tmp_path / "a").unet.state_dict()
    b = StableDiffusionPipeline.from_pretrained(tmp_path / "b").unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_vlm_builder_writes_a_stock_llava(tmp_path):
    recipe = VLMRecipe(scenes=12, easy_scenes=6, vision_steps=2, vision_batch_size=4, steps=3,
                       batch_size=4, eval_scenes=4, vision_hidden=32, vision_layers=1,
                       text_hidden=32, text_layers=1)
    out = tmp_path / "vlm"
    lines = []
    scores = train_vlm(out, recipe, progress=False, log=lines.append)
    assert set(scores) == {"colour", "place", "hand", "all"}
    assert any("vision tower: patch accuracy" in line for line in lines)
    model = LlavaForConditionalGeneration.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)
    assert model.config.image_seq_length == 16 and model.config.text_config.hidden_size == 32
    tokenizer = processor.tokenizer
    for kind in QUESTIONS:
        fact = ObjectFact("cup", "red", "upper left", "left", (0, 0, 1, 1))
        for text in question_answer(kind, (fact,), 0):
            assert tokenizer.unk_token_id not in tokenizer(text).input_ids, text
    record = json.loads((out / "training.json").read_text())
    assert record["settings"]["patch_size"] == 16
    assert "library_name: transformers" in (out / "README.md").read_text()


class Killed(Exception):
    pass


def kill_at(marker):
    def log(line):
        if marker in line:
            raise Killed(line)
    return log


def test_a_killed_text_to_image_build_resumes_to_the_same_weights(tmp_path):
    recipe = TextToImageRecipe(scenes=8, steps=4, batch_size=2, eval_scenes=2, sample_steps=1)
    train_text_to_image(tmp_path / "once", recipe, progress=False, log=lambda _: None,
                        checkpoint_every=2)
    with pytest.raises(Killed):
        train_text_to_image(tmp_path / "twice", recipe, progress=False,
                            log=kill_at("step 3/4"), checkpoint_every=2)
    assert (tmp_path / "twice.partial" / "state.pt").is_file()
    lines = []
    train_text_to_image(tmp_path / "twice", recipe, progress=False, log=lines.append,
                        checkpoint_every=2)
    assert any("resuming at step 3" in line for line in lines)
    assert not (tmp_path / "twice.partial").exists()
    a = StableDiffusionPipeline.from_pretrained(tmp_path / "once")
    b = StableDiffusionPipeline.from_pretrained(tmp_path / "twice")
    for one, two in ((a.unet, b.unet), (a.text_encoder, b.text_encoder)):
        sa, sb = one.state_dict(), two.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    other = TextToImageRecipe(scenes=8, steps=5, batch_size=2, eval_scenes=2, sample_steps=1)
    with pytest.raises(Killed):
        train_text_to_image(tmp_path / "three", recipe, progress=False,
                            log=kill_at("step 3/4"), checkpoint_every=2)
    with pytest.raises(ValueError, match="another recipe"):
        train_text_to_image(tmp_path / "three", other, progress=False, log=lambda _: None)


def test_a_killed_vlm_build_resumes_to_the_same_weights(tmp_path):
    recipe = VLMRecipe(scenes=8, easy_scenes=4, vision_steps=2, vision_batch_size=4, steps=4,
                       batch_size=4, eval_scenes=2, vision_hidden=32, vision_layers=1,
                       text_hidden=32, text_layers=1)
    train_vlm(tmp_path / "once", recipe, progress=False, log=lambda _: None, checkpoint_every=2)
    with pytest.raises(Killed):
        train_vlm(tmp_path / "twice", recipe, progress=False,
                  log=kill_at("grounding step 3/4"), checkpoint_every=2)
    lines = []
    train_vlm(tmp_path / "twice", recipe, progress=False, log=lines.append, checkpoint_every=2)
    assert any("resuming grounding at step 3" in line for line in lines)
    a = LlavaForConditionalGeneration.from_pretrained(tmp_path / "once").state_dict()
    b = LlavaForConditionalGeneration.from_pretrained(tmp_path / "twice").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
