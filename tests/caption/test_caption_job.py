"""The caption job's bookkeeping through Ray Data against a local OpenAI-compatible HTTP server whose
answers we control: per-clip failures, resume, selection, recaption. (test_vllm.py runs the same job
against a real vLLM server.)"""

from __future__ import annotations

import asyncio
import threading

import pyarrow as pa
import pytest
from aiohttp import web
from caption_clips import clips_rows, photo_clips

from caption.vllm.runtime import TINY_VLM_MARKER, free_port
from pipelines.config import parse_config
from pipelines.jobs.caption import run_caption
from pipelines.jobs.caption_checks import CaptionJobError
from store import Store
from store.placeholders import placeholder_columns, schema_marks

FAILURES = 3
CAPTION = "A woman with short hair looks at the camera in front of a grey studio backdrop."


class FlakyServer:
    """Answers chat completions; while `failing`, the first FAILURES requests get HTTP 400."""

    def __init__(self):
        self.failing = True
        self.requests = 0
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests += 1
        assert body["messages"][1]["content"][0]["video_url"]["url"].startswith("data:video/jpeg;base64,")
        if self.failing and self.requests <= FAILURES:
            return web.Response(status=400, text="scripted rejection")
        return web.json_response(
            {
                "choices": [{"message": {"content": "The video shows " + CAPTION}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 200, "completion_tokens": 18},
            }
        )

    def _serve(self):
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/v1/chat/completions", self._handle)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self):
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc):
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def _captions(store: Store) -> dict[str, tuple[str | None, str | None]]:
    table = store.read_clips(columns=["clip_id", "caption", "caption_error"])
    return {r["clip_id"]: (r["caption"], r["caption_error"]) for r in table.to_pylist()}


@pytest.mark.slow
def test_failures_resume_selection_and_recaption(ray_session, tmp_path):
    store = Store(tmp_path / "store")
    clips = photo_clips(copies=2)
    clips["empty"] = b""
    store.append("clips", clips_rows(clips))
    good = [c for c in clips if c != "empty"]
    with FlakyServer() as server:
        cfg = parse_config(
            {
                "store": {"root": str(store.root)},
                "caption": {
                    "model": "scripted",
                    "batch_size": 3,
                    "flush_every": 2,
                    "decode_num_cpus": 0.25,
                    "openai": {"base_url": f"http://127.0.0.1:{server.port}/v1", "retries": 0},
                    # no filter has run on these clips: caption them all
                    "only_selected": False,
                },
            }
        )
        first = run_caption(cfg, progress=False)
        rows = _captions(store)
        rejected = {c for c in good if rows[c][1] is not None}
        assert len(rejected) == FAILURES
        assert rows["empty"] == (None, "frames: empty clip bytes")
        for cid in set(good) - rejected:
            assert rows[cid] == (CAPTION, None)  # stock opening stripped
        for cid in rejected:
            assert rows[cid][0] is None and rows[cid][1].startswith("engine: HTTP 400: scripted rejection")
        assert first.attempted == len(clips) and first.failed == len(rejected) + 1
        assert first.error_kinds == {"clip frames unreadable": 1, "engine answered HTTP 400": FAILURES}

        # Resume: only clips without a caption are sent again; now the server accepts them.
        server.failing = False
        before = server.requests
        second = run_caption(cfg, progress=False)
        assert second.skipped_done == len(good) - len(rejected)
        assert second.attempted == len(rejected) + 1
        assert server.requests - before == len(rejected)  # the empty clip never reaches the server
        rows = _captions(store)
        assert all(rows[c] == (CAPTION, None) for c in good)

        # Once the filter has run, only its `selected` clips are captioned; recaption starts from scratch.
        chosen = set(good[:3])
        store.add_columns(
            pa.table({"clip_id": list(rows), "selected": [c in chosen for c in rows]}),
            stage="filter",
            config={"expression": "test"},
        )
        selected_only = cfg.model_copy(
            update={"caption": cfg.caption.model_copy(update={"only_selected": True})}
        )
        third = run_caption(selected_only, recaption=True, progress=False)
        assert third.attempted == 3 and third.skipped_done == 0
        rows = _captions(store)
        assert {c for c, (text, _) in rows.items() if text is not None} == chosen
        assert store.stage_records()["caption"]["models"]["caption"]["model"] == "scripted"


@pytest.mark.slow
def test_a_placeholder_model_marks_only_its_caption_column(ray_session, tmp_path):
    model = tmp_path / "tiny-vlm"
    model.mkdir()
    # What caption/vllm/tiny_model.py leaves in its random-weight model.
    (model / TINY_VLM_MARKER).write_text("{}")
    store = Store(tmp_path / "store")
    store.append("clips", clips_rows(photo_clips()))
    with FlakyServer() as server:
        server.failing = False
        cfg = parse_config(
            {
                "store": {"root": str(store.root)},
                "caption": {
                    "model": str(model),
                    "decode_num_cpus": 0.25,
                    "openai": {"base_url": f"http://127.0.0.1:{server.port}/v1", "retries": 0},
                    "only_selected": False,  # no filter has run on these clips
                },
            }
        )
        summary = run_caption(cfg, progress=False)
    assert summary.placeholder and summary.captioned == summary.attempted > 0
    # the caption is the model's output; its name, token counts, latency and errors are bookkeeping
    assert placeholder_columns(store.stage_records()) == {"caption": "caption/caption"}
    assert schema_marks(store.require("clips").schema) == {"caption": "caption/caption"}


def test_a_filter_naming_a_missing_column_is_a_clear_error(tmp_path):
    store = Store(tmp_path / "store")
    store.append("clips", clips_rows(photo_clips()))
    cfg = parse_config({"store": {"root": str(store.root)}, "caption": {"filter": "aesthetic_mean > 5"}})
    with pytest.raises(
        CaptionJobError, match=r"caption.filter names unknown column 'aesthetic_mean'; columns: clip_id"
    ):
        run_caption(cfg, progress=False)


class ContextEchoServer(FlakyServer):
    """Answers each request with the measured words it was sent (caption.camera_context), so every
    stored caption shows which clip's words reached the engine with that clip's frames."""

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests += 1
        text = body["messages"][1]["content"][-1]["text"]
        words = (
            text.split("optical flow: ", 1)[1].split(". Use this", 1)[0] if "optical flow: " in text else ""
        )
        return web.json_response(
            {
                "choices": [{"message": {"content": f"Measured: {words}."}, "finish_reason": "stop"}],
                "usage": {},
            }
        )


@pytest.mark.slow
def test_camera_context_sends_each_clip_its_own_measured_words(ray_session, tmp_path):
    store = Store(tmp_path / "store")
    clips = photo_clips(copies=2)
    store.append("clips", clips_rows(clips))
    ids = sorted(clips)
    speeds = ["slowly", "fast", "very slowly"]
    camera = {c: f"the camera pans left {speeds[i % 3]} (clip {i})" for i, c in enumerate(ids)}
    motion = {c: "the subject moves fast" if i % 2 else None for i, c in enumerate(ids)}
    cfg = parse_config(
        {
            "store": {"root": str(store.root)},
            "caption": {
                "model": "scripted",
                "batch_size": 2,
                "decode_num_cpus": 0.25,
                "only_selected": False,
                "camera_context": True,
                "openai": {"base_url": "http://127.0.0.1:9/v1", "retries": 0},
            },
        }
    )
    with pytest.raises(
        CaptionJobError, match=r"camera_context needs the score stage's camera words.*reelforge score"
    ):
        run_caption(cfg, progress=False)  # no score has run: no words to send

    store.add_columns(
        pa.table(
            {
                "clip_id": ids,
                "caption_camera": [camera[c] for c in ids],
                "caption_motion": [motion[c] for c in ids],
            }
        ),
        stage="score",
        config={"test": True},
    )
    with ContextEchoServer() as server:
        server.failing = False
        live = cfg.model_copy(
            update={
                "caption": cfg.caption.model_copy(
                    update={
                        "openai": cfg.caption.openai.model_copy(
                            update={"base_url": f"http://127.0.0.1:{server.port}/v1"}
                        )
                    }
                )
            }
        )
        summary = run_caption(live, progress=False)
    assert summary.captioned == len(ids)
    rows = store.read_clips(columns=["clip_id", "caption", "caption_prompt_version"]).to_pylist()
    for row in rows:
        cid = row["clip_id"]
        expected = camera[cid] + (f"; {motion[cid]}" if motion[cid] else "")
        assert row["caption"] == f"Measured: {expected}."
        assert row["caption_prompt_version"] == "detailed/v1+camera"
