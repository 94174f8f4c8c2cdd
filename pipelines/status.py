"""`reelforge status`: what a store holds, what each stage did to it, what is stale, what to run next.

Everything comes from the store itself: the tables' row counts and filtered counts (no clip bytes are
read), and the stage records every stage writes into the Lance metadata (columns, config, models,
when). The configured pipeline is compared with those records to find what is stale: a stage that ran
before newer clips arrived, a filter whose expression changed, captions made before the filter last
changed or by another model, latents from another autoencoder. Reads only: status never takes the
store's lock or writes a file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lance
import pyarrow.compute as pc

from curate.probe import reason_of
from pipelines.config import PipelineConfig
from store import CLIPS, VIDEOS, Store
from store.contract import STAGES
from store.filters import parse_filter

# The column stages in pipeline order (split's record lives on `videos`).
COLUMN_STAGES = ("score", "dedup", "filter", "caption", "encode")
# A clip has been through a stage when one of these is set: its result, or why it failed.
_DONE_COLUMNS = {
    "score": ("frames_sampled", "score_error"),
    "dedup": ("duplicate_of",),
    "filter": ("selected",),
    "caption": ("caption", "caption_error"),
    "encode": ("latent_bucket", "encode_error"),
}
_ERROR_COLUMN = {"score": "score_error", "caption": "caption_error", "encode": "encode_error"}


def store_status(cfg: PipelineConfig, command_options: Sequence[str] = ()) -> dict[str, Any]:
    """The status as a JSON-ready dict (what `status --json` prints); `command_options` (e.g.
    ["--root", "DIR"]) are appended to the next command so it acts on the same store."""
    store = Store(cfg.store.root)
    clips = store.dataset(CLIPS)
    videos = store.dataset(VIDEOS)
    status: dict[str, Any] = {
        "root": str(store.root),
        "videos": _videos(videos),
        "clips": 0 if clips is None else clips.count_rows(),
        "stages": {},
        "stale": [],
    }
    status["hours"] = status["videos"].pop("hours")
    if clips is not None:
        status["stages"] = _stages(store, clips)
        status["stale"] = _stale(cfg, clips, status["stages"])
    status["next"] = _with_options(_next_command(cfg, clips, status), command_options)
    return status


def _videos(ds: lance.LanceDataset | None) -> dict[str, Any]:
    if ds is None:
        return {"total": 0, "ok": 0, "partial": 0, "failed": 0, "failed_by_reason": {}, "hours": 0.0}
    # Counted by Lance over the table; only the failed rows' reasons reach Python (one per failed file).
    ok = "status = 'ok'"
    seconds = ds.to_table(columns=["duration_s"], filter=ok)["duration_s"]  # 8 bytes per file
    errors = ds.to_table(columns=["error"], filter="status != 'ok'")["error"].to_pylist()
    failed = Counter(reason_of(e or "unknown") for e in errors)
    return {
        "total": ds.count_rows(),
        "ok": ds.count_rows(filter=ok),
        "partial": ds.count_rows(filter=f"{ok} AND error IS NOT NULL AND error != ''"),
        "failed": sum(failed.values()),
        "failed_by_reason": dict(failed.most_common()),
        "hours": (pc.sum(seconds).as_py() or 0.0) / 3600,
    }


def _stages(store: Store, clips: lance.LanceDataset) -> dict[str, Any]:
    names = set(clips.schema.names)
    total = clips.count_rows()
    out: dict[str, Any] = {}
    split = store.stage_records(VIDEOS).get("split")
    out["split"] = {
        "ran": split is not None,
        "at": (split or {}).get("at"),
        "clips": total,
        "config": (split or {}).get("config", {}),
        "config_digest": _digest((split or {}).get("config", {})),
        "version": (split or {}).get("version"),
        "models": {},
        "placeholders": [],
    }
    records = store.stage_records(CLIPS)
    for stage in COLUMN_STAGES:
        record = records.get(stage)
        present = [c for c in STAGES[stage].writes if c in names]
        entry: dict[str, Any] = {"ran": record is not None and bool(present), "columns": present}
        if entry["ran"]:
            assert record is not None
            done = [c for c in _DONE_COLUMNS[stage] if c in names] or present
            entry["clips"] = clips.count_rows(filter=" OR ".join(f"{c} IS NOT NULL" for c in done))
            if stage in _ERROR_COLUMN and _ERROR_COLUMN[stage] in names:
                entry["failed"] = clips.count_rows(filter=f"{_ERROR_COLUMN[stage]} IS NOT NULL")
            if stage == "filter":
                entry["selected"] = clips.count_rows(filter="selected = true")
                entry["expression"] = record.get("config", {}).get("expression")
            entry.update(
                at=record.get("at"),
                config=record.get("config", {}),
                config_digest=_digest(record.get("config", {})),
                models=record.get("models", {}),
                placeholders=_placeholders(record.get("models", {})),
            )
        out[stage] = entry
    return out


def _digest(config: Any) -> str:
    """A short fingerprint of a config: two runs with the same one read the same."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _placeholders(models: dict[str, Any]) -> list[str]:
    """The models recorded as placeholders (random weights): their outputs are not real."""
    found = [k for k, v in models.items() if isinstance(v, dict) and v.get("placeholder")]
    return found + (["(stage)"] if models.get("placeholder") is True else [])


def _later(a: str | None, b: str | None) -> bool:
    """Did the record stamped `a` happen after the one stamped `b` (both ISO UTC, whole seconds)?"""
    return a is not None and b is not None and a > b


def _stale(cfg: PipelineConfig, clips: lance.LanceDataset, stages: dict[str, Any]) -> list[dict[str, str]]:  # noqa: PLR0912 — one staleness rule per stage, in pipeline order
    names = set(clips.schema.names)
    total = clips.count_rows()
    stale: list[dict[str, str]] = []

    def add(stage: str, what: str, fix: str) -> None:
        stale.append({"stage": stage, "what": what, "fix": fix})

    score, filt, caption, encode = (stages[s] for s in ("score", "filter", "caption", "encode"))
    if score["ran"] and score["clips"] < total:
        add(
            "score",
            f"{total - score['clips']} clips arrived after score ran ({score['at']})",
            "reelforge score",
        )
    if filt["ran"]:
        if filt["clips"] < total:
            add(
                "filter",
                f"{total - filt['clips']} clips arrived after filter ran ({filt['at']})",
                "reelforge filter",
            )
        if _later(score.get("at"), filt["at"]):
            add(
                "filter",
                f"scores changed ({score['at']}) after filter ran ({filt['at']})",
                "reelforge filter",
            )
        configured = parse_filter(cfg.filter.expression, "filter.expression").sql
        recorded = filt.get("expression")
        if recorded is not None and parse_filter(recorded, "filter.expression").sql != configured:
            add(
                "filter",
                f"filter.expression is now {configured!r}; the selection was made with {recorded!r}",
                "reelforge filter",
            )
    if caption["ran"] and "selected" in names and "caption" in names:
        never_tried = " AND caption_error IS NULL" if "caption_error" in names else ""
        lacking = clips.count_rows(filter=f"selected = true AND caption IS NULL{never_tried}")
        selected_by = caption.get("config", {}).get("selected_by")
        if selected_by is not None:  # the filter run the captions were made for (recorded by caption)
            changed = selected_by != {"expression": filt.get("expression"), "at": filt.get("at")}
        else:  # stores captioned before that record: by time (whole seconds, so only a clear "after")
            changed = _later(filt.get("at"), caption["at"])
        dropped = 0
        if changed:
            dropped = clips.count_rows(
                filter="caption IS NOT NULL AND (selected IS NULL OR selected = false)"
            )
        if changed and (lacking or dropped):
            add(
                "caption",
                f"captions made ({caption['at']}) before the filter changed ({filt['at']}): "
                f"{lacking} selected clips have no caption, {dropped} captioned clips are no longer selected",
                "reelforge caption",
            )
        elif lacking:
            add(
                "caption",
                f"{lacking} selected clips arrived after caption ran ({caption['at']})",
                "reelforge caption",
            )
    recorded_model = caption.get("models", {}).get("caption", {}).get("model") if caption["ran"] else None
    if recorded_model is not None and recorded_model != cfg.caption.model:
        add(
            "caption",
            f"captions were made by {recorded_model}; caption.model is now {cfg.caption.model}",
            "reelforge caption --recaption",
        )
    if encode["ran"]:
        signature = encode.get("config", {}).get("signature", {})
        for part, now in (
            ("vae", cfg.train.vae.model_dump(mode="json")),
            ("text", cfg.train.text.model_dump(mode="json")),
        ):
            if part in signature and signature[part] != now:
                what = "autoencoder (train.vae)" if part == "vae" else "text encoder (train.text)"
                add(
                    "encode",
                    f"latents were made with another {what} than the configured one",
                    "reelforge encode",
                )
        retrained = _modified_after(cfg.train.vae.weights_path, encode["at"])
        if retrained:
            add(
                "encode",
                f"the autoencoder at {cfg.train.vae.weights_path} was trained again ({retrained}) after "
                f"encode ran ({encode['at']})",
                "reelforge encode --overwrite",
            )
        if _later(caption.get("at"), encode["at"]):
            add(
                "encode",
                f"captions changed ({caption['at']}) after encode ran ({encode['at']})",
                "reelforge encode --overwrite",
            )
    return stale


def _modified_after(folder: str | None, at: str | None) -> str | None:
    """When the newest file of `folder` was written, if that is after `at` (an ISO UTC stamp)."""
    if folder is None or at is None or not Path(folder).is_dir():
        return None
    files = [p for p in Path(folder).iterdir() if p.is_file()]
    if not files:
        return None
    newest = dt.datetime.fromtimestamp(max(p.stat().st_mtime for p in files), dt.UTC)
    # stamps are whole seconds, cut down: a file written within the stamp's second came before it
    if newest >= dt.datetime.fromisoformat(at) + dt.timedelta(seconds=1):
        return newest.isoformat(timespec="seconds")
    return None


def _next_command(cfg: PipelineConfig, clips: lance.LanceDataset | None, status: dict[str, Any]) -> str:  # noqa: PLR0911 — one return per pipeline step, in pipeline order
    """The first command of the pipeline with something left to do."""
    if clips is None or status["clips"] == 0:
        return "reelforge split INPUT"
    stages = status["stages"]
    stale_stages = {s["stage"] for s in status["stale"]}
    for stage in ("score", "filter", "caption"):
        if not stages[stage]["ran"] or stage in stale_stages:
            return next((s["fix"] for s in status["stale"] if s["stage"] == stage), f"reelforge {stage}")
    # Training needs the autoencoder, the latents, a checkpoint: torch is imported only from here on.
    from train.checkpoint import latest_checkpoint
    from train.vae import WEIGHTS_FILE

    weights = cfg.train.vae.weights_path
    if weights is None or not (Path(weights) / WEIGHTS_FILE).is_file():
        return "reelforge train-vae"
    if not stages["encode"]["ran"] or "encode" in stale_stages:
        return next((s["fix"] for s in status["stale"] if s["stage"] == "encode"), "reelforge encode")
    if latest_checkpoint(cfg.train.out_dir) is None:
        return "reelforge train"
    if not any(Path(cfg.sample.out_dir).glob("*.mp4")):
        return "reelforge sample"
    return "reelforge report"


def _with_options(command: str, options: Sequence[str]) -> str:
    return " ".join([command, *options]) if options else command


def format_status(status: dict[str, Any]) -> str:
    """The status as text for people."""
    v = status["videos"]
    lines = [f"store: {status['root']}"]
    if not v["total"] and not status["clips"]:
        lines.append("empty: nothing has been split into this store")
    else:
        reasons = ", ".join(f"{n} x {r}" for r, n in v["failed_by_reason"].items())
        lines.append(
            f"videos: {v['total']} ({v['ok']} ok"
            + (f", {v['partial']} of them partly decoded" if v["partial"] else "")
            + f", {v['failed']} failed{': ' + reasons if reasons else ''})"
        )
        lines.append(f"clips: {status['clips']} from {status['hours']:.3f} h of footage")
        lines.append("stages:")
        for stage, entry in status["stages"].items():
            lines.append(_format_stage(stage, entry, status["clips"]))
    if status["stale"]:
        lines.append("stale:")
        lines += [f"  {s['stage']}: {s['what']} -> {s['fix']}" for s in status["stale"]]
    lines.append(f"next: {status['next']}")
    return "\n".join(lines)


def _format_stage(stage: str, entry: dict[str, Any], total: int) -> str:
    if not entry["ran"]:
        return f"  {stage:8s} not run"
    if stage == "split":
        return (
            f"  {stage:8s} {entry['at'] or 'time unknown'}: {entry['clips']} clips, "
            f"config {entry['config_digest']}, reelforge {entry['version']}"
        )
    counted = f"{entry['clips']} duplicates" if stage == "dedup" else f"{entry['clips']} of {total} clips"
    if entry.get("failed"):
        counted += f" ({entry['failed']} failed)"
    if stage == "filter":
        counted += f", {entry['selected']} selected by: {entry['expression'] or '(everything scored)'}"
    models = ", ".join(
        _model_name(k, m, k in entry["placeholders"])
        for k, m in entry["models"].items()
        if k != "placeholder"
    )
    if "(stage)" in entry["placeholders"]:
        models += " PLACEHOLDER"
    return (
        f"  {stage:8s} {entry['at']}: {counted}; config {entry['config_digest']}"
        + (f"; models: {models}" if models else "")
        + f"; columns: {', '.join(entry['columns'])}"
    )


def _model_name(key: str, model: Any, placeholder: bool) -> str:
    if isinstance(model, dict):
        name = next(
            (str(model[k]) for k in ("model", "name", "method", "library", "layout", "kind") if model.get(k)),
            "",
        )
        text = f"{key}={name}" if name else key
    else:
        text = f"{key}={model}"
    return text + (" PLACEHOLDER" if placeholder else "")
