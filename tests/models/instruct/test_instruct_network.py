"""LLaVA network helpers: prompt, label mask, LoRA targets, generation and embeddings."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from lego.models.instruct.network import (
    IGNORE_INDEX,
    PerSampleGumbelSampler,
    PromptError,
    PromptTemplate,
    apply_lora,
    build_training_inputs,
    counter_uniform,
    fold_projector,
    generate_with_embeddings,
    hash32,
    load_vlm,
)
from lego.synthego import vocabulary


@pytest.fixture(scope="module")
def vlm(tiny_vlm):
    model, processor = load_vlm(tiny_vlm)
    model.eval()
    return model, processor


def image(colour=(200, 20, 20), size=(48, 32)):
    img = Image.new("RGB", size, colour)
    img.paste((20, 200, 20), (0, 0, size[0] // 2, size[1] // 3))
    return img


def prompt(processor, action="pick up the cup"):
    template = PromptTemplate()
    return template.render(template.question(action, "sample 'c/a'"), processor)


def test_official_template_rendering(vlm):
    _, processor = vlm
    text = prompt(processor)
    assert text.startswith("[INST] <<SYS>>\nYou are a helpful language and vision assistant.")
    assert text.endswith(
        "<</SYS>>\n\n<image>\nHow does the person properly pick up the cup that is displayed in "
        "the video frame? [/INST]"
    )


def test_label_mask_supervises_exactly_answer_and_eos(vlm):
    model, processor = vlm
    tok = processor.tokenizer
    inputs = build_training_inputs(
        processor, [image()], [prompt(processor)], ["The right hand lifts the cup."], ["s"], 2048
    )
    ids = inputs.input_ids[0].tolist()
    labels = inputs.labels[0].tolist()
    tokens = tok.convert_ids_to_tokens(ids)
    answer = ["▁The", "▁right", "▁hand", "▁lifts", "▁the", "▁cup", ".", "</s>"]
    start = len(tokens) - len(answer)
    # token by token: BOS, instruction and image positions ignored; answer + EOS supervised
    assert tokens[0] == "<s>"
    assert tokens[start - 5 : start] == ["▁", "[", "/", "INST", "]"]
    assert tokens[start:] == answer
    for k, (token, label) in enumerate(zip(tokens, labels, strict=True)):
        if k < start:
            assert label == IGNORE_INDEX, (k, token)
        else:
            assert label == ids[k], (k, token)
    image_positions = [k for k, t in enumerate(ids) if t == model.config.image_token_index]
    assert len(image_positions) == model.config.image_seq_length == 16
    assert all(labels[k] == IGNORE_INDEX for k in image_positions)
    assert inputs.pixel_values.shape == (1, 3, 32, 32)


def test_label_mask_batch_right_padding(vlm):
    _, processor = vlm
    answers = ["The right hand lifts it.", "The left hand grips the red cup at the upper left."]
    inputs = build_training_inputs(
        processor, [image(), image((0, 0, 255))], [prompt(processor)] * 2, answers, ["a", "b"], 2048
    )
    assert inputs.input_ids.shape[0] == 2
    short, long = inputs.attention_mask.sum(1).tolist()
    assert short < long == inputs.input_ids.shape[1]
    assert (inputs.labels[0, short:] == IGNORE_INDEX).all()
    assert (inputs.input_ids[0, short:] == processor.tokenizer.pad_token_id).all()
    supervised = [(inputs.labels[i] != IGNORE_INDEX).sum().item() for i in range(2)]
    assert supervised == [7, 13]  # words + punctuation + EOS


@pytest.mark.parametrize(
    ("action", "answer", "max_length", "message"),
    [
        ("", "ok", 2048, "empty action"),
        ("x" * 2000, "ok", 2048, "longer than 1000"),
        ("pick up the cup", "  ", 2048, "empty or missing answer"),
        ("pick up the cup", "The right hand lifts it.", 40, "exceed max_length 40"),
    ],
)
def test_bad_samples_raise_naming_the_sample(vlm, action, answer, max_length, message):
    _, processor = vlm
    with pytest.raises(PromptError, match=message) as err:
        text = prompt(processor, action)
        build_training_inputs(processor, [image()], [text], [answer], ["sample 'c/a'"], max_length)
    assert "sample 'c/a'" in str(err.value)


def test_tokenizer_covers_synthego_vocabulary(vlm):
    _, processor = vlm
    tok = processor.tokenizer
    words = vocabulary()
    ids = tok(" ".join(words), add_special_tokens=False).input_ids
    assert tok.unk_token_id not in ids
    text = "The left hand lifts the purple cup at the lower left of the table and tilts it."
    assert tok.decode(tok(text).input_ids, skip_special_tokens=True) == text


def test_lora_targets_language_model_only(tiny_vlm):
    model, _ = load_vlm(tiny_vlm)
    peft_model = apply_lora(model, r=4, alpha=8, dropout=0.0)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert any("language_model" in n and "lora_A" in n for n in trainable)
    assert any("multi_modal_projector" in n for n in trainable)
    assert not any("vision_tower" in n for n in trainable)
    assert not any("lora" in n for n, _ in peft_model.named_parameters() if "vision_tower" in n)
    model2, _ = load_vlm(tiny_vlm)
    with pytest.raises(ValueError, match="hits the vision tower"):
        apply_lora(model2, r=4, alpha=8, dropout=0.0, target_modules=r".*\.(q_proj|v_proj)")


def test_embeddings_equal_direct_transformers_call(vlm):
    model, processor = vlm
    text = prompt(processor)
    result = generate_with_embeddings(
        model, processor, [image()], [text], [0], temperature=0.0, max_new_tokens=6
    )
    enc = processor(text=[text], images=[image()], return_tensors="pt")
    with torch.no_grad():
        direct_image = torch.stack(
            model.get_image_features(pixel_values=enc["pixel_values"]).pooler_output
        )
        out = model.generate(
            **enc,
            do_sample=False,
            max_new_tokens=6,
            output_hidden_states=True,
            return_dict_in_generate=True,
        )
    assert result.image_embeddings.shape == (1, 16, 64)
    assert result.vision_features.shape == (1, 16, 32)
    torch.testing.assert_close(result.image_embeddings, direct_image)
    steps = torch.stack([h[-1][:, -1] for h in out.hidden_states], dim=1)
    n = result.num_tokens[0]
    assert result.text_embeddings.shape == (1, 77, 64)
    assert result.text_mask[0].sum().item() == n == steps.shape[1]
    torch.testing.assert_close(result.text_embeddings[0, :n], steps[0])
    assert (result.text_embeddings[0, n:] == 0).all()
    # the last-layer hidden state is post-norm: lm_head of it gives the logits of each step
    logits = model.lm_head(steps[0])
    assert logits.argmax(-1).tolist() == out.sequences[0, enc["input_ids"].shape[1] :].tolist()
    decoded = processor.tokenizer.decode(
        out.sequences[0, enc["input_ids"].shape[1] :], skip_special_tokens=True
    ).strip()
    assert result.texts[0] == decoded
    # a linear projector folds into one map that gives the same tokens
    weight, bias = fold_projector(model)
    torch.testing.assert_close(
        result.vision_features[0] @ weight.T + bias, direct_image[0], atol=1e-5, rtol=1e-4
    )


def test_sampling_is_seeded_per_sample_not_per_batch(vlm):
    model, processor = vlm
    texts = [prompt(processor, a) for a in ("pick up the cup", "open the box", "cut the bread")]
    images = [image(), image((0, 0, 200)), image((0, 200, 0))]
    batched = generate_with_embeddings(
        model, processor, images, texts, [11, 22, 33], temperature=1.0, max_new_tokens=10
    )
    alone = generate_with_embeddings(
        model, processor, images[1:2], texts[1:2], [22], temperature=1.0, max_new_tokens=10
    )
    other_seed = generate_with_embeddings(
        model, processor, images[1:2], texts[1:2], [23], temperature=1.0, max_new_tokens=10
    )
    assert alone.texts[0] == batched.texts[1]
    assert alone.num_tokens[0] == batched.num_tokens[1]
    torch.testing.assert_close(
        alone.text_embeddings[0], batched.text_embeddings[1], atol=1e-4, rtol=1e-4
    )
    assert other_seed.texts[0] != alone.texts[0]


def test_single_token_generation_gives_padded_text_embedding(vlm):
    model, processor = vlm
    result = generate_with_embeddings(
        model, processor, [image()], [prompt(processor)], [0], temperature=0.0, max_new_tokens=1
    )
    assert result.num_tokens == [1]
    assert result.text_embeddings.shape == (1, 77, 64)
    assert result.text_mask[0].tolist() == [True] + [False] * 76
    assert result.text_embeddings[0, 0].abs().sum() > 0
    assert (result.text_embeddings[0, 1:] == 0).all()


def _reference_hash32(x: int) -> int:
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_hash32_equals_the_unsigned_32_bit_reference():
    values = [0, 1, 2, 12345, 0x7FFFFFFF, 0x80000000, 0xDEADBEEF, 0xFFFFFFFF]
    got = hash32(torch.tensor(values, dtype=torch.int64)).tolist()
    assert got == [_reference_hash32(v) for v in values]
    assert all(0 <= g < 2**32 for g in got)


def test_counter_uniform_is_uniform_and_a_function_of_seed_step_index():
    seeds = torch.tensor([0, 1, 2**40 + 1, 2**62 + 7], dtype=torch.int64)
    tokens = torch.arange(20_000)

    def uniform(rows, step):
        return counter_uniform(rows.unsqueeze(1), step, tokens.unsqueeze(0))

    u = uniform(seeds, 3)
    assert u.shape == (4, 20_000) and u.dtype == torch.float64
    assert 0 < u.min() and u.max() < 1
    # each row is close to U(0, 1): mean, variance, and the counts of ten equal bins
    assert torch.allclose(u.mean(1), torch.full((4,), 0.5, dtype=torch.float64), atol=0.01)
    assert torch.allclose(u.var(1), torch.full((4,), 1 / 12, dtype=torch.float64), atol=0.003)
    counts = torch.stack([torch.histc(row, bins=10, min=0, max=1) for row in u])
    assert (counts - 2000).abs().max() < 200
    # rows are independent of each other and of the batch they come in
    assert torch.equal(uniform(seeds[2:3], 3)[0], u[2])
    assert torch.equal(counter_uniform(seeds[[1, 3]], 3, torch.tensor([5, 17])), u[[1, 3], [5, 17]])
    assert not torch.equal(u[0], u[1])
    assert not torch.equal(uniform(seeds, 4), u)
    assert abs(torch.corrcoef(u[:2])[0, 1].item()) < 0.03


def test_gumbel_sampler_draws_from_the_softmax():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, float("-inf")]])
    expected = torch.softmax(logits, -1)[0]
    ids = torch.zeros(1, 5, dtype=torch.long)
    counts = torch.zeros(5)
    for seed in range(4000):
        sampler = PerSampleGumbelSampler([seed])
        counts[sampler(ids, logits).argmax().item()] += 1
    freq = counts / counts.sum()
    assert freq[4] == 0
    torch.testing.assert_close(freq, expected, atol=0.025, rtol=0)
    # tokens filtered out before the sampler stay -inf; the others get the same noise as unfiltered
    full = PerSampleGumbelSampler([3])(ids, torch.tensor([[2.0, 1.0, 0.5, -1.0, 0.0]]))
    top = PerSampleGumbelSampler([3])(ids, torch.tensor([[2.0, 1.0, float("-inf"), -1.0, 0.0]]))
    assert torch.isinf(top[0, 2]) and torch.isfinite(top[0, [0, 1, 3, 4]]).all()
    shift = torch.logsumexp(torch.tensor([2.0, 1.0, 0.5, -1.0, 0.0]), 0) - torch.logsumexp(
        torch.tensor([2.0, 1.0, -1.0, 0.0]), 0
    )
    torch.testing.assert_close(top[0, [0, 1, 3, 4]], full[0, [0, 1, 3, 4]] + shift)
    # successive steps of one sample draw fresh noise
    sampler = PerSampleGumbelSampler([7])
    first = sampler(ids, logits)
    second = sampler(torch.zeros(1, 6, dtype=torch.long), logits)
    assert not torch.equal(first, second)
