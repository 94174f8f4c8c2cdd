"""One input file end to end: probe, detect, plan, extract, verify (the split stage's per-file work).

The source is decoded once: detection and extraction share the pass (curate.single_pass) unless
the configuration needs the two-pass split (stride mode, `long_scenes: drop`, stream copy); the
probe reads only the container's header here, and the pass supplies the display rotation and
the reasons a file gives no frame.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import av
import av.error

from curate.clip_output import Clip, ClipFailure, output_geometry
from curate.clip_plan import ClipPlan, plan_clips, stride_plans
from curate.extract import extract_clips
from curate.probe import Probe, Reason, no_frames_reason, path_id, probe_file
from curate.scenes import Boundary, Scan, scan_file
from curate.single_pass import PlanMismatch, SinglePass, single_pass_supported
from curate.split_config import SplitConfig
from media.decode import Deadline, FileTimeout


class VideoSplit:
    """Probe, detect and extract one file; `clips()` yields verified clips as they are encoded.

    Afterwards `probe` (refined with the measured frame count, duration, rate and VFR),
    `boundaries`, `failures` and `status`/`error` describe the file for its `videos` row. Bad
    input never raises: it ends as status "error" with a specific reason. A partly decodable
    file keeps its clips, and the row names what was lost.
    """

    def __init__(
        self,
        path: str | Path,
        cfg: SplitConfig,
        *,
        scenes_only: bool = False,
        identity: tuple[str, int] | None = None,
    ) -> None:
        self.path = Path(path)
        self.cfg = cfg
        self.scenes_only = scenes_only
        self._identity = identity
        self.probe: Probe | None = None
        self.boundaries: list[Boundary] = []
        self.failures: list[ClipFailure] = []
        self.num_clips = 0
        self.status = "error"
        self.error = ""
        self._notes: list[str] = []

    def clips(self) -> Iterator[Clip]:
        """The file's clips, recording failures and timeouts instead of raising them."""
        deadline = Deadline(self.cfg.time_limit_s)
        try:
            yield from self._run(deadline)
        except FileTimeout as err:
            self._fail(Reason.TIMEOUT, str(err))
        except PlanMismatch as err:  # never keep a clip the full plan would not have made
            self._fail(Reason.INTERNAL, f"single-pass split: {err}")
        except (av.error.FFmpegError, OSError) as err:
            self._fail(
                Reason.UNDECODABLE if isinstance(err, av.error.FFmpegError) else Reason.UNREADABLE,
                f"{type(err).__name__}: {err}",
            )
        except Exception as err:  # a library bug on one file must not end the job: record it
            self._fail(Reason.INTERNAL, f"{type(err).__name__}: {err}")

    def _run(self, deadline: Deadline) -> Iterator[Clip]:  # noqa: PLR0912 — the file's stages in order, each with its own way to fail
        probe = probe_file(self.path, self.cfg.probe, deadline, self._identity, decode_sample=False)
        self.probe = probe
        if not probe.ok:
            self.error = probe.error
            return
        detect = self.cfg.detect
        plans: list[ClipPlan] | None = None
        single: SinglePass | None = None
        if self.scenes_only:
            scan = scan_file(self.path, detect, deadline, threads=self.cfg.decode_threads())
        elif single_pass_supported(
            self.cfg,
            probe.codec,
            probe.container,
            output_geometry(probe.width, probe.height, 0, self.cfg.extract),
            probe.width,
            probe.height,
        ):
            single = SinglePass(self.path, self.cfg, probe.width, probe.height, deadline)
            yield from self._keep(single.run())
            scan, plans = single.scan, single.plans
        else:
            scan = scan_file(
                self.path, detect, deadline, detect=detect.mode == "scenes", threads=self.cfg.decode_threads()
            )
        header_duration = probe.duration_s
        self.probe = probe = replace(
            probe.refine(scan.frame_pts, scan.time_base, scan.end_pts, self.cfg.probe.vfr_tolerance),
            rotation=scan.rotation,
        )
        self.boundaries = scan.boundaries
        self._note_decode_losses(scan, header_duration)
        if scan.num_frames == 0:
            self._fail(*no_frames_reason(scan.stats))
            return
        if self.scenes_only:
            self.status, self.error = "ok", " | ".join(self._notes)
            return
        if plans is None:
            if detect.mode == "stride":
                plans = stride_plans(scan, self.cfg.clips, detect.stride_s)
            else:
                plans = plan_clips(scan, self.cfg.clips)
        if not plans:
            self._notes.append(
                f"{Reason.TOO_SHORT}: no shot of at least {self.cfg.clips.min_length_s:g} s "
                f"(file lasts {probe.duration_s:.2f} s)"
            )
        if single is None:
            yield from self._keep(
                extract_clips(
                    self.path,
                    plans,
                    scan,
                    probe.width,
                    probe.height,
                    probe.rotation,
                    self.cfg.extract,
                    deadline,
                    threads=self.cfg.decode_threads(),
                )
            )
        if self.failures:
            first = self.failures[0]
            self._notes.append(
                f"{first.reason}: {len(self.failures)} of {len(plans)} clips failed; {first.message}"
            )
        if plans and self.num_clips == 0:
            self.status, self.error = "error", " | ".join(self._notes)
        else:
            self.status, self.error = "ok", " | ".join(self._notes)

    def _keep(self, results: Iterator[Clip | ClipFailure]) -> Iterator[Clip]:
        for result in results:
            if isinstance(result, ClipFailure):
                self.failures.append(result)
            else:
                self.num_clips += 1
                yield result

    def _note_decode_losses(self, scan: Scan, header_duration: float) -> None:
        stats = scan.stats
        decoded = scan.seconds_of(scan.num_frames)
        if not stats.demux_error and header_duration - decoded > max(0.5, 0.05 * header_duration):
            self._notes.append(
                f"{Reason.TRUNCATED}: frames end at {decoded:.2f} s, the header says {header_duration:.2f} s"
            )
        if stats.bad_packets:
            self._notes.append(
                f"{Reason.CORRUPT_PACKETS}: {stats.bad_packets} of {stats.packets} packets failed to decode "
                f"({stats.first_bad_packet_error}); {scan.num_frames} frames kept"
            )
        if stats.demux_error:
            self._notes.append(
                f"{Reason.TRUNCATED}: container ended early after {scan.num_frames} frames ({stats.demux_error})"
            )

    def _fail(self, reason: Reason, detail: str) -> None:
        self.status, self.error = "error", f"{reason}: {detail}"

    @property
    def video_id(self) -> str:
        """The file's content id (its path's when the probe failed)."""
        return self.probe.video_id if self.probe is not None else path_id(self.path)
