"""Where the model stages run (train-vae, encode, train, sample): the one place a `device` setting becomes a
torch device, and the CUDA habits that go with it.

- `auto` is CUDA when this process sees a GPU, else the CPU; `cuda` is the first GPU or, in a
  distributed run (torchrun, Ray Train), the rank's own one (LOCAL_RANK); `cuda:N` names one GPU.
- On CUDA: bf16 autocast by default (train.precision / vae_train.precision), TF32 for the fp32 matmuls
  and convolutions left outside it, pinned host batches copied without blocking, noise generators on
  the GPU. On the CPU nothing changes: fp32, no autocast, CPU generators, so CPU results stay exactly
  what they were.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from train.config import DEVICE_CHOICES, DeviceError, Precision

CPU = torch.device("cpu")


def cuda_device_count() -> int:
    """CUDA devices visible to this process (0 without CUDA)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def local_rank() -> int | None:
    """This process's GPU slot on its node when torchrun or Ray Train started it (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return int(os.environ.get("LOCAL_RANK", "0"))
    return None


def resolve_device(setting: str, key: str, rank_slot: int | None = None) -> torch.device:
    """The device `setting` (auto | cpu | cuda | cuda:N) names on this machine; `key` is the config key
    the one-line DeviceError names. `rank_slot` is the LOCAL_RANK of a distributed run: `cuda` then
    means that GPU."""
    if setting == "cpu":
        return CPU
    count = cuda_device_count()
    if count == 0:
        if setting == "auto":
            return CPU
        raise DeviceError(
            f"{key}={setting} but this machine has no CUDA device (torch.cuda.is_available() is False): "
            f"set {key} to one of {DEVICE_CHOICES} (auto uses the CPU here)"
        )
    if setting.startswith("cuda:"):
        if rank_slot is not None:
            raise DeviceError(
                f"{key}={setting} names one GPU, but each distributed rank runs on its own (LOCAL_RANK): "
                f"set {key} to auto or cuda"
            )
        index = int(setting.split(":")[1])
        if index >= count:
            raise DeviceError(
                f"{key}={setting} but this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}: "
                f"set {key} to one of {DEVICE_CHOICES} with N below {count}"
            )
    else:
        index = rank_slot or 0
        if index >= count:
            raise DeviceError(
                f"{key}={setting}: rank slot LOCAL_RANK={index} has no GPU of its own on this node "
                f"({count} CUDA device(s)): start at most {count} processes per node, or set {key}=cpu"
            )
    device = torch.device("cuda", index)
    enable_cuda_fast_paths()
    torch.cuda.set_device(device)  # nccl and the caching allocator use the current device
    return device


def enable_cuda_fast_paths() -> None:
    """TF32 for fp32 matmuls and cuDNN convolutions (10-bit mantissa inputs, fp32 accumulation): what
    stays fp32 under bf16 autocast runs on the tensor cores. CUDA-only switches: CPU math is untouched."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True


def autocast_dtype(precision: Precision, device: torch.device) -> torch.dtype:
    """auto: bf16 on CUDA, fp32 (no autocast) on the CPU."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return torch.bfloat16 if precision == "bf16" else torch.float32


@dataclass(frozen=True)
class Placement:
    """A resolved device and the autocast dtype of the model's forward passes on it."""

    device: torch.device
    dtype: torch.dtype = torch.float32

    @classmethod
    def resolve(cls, setting: str, precision: Precision, key: str, rank_slot: int | None = None) -> Placement:
        """The device and autocast dtype of a setting ("auto", "cpu", "cuda", "cuda:N")."""
        device = resolve_device(setting, key, rank_slot)
        return cls(device, autocast_dtype(precision, device))

    @property
    def cuda(self) -> bool:
        """Is the device a GPU?"""
        return self.device.type == "cuda"

    def autocast(self) -> AbstractContextManager[object]:
        """The autocast context of the precision (none for float32)."""
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def put(self, tensor: torch.Tensor) -> torch.Tensor:
        """A host tensor on the device; the copy overlaps compute when the tensor is pinned (CUDA)."""
        return tensor.to(self.device, non_blocking=self.cuda)

    def generator(self, seed: int) -> torch.Generator:
        """A generator on the device: noise is drawn where it is used, never copied from the host."""
        return torch.Generator(device=self.device).manual_seed(seed)
