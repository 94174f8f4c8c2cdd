"""The image tower: open_clip's CLIP image encoder, and the model stage that also applies the aesthetic head.

The image tower is built by open_clip from a built-in architecture name plus a checkpoint file or
pretrained tag, from "local-dir:FOLDER" (open_clip_config.json + weights, the hub layout), or from
"hf-hub:org/repo". Only the image tower is kept. Pixels arrive already resized and centre-cropped
to the tower's input size (curate.frames.tower_input(), run in the CPU decode tasks), so the model
stage only normalises and runs the network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch

from curate.aesthetic import MissingWeightsError, load_head, score_frames
from curate.config import ImageTowerConfig, ScoreConfig

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")


def _has_weights(cfg: ImageTowerConfig, name: str) -> bool:
    if name.startswith("local-dir:"):
        folder = Path(name.removeprefix("local-dir:"))
        return any(p.suffix in _WEIGHT_SUFFIXES for p in folder.glob("*"))
    if name.startswith("hf-hub:"):
        return True
    return cfg.checkpoint is not None


class ImageTower:
    """An open_clip image tower: frames in, L2-normalised embeddings out."""

    def __init__(self, cfg: ImageTowerConfig) -> None:
        self.cfg = cfg
        name = cfg.resolved_model()
        self.placeholder = not _has_weights(cfg, name)
        if self.placeholder and not cfg.allow_random_weights:
            raise MissingWeightsError(
                f"no image-tower weights for '{name}': set score.image_tower.checkpoint to a local "
                "checkpoint file (or an open_clip pretrained tag such as 'laion2b_s34b_b79k', which "
                "downloads), or point "
                "score.image_tower.model at local-dir:FOLDER holding open_clip_config.json and the weights; "
                "set score.image_tower.allow_random_weights=true only for placeholder scores (demo, tests)"
            )
        builtin = not name.startswith(("local-dir:", "hf-hub:"))
        if (
            builtin
            and cfg.checkpoint is not None
            and not Path(cfg.checkpoint).is_file()
            and "/" in cfg.checkpoint
        ):
            raise FileNotFoundError(f"image-tower checkpoint not found: {cfg.checkpoint}")
        rng = torch.random.get_rng_state()
        torch.manual_seed(cfg.seed)
        model = open_clip.create_model(
            name,
            pretrained=cfg.checkpoint if builtin else None,
            load_weights=not self.placeholder,
            device=cfg.device,
            pretrained_text=False,
        )
        torch.random.set_rng_state(rng)
        self.visual = model.visual.eval()
        del model
        size = self.visual.image_size
        self.image_size = int(size[0] if isinstance(size, tuple | list) else size)
        pp = getattr(self.visual, "preprocess_cfg", {})
        mean = pp.get("mean", open_clip.OPENAI_DATASET_MEAN)
        std = pp.get("std", open_clip.OPENAI_DATASET_STD)
        self._mean = torch.tensor(mean, dtype=torch.float32, device=cfg.device).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(std, dtype=torch.float32, device=cfg.device).view(1, 3, 1, 1) * 255.0
        self.embed_dim = int(self.visual.output_dim)
        self.name = name

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """(n, S, S, 3) uint8 from tower_input() -> (n, D) float32 L2-normalised embeddings."""
        if pixels.shape[0] == 0:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        if pixels.shape[1:] != (self.image_size, self.image_size, 3):
            raise ValueError(
                f"expected (n, {self.image_size}, {self.image_size}, 3) pixels, got {pixels.shape}"
            )
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.cfg.device)
            x = (x.permute(0, 3, 1, 2).float() - self._mean) / self._std
            features = self.visual(x)
            features = torch.nn.functional.normalize(features.float(), dim=-1)
        return features.cpu().numpy()

    def describe(self) -> dict[str, Any]:
        """The tower's library, model and checkpoint, as recorded with the stage."""
        return {
            "library": "open_clip",
            "version": open_clip.__version__,
            "model": self.name,
            "checkpoint": self.cfg.checkpoint,
            "embed_dim": self.embed_dim,
            "placeholder": self.placeholder,
        }


class ImageTowerStage:
    """Model stage: batch["tower_pixels"][i] (n_i, S, S, 3) -> clip_embedding, aesthetic_mean/min.

    One forward pass over all frames of the batch; per-clip results are split back out. A clip with
    no frames (its decode failed) gets nulls.
    """

    def __init__(self, cfg: ScoreConfig) -> None:
        self.cfg = cfg
        self.tower = ImageTower(cfg.image_tower)
        self.head = None
        self.head_placeholder = False
        if cfg.aesthetic.enabled:
            self.head, self.head_placeholder = load_head(
                cfg.aesthetic,
                self.tower.embed_dim,
                allow_random=cfg.image_tower.allow_random_weights,
                seed=cfg.image_tower.seed,
            )

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Embed one Ray Data batch of clips' tower pixels into the aesthetic and embedding columns."""
        per_clip = [
            np.asarray(p, dtype=np.uint8).reshape(-1, self.tower.image_size, self.tower.image_size, 3)
            for p in batch["tower_pixels"]
        ]
        counts = [p.shape[0] for p in per_clip]
        all_pixels = np.concatenate(per_clip) if sum(counts) else np.zeros((0, 1, 1, 3), np.uint8)
        embeddings = self.tower.embed(all_pixels)
        frame_scores = (
            score_frames(self.head, embeddings) if self.head is not None and len(embeddings) else None
        )
        # Failed clips (no frames) get NaN rows: fixed-shape arrays travel through Ray Data cheaply,
        # and the job turns NaN into nulls when it stages the rows.
        clip_embeddings = np.full((len(counts), self.tower.embed_dim), np.nan, dtype=np.float32)
        a_mean = np.full(len(counts), np.nan)
        a_min = np.full(len(counts), np.nan)
        start = 0
        for i, n in enumerate(counts):
            if n == 0:
                continue
            mean = embeddings[start : start + n].mean(axis=0)
            clip_embeddings[i] = mean / max(float(np.linalg.norm(mean)), 1e-12)
            if frame_scores is not None:
                a_mean[i] = frame_scores[start : start + n].mean()
                a_min[i] = frame_scores[start : start + n].min()
            start += n
        out = {k: v for k, v in batch.items() if k != "tower_pixels"}
        if self.cfg.embedding.enabled:
            out["clip_embedding"] = clip_embeddings
        if self.head is not None:
            out["aesthetic_mean"] = a_mean
            out["aesthetic_min"] = a_min
        return out

    def describe(self) -> dict[str, Any]:
        """The tower and aesthetic head, as recorded with the stage."""
        info: dict[str, Any] = {"image_tower": self.tower.describe()}
        if self.head is not None:
            info["aesthetic_head"] = {
                "layout": "laion-improved-aesthetic-predictor",
                "checkpoint": self.cfg.aesthetic.head_checkpoint,
                "input_size": self.head.input_size,
                "placeholder": self.head_placeholder,
            }
        return info


def has_weights(cfg: ImageTowerConfig) -> bool:
    """Whether the configured tower loads trained weights (else it would be a random placeholder)."""
    return _has_weights(cfg, cfg.resolved_model())


def tower_input_size(cfg: ImageTowerConfig) -> int:
    """The tower's square input size, read from its open_clip config without building the model."""
    model_cfg = open_clip.get_model_config(cfg.resolved_model())
    if model_cfg is None:
        raise ValueError(f"unknown open_clip model '{cfg.resolved_model()}'")
    size = model_cfg["vision_cfg"]["image_size"]
    return int(size[0] if isinstance(size, list | tuple) else size)
