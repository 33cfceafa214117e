"""Import base models trained with ESPnet1, ESPnet2 or WeNet into this project's format.

`import_base_model(src, ...)` detects the toolkit from the files next to `src` and returns an
`ImportResult` (config, units, feature config, state_dict with our key names, and one report
row per key). `steps/import_base_model.py` writes it as `checkpoint.N` + `import_report.tsv`.
"""

from __future__ import annotations

import os
from pathlib import Path

from e2e_asr.model.importers.common import BaseModelImportError, ImportResult, ReportRow
from e2e_asr.model.importers.espnet1 import import_espnet1
from e2e_asr.model.importers.espnet2 import import_espnet2
from e2e_asr.model.importers.wenet import import_wenet

FORMATS = ("espnet1", "espnet2", "wenet")

__all__ = [
    "FORMATS",
    "BaseModelImportError",
    "ImportResult",
    "ReportRow",
    "detect_format",
    "import_base_model",
]


def _beside(src: Path, name: str) -> bool:
    return (src.parent / name).is_file() or (src.parent.parent / name).is_file()


def detect_format(src: str | os.PathLike) -> str:
    """espnet1 | espnet2 | wenet, from the config file that sits next to the weights."""
    src = Path(src)
    if src.is_dir():
        raise BaseModelImportError(
            f"{src}: give the weights file itself (model.acc.best, snapshot.ep.N, *.pth, *.pt)"
        )
    if not src.is_file():
        raise BaseModelImportError(f"{src}: no such file")
    if (src.parent / "model.json").is_file():
        return "espnet1"
    if (src.parent / "train.yaml").is_file():
        return "wenet"
    if (src.parent / "config.yaml").is_file():
        return "espnet2"
    # one level up: ESPnet1 keeps model.json in exp/<dir>/results/, the weights too
    for name, fmt in (
        ("model.json", "espnet1"),
        ("train.yaml", "wenet"),
        ("config.yaml", "espnet2"),
    ):
        if _beside(src, name):
            return fmt
    raise BaseModelImportError(
        f"{src}: cannot tell which toolkit made it: expected model.json (ESPnet1), "
        "config.yaml (ESPnet2) or train.yaml (WeNet) in the same directory; pass --format"
    )


def import_base_model(
    src: str | os.PathLike,
    fmt: str = "auto",
    cmvn: str | os.PathLike | None = None,
    units: str | os.PathLike | None = None,
    config: str | os.PathLike | None = None,
    feature_config: str | os.PathLike | None = None,
    epoch: int | None = None,
) -> ImportResult:
    """Convert `src`; `config` is model.json / config.yaml / train.yaml if not beside it."""
    fmt = detect_format(src) if fmt == "auto" else fmt
    if fmt == "espnet1":
        if units is not None:
            raise BaseModelImportError("--units: ESPnet1 units come from model.json's char_list")
        result = import_espnet1(src, cmvn, config, feature_config)
    elif fmt == "espnet2":
        if units is not None or cmvn is not None:
            raise BaseModelImportError(
                "--units/--cmvn: ESPnet2 units and CMVN come from config.yaml and the weights"
            )
        result = import_espnet2(src, config, feature_config)
    elif fmt == "wenet":
        result = import_wenet(src, config, units, cmvn, feature_config)
    else:
        raise BaseModelImportError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    if epoch is not None:
        result.epoch = int(epoch)
    return result
