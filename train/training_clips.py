"""What a DiT training run learns from: the clips of train.data.filter in their buckets, split into
training and validation, refused in one line when they cannot serve the run; whether their precomputed
latents were made for this config; and which of its inputs came from placeholder models."""

from __future__ import annotations

import logging
from pathlib import Path

import lance

from store import Store
from store.placeholders import schema_marks
from train.clip_index import ClipIndex, TrainDataError, build_index, no_clips_error
from train.config import TrainConfig
from train.encode import encode_signature
from train.loader import BucketBatchSampler

log = logging.getLogger(__name__)


def latents_match(clips_uri: str, config: TrainConfig) -> bool:
    """Were the clips' latent/text columns made by exactly this VAE, text encoder and bucket set?"""
    records = Store(Path(clips_uri).parent).stage_records()
    recorded = records.get("encode", {}).get("config", {}).get("signature")
    return bool(recorded == encode_signature(config))


def placeholder_inputs(clips_uri: str, version: int, config: TrainConfig) -> dict[str, str]:
    """The placeholder mark (store/placeholders.py) of the caption column training learns from: a DiT
    trained on a random-weight VLM's captions learnt random text (precomputed text embeddings are made
    of the same captions)."""
    marks = schema_marks(lance.dataset(clips_uri, version=version).schema)
    caption = config.data.caption_column
    return {caption: marks[caption]} if caption in marks else {}


def training_index(
    config: TrainConfig, clips_uri: str, world_size: int = 1
) -> tuple[ClipIndex, ClipIndex, ClipIndex]:
    """(every clip to learn from, its training part, its validation part). Raises TrainDataError when
    precomputed latents are required but made by another encoder, when no clip is left to train on,
    or when there are fewer batches an epoch than ranks (a rank without a batch would wait forever).
    Only reads the clips: the CLI's preflight calls it before a run takes the store."""
    index = build_index(clips_uri, config.data)
    if index.has_latents and not latents_match(clips_uri, config):
        if config.data.latents == "precomputed":
            raise TrainDataError(
                f"train.data.latents=precomputed but the latents in {clips_uri} were made with another "
                "autoencoder, text encoder or bucket set (train.vae, train.text, train.data.buckets): run "
                "`reelforge encode` again, or set train.data.latents=auto to decode the clips instead"
            )
        log.warning("precomputed latents do not match this config; decoding clips on the fly")
        index = build_index(clips_uri, config.data.model_copy(update={"latents": "decode"}))
    train_index, val_index = index.split(config.val_fraction)
    if len(train_index) == 0:
        raise no_clips_error("train on", index, "train.data")
    batches = len(BucketBatchSampler(train_index, config.batch_size, config.seed, world_size=world_size))
    if batches == 0:
        per_epoch = len(BucketBatchSampler(train_index, config.batch_size, config.seed))
        raise TrainDataError(
            f"{world_size} training workers need a batch each, and the {len(train_index)} training clips "
            f"in {clips_uri} make {per_epoch} batch(es) of train.batch_size={config.batch_size}: use at "
            "most that many workers, lower train.batch_size, or select more clips"
        )
    return index, train_index, val_index
