"""The pipeline config: one YAML per pipeline (configs/*.yaml) parsed into frozen, validated classes.

Each stage's config class lives next to the stage code (curate/split_config.py, curate/config.py,
caption/config.py, train/config.py); this module composes them, applies `--set section.key=value`
overrides and turns validation failures into messages that name the key and what is allowed.
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from caption.config import CaptionConfig
from curate.config import FilterConfig, ScoreConfig
from curate.eval_config import EvalConfig
from curate.split_config import SplitConfig
from pipelines.export_config import ExportConfig
from store.config import StoreConfig
from train.config import EncodeConfig, SampleConfig, TrainConfig

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
# Keys that were renamed (old -> new): a config still using the old name is told the new one.
RENAMED_KEYS = {"score.clip": "score.image_tower"}


class ConfigError(ValueError):
    """A config that cannot be used; the message names every offending key."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class InputConfig(_Frozen):
    """Where the input footage is found and which files count as video."""

    # Folders (searched recursively), glob patterns, or text files listing one path per line.
    paths: tuple[str, ...] = ()
    extensions: tuple[str, ...] = (
        ".mp4",
        ".mov",
        ".mkv",
        ".webm",
        ".avi",
        ".ts",
        ".m4v",
        ".mpg",
        ".mpeg",
        ".flv",
        ".wmv",
        ".3gp",
    )

    @field_validator("extensions")
    @classmethod
    def _dotted_lowercase(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [e for e in value if not e.startswith(".") or e != e.lower()]
        if bad:
            raise ValueError(f"extensions must be lowercase and start with '.', got {bad}")
        return value


class RayConfig(_Frozen):
    """Which Ray the jobs run on."""

    # A cluster address ("auto", "ray://host:10001"); empty means $RAY_ADDRESS or else a local Ray.
    address: str = ""
    # CPUs of the local Ray started when no cluster is given (0 = all cores).
    num_cpus: int = Field(default=0, ge=0)
    # Ray's temp/session folder for the local instance ("" = Ray's default).
    temp_dir: str = ""
    # Ray Data's per-operator resource reservation (DataContext.op_resource_reservation_enabled). Off:
    # with it, a one-operator CPU job kept only 1.5 of 2 CPUs busy (0.5 s tasks, Ray 2.60; 1.9-2.0
    # without), and split/score scaled 1.2x from 1 to 2 workers. Turn it on for pipelines whose
    # operators should each keep a guaranteed share of a large cluster.
    reserve_operator_resources: bool = False


class ReportConfig(_Frozen):
    """What the HTML report shows and where it is written."""

    # Where `reelforge report` writes the HTML (relative paths are under store.root).
    out: Path = Path("report.html")
    # Clips in the sortable grid, with animated previews: a random sample, the same on every run.
    thumbnails: int = Field(default=48, ge=0)
    # Highest and lowest clips shown per score column (stills), found in one streamed pass.
    extremes: int = Field(default=4, ge=0)
    # Captioned clips shown beside their captions, sampled at random.
    captions: int = Field(default=8, ge=0)
    # Duplicate groups listed (the first found); every duplicate is still counted.
    duplicate_groups: int = Field(default=12, ge=0)


class PipelineConfig(_Frozen):
    """The whole pipeline's config: every stage's section."""

    name: str = "default"
    store: StoreConfig = StoreConfig()
    input: InputConfig = InputConfig()
    ray: RayConfig = RayConfig()
    split: SplitConfig = SplitConfig()
    score: ScoreConfig = ScoreConfig()
    filter: FilterConfig = FilterConfig()
    caption: CaptionConfig = CaptionConfig()
    encode: EncodeConfig = EncodeConfig()
    train: TrainConfig = TrainConfig()
    sample: SampleConfig = SampleConfig()
    report: ReportConfig = ReportConfig()
    export: ExportConfig = ExportConfig()
    eval: EvalConfig = EvalConfig()

    def resolved(self) -> dict[str, Any]:
        """The config as plain JSON-able data: stored with every dataset version and checkpoint."""
        return self.model_dump(mode="json")


def load_config(source: str | Path | None = None, overrides: Iterable[str] = ()) -> PipelineConfig:
    """Read a pipeline YAML (a path or a name under configs/), apply `section.key=value` overrides."""
    path = _find_config(source)
    text = path.read_text()
    data = yaml.safe_load(text) if text.strip() else {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    for item in overrides:
        _apply_override(data, item)
    return parse_config(data, origin=str(path))


def parse_config(data: Mapping[str, Any], origin: str = "<config>") -> PipelineConfig:
    """Validate a config mapping; ConfigError lists every problem, one a line."""
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as err:
        lines = [_describe(e) for e in err.errors()]
        raise ConfigError(f"invalid config {origin}:\n  " + "\n  ".join(lines)) from None


def _find_config(source: str | Path | None) -> Path:
    if source is None:
        source = os.environ.get("REELFORGE_CONFIG", "demo")
    path = Path(source)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path
    named = CONFIG_DIR / f"{source}.yaml"
    if not named.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown config '{source}': give a .yaml path or one of {known}")
    return named


def _apply_override(data: dict[str, Any], item: str) -> None:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects section.key=value, got '{item}'")
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {item}: '{part}' is a value, not a section")
        node = child
    # YAML parsing gives numbers, booleans, lists and null their types; "null" clears a value.
    try:
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(
            f"--set {item}: the value is not YAML ({problem}); quote a text value: {key.strip()}='{raw}'"
        ) from None


def _describe(error: Mapping[str, Any]) -> str:
    loc = tuple(error["loc"])
    dotted = ".".join(str(p) for p in loc)
    if error["type"] == "extra_forbidden":
        if dotted in RENAMED_KEYS:
            return f"{dotted} was renamed {RENAMED_KEYS[dotted]}"
        allowed = _allowed_keys(loc[:-1])
        where = ".".join(str(p) for p in loc[:-1]) or "the top level"
        return f"unknown key '{dotted}'; allowed keys in {where}: {', '.join(allowed)}"
    return f"{dotted}: {error['msg']} (got {error.get('input')!r})"


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model: Any = PipelineConfig
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return []
        model = _model_of(model.model_fields[part].annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return sorted(model.model_fields)
    return []


def _model_of(annotation: Any) -> Any:
    """The BaseModel inside an annotation such as `X`, `X | None` or `Optional[X]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return annotation
