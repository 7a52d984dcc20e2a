"""import-weights llava: an original-format LLaVA folder gives the same logits in transformers."""

import json
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    AutoProcessor,
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaForConditionalGeneration,
    PreTrainedTokenizerFast,
)

from lego import tools
from lego.metrics.convert import CheckpointConversionError
from lego.models.instruct.network import fold_projector

WORDS = "a the cup pick up how does person properly that is displayed in video frame ? .".split()


def write_tower(folder):
    config = CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                              num_hidden_layers=3, num_attention_heads=4, projection_dim=32)
    torch.manual_seed(1)
    CLIPVisionModel(config).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32},
                       crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def write_original_llava(folder, tower, projector="linear"):
    """A tiny LlavaLlamaForCausalLM folder as the original code saves it (no <image>, no pad)."""
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator(WORDS, trainers.WordLevelTrainer(
        special_tokens=["<unk>", "<s>", "</s>"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>",
                                        eos_token="</s>", unk_token="<unk>")
    llama = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                        max_position_embeddings=256, tie_word_embeddings=False,
                        bos_token_id=1, eos_token_id=2)
    torch.manual_seed(2)
    lm = LlamaForCausalLM(llama)
    state = dict(lm.state_dict())
    if projector == "linear":
        state["model.mm_projector.weight"] = torch.randn(64, 32) * 0.2
        state["model.mm_projector.bias"] = torch.randn(64) * 0.2
    else:
        state["model.mm_projector.0.weight"] = torch.randn(64, 32) * 0.2
        state["model.mm_projector.0.bias"] = torch.randn(64) * 0.2
        state["model.mm_projector.2.weight"] = torch.randn(64, 64) * 0.2
        state["model.mm_projector.2.bias"] = torch.randn(64) * 0.2
    folder.mkdir(parents=True)
    torch.save(state, folder / "pytorch_model.bin")
    config = {**llama.to_dict(), "architectures": ["LlavaLlamaForCausalLM"],
              "model_type": "llava", "mm_vision_tower": str(tower), "mm_hidden_size": 32,
              "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
              "mm_projector_type": projector, "mm_use_im_start_end": False,
              "image_aspect_ratio": "square"}
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(folder)
    return state, llama, tokenizer


def original_logits(state, llama, tower, pixel_values, before, after, projector):
    """What the original code computes: LLaMA over [text; projector(CLIP -2 patches); text]."""
    lm = LlamaForCausalLM(llama)
    lm.load_state_dict({k: v for k, v in state.items() if "mm_projector" not in k})
    vision = CLIPVisionModel.from_pretrained(tower)
    features = vision(pixel_values, output_hidden_states=True).hidden_states[-2][:, 1:]
    if projector == "linear":
        image = F.linear(features, state["model.mm_projector.weight"],
                         state["model.mm_projector.bias"])
    else:
        hidden = F.gelu(F.linear(features, state["model.mm_projector.0.weight"],
                                 state["model.mm_projector.0.bias"]))
        image = F.linear(hidden, state["model.mm_projector.2.weight"],
                         state["model.mm_projector.2.bias"])
    embed = lm.get_input_embeddings()
    sequence = torch.cat([embed(before), image, embed(after)], dim=1)
    return lm(inputs_embeds=sequence).logits


@pytest.mark.parametrize("projector", ["linear", "mlp2x_gelu"])
def test_imported_llava_computes_the_original_logits(tmp_path, projector, capsys):
    tower = write_tower(tmp_path / "clip")
    state, llama, tokenizer = write_original_llava(tmp_path / "original", tower, projector)
    out = tmp_path / "hf"
    code = tools.run_tool("import-weights", ["llava", "--checkpoint", str(tmp_path / "original"),
                                             "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    model = LlavaForConditionalGeneration.from_pretrained(out).eval()
    processor = AutoProcessor.from_pretrained(out)
    assert model.config.image_seq_length == 16 and model.config.vision_feature_layer == -2
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), np.uint8))
    pixel_values = processor.image_processor(image, return_tensors="pt")["pixel_values"]
    ids = tokenizer("<s> how does the person pick up the cup ?")["input_ids"]
    before, after = torch.tensor([ids[:3]]), torch.tensor([ids[3:]])
    image_id = model.config.image_token_index
    input_ids = torch.cat([before, torch.full((1, 16), image_id), after], dim=1)
    with torch.no_grad():
        ours = model(input_ids=input_ids, pixel_values=pixel_values).logits
        theirs = original_logits(state, llama, tower, pixel_values, before, after, projector)
    vocab = llama.vocab_size
    assert ours.shape[-1] == vocab + 2  # <image> and <pad> added
    torch.testing.assert_close(ours[..., :vocab], theirs, rtol=1e-4, atol=1e-4)
    folded = fold_projector(model)
    if projector == "linear":  # the paper's single linear projector folds back exactly
        assert folded is not None
        torch.testing.assert_close(folded[0], state["model.mm_projector.weight"])
    else:
        assert folded is None
    # the imported folder is what the instruct and describe configs load
    from lego.models.instruct import VisualInstructionTuning

    module = VisualInstructionTuning(str(out), max_new_tokens=2)
    module.configure_model()
    plan = module.describe_plan()
    assert plan["manifest"]["dims"]["embed_dim"] == 64
    assert plan["manifest"]["dims"]["image_tokens"] == 16
    assert plan["manifest"]["image_storage"] == ("vision" if projector == "linear" else
                                                 "projected")


class RunsCode:
    def __reduce__(self):
        return (open, ("/tmp/lego-unpickled-code-ran", "w"))


def test_a_pickle_that_would_run_code_is_refused(tmp_path, capsys):
    tower = write_tower(tmp_path / "clip")
    write_original_llava(tmp_path / "original", tower)
    with open(tmp_path / "original" / "pytorch_model.bin", "wb") as handle:
        pickle.dump({"model.norm.weight": RunsCode()}, handle)
    code = tools.run_tool("import-weights", ["llava", "--checkpoint", str(tmp_path / "original"),
                                             "--out", str(tmp_path / "hf")])
    assert code == 2
    err = capsys.readouterr().err
    assert "pytorch_model.bin: not a readable weights file" in err and "no code" in err
    assert not (tmp_path / "hf").exists()
    import os
    assert not os.path.exists("/tmp/lego-unpickled-code-ran")


def test_an_unknown_key_is_named(tmp_path):
    from lego.interop.llava_original import import_llava

    tower = write_tower(tmp_path / "clip")
    state, _, _ = write_original_llava(tmp_path / "original", tower)
    state["model.mm_resampler.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "original" / "pytorch_model.bin")
    with pytest.raises(CheckpointConversionError, match="model.mm_resampler.weight"):
        import_llava(tmp_path / "original", tmp_path / "hf")
