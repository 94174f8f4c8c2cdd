import subprocess
import sys

import pytest

from pipelines.cli.command import build_parser, main

STAGES = [
    "probe",
    "split",
    "score",
    "filter",
    "caption",
    "encode",
    "train-vae",
    "train",
    "sample",
    "report",
    "demo",
]


def test_console_script_help_lists_every_stage():
    out = subprocess.run([sys.executable, "-m", "pipelines.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for stage in [*STAGES, "sample-footage"]:
        assert stage in out.stdout


@pytest.mark.parametrize("stage", [*STAGES, "sample-footage"])
def test_every_subcommand_has_help(stage, capsys):
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([stage, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "usage: reelforge" in text
    if stage != "sample-footage":
        assert "--set SECTION.KEY=VALUE" in text and "--config" in text


def test_typo_in_config_key_fails_naming_the_key(capsys):
    assert main(["report", "--set", "report.thumbnale=3"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'report.thumbnale'" in err and "thumbnails" in err


def test_sample_footage_command_writes_videos_and_truth(tmp_path, capsys):
    assert main(["sample-footage", str(tmp_path)]) == 0
    assert (tmp_path / "cuts.mp4").stat().st_size > 10_000
    assert (tmp_path / "cuts.mp4.gt.json").is_file()
