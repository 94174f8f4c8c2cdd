"""What a caption run did, counted batch by batch from the caption columns, and its printed summary."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from caption.config import DEFAULT_GPU_MODEL


def failure_reason(error: str) -> str:
    """The reason a clip was not captioned, as the summary groups it ("engine unreachable", ...)."""
    source, _, detail = error.partition(": ")
    if source == "engine":
        if detail.startswith(("ClientConnectorError", "ServerDisconnectedError", "ClientOSError")):
            return "engine unreachable"
        if detail.startswith("timeout"):
            return "engine timed out"
        if detail.startswith("HTTP "):
            return f"engine answered {detail.split(':', 1)[0]}"
        return "engine error"
    return {"frames": "clip frames unreadable", "cleanup": "caption rejected by cleanup"}.get(source, source)


@dataclass
class CaptionSummary:
    """Counts and throughput of one caption run, printed at its end."""

    engine: str = ""
    model: str = ""
    selected: int = 0
    skipped_done: int = 0
    attempted: int = 0
    captioned: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    frame_prep_s: float = 0.0
    seconds: float = 0.0
    selection: str = ""
    # The tiny random-weight model: its captions are random text.
    placeholder: bool = False
    error_kinds: dict[str, int] = field(default_factory=dict)
    error_examples: list[str] = field(default_factory=list)

    @property
    def clips_per_s(self) -> float:
        """Clips attempted per second of the run."""
        return self.attempted / self.seconds if self.seconds > 0 else 0.0

    @property
    def output_tokens_per_s(self) -> float:
        """Output tokens generated per second of the run."""
        return self.output_tokens / self.seconds if self.seconds > 0 else 0.0

    def count(self, table: pa.Table) -> None:
        """Add one batch of caption columns: its outcomes, tokens, and the first few errors."""
        self.attempted += table.num_rows
        errors = table.column("caption_error").to_pylist()
        self.failed += sum(e is not None for e in errors)
        self.captioned += sum(e is None for e in errors)
        self.prompt_tokens += int(pc.sum(table["caption_prompt_tokens"]).as_py() or 0)
        self.output_tokens += int(pc.sum(table["caption_output_tokens"]).as_py() or 0)
        kinds = Counter(failure_reason(e) for e in errors if e is not None)
        for kind, n in kinds.items():
            self.error_kinds[kind] = self.error_kinds.get(kind, 0) + n
        ids = table.column("clip_id").to_pylist()
        for cid, err in zip(ids, errors, strict=True):
            if err is not None and len(self.error_examples) < 3:
                self.error_examples.append(f"{cid}: {err[:200]}")

    def lines(self) -> list[str]:
        """The summary as the lines printed at the end of the run."""
        outcome = f"{self.captioned} of {self.attempted} captioned"
        if self.failed:
            reasons = ", ".join(
                f"{n} {kind}" for kind, n in sorted(self.error_kinds.items(), key=lambda kv: -kv[1])
            )
            outcome += f": {self.failed} failed ({reasons})"
        out = [
            f"caption: {outcome} with {self.engine} ({self.model}); {self.selected} clips selected "
            f"({self.selection}), {self.skipped_done} already captioned",
            f"  {self.seconds:.1f} s, {self.clips_per_s:.2f} clips/s, {self.output_tokens_per_s:.1f} output tokens/s, "
            f"{self.prompt_tokens} prompt + {self.output_tokens} output tokens, "
            f"frame preparation {self.frame_prep_s:.2f} s of CPU time",
        ]
        out += [f"  error: {e}" for e in self.error_examples]
        if self.placeholder:
            out.append(
                "  PLACEHOLDER captions: the model is the tiny random-weight Qwen2-VL built by caption/vllm/tiny_model.py, "
                "so its captions are random text. For real captions set caption.model to a real VLM, e.g. "
                f"{DEFAULT_GPU_MODEL} (caption.engine=vllm on GPUs, or caption.openai.base_url of a server "
                "running it)."
            )
        return out
