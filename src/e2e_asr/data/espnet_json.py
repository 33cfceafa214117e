"""ESPnet1 data json: ``{"utts": {utt: {"input": [...], "output": [...], "utt2spk": spk}}}``."""

from __future__ import annotations

import json
import os
from typing import IO

from e2e_asr.data.io import atomic_open


def make_entry(
    feat: str,
    num_frames: int,
    dim: int,
    text: str,
    tokens: list[str],
    ids: list[int],
    odim: int,
    spk: str,
) -> dict:
    """One utterance in ESPnet1 layout (``token``/``tokenid`` are space-separated strings)."""
    return {
        "input": [{"feat": feat, "name": "input1", "shape": [int(num_frames), int(dim)]}],
        "output": [
            {
                "name": "target1",
                "shape": [len(ids), int(odim)],
                "text": text,
                "token": " ".join(tokens),
                "tokenid": " ".join(str(i) for i in ids),
            }
        ],
        "utt2spk": spk,
    }


class JsonWriter:
    """Streams utterances into one json file (temp name, renamed on ``close``)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self._ctx = atomic_open(path, "w")
        self._fh: IO = self._ctx.__enter__()
        self._fh.write('{\n    "utts": {')
        self.count = 0

    def add(self, utt: str, entry: dict) -> None:
        body = json.dumps(entry, ensure_ascii=False, indent=4).replace("\n", "\n        ")
        sep = "," if self.count else ""
        self._fh.write(f"{sep}\n        {json.dumps(utt, ensure_ascii=False)}: {body}")
        self.count += 1

    def close(self) -> None:
        self._fh.write("\n    }\n}\n")
        self._ctx.__exit__(None, None, None)

    def abort(self) -> None:
        self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def __enter__(self) -> JsonWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_json(path: str | os.PathLike, utts: dict[str, dict]) -> None:
    with JsonWriter(path) as w:
        for utt, entry in utts.items():
            w.add(utt, entry)


def read_utts(path: str | os.PathLike) -> dict[str, dict]:
    """The ``utts`` mapping of an ESPnet1 json; errors name the file."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: invalid json ({exc.msg})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("utts"), dict):
        raise ValueError(f"{path}: expected an object with a 'utts' mapping")
    return data["utts"]
