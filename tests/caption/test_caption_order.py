"""Each caption lands on its own clip: the server answers every request with a digest of the first
image it received, and every stored caption must equal the digest of its own clip's first sampled
frame, computed independently from the clip bytes in the store.

The run goes through everything that could reorder captions: small batches, several batches in
flight with answers finishing out of order, retried requests (HTTP 503), clips that fail and are
captioned by a later run (HTTP 400), and a job SIGKILLed mid-run and resumed. (A published pipeline
shipped a release that attached captions to the wrong clips.)
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import shutil
import tempfile
import threading
from pathlib import Path

import lance
import numpy as np
import pytest
import skimage.data
from aiohttp import web
from caption_clips import PHOTOS, clips_rows, pan_clip
from PIL import Image
from reliability.faults import caption_command, committed_versions, kill_when, reap, start_job

from caption.frames import encode_jpeg, sample_frames
from caption.stage import batches_in_flight
from caption.vllm.runtime import free_port
from pipelines.config import load_config
from pipelines.jobs.caption import run_caption
from store import Store

pytestmark = pytest.mark.slow

OFFSETS_PER_PHOTO = 10  # 4 photos x 10 window positions: 40 clips with 40 different first frames
ANSWERED_BEFORE_HOLD = 18  # requests the server answers before it holds the rest until the kill
PREFIX = "Digest "


def image_digest(jpeg: bytes) -> str:
    """sha256 of the decoded pixels (and their shape) of one JPEG frame."""
    pixels = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    return hashlib.sha256(repr(pixels.shape).encode() + pixels.tobytes()).hexdigest()


class DigestServer:
    """OpenAI-compatible chat completions answering `Digest <sha256 of the first image's pixels>`.

    Faults, a pure function of the digest and of how often that image was sent before, so they hit
    the same clips whichever run sends them: the first request of every third image gets HTTP 503
    (the client retries it at once), of the next third HTTP 400 (recorded as failed, captioned by a
    later run). Answers wait 0-45 ms by digest so requests finish out of order. Once `hold_after`
    requests are answered, further ones wait until `release()` (the job is killed meanwhile).
    """

    def __init__(self, hold_after: int | None = None):
        self.hold_after = hold_after
        self.answered = 0
        self.attempts: dict[str, int] = {}
        self.statuses: dict[int, int] = {}
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._released = asyncio.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.hold_after is not None and self.answered >= self.hold_after:
            await self._released.wait()
        (video,) = [p for p in body["messages"][1]["content"] if p["type"] == "video_url"]
        header, frames = video["video_url"]["url"].split(",", 1)
        assert header == "data:video/jpeg;base64"
        digest = image_digest(base64.b64decode(frames.split(",", 1)[0]))
        attempt = self.attempts.get(digest, 0)
        self.attempts[digest] = attempt + 1
        self.answered += 1
        await asyncio.sleep(int(digest[:2], 16) % 4 * 0.015)
        status = 200
        if attempt == 0 and int(digest, 16) % 3 == 1:
            status = 503
        elif attempt == 0 and int(digest, 16) % 3 == 2:
            status = 400
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status != 200:
            return web.Response(status=status, text="scripted fault")
        return web.json_response(
            {
                "choices": [{"message": {"content": PREFIX + digest}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 10},
            }
        )

    def release(self) -> None:
        self._loop.call_soon_threadsafe(self._released.set)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/v1/chat/completions", self._handle)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> DigestServer:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def staged_captions(staging: Path) -> int:
    """Captions the running job has committed to its staging dataset (0 before its first commit)."""
    if committed_versions(staging) == 0:
        return 0
    return lance.dataset(str(staging)).count_rows(filter="caption IS NOT NULL")


def distinct_clips() -> dict[str, bytes]:
    """clip_id -> MP4: pans starting at different windows of each photo, so no two first frames match."""
    clips = {}
    for name in PHOTOS:
        photo = getattr(skimage.data, name)()
        for k in range(OFFSETS_PER_PHOTO):
            clips[f"{name}-{k}"] = pan_clip(photo[3 * k :, 16 * k :], num_frames=12)
    return clips


@pytest.fixture
def ray_tmp():
    path = tempfile.mkdtemp(prefix="rfo-")  # short: Ray's socket paths must stay under ~100 chars
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_every_caption_is_its_own_clips_first_frame_digest(ray_session, tmp_path, ray_tmp):
    store = Store(tmp_path / "store")
    store.append("clips", clips_rows(distinct_clips()))
    staging = store.root / "staging" / "caption.lance"
    log = tmp_path / "caption.log"
    with DigestServer(hold_after=ANSWERED_BEFORE_HOLD) as server:
        sets = [
            f"store.root={store.root}",
            "caption.engine=openai",
            "caption.openai.launch_server=false",
            "caption.model=digest-server",
            "caption.only_selected=false",  # no filter ran: caption every clip
            f"caption.openai.base_url=http://127.0.0.1:{server.port}/v1",
            "caption.openai.retries=2",
            "caption.openai.backoff_s=0",
            "caption.openai.concurrency=4",
            "caption.batch_size=3",
            "caption.flush_every=3",
            "caption.decode_concurrency=2",
            "caption.frames.num_frames=4",
        ]
        cfg = load_config("demo", sets)
        assert batches_in_flight(cfg.caption) >= 3

        # Run 1, in its own process: SIGKILLed once a caption is staged, with requests still in flight.
        job = start_job(caption_command([*sets, f"ray.temp_dir={ray_tmp}"]), log)
        try:
            killed = kill_when(job, lambda: staged_captions(staging) > 0)
        finally:
            reap(job)
        assert killed, f"the caption job ended before it could be killed:\n{log.read_text()[-2000:]}"
        server.release()

        # Runs 2 and 3 resume: the clips neither staged nor captioned, then the ones that got HTTP 400.
        resumed = run_caption(cfg, progress=False)
        assert resumed.skipped_done > 0  # the killed run's staged captions count
        final = run_caption(cfg, progress=False)
        assert final.attempted == resumed.failed and final.failed == 0
    assert server.statuses.get(503, 0) > 0 and server.statuses.get(400, 0) > 0

    rows = store.read_clips(columns=["clip_id", "caption", "caption_error"]).to_pylist()
    clip_bytes = store.read_clip_bytes([r["clip_id"] for r in rows])
    frames = cfg.caption.frames
    expected = {}
    for clip_id, data in clip_bytes.items():
        first = sample_frames(
            data,
            num_frames=frames.num_frames,
            fps=frames.fps,
            max_frames=frames.max_frames,
            max_pixels=frames.max_pixels,
        ).frames[0]
        expected[clip_id] = PREFIX + image_digest(encode_jpeg(first, frames.jpeg_quality))
    assert len(rows) == len(distinct_clips()) == len(set(expected.values()))  # a swap would show
    wrong = {
        r["clip_id"]: (r["caption"], expected[r["clip_id"]])
        for r in rows
        if r["caption"] != expected[r["clip_id"]]
    }
    assert not wrong
