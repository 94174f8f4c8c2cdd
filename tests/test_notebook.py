"""notebooks/inspect.ipynb runs top to bottom on a real dataset and shows what it promises."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from report_store import report_store_for

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "inspect.ipynb"


@pytest.mark.slow
def test_inspect_notebook_runs_on_a_real_dataset(tmp_path_factory, sample_footage, monkeypatch):
    store = report_store_for(tmp_path_factory, sample_footage)
    monkeypatch.setenv("REELFORGE_STORE", str(store.root))  # the kernel inherits this environment
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook, kernel_name="python3", timeout=180, resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    client.execute()  # raises CellExecutionError naming the cell on any failure

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    clips = store.read_clips(["clip_id"]).num_rows
    assert f"{clips} clips" in text and "score columns: " in text
    assert "placeholder columns: aesthetic_mean, aesthetic_min" in text
    html = "\n".join(o.get("data", {}).get("text/html", "") for o in outputs if "data" in o)
    assert html.count("data:image/jpeg;base64,") == 6  # the thumbnails of the six best clips
    assert "<video" in html and "data:video/mp4;base64," in html  # the clip plays inline from the blob bytes
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 1  # the score distributions
    assert os.environ["REELFORGE_STORE"] == str(store.root)
