import pytest
import torch
from transformers import CLIPTokenizer

from lego.cli import main
from lego.models.editing import PixelUnshuffleAutoencoder, bootstrap
from lego.models.editing.components import load_components
from lego.synthego import vocabulary


def test_bootstrap_writes_a_loadable_miniature_stack(tmp_path, capsys):
    main(["bootstrap", "--out", str(tmp_path), "--only", "diffusion"])
    root = tmp_path / bootstrap.SYNTHEGO_SD
    assert f"diffusion: wrote {root}" in capsys.readouterr().out
    parts = load_components(root, "sample")
    assert isinstance(parts.vae, PixelUnshuffleAutoencoder)
    assert parts.vae.config.scaling_factor == bootstrap.SYNTHEGO_SCALING == 3.0
    assert tuple(parts.unet.config.block_out_channels) == (32, 64)
    assert parts.unet.config.in_channels == 96  # written with 48, widened like SD's 4 -> 8
    assert set(parts.unet.config.down_block_types) == {"CrossAttnDownBlock2D"}
    assert parts.text_encoder.config.hidden_size == 64
    assert parts.text_encoder.config.num_hidden_layers == 2
    assert parts.unet.config.cross_attention_dim == 64
    assert not any(p.requires_grad for p in parts.text_encoder.parameters())
    n = sum(p.numel() for p in parts.unet.parameters())
    assert 0.8e6 < n < 1.5e6
    # attention heads are 16 wide at every level (diffusers' attention_head_dim counts heads)
    widths = {
        m.inner_dim // m.heads for m in parts.unet.modules() if type(m).__name__ == "Attention"
    }
    assert widths == {16}
    # the existing backbone is kept on a second run
    main(["bootstrap", "--out", str(tmp_path)])
    assert "exists" in capsys.readouterr().out


def test_unet_head_width_must_divide_the_channels(tmp_path):
    with pytest.raises(ValueError, match="48 channels do not split into heads of 32"):
        bootstrap.write_unet(tmp_path, 48, 64, 16, block_out_channels=(32, 48), head_dim=32)


def test_word_level_tokenizer_keeps_every_vocabulary_word_whole(tmp_path):
    words = vocabulary()
    bootstrap.write_word_tokenizer(tmp_path / "tok", words)
    tok = CLIPTokenizer.from_pretrained(tmp_path / "tok")
    assert tok.model_max_length == 77
    split = tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str
    for word in words:
        ids = tok(word, add_special_tokens=False).input_ids
        pieces = split(word.lower())  # CLIP splits e.g. "#C" into "#" and "c"
        assert len(ids) == len(pieces), (word, tok.convert_ids_to_tokens(ids))
    ids = tok("#C C picks up the red cup", add_special_tokens=False).input_ids
    assert tok.unk_token_id not in ids
    unknown = tok("zyx", add_special_tokens=False).input_ids
    assert len(unknown) == 3 and tok.unk_token_id not in unknown  # characters, not <unk>
    assert torch.tensor(tok([""], padding="max_length").input_ids).shape == (1, 77)


def test_word_tokenizer_files_are_the_same_every_time(tmp_path):
    # the tokenizers BPE trainer breaks ties in hash order: ids changed from run to run
    for name in ("a", "b", "c"):
        bootstrap.write_word_tokenizer(tmp_path / name, vocabulary())
    files = [(tmp_path / n / "tokenizer.json").read_text() for n in ("a", "b", "c")]
    assert files[0] == files[1] == files[2]


def test_learned_merges_build_each_word_whole():
    merges = bootstrap.learn_merges(["cup", "cut", "up"])
    assert merges[0] == ("c", "u")  # the most frequent pairs: (c, u) and (u, p</w>); ties by text
    joined = {a + b for a, b in merges}
    assert {"cup</w>", "cut</w>", "up</w>"} <= joined
