"""reelforge's media layer: every decode and every encode of a video goes through here.

Free of Ray and torch, so curate/, caption/, train/, pipelines/, the benchmarks and the tests all
import it. `read_clip` gives a clip's frames (sampled times, the first or middle n, or all;
scaled, cropped; RGB, grey or the decoder's planes) from one decode pass, `decode_check` what a
decode of all of it sees; `VideoWriter`/`encode_mp4` encode frames (H.264 MP4, or another codec
and container), `PacketWriter`/`remux` copy packets into a new file; `jpeg` and `clip_preview` make
thumbnails and previews. `media.decode` holds the decode loop itself and `count_decodes`, which
counts opens and decoded frames per input for decode budgets.
"""

from media.decode import DecodeLog, count_decodes
from media.encode import (
    PacketWriter,
    VideoWriter,
    animated_webp,
    clip_preview,
    encode_mp4,
    jpeg,
    pad_even,
    remux,
    write_gif,
)
from media.frames import (
    ClipFrames,
    MediaError,
    cover_crop,
    decode_check,
    fit_pixels,
    fit_short_side,
    fit_width,
    read_clip,
)
from media.sampling import Sampling, sample_times, spread_indices

__all__ = [
    "ClipFrames",
    "DecodeLog",
    "MediaError",
    "PacketWriter",
    "Sampling",
    "VideoWriter",
    "animated_webp",
    "clip_preview",
    "count_decodes",
    "cover_crop",
    "decode_check",
    "encode_mp4",
    "fit_pixels",
    "fit_short_side",
    "fit_width",
    "jpeg",
    "pad_even",
    "read_clip",
    "remux",
    "sample_times",
    "spread_indices",
    "write_gif",
]
