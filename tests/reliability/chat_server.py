"""An OpenAI-compatible chat-completions server on 127.0.0.1 for the caption reliability tests.

The tests here are about the client and the job (key handling, resume after a kill), not the model:
the real vLLM server is exercised by tests/caption. Answers are a pure function of the request's
content, so two runs over the same clips give the same captions.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading

from aiohttp import web


class ChatServer:
    """An OpenAI-compatible chat-completions endpoint on 127.0.0.1; the caption names a hash of the frames.

    It records the Authorization header of every request; with `echo_auth` it instead fails each
    request with a 401 whose body quotes the header back, as some misconfigured proxies do.
    """

    def __init__(self, echo_auth: bool = False, delay_s: float = 0.0):
        self.echo_auth = echo_auth
        self.delay_s = delay_s
        self.auth_headers: list[str] = []
        self.requests = 0
        self.port = _free_port()
        self._ready = threading.Event()
        self._loop = None
        self._thread = threading.Thread(target=self._serve, daemon=True)

    async def _chat(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        self.auth_headers.append(auth)
        body = await request.json()
        self.requests += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.echo_auth:
            return web.Response(status=401, text=f"invalid credentials: Authorization: {auth}")
        frames = [part for part in body["messages"][-1]["content"] if part["type"] != "text"]
        digest = hashlib.sha256(json.dumps(frames, sort_keys=True).encode()).hexdigest()[:12]
        return web.json_response(
            {
                "id": "cmpl-test",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {
                            "role": "assistant",
                            "content": f"A slow pan across a textured colour field, frames {digest}.",
                        },
                    }
                ],
                "usage": {"prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52},
            }
        )

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def __enter__(self) -> ChatServer:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
