"""The data contract against the code: every stage writes only what it declares, with the declared types;
the store refuses anything else; the README's column table is the contract's; store/ needs no Ray and
train/ no pipelines/."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from caption.stage import CAPTION_SCHEMA
from curate.config import ScoreConfig
from pipelines.jobs.score import score_schema
from store import CLIPS, CLIPS_SCHEMA, ROW_ID, VIDEOS, VIDEOS_SCHEMA, Store, StoreError, contract
from train.encode import ENCODE_SCHEMA

REPO = Path(__file__).resolve().parents[2]


def _all_enabled_score_config() -> ScoreConfig:
    cfg = ScoreConfig()
    return cfg.model_copy(
        update={
            "dedup": cfg.dedup.model_copy(update={"enabled": True, "signature": "frame_signature"}),
            "ocr": cfg.ocr.model_copy(update={"enabled": True}),
            "aesthetic": cfg.aesthetic.model_copy(update={"enabled": True}),
            "embedding": cfg.embedding.model_copy(update={"enabled": True}),
        }
    )


def test_every_declared_write_is_a_contract_column_of_that_stage():
    for stage in contract.STAGES.values():
        for name in stage.writes:
            column = contract.COLUMNS[CLIPS].get(name) or contract.COLUMNS[VIDEOS][name]
            assert column.stage == stage.name, f"{stage.name} declares {name}, which {column.stage} writes"
        for name in stage.reads:
            assert name in contract.COLUMNS[CLIPS], f"{stage.name} reads undeclared column {name}"
    written = [c for c in contract.COLUMNS[CLIPS].values() if c.stage != "split"]
    assert all(c.name in contract.STAGES[c.stage].writes for c in written)


@pytest.mark.parametrize(
    ("stage", "schema"),
    [
        ("score", score_schema(_all_enabled_score_config(), 512)),
        ("caption", CAPTION_SCHEMA),
        ("encode", ENCODE_SCHEMA),
    ],
)
def test_the_code_writes_exactly_the_declared_columns(stage, schema):
    contract.check_written(stage, schema)
    assert set(schema.names) - {"clip_id"} == set(contract.STAGES[stage].writes)


def test_base_schemas_are_the_contract():
    assert CLIPS_SCHEMA.equals(contract.schema(CLIPS), check_metadata=True)
    assert VIDEOS_SCHEMA.equals(contract.schema(VIDEOS), check_metadata=True)
    assert CLIPS_SCHEMA.field("video").metadata == {b"lance-encoding:blob": b"true"}


def test_an_undeclared_or_mistyped_column_is_refused():
    with pytest.raises(contract.ContractError, match="does not declare"):
        contract.check_written("score", pa.schema([("caption", pa.string())]))
    with pytest.raises(contract.ContractError, match="contract says double"):
        contract.check_written("score", pa.schema([("motion", pa.string())]))
    with pytest.raises(contract.ContractError, match="list width"):
        contract.stage_schema("score", ["clip_embedding"])


def test_the_store_refuses_a_stage_writing_an_undeclared_column(tmp_path):
    from tests.store.test_lance_store import _clips

    store = Store(tmp_path)
    store.append(CLIPS, _clips("v", 3, size=10))
    ids = store.scan(CLIPS, ["clip_id"])
    table = pa.Table.from_batches(list(ids))
    bad = table.append_column("sneaky", pa.array([1.0, 2.0, 3.0]))
    with pytest.raises(StoreError, match="sneaky"):
        store.add_columns(bad, "filter", {})
    good = table.append_column("selected", pa.array([True, False, True]))
    store.add_columns(good, "filter", {})
    got = store.read_clips(["clip_id", "selected"]).sort_by("clip_id")
    assert got["selected"].to_pylist() == good.sort_by("clip_id")["selected"].to_pylist()
    assert ROW_ID in table.column_names


def test_readme_column_table_is_generated_from_the_contract():
    readme = (REPO / "README.md").read_text()
    assert contract.markdown() in readme, "README is stale: paste the output of store.contract.markdown()"


def test_store_imports_no_ray_and_train_curate_caption_import_no_pipelines():
    code = "import sys, store, store.contract, store.lance_store; print('ray' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        == "False\n"
    )
    for package in ("train", "curate", "caption", "store"):
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                bad = [
                    n
                    for n in names
                    if n.split(".")[0] == "pipelines" or (package == "store" and n.split(".")[0] == "ray")
                ]
                assert not bad, f"{path.relative_to(REPO)} imports {bad}"
