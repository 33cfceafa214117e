"""Stage-0 checks on candidate utterances: text, audio, duration, format conversion."""

from __future__ import annotations

import os
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Literal

import yaml

from e2e_asr.data.adapters import Candidate, Reject
from e2e_asr.data.audio import AudioError, AudioInfo, conversion_command, probe_audio
from e2e_asr.data.datadir import Utterance
from e2e_asr.data.schema import Fail, parse_section
from e2e_asr.data.text import normalize


@dataclass
class TextConfig:
    fullwidth_to_halfwidth: bool = True
    remove_punct: bool = True
    case: Literal["upper", "lower", "keep"] = "upper"  # latin letters


@dataclass
class DataConfig:
    """``conf/data.yaml``: target sample rate, duration limits (seconds), text normalisation."""

    sample_rate: int = 16000
    min_duration: float = 0.2
    max_duration: float = 20.0
    text: TextConfig = field(default_factory=TextConfig)

    def check(self, fail: Fail) -> None:
        if self.min_duration < 0 or self.max_duration <= self.min_duration:
            fail("min_duration", "and max_duration: need 0 <= min_duration < max_duration")

    @classmethod
    def from_dict(cls, d: dict | None, where: str = "data config") -> DataConfig:
        """Read and check ``conf/data.yaml`` (``parse_section``); errors name where and key."""
        return parse_section(cls, d, "", where)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike | None) -> DataConfig:
        if path is None:
            return cls()
        with open(path, encoding="utf-8") as fh:
            return cls.from_dict(yaml.safe_load(fh) or {}, str(path))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ValidationReport:
    accepted: int = 0
    rejects: Counter = field(default_factory=Counter)  # reason -> count
    converted: Counter = field(default_factory=Counter)  # "resampled from …" -> count

    def summary(self) -> str:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(self.rejects.items()))
        line = f"{self.accepted} accepted, {sum(self.rejects.values())} rejected"
        if reasons:
            line += f" ({reasons})"
        if self.converted:
            conv = ", ".join(f"{k}: {v}" for k, v in sorted(self.converted.items()))
            line += f"; converted ({conv})"
        return line


def validate(
    items: Iterable[Candidate | Reject], cfg: DataConfig, converted: Counter
) -> Iterator[Utterance | Reject]:
    """Check each candidate (rejects pass through); accepted ones become utterances with
    normalised text, in the order they came. Conversions are counted in ``converted``."""
    probes: OrderedDict[str, AudioInfo | AudioError] = OrderedDict()  # segments share audio
    for c in items:
        if isinstance(c, Reject):
            yield c
            continue
        text = normalize(c.text, **asdict(cfg.text))
        if not text:
            yield Reject(c.key, "empty_text", f"{c.where}: no text after normalisation")
            continue
        info = probes.get(c.wav)
        if info is None:
            try:
                info = probe_audio(c.wav)
            except AudioError as exc:
                info = exc
            if c.segment is not None:
                probes[c.wav] = info
                if len(probes) > 8:
                    probes.popitem(last=False)
        if isinstance(info, AudioError):
            yield Reject(c.key, info.reason, info.message)
            continue
        duration = info.duration
        if c.segment is not None:
            end = info.duration if c.segment.end < 0 else c.segment.end
            if c.segment.start < 0 or end <= c.segment.start or end > info.duration + 0.01:
                yield Reject(
                    c.key,
                    "segment_out_of_range",
                    f"{c.segment.start}-{c.segment.end}s of a {info.duration:.3f}s recording",
                )
                continue
            duration = end - c.segment.start
        if duration < cfg.min_duration:
            yield Reject(c.key, "too_short", f"{duration:.3f}s < {cfg.min_duration}s")
            continue
        if duration > cfg.max_duration:
            yield Reject(c.key, "too_long", f"{duration:.3f}s > {cfg.max_duration}s")
            continue
        wav = c.wav
        if info.sample_rate != cfg.sample_rate or info.channels != 1:
            try:
                wav = conversion_command(c.wav, cfg.sample_rate)
            except AudioError as exc:
                yield Reject(c.key, exc.reason, exc.message)
                continue
            if info.sample_rate != cfg.sample_rate:
                converted[f"resampled from {info.sample_rate} Hz"] += 1
            if info.channels != 1:
                converted[f"downmixed from {info.channels} channels"] += 1
        yield Utterance(c.key, wav, text, c.spk, c.segment, round(duration, 3))
