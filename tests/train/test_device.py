"""Device settings of the model stages (train/device.py): what `auto`, `cpu`, `cuda` and `cuda:N` resolve to,
and the one-line refusals when a machine or a Ray cluster cannot serve them."""

from __future__ import annotations

import pytest
import torch
import yaml

from pipelines.cli import main
from pipelines.cli.options import EXIT_REFUSED
from pipelines.config import ConfigError, parse_config
from pipelines.jobs.encode import encoder_device
from pipelines.jobs.train import check_ray_device
from train.config import DeviceError, EncodeConfig, VAEConfig, VAETrainConfig
from train.device import CPU, Placement, resolve_device
from train.vae_train import train_vae

no_cuda = pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the refusals of a machine without CUDA"
)
ALLOWED = "auto, cpu, cuda or cuda:N"


@pytest.mark.parametrize("section", ["train", "encode", "sample"])
def test_a_device_setting_outside_the_choices_is_a_config_error_naming_them(section):
    with pytest.raises(ConfigError, match=rf"{section}\.device: .*{ALLOWED}.*'gpu'"):
        parse_config({section: {"device": "gpu"}})
    with pytest.raises(ConfigError, match=r"train\.vae_train\.device"):
        parse_config({"train": {"vae_train": {"device": "cuda:x"}}})
    parse_config({section: {"device": "cuda:3"}})  # valid in a config; resolved where it runs


def test_cpu_placement_keeps_fp32_without_autocast():
    placement = Placement.resolve("cpu", "auto", "train.device")
    assert placement.device == CPU and placement.dtype == torch.float32 and not placement.cuda
    assert Placement.resolve("cpu", "bf16", "train.device").dtype == torch.bfloat16
    tensor = torch.ones(2)
    assert placement.put(tensor) is tensor
    assert placement.generator(3).device == CPU


@no_cuda
@pytest.mark.parametrize("setting", ["cuda", "cuda:1"])
def test_cuda_without_cuda_is_one_line_naming_the_key_and_the_choices(setting):
    assert resolve_device("auto", "train.device") == CPU
    with pytest.raises(DeviceError) as err:
        resolve_device(setting, "sample.device")
    message = str(err.value)
    assert "\n" not in message and f"sample.device={setting}" in message and ALLOWED in message


@no_cuda
def test_train_vae_refuses_cuda_before_reading_anything(tmp_path):
    config = VAETrainConfig(device="cuda", out_dir=str(tmp_path / "vae"))
    with pytest.raises(DeviceError, match=r"train\.vae_train\.device=cuda"):
        train_vae(VAEConfig(), config, str(tmp_path / "no-such-table.lance"))
    assert not (tmp_path / "vae").exists()


def test_encode_device_resolves_against_the_ray_cluster():
    assert encoder_device(EncodeConfig(device="auto"), cluster_gpus=0) == "cpu"
    assert encoder_device(EncodeConfig(device="auto"), cluster_gpus=8) == "cuda"
    assert encoder_device(EncodeConfig(device="cpu"), cluster_gpus=8) == "cpu"
    with pytest.raises(DeviceError, match=r"encode\.device=cuda but the Ray cluster has no GPU"):
        encoder_device(EncodeConfig(device="cuda"), cluster_gpus=0)
    with pytest.raises(DeviceError, match=r"encode\.device=cuda:2 names one GPU"):
        encoder_device(EncodeConfig(device="cuda:2"), cluster_gpus=8)


def test_ray_train_device_must_match_the_gpus_its_workers_get():
    check_ray_device("auto", 0)
    check_ray_device("cuda", 1)
    with pytest.raises(DeviceError, match="add --gpus-per-worker 1"):
        check_ray_device("cuda", 0)
    with pytest.raises(DeviceError, match=r"set train\.device to auto or cuda"):
        check_ray_device("cpu", 0.5)


@no_cuda
@pytest.mark.slow
def test_cli_train_on_cuda_without_cuda_is_refused_in_one_line(real_clips, small_vae, tmp_path, capsys):
    store, _ = real_clips
    train = {"device": "cuda", "out_dir": str(tmp_path / "t"), "vae": small_vae.model_dump(mode="json")}
    config = tmp_path / "cuda.yaml"
    config.write_text(yaml.safe_dump({"store": {"root": str(store.root)}, "train": train}))
    assert main(["train", "--config", str(config)]) == EXIT_REFUSED
    err = capsys.readouterr().err.strip()
    assert err.startswith("reelforge train: train.device=cuda but this machine has no CUDA device")
    assert "\n" not in err and ALLOWED in err
