"""Decoding options: the seed system's ``decode_config`` keys plus ours, validated."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from typing import Any

import yaml

from e2e_asr.data.schema import Fail, SchemaError, enforce_rules, parse_section

MODES = ("ctc_greedy", "ctc_prefix_beam", "attention", "attention_rescoring")
# the searches that carry a hotword context (greedy decoding has no choice to bias)
HOTWORD_MODES = ("ctc_prefix_beam", "attention_rescoring", "attention")


def hotword_mode_error(mode: str) -> str:
    return f"work with mode {', '.join(HOTWORD_MODES)}, not {mode}"


# ESPnet spellings of the same options
_ALIASES = {"beam_size": "beam", "beam-size": "beam", "ctc-weight": "ctc_weight"}


class DecodeConfigError(SchemaError):
    """A bad decoding option; the message names the source."""


@dataclass
class DecodeConfig:
    mode: str = "attention_rescoring"
    beam: int = 10  # attention beam; also the n-best size for rescoring
    ctc_beam: int = 15  # CTC prefix beam width / candidates per hypothesis scored with CTC
    ctc_weight: float = 0.3
    penalty: float = 0.0  # added per output token (attention beam search)
    maxlenratio: float = 0.0  # 0: up to the encoder length
    minlenratio: float = 0.0
    batch_size: int = 8  # utterances per encoder batch
    # hotword biasing (the HOTWORD_MODES searches): a phrase file and the default
    # per-token bonus of its phrases (see e2e_asr.decode.context_graph)
    hotwords: str | None = None
    hotword_score: float = 1.0
    # seed keys kept for compatibility: an LM is not supported, char_num checks the vocabulary
    lm_rate: float = 0.0
    char_num: int | None = None

    def __post_init__(self) -> None:
        enforce_rules(self, DecodeConfigError, "decode config")

    def check(self, fail: Fail) -> None:
        """The rules between options (types and keys are checked by ``parse_section``)."""
        if self.mode not in MODES:
            fail("mode", f"{self.mode!r} is not one of {', '.join(MODES)}")
        if self.beam < 1:
            fail("beam", "must be >= 1")
        if self.ctc_beam < 1:
            fail("ctc_beam", "must be >= 1")
        if not 0.0 <= self.ctc_weight <= 1.0:
            fail("ctc_weight", f"{self.ctc_weight} not in [0, 1]")
        if self.mode == "attention" and self.ctc_weight == 1.0:
            fail("ctc_weight", "1.0 with mode attention ignores the decoder; use ctc_prefix_beam")
        if self.lm_rate:
            fail("lm_rate", f"{self.lm_rate}: language-model fusion is not supported, set 0")
        if self.batch_size < 1:
            fail("batch_size", "must be >= 1")
        if not self.hotword_score > 0:
            fail("hotword_score", f"{self.hotword_score} must be > 0")
        if self.hotwords and self.mode not in HOTWORD_MODES:
            fail("hotwords", hotword_mode_error(self.mode))

    @classmethod
    def from_dict(
        cls, d: dict[str, Any] | None, where: str = "decode config", section: str = "decode_config"
    ) -> DecodeConfig:
        """Read and check decoding options (ESPnet spellings ``beam_size``, ``ctc-weight``
        accepted); ``DecodeConfigError`` naming ``where``, the section and the key."""
        return parse_section(cls, d, section, where, _ALIASES, error=DecodeConfigError)

    @classmethod
    def from_checkpoint(cls, payload: dict[str, Any], where: str, warn=None) -> DecodeConfig:
        """The ``decode_config`` a checkpoint was trained with, made usable: keys we do not
        know are dropped and an LM weight is set to 0 (no LM here), each with a warning."""
        section = dict((payload.get("config") or {}).get("decode_config") or {})
        notes = []
        unknown = sorted(set(section) - {f.name for f in fields(cls)})
        for k in unknown:
            section.pop(k)
        if unknown:
            notes.append(f"ignoring decode_config keys {', '.join(unknown)}")
        if section.get("lm_rate"):
            notes.append(f"decode_config.lm_rate {section['lm_rate']} ignored (no LM fusion)")
            section["lm_rate"] = 0.0
        if warn is not None:
            for n in notes:
                warn(f"{where}: {n}")
        return cls.from_dict(section, where)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> DecodeConfig:
        with open(path, encoding="utf-8") as fh:
            try:
                d = yaml.safe_load(fh)
            except yaml.YAMLError as e:
                raise DecodeConfigError(f"{path}: not valid YAML: {e}") from None
        if d is not None and not isinstance(d, dict):
            raise DecodeConfigError(f"{path}: expected a mapping of decoding options")
        # a full training config may be given: use its decode_config section
        if d and "decode_config" in d:
            d = d["decode_config"]
        return cls.from_dict(d, str(path))

    def updated(self, **overrides: Any) -> DecodeConfig:
        """A copy with the non-None overrides applied (command-line options)."""
        d = asdict(self)
        d.update({k: v for k, v in overrides.items() if v is not None})
        return DecodeConfig.from_dict(d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check_vocab(self, vocab_size: int, where: str) -> None:
        if self.char_num is not None and self.char_num != vocab_size:
            raise DecodeConfigError(
                f"{where}: decode config char_num {self.char_num} != model vocabulary {vocab_size}"
            )


def add_decode_arguments(parser: Any) -> None:
    """Command-line overrides of the decode config (argparse); unset options keep the file's."""
    g = parser.add_argument_group("decoding options (override decode.yaml)")
    g.add_argument("--mode", choices=MODES)
    g.add_argument("--beam", type=int, help="attention beam / n-best size for rescoring")
    g.add_argument("--ctc-beam", type=int, help="CTC prefix beam width")
    g.add_argument("--ctc-weight", type=float)
    g.add_argument("--penalty", type=float, help="per-token bonus (attention beam search)")
    g.add_argument("--maxlenratio", type=float)
    g.add_argument("--minlenratio", type=float)
    g.add_argument("--batch-size", type=int, help="utterances per encoder batch")
    g.add_argument(
        "--hotwords",
        metavar="FILE",
        help="hotword phrases to favour, one a line, optional ' :score' per phrase "
        f"(modes {', '.join(HOTWORD_MODES)})",
    )
    g.add_argument(
        "--hotword-score", type=float, help="bonus per matched token of a hotword (default 1.0)"
    )


def overrides_from_args(args: Any) -> dict[str, Any]:
    names = (
        "mode",
        "beam",
        "ctc_beam",
        "ctc_weight",
        "penalty",
        "maxlenratio",
        "minlenratio",
        "batch_size",
        "hotwords",
        "hotword_score",
    )
    out = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    if out.get("hotwords"):  # decoding jobs may run elsewhere (cmd.sh): an absolute path
        out["hotwords"] = os.path.abspath(out["hotwords"])
    return out
