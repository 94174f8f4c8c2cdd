"""Connecting to Ray: the Ray Data settings every job gets, the work-list blocks, split's file order."""

from __future__ import annotations

import pyarrow as pa

from pipelines.config import RayConfig
from pipelines.jobs.split import _file_dataset
from pipelines.runtime import init_ray, work_dataset


def test_init_ray_applies_the_reservation_setting_to_a_running_ray(ray_session):
    from ray.data import DataContext

    try:
        init_ray(RayConfig(reserve_operator_resources=True))
        assert DataContext.get_current().op_resource_reservation_enabled is True
    finally:
        init_ray(RayConfig())
    assert DataContext.get_current().op_resource_reservation_enabled is False


def test_work_dataset_has_one_block_per_batch_and_every_row_once(ray_session):
    ids = [f"clip-{i:02d}" for i in range(21)]
    rows = pa.table({"_rowid": pa.array(range(100, 121), pa.uint64()), "clip_id": ids})
    ds = work_dataset(rows, 4)
    blocks = [len(b["clip_id"]) for b in ds.iter_batches(batch_size=None)]
    assert len(blocks) == 6 and max(blocks) <= 4
    got = ds.to_pandas().sort_values("clip_id")
    assert list(got["clip_id"]) == ids and list(got["_rowid"]) == list(range(100, 121))
    assert work_dataset(rows.slice(0, 0), 4).count() == 0


def test_split_hands_out_the_largest_files_first(ray_session, tmp_path):
    sizes = {"small.mp4": 10, "large.mp4": 3000, "medium.mp4": 200}
    for name, size in sizes.items():
        (tmp_path / name).write_bytes(b"\0" * size)
    paths = [str(tmp_path / n) for n in sizes] + [str(tmp_path / "missing.mp4")]
    order = [row["path"] for row in _file_dataset(paths).iter_rows()]
    assert order == [str(tmp_path / n) for n in ("large.mp4", "medium.mp4", "small.mp4", "missing.mp4")]
