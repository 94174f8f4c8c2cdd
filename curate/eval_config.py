"""The `eval` section of the pipeline config (`reelforge eval`, curate/vbench.py): apart from the scorers,
so that reading a config imports neither OpenCV nor PyAV."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class EvalConfig(BaseModel):
    """How `reelforge eval` reads videos and which prompts it samples for a checkpoint."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Consecutive frames read from the start of each video (VBench's videos are 2-4 s long).
    max_frames: int = Field(default=64, ge=3)
    # Frames are downscaled to at most this short side before every measure (never upscaled).
    short_side: int = Field(default=360, ge=32)
    # Frames given to the image tower (subject/background consistency, aesthetics), spread evenly.
    tower_frames: int = Field(default=16, ge=2)
    # Width of the frames optical flow runs on (motion smoothness, dynamic degree).
    flow_width: int = Field(default=256, ge=32)
    dis_preset: Literal["ultrafast", "fast", "medium"] = "medium"
    # Luma noise level (grey levels, Immerkaer's estimate) at which imaging quality falls to 1/e of the
    # technical quality.
    noise_sigma: float = Field(default=10.0, gt=0.0)
    # Fixed prompts for `--checkpoint` without `--prompts` and for evaluation during training
    # (empty: sample.prompts); sampled with this seed.
    prompts: tuple[str, ...] = ()
    seed: int = 0
    # Lance SQL over clips for `reelforge eval --store` (the clips a model is trained on by default).
    store_filter: str = "selected"
