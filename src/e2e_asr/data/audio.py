"""Audio reading for data prep: plain files (wav, flac, … via soundfile) and Kaldi ``cmd |`` pipes.

Samples are returned as float32 in [-1, 1]; ``features.compute_features`` scales them to the
int16 range Kaldi works in.
"""

from __future__ import annotations

import io
import shlex
import shutil
import struct
import subprocess
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf

AUDIO_EXTENSIONS = (".wav", ".flac")
# Float audio beyond this is garbage: scaled to the int16 range, its fbank power overflows.
MAX_ABS_SAMPLE = 1e6


class AudioError(Exception):
    """Bad audio. ``reason`` is a short category used in rejects.tsv (``corrupt_audio`` …)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    channels: int
    num_samples: int

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate


def is_command(path_or_cmd: str) -> bool:
    """True for a Kaldi wav.scp pipe value (``cmd args |``)."""
    return path_or_cmd.rstrip().endswith("|")


def _wav_truncation(path: Path) -> str | None:
    """Describe a truncated RIFF/WAVE file, or None if it is whole (or not a wav).

    libsndfile silently shortens a truncated wav to the bytes present, so the declared length
    of the data chunk is checked here.
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos = 12
        while True:
            fh.seek(pos)
            chunk = fh.read(8)
            if len(chunk) < 8:
                return None
            cid, clen = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                if clen in (0, 0xFFFFFFFF):  # streamed writers leave the length unset
                    return None
                present = size - (pos + 8)
                if present < clen:
                    return f"truncated wav: data chunk declares {clen} bytes, {present} present"
                return None
            pos += 8 + clen + (clen & 1)


def _run_command(cmd: str) -> bytes:
    proc = subprocess.run(cmd.rstrip()[:-1], shell=True, capture_output=True, check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise AudioError(
            "unreadable_audio",
            f"command exited with {proc.returncode}: {cmd!r}: {err[-1] if err else ''}",
        )
    return proc.stdout


def read_audio_native(path_or_cmd: str) -> tuple[np.ndarray, int]:
    """Read all samples as float32 ``[N, C]`` at the file's own rate. Raises AudioError."""
    if is_command(path_or_cmd):
        data = _run_command(path_or_cmd)
        if not data:
            raise AudioError("empty_audio", f"command produced no output: {path_or_cmd!r}")
        source: object = io.BytesIO(data)
        name = path_or_cmd
    else:
        path = Path(path_or_cmd)
        name = str(path)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise AudioError("unreadable_audio", f"{name}: {exc.strerror}") from exc
        if size == 0:
            raise AudioError("empty_audio", f"{name}: file is empty (0 bytes)")
        problem = _wav_truncation(path)
        if problem:
            raise AudioError("corrupt_audio", f"{name}: {problem}")
        source = name
    try:
        samples, rate = sf.read(source, dtype="float32", always_2d=True)
    except sf.LibsndfileError as exc:
        # "Format not recognised" means we cannot open it at all; anything else is damage
        # found while decoding (e.g. a flac that loses sync).
        reason = "unreadable_audio" if "Error opening" in str(exc) else "corrupt_audio"
        raise AudioError(reason, f"{name}: {exc}") from exc
    except (RuntimeError, OSError) as exc:
        raise AudioError("corrupt_audio", f"{name}: {exc}") from exc
    if samples.shape[0] == 0:
        raise AudioError("empty_audio", f"{name}: no samples")
    if not np.isfinite(samples).all():
        raise AudioError("corrupt_audio", f"{name}: non-finite sample values")
    peak = float(np.abs(samples).max())
    if peak > MAX_ABS_SAMPLE:  # finite, but the power spectrum would overflow to inf/NaN
        raise AudioError(
            "corrupt_audio",
            f"{name}: sample values up to {peak:.3g}, far outside [-1, 1] (limit "
            f"{MAX_ABS_SAMPLE:g}); features would not be finite",
        )
    return samples, int(rate)


def probe_audio(path_or_cmd: str) -> AudioInfo:
    """Fully decode the audio (to catch corruption) and describe it. Raises AudioError."""
    samples, rate = read_audio_native(path_or_cmd)
    return AudioInfo(sample_rate=rate, channels=samples.shape[1], num_samples=samples.shape[0])


def to_mono_rate(samples: np.ndarray, rate: int, sample_rate: int) -> np.ndarray:
    """Downmix ``[N, C]`` (or ``[N]``) to mono by averaging and resample to ``sample_rate``."""
    x = samples.mean(axis=1) if samples.ndim == 2 else samples
    if rate != sample_rate:
        from scipy.signal import resample_poly  # slow import, only needed here

        g = gcd(rate, sample_rate)
        x = resample_poly(x, sample_rate // g, rate // g)
    return np.ascontiguousarray(x, dtype=np.float32)


def load_audio(path_or_cmd: str, sample_rate: int = 16000) -> np.ndarray:
    """Float32 mono samples in [-1, 1] at ``sample_rate``; raises AudioError on bad audio."""
    samples, rate = read_audio_native(path_or_cmd)
    return to_mono_rate(samples, rate, sample_rate)


def conversion_command(path_or_cmd: str, sample_rate: int) -> str:
    """A wav.scp pipe that yields 16-bit mono wav at ``sample_rate`` (sox does the work).

    Kaldi tools and our own reader both understand the result.
    """
    if shutil.which("sox") is None:
        raise AudioError(
            "conversion_unavailable",
            "audio needs resampling/downmixing but `sox` is not installed (apt-get install sox)",
        )
    convert = f"sox -q -t wav - -t wav -r {sample_rate} -c 1 -b 16 - |"
    if is_command(path_or_cmd):
        return f"{path_or_cmd.rstrip()} {convert}"
    return f"sox -q {shlex.quote(path_or_cmd)} -t wav -r {sample_rate} -c 1 -b 16 - |"
