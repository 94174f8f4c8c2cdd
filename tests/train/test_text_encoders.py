"""Text encoders: the packaged MiniLM offline, and T5 / open_clip loaded from local folders made here."""

from __future__ import annotations

import json

import pytest
import torch

from train.config import TextEncoderConfig
from train.text import build_text_encoder, minilm_path


def test_minilm_loads_offline_from_the_pip_package(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert (minilm_path() / "model.safetensors").is_file()
    encoder = build_text_encoder(TextEncoderConfig(kind="minilm", max_length=16))
    tokens, mask = encoder.encode(["a dog runs on the beach", "a red car"])
    assert tokens.shape == (2, 16, 384) and encoder.dim == 384
    assert mask[0].sum() > mask[1].sum() >= 3  # [CLS] a red car [SEP]...
    # Real pretrained weights: related captions are closer than unrelated ones.
    pooled = [
        encoder.encode([c])[0][0, :6].mean(0) for c in ("a dog on a beach", "a puppy at the sea", "tax law")
    ]
    cos = torch.nn.functional.cosine_similarity
    assert cos(pooled[0], pooled[1], dim=0) > cos(pooled[0], pooled[2], dim=0)
    null_tokens, null_mask = encoder.null()
    assert null_tokens.shape == (16, 384) and null_mask.sum() == 2  # [CLS] [SEP]


def _tiny_t5_folder(folder):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(
        ["a cat sits on a mat", "a dog runs"],
        trainers.WordLevelTrainer(special_tokens=["<pad>", "</s>", "<unk>"]),
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = T5Config(vocab_size=fast.vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
    T5EncoderModel(config).save_pretrained(folder)


def test_t5_from_a_local_folder(tmp_path):
    _tiny_t5_folder(tmp_path / "t5")
    encoder = build_text_encoder(TextEncoderConfig(kind="t5", path=str(tmp_path / "t5"), max_length=8))
    tokens, mask = encoder.encode(["a cat sits", "a dog runs on a mat"])
    assert tokens.shape == (2, 8, 32) and encoder.dim == 32
    assert mask.sum(1).tolist() == [3, 6]
    assert not torch.allclose(tokens[0, 0], tokens[1, 1])


def test_t5_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder with a T5 model"):
        build_text_encoder(TextEncoderConfig(kind="t5", path=str(tmp_path / "absent")))
    with pytest.raises(ValueError, match=r"needs text\.path"):
        TextEncoderConfig(kind="t5")


def test_open_clip_text_tower_from_a_local_checkpoint(tmp_path):
    import open_clip

    name = "reelforge-test-tiny-clip"
    spec = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    (tmp_path / f"{name}.json").write_text(json.dumps(spec))
    open_clip.add_model_config(tmp_path / f"{name}.json")
    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny_clip.pt"
    torch.save(open_clip.create_model(name).state_dict(), checkpoint)
    encoder = build_text_encoder(
        TextEncoderConfig(kind="open_clip", open_clip_model=name, path=str(checkpoint), max_length=12)
    )
    tokens, mask = encoder.encode(["a photo of a cat", "dog"])
    assert tokens.shape == (2, 12, 32)
    assert mask.sum(1).tolist() == [7, 3]  # <start> a photo of a cat <end> / <start> dog <end>
    reference = open_clip.create_model(name, pretrained=str(checkpoint))
    assert torch.equal(encoder.token_embedding.weight, reference.token_embedding.weight)
