"""Build a tiny Qwen2-VL model locally: random weights, a BPE tokenizer trained here, processors.

It exercises exactly the code path of a real Qwen2-VL/Qwen2.5-VL captioner in vLLM (chat template,
image and video processors, M-RoPE, vision tower, continuous batching) at ~1.2M parameters, so
tests and the demo run vLLM for real on a CPU without downloading anything. Its captions are
random text: they are placeholders, not descriptions.

    python -m caption.vllm.tiny_model OUT_DIR        (in the vLLM environment, .venv-vllm)

Deterministic: the same transformers/tokenizers versions give the same files. `builder_hash()`
identifies a build, so callers can cache the folder.
"""

from __future__ import annotations

# The guard must run before transformers imports torchvision (see caption/vllm/tv_guard.py).
from caption.vllm import tv_guard

tv_guard.install()

import argparse  # noqa: E402
import hashlib  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING, cast  # noqa: E402

from caption.prompts import all_prompts  # noqa: E402
from caption.vllm.runtime import TINY_VLM_MARKER as COMPLETE_MARKER  # noqa: E402
from caption.vllm.runtime import TINY_VLM_NAME as SERVED_NAME  # noqa: E402

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

SEED = 0
VOCAB_SIZE = 512

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Qwen2-VL's chat format. Handles both content styles vLLM may pass: a string with placeholders
# already inserted, or OpenAI-style parts (image/video parts become vision placeholders).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] in ('image', 'image_url') %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] in ('video', 'video_url') %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Training text for the tokenizer: the caption prompts plus caption-like vocabulary, so prompts
# tokenize into a realistic number of tokens.
_CAPTION_WORDS = (
    "a person walks along a street at night while cars pass in the background. the camera pans "
    "slowly to the left, following a dog running across green grass under bright sunlight. "
    "close-up of hands cooking food in a kitchen; steam rises from a pan. aerial view of a city, "
    "buildings, river, bridge, boats, mountains, snow, forest, beach, waves, sky, clouds, sunset. "
    "static shot, tracking shot, zoom in, zoom out, tilt up, handheld camera, slow motion, "
    "timelapse, indoor, outdoor, warm light, cold blue tones, red, green, yellow, white, black. "
    "0 1 2 3 4 5 6 7 8 9, tags: people, animals, vehicles, nature, sports, music, text overlay."
)


def builder_hash() -> str:
    """Changes whenever this builder or the libraries that shape its output change."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for dist in ("transformers", "tokenizers", "torch"):
        digest.update(f"{dist}=={importlib.metadata.version(dist)}".encode())
    return digest.hexdigest()[:16]


def is_built(folder: str | Path) -> bool:
    """Is an identical build (same builder hash) complete in `folder`?"""
    marker = Path(folder) / COMPLETE_MARKER
    return marker.is_file() and json.loads(marker.read_text()).get("builder_hash") == builder_hash()


def _train_tokenizer() -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [_CAPTION_WORDS] + [p.system + " " + p.user for p in all_prompts()]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - len(SPECIAL_TOKENS),
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
    )


def build(out_dir: str | Path) -> Path:
    """Write the model, tokenizer, processors and chat template into `out_dir`; returns it."""
    import torch
    from transformers import (
        GenerationConfig,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / COMPLETE_MARKER).unlink(missing_ok=True)

    tokenizer = _train_tokenizer()
    # One token in, one id out (the list form is for a list of tokens).
    ids = {t: cast(int, tokenizer.convert_tokens_to_ids(t)) for t in SPECIAL_TOKENS}
    # Images up to 8x8 merged patches (64 tokens); video frames up to 4x4 per temporal pair.
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": 28 * 28 * 4, "longest_edge": 28 * 28 * 64}
    )
    video_processor = Qwen2VLVideoProcessor(size={"shortest_edge": 28 * 28 * 4, "longest_edge": 28 * 28 * 16})
    processor = Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )

    hidden, heads = 128, 2
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": VOCAB_SIZE,
            "hidden_size": hidden,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": heads,
            "num_key_value_heads": 1,
            "max_position_embeddings": 4096,
            # M-RoPE splits each head's rotary half (head_dim/2 = 32) into time, height, width.
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1_000_000.0,
                "mrope_section": [8, 12, 12],
            },
            "bos_token_id": ids["<|im_start|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
            "dtype": "bfloat16",
        },
        vision_config={
            "depth": 2,
            "embed_dim": 128,
            "hidden_size": hidden,
            "mlp_ratio": 2,
            "num_heads": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(SEED)
    model = Qwen2VLForConditionalGeneration(config).bfloat16().eval()
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|im_start|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"]
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    (out / COMPLETE_MARKER).write_text(
        json.dumps(
            {
                "builder_hash": builder_hash(),
                "architecture": "Qwen2VLForConditionalGeneration",
                "parameters": params,
                "seed": SEED,
                "served_model_name": SERVED_NAME,
                "note": "random weights: captions from this model are placeholders",
            },
            indent=2,
        )
    )
    return out


def main(argv: list[str] | None = None) -> int:
    """Build the tiny model into OUT_DIR unless an identical build is there; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--force", action="store_true", help="rebuild even if an identical build exists")
    args = parser.parse_args(argv)
    if not args.force and is_built(args.out_dir):
        print(f"tiny VLM already built in {args.out_dir}")
        return 0
    out = build(args.out_dir)
    info = json.loads((out / COMPLETE_MARKER).read_text())
    print(f"tiny VLM ({info['parameters']:,} params, random weights) written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
