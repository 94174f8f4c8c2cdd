"""The encode stage: clips -> latents and caption embeddings, stored as clips columns.

A model stage in the project's sense: the constructor loads the VAE and the text encoder, and
`__call__(batch)` maps a batch holding clip_id, the clip's MP4 bytes, its size, frame count and
caption to a batch with the columns the trainer reads (see train.clip_index.LATENT_COLUMNS). Each clip
is cut to the bucket the trainer would put it in, and the VAE runs under the trainer's autocast (train.precision on this
device), so a precomputed latent is bit-for-bit what the trainer would have computed on the fly. Clips that fit no bucket or fail to decode get null
columns and a reason in `encode_error`, and the batch goes on.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import torch

from store import ROW_ID, contract
from train.clip_index import assign_bucket, bucket_name
from train.config import TrainConfig
from train.device import Placement
from train.loader import decode_clip, frames_to_tensor
from train.prompts import prompt_template, render_prompts
from train.text import build_text_encoder
from train.vae import load_vae

# The columns the stage writes (clip_id is the key), as the data contract declares them.
ENCODE_SCHEMA = contract.stage_schema("encode")


def encode_signature(config: TrainConfig) -> dict[str, Any]:
    """What the columns depend on; the trainer refuses latents made by another VAE or text encoder."""
    return {
        "vae": config.vae.model_dump(mode="json"),
        "text": config.text.model_dump(mode="json"),
        "buckets": [bucket_name(b) for b in config.data.buckets],
        "caption_column": config.data.caption_column,
        "prompt_template": prompt_template(config.data),
    }


class LatentEncoder:
    """`device` is a resolved setting (cpu, cuda): the encode job resolves encode.device against the
    Ray cluster, and a Ray actor given a GPU sees it as cuda:0."""

    def __init__(self, config: TrainConfig, device: str = "cpu"):
        self.config = config
        self.placement = Placement.resolve(device, config.precision, "encode.device")
        self.vae = load_vae(config.vae).to(self.placement.device)
        self.text = build_text_encoder(config.text).to(self.placement.device)

    def __call__(self, batch: dict[str, Any]) -> pa.Table:
        """batch: clip_id, video (bytes), width, height, num_frames, the prompt columns -> ENCODE_SCHEMA table.

        Arrow out, not numpy: the bytes and list columns keep their exact types through Ray."""
        ids = list(batch["clip_id"])
        captions = render_prompts(batch, prompt_template(self.config.data), len(ids))
        out: dict[str, list[Any]] = {name: [None] * len(ids) for name in ENCODE_SCHEMA.names}
        out["clip_id"] = ids
        tokens, mask = self.text.encode(captions)
        by_bucket: dict[str, list[tuple[int, torch.Tensor]]] = {}
        buckets = {}
        for i in range(len(ids)):
            bucket = assign_bucket(
                int(batch["width"][i]),
                int(batch["height"][i]),
                int(batch["num_frames"][i]),
                self.config.data.buckets,
            )
            if bucket is None:
                out["encode_error"][i] = "shorter than every bucket"
                continue
            try:
                video = frames_to_tensor(decode_clip(bytes(batch["video"][i]), bucket))
            except ValueError as err:
                out["encode_error"][i] = str(err)
                continue
            buckets[bucket_name(bucket)] = bucket
            by_bucket.setdefault(bucket_name(bucket), []).append((i, video))
        for name, items in by_bucket.items():
            videos = torch.stack([v for _, v in items])
            with torch.no_grad(), self.placement.autocast():
                latents = self.vae.encode_normalized(self.placement.put(videos)).float().cpu()
            for (i, _), latent in zip(items, latents, strict=True):
                array = latent.contiguous().numpy()
                text = tokens[i].float().cpu().contiguous().numpy()
                out["latent"][i] = array.tobytes()
                out["latent_shape"][i] = list(array.shape)
                out["latent_bucket"][i] = name
                out["text_emb"][i] = text.tobytes()
                out["text_shape"][i] = list(text.shape)
                out["text_len"][i] = int(mask[i].sum())
        table = pa.Table.from_pydict(out, schema=ENCODE_SCHEMA)
        if ROW_ID in batch:  # the job's work list: the row id goes back with the columns
            table = table.append_column(ROW_ID, pa.array(batch[ROW_ID], pa.uint64()))
        return table
