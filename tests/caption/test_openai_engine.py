"""The OpenAI-compatible client against a real local HTTP server whose failures we control
(retries, timeouts, errors that must not be retried, authorization). The real vLLM server is in
test_vllm.py; it cannot be made to fail on demand."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading

import numpy as np
import pytest
from aiohttp import web

from caption.config import CaptionConfig
from caption.engines import CaptionRequest, EngineConfigError, OpenAICaptionEngine
from caption.stage import OpenAICaptioner, caption_batches, to_table

GOOD_TEXT = "The video shows a red kite flying over a green hill on a windy afternoon."


def _completion(text: str = GOOD_TEXT) -> dict:
    return {
        "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 321, "completion_tokens": 17, "total_tokens": 338},
    }


class ScriptedServer:
    """Answers each clip (named in the prompt's frames) by a script: a list of statuses or 'hang'."""

    def __init__(self, script: dict[str, list]):
        self.script = script
        self.calls: dict[str, int] = {}
        self.auth: list[str | None] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.auth.append(request.headers.get("Authorization"))
        clip = body["messages"][1]["content"][-2]["clip"]
        n = self.calls.get(clip, 0)
        self.calls[clip] = n + 1
        steps = self.script.get(clip, [200])
        step = steps[min(n, len(steps) - 1)]
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.05)
            if step == "hang":
                await asyncio.sleep(2)
            if step == 200:
                return web.json_response(_completion())
            return web.Response(status=step, text=f"scripted {step}")
        finally:
            self.in_flight -= 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _serve_and_run(server: ScriptedServer, engine_cfg: CaptionConfig, clips: list[str]):
    app = web.Application()
    app.router.add_post("/v1/chat/completions", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = int(engine_cfg.openai.base_url.rsplit(":", 1)[1].split("/")[0])
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    engine = OpenAICaptionEngine(engine_cfg)
    original = engine.payload

    def tagged(request: CaptionRequest) -> dict:
        payload = original(request)
        # Let the scripted server see which clip a request is for.
        payload["messages"][1]["content"].insert(-1, {"type": "text", "text": "", "clip": request.clip_id})
        return payload

    engine.payload = tagged  # type: ignore[method-assign]
    try:
        return await engine.generate([CaptionRequest(c, [b"\xff\xd8fake"]) for c in clips])
    finally:
        await engine.aclose()
        await runner.cleanup()


def _cfg(**openai) -> CaptionConfig:
    base = {
        "base_url": f"http://127.0.0.1:{_free_port()}/v1",
        "retries": 2,
        "backoff_s": 0.01,
        "timeout_s": 1.0,
    }
    return CaptionConfig.model_validate(
        {"model": "m", "frames": {"send_as": "images"}, "openai": {**base, **openai}}
    )


def test_retries_transient_errors_and_records_usage_and_latency():
    server = ScriptedServer({"flaky": [503, 429, 200], "ok": [200]})
    outputs = asyncio.run(_serve_and_run(server, _cfg(), ["flaky", "ok"]))
    by_id = {o.clip_id: o for o in outputs}
    assert server.calls == {"flaky": 3, "ok": 1}
    for o in by_id.values():
        assert o.error is None and o.text == GOOD_TEXT
        assert (o.prompt_tokens, o.output_tokens) == (321, 17)
        assert o.latency_s > 0.04
    assert by_id["flaky"].latency_s > by_id["ok"].latency_s


def test_gives_up_after_retries_and_does_not_retry_client_errors():
    server = ScriptedServer({"down": [500], "bad": [400]})
    outputs = {o.clip_id: o for o in asyncio.run(_serve_and_run(server, _cfg(retries=2), ["down", "bad"]))}
    assert server.calls == {"down": 3, "bad": 1}
    assert "HTTP 500" in outputs["down"].error and "after 3 attempts" in outputs["down"].error
    assert "HTTP 400" in outputs["bad"].error and "after 1 attempts" in outputs["bad"].error
    assert outputs["down"].text is None


def test_per_request_timeout():
    server = ScriptedServer({"slow": ["hang"]})
    [output] = asyncio.run(_serve_and_run(server, _cfg(retries=1, timeout_s=0.3), ["slow"]))
    assert output.error.startswith("timeout after 0.3s")
    assert server.calls == {"slow": 2}


def test_concurrency_is_bounded():
    server = ScriptedServer({})
    clips = [f"c{i}" for i in range(12)]
    outputs = asyncio.run(_serve_and_run(server, _cfg(concurrency=3), clips))
    assert all(o.error is None for o in outputs)
    assert server.max_in_flight == 3


class CountingServer:
    """Answers every request after 50 ms and records the most requests it held at once."""

    def __init__(self):
        self.in_flight = 0
        self.max_in_flight = 0

    async def handle(self, request: web.Request) -> web.Response:
        await request.json()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.05)
            return web.json_response(_completion())
        finally:
            self.in_flight -= 1


def test_caption_batches_keeps_concurrency_requests_in_flight_across_batches():
    # Batches of 2, 6 requests allowed: a client that works on one batch at a time never has more
    # than 2 requests at the server (the engine idles at every batch's tail).
    cfg = _cfg(concurrency=6).model_copy(update={"batch_size": 2})
    server = CountingServer()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", server.handle)
    runner = web.AppRunner(app)
    port = int(cfg.openai.base_url.rsplit(":", 1)[1].split("/")[0])

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()

    asyncio.run_coroutine_threadsafe(start(), loop).result()
    batches = [
        {
            "clip_id": np.array([f"b{b}c0", f"b{b}c1"], dtype=object),
            "frames": np.array([[b"\xff\xd8x"], [b"\xff\xd8x"]], dtype=object),
            "frame_error": np.array([None, None], dtype=object),
            "frame_prep_s": np.array([0.0, 0.0]),
        }
        for b in range(6)
    ]
    try:
        tables = [to_table(columns) for columns in caption_batches(batches, cfg)]
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
    rows = [r for t in tables for r in t.to_pylist()]
    assert sorted(r["clip_id"] for r in rows) == sorted(f"b{b}c{c}" for b in range(6) for c in range(2))
    assert all(r["caption_error"] is None for r in rows)
    assert server.max_in_flight == 6


def test_api_key_comes_from_the_named_variable_and_is_never_shown(monkeypatch, caplog):
    secret = "sk-test-do-not-leak-42"
    monkeypatch.setenv("RF_TEST_CAPTION_KEY", secret)
    cfg = _cfg(api_key_env="RF_TEST_CAPTION_KEY")
    server = ScriptedServer({"x": [503, 200]})
    with caplog.at_level(logging.DEBUG, logger="caption.engines"):
        asyncio.run(_serve_and_run(server, cfg, ["x"]))
    assert server.auth == [f"Bearer {secret}"] * 2
    engine = OpenAICaptionEngine(cfg)
    assert secret not in repr(engine) and secret not in caplog.text
    assert secret not in json.dumps(cfg.model_dump(mode="json"))


def test_unset_api_key_variable_fails_at_construction(monkeypatch):
    monkeypatch.delenv("RF_TEST_MISSING_KEY", raising=False)
    with pytest.raises(EngineConfigError, match=r"\$RF_TEST_MISSING_KEY, which is not set"):
        OpenAICaptionEngine(_cfg(api_key_env="RF_TEST_MISSING_KEY"))


def test_unreachable_server_becomes_a_caption_error_per_clip():
    cfg = _cfg(retries=1)
    captioner = OpenAICaptioner(cfg)
    batch = {
        "clip_id": np.array(["a", "b"], dtype=object),
        "frames": np.array([[b"\xff\xd8x"], []], dtype=object),
        "frame_error": np.array([None, "frames: empty clip bytes"], dtype=object),
        "frame_prep_s": np.array([0.01, 0.0]),
    }
    table = to_table(captioner.caption_sync(batch))
    rows = {r["clip_id"]: r for r in table.to_pylist()}
    assert rows["a"]["caption"] is None and rows["a"]["caption_error"].startswith(
        "engine: ClientConnectorError"
    )
    assert rows["b"]["caption_error"] == "frames: empty clip bytes"
    assert rows["a"]["caption_model"] == "m" and rows["a"]["caption_prompt_version"] == "detailed/v1"
