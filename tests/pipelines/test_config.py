from pathlib import Path

import pytest
import yaml

from pipelines.config import CONFIG_DIR, ConfigError, PipelineConfig, load_config, parse_config


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
def test_every_shipped_config_is_valid(name):
    cfg = load_config(name)
    assert isinstance(cfg, PipelineConfig)
    assert cfg.name == name


def test_typo_in_a_key_names_the_key_and_the_allowed_keys():
    with pytest.raises(ConfigError) as err:
        parse_config({"store": {"rooot": "x"}})
    message = str(err.value)
    assert "unknown key 'store.rooot'" in message
    allowed = message.split("allowed keys in store: ")[1].strip().split(", ")
    assert "root" in allowed and "target_rows_per_fragment" in allowed


def test_unknown_section_is_an_error():
    with pytest.raises(ConfigError, match=r"unknown key 'scoring'; allowed keys in the top level: .*score"):
        parse_config({"scoring": {}})


def test_a_renamed_key_names_its_new_name(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump({"score": {"clip": {"allow_random_weights": True}}}))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).splitlines()[1:] == ["  score.clip was renamed score.image_tower"]
    with pytest.raises(ConfigError, match=r"score.clip was renamed score.image_tower"):
        load_config("demo", ["score.clip.num_cpus=1"])


def test_wrong_type_names_the_key_and_the_value():
    with pytest.raises(ConfigError, match=r"ray.num_cpus: .*got 'lots'"):
        parse_config({"ray": {"num_cpus": "lots"}})
    with pytest.raises(ConfigError, match=r"ray.num_cpus: .*greater than or equal to 0"):
        parse_config({"ray": {"num_cpus": -1}})


def test_overrides_are_typed_and_nested(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"name": "p", "ray": {"num_cpus": 1}}))
    cfg = load_config(path, ["ray.num_cpus=2", "store.root=/x/y", "input.paths=[a, b]"])
    assert cfg.ray.num_cpus == 2
    assert cfg.store.root == Path("/x/y")
    assert cfg.input.paths == ("a", "b")


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match=r"section.key=value"):
        load_config("demo", ["store.root"])
    with pytest.raises(ConfigError, match=r"unknown key 'store.nope'"):
        load_config("demo", ["store.nope=1"])


def test_config_is_frozen_and_resolves_to_json():
    cfg = load_config("demo")
    with pytest.raises(Exception, match="frozen"):
        cfg.name = "other"  # type: ignore[misc]
    resolved = cfg.resolved()
    assert parse_config(resolved) == cfg  # the stored form reproduces the config exactly


def test_unknown_config_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown config 'nope'.*demo"):
        load_config("nope")
