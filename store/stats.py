"""What the store's tables hold: rows, fragments, versions, tags, bytes per column (latest version and on
disk), indices, and the staging datasets present; `format_stats` is what `reelforge store stats` prints."""

from __future__ import annotations

from typing import Any, Final, cast

import lance
import pyarrow.compute as pc
from lance.dataset import FieldStatistics

from store.contract import CLIPS
from store.lance_store import Store
from store.maintenance import human_bytes, indexed_fragments, require_tables, stage_records_of, staging_merged

_EXTERNAL_BLOB: Final = 3  # blob v2 descriptor kind of a value stored outside the dataset


def stats(store: Store) -> dict[str, Any]:
    """Rows, fragments, versions, tags, bytes (per column, latest version, on disk) and indices of each
    table, and the staging datasets present."""
    datasets = require_tables(store)
    return {
        "root": str(store.root),
        "tables": {t: _table_stats(ds) for t, ds in datasets.items()},
        "staging": _staging_stats(store, datasets[CLIPS]),
    }


def _table_stats(ds: lance.LanceDataset) -> dict[str, Any]:
    fragments = ds.get_fragments()
    data_files = {d.path.removesuffix(".lance") for f in fragments for d in f.data_files()}
    latest = on_disk = 0
    for batch in ds.all_files():
        for path, size in zip(batch["path"].to_pylist(), batch["size_bytes"].to_pylist(), strict=True):
            on_disk += size
            parts = path.split("/")
            # a data file and its blob sidecars (data/<file>.lance, data/<file>/<n>.blob)
            if parts[0] == "data" and len(parts) > 1 and parts[1].removesuffix(".lance") in data_files:
                latest += size
    covered = {int(f.fragment_id) for f in fragments}
    return {
        "version": ds.version,
        "rows": ds.count_rows(),
        "deleted_rows": ds.stats.dataset_stats()["num_deleted_rows"],
        "fragments": len(fragments),
        "versions": len(ds.versions()),
        "tags": {name: tag["version"] for name, tag in sorted(ds.tags.list().items())},
        "bytes_latest": latest,
        "bytes_on_disk": on_disk,
        "columns": _column_bytes(ds),
        "indices": [
            {
                "name": d.name,
                "type": d.index_type,
                "columns": list(d.field_names),
                "rows_indexed": d.num_rows_indexed,
                "unindexed_fragments": len(covered - indexed_fragments(d)),
                "bytes": d.total_size_bytes,
            }
            for d in ds.describe_indices()
        ],
    }


def _column_bytes(ds: lance.LanceDataset) -> dict[str, int]:
    """Bytes per top-level column in the latest version. Lance's field statistics count the encoded
    column pages; a blob column's payloads (inline or in sidecar files) are not among them, so they are
    added from the blob descriptors."""
    # lance annotates `fields` as one FieldStatistics; it is a list of them
    fields = cast(list[FieldStatistics], ds.stats.data_stats().fields)
    per_field = {f.id: f.bytes_on_disk for f in fields}

    def total(field: Any) -> int:
        return per_field.get(field.id(), 0) + sum(total(child) for child in field.children())

    out = {f.name(): total(f) for f in ds.lance_schema.fields()}
    for name in out:
        if "blob" in str(ds.schema.field(name).type):
            descriptors = ds.to_table(columns=[name]).column(name)
            if len(descriptors):
                stored = pc.not_equal(pc.struct_field(descriptors, "kind"), _EXTERNAL_BLOB)
                out[name] += pc.sum(pc.filter(pc.struct_field(descriptors, "size"), stored)).as_py() or 0
    return out


def _staging_stats(store: Store, clips: lance.LanceDataset) -> dict[str, dict[str, Any]]:
    folder = store.root / "staging"
    records = stage_records_of(clips)
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.lance")) if folder.is_dir() else []:
        stage = path.name.removesuffix(".lance")
        committed = (path / "_versions").is_dir()
        out[stage] = {
            "rows": lance.dataset(str(path)).count_rows() if committed else 0,
            "bytes": sum(p.stat().st_size for p in path.rglob("*") if p.is_file()),
            "merged": staging_merged(path, records.get(stage)),
        }
    return out


def format_stats(s: dict[str, Any]) -> str:
    """`stats` as the text `reelforge store stats` prints."""
    lines = [f"store {s['root']}", ""]
    tables = s["tables"]
    lines += _table(
        ["table", "version", "rows", "fragments", "versions", "tags", "latest", "on disk"],
        [
            [
                name,
                t["version"],
                t["rows"],
                t["fragments"],
                t["versions"],
                ", ".join(f"{k}={v}" for k, v in t["tags"].items()) or "-",
                human_bytes(t["bytes_latest"]),
                human_bytes(t["bytes_on_disk"]),
            ]
            for name, t in tables.items()
        ],
    )
    for name, t in tables.items():
        lines += ["", f"{name}: bytes per column (latest version; blob payloads included)"]
        filled = {c: b for c, b in t["columns"].items() if b}
        lines += _table(["column", "bytes"], [[c, human_bytes(b)] for c, b in filled.items()], indent=2)
        empty = [c for c in t["columns"] if c not in filled]
        if empty:  # all null (or not written yet): one line instead of a row each
            lines.append(f"  0 B: {', '.join(empty)}")
    rows = [
        [
            f"{name}.{i['name']}",
            i["type"],
            ",".join(i["columns"]),
            i["rows_indexed"],
            i["unindexed_fragments"],
            human_bytes(i["bytes"]),
        ]
        for name, t in tables.items()
        for i in t["indices"]
    ]
    lines += ["", "indices"]
    lines += (
        _table(["index", "type", "column", "rows", "unindexed fragments", "bytes"], rows, indent=2)
        if rows
        else ["  none (`reelforge store compact` creates them)"]
    )
    staging = s["staging"]
    if staging:
        lines += ["", "staging"]
        lines += _table(
            ["stage", "rows", "bytes", "state"],
            [
                [
                    stage,
                    st["rows"],
                    human_bytes(st["bytes"]),
                    "merged (vacuum removes it)" if st["merged"] else "not merged: a re-run resumes from it",
                ]
                for stage, st in staging.items()
            ],
            indent=2,
        )
    return "\n".join(lines)


def _table(header: list[str], rows: list[list[Any]], indent: int = 0) -> list[str]:
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    # numbers and sizes right-aligned, names and words left-aligned
    numeric = [bool(rows) and all(r[i][:1].isdigit() for r in cells[1:]) for i in range(len(header))]

    def fmt(row: list[str]) -> str:
        parts = [c.rjust(w) if n else c.ljust(w) for c, w, n in zip(row, widths, numeric, strict=True)]
        return " " * indent + "  ".join(parts).rstrip()

    return [fmt(r) for r in cells]
