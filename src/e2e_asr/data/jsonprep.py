"""Stage 2: CMVN, tokenisation, train/dev split and ESPnet1 json, streaming over a data dir.

Three streaming passes over the (sorted) data-dir tables, none of which holds features or the
whole corpus in memory: keys (dev selection), text + frame counts (OOV report, filters,
counts), then features (CMVN) while writing json.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import kaldiio
import yaml

from e2e_asr.data.batching import JCONFIG_ALIASES, JConfig, LengthFilter
from e2e_asr.data.cmvn import CmvnStats, write_cmvn
from e2e_asr.data.datadir import SortedLookup, iter_kv
from e2e_asr.data.espnet_json import JsonWriter, make_entry
from e2e_asr.data.features import FeatureConfig, FeatureError, feature_mismatch
from e2e_asr.data.io import atomic_write_bytes, atomic_write_lines
from e2e_asr.data.schema import parse_section
from e2e_asr.data.split import base_key, dev_keys, is_copy
from e2e_asr.data.units import Tokenizer, extend_units, write_units


class JsonPrepError(ValueError):
    pass


def load_filters(config: str | os.PathLike | None) -> tuple[LengthFilter, LengthFilter]:
    """Train and dev filters from a seed-style yaml (``set_config.jconfig`` or ``jconfig``,
    ``valid_config.jconfig``); the seed's values when no config is given."""
    if config is None:
        return LengthFilter(), LengthFilter()
    with open(config, encoding="utf-8") as fh:
        cfg = yaml.safe_load(fh) or {}
    if not isinstance(cfg, dict):
        raise JsonPrepError(f"{config}: expected a mapping at the top level")
    train_j = (cfg.get("set_config") or {}).get("jconfig") or cfg.get("jconfig")
    dev_j = (cfg.get("valid_config") or {}).get("jconfig") or train_j
    # read with the training config's own section class: same keys, types and rules
    jc = parse_section(JConfig, train_j, "jconfig", str(config), JCONFIG_ALIASES, JsonPrepError)
    vj = parse_section(
        JConfig, dev_j, "valid_config.jconfig", str(config), JCONFIG_ALIASES, JsonPrepError
    )
    return LengthFilter.from_jconfig(vars(jc)), LengthFilter.from_jconfig(vars(vj))


def check_feature_match(data_cfg: FeatureConfig, model_cfg: dict | None, where: str) -> None:
    """Stage 2's use of THE feature rule (``e2e_asr.data.features.feature_mismatch``)."""
    if not model_cfg:
        return
    try:
        diff = feature_mismatch(data_cfg, model_cfg)
    except FeatureError as exc:
        raise JsonPrepError(f"{where}: base model {exc}") from exc
    if diff:
        raise JsonPrepError(
            f"{where}: features differ from the base model's ({'; '.join(diff)}); "
            "re-run stage 1 with the base model's feature config"
        )


@dataclass
class Utt:
    utt: str
    feat: str
    frames: int
    text: str
    spk: str


def iter_data(data_dir: Path) -> Iterator[Utt | tuple[str, str]]:
    """Utterances with features, text and frame count; ``(utt, problem)`` when one is missing."""
    for name in ("feats.scp", "utt2num_frames", "text"):
        if not (data_dir / name).is_file():
            raise JsonPrepError(f"{data_dir}: missing {name} (run stages 0 and 1)")
    frames = SortedLookup(data_dir / "utt2num_frames")
    texts = SortedLookup(data_dir / "text", allow_empty_value=True)
    spks = SortedLookup(data_dir / "utt2spk")
    prev = ""
    for utt, feat in iter_kv(data_dir / "feats.scp"):
        if utt < prev:
            raise JsonPrepError(f"{data_dir}/feats.scp: not sorted (at {utt!r})")
        prev = utt
        n, text = frames.get(utt), texts.get(utt)
        if n is None:
            yield utt, "no utt2num_frames entry"
        elif text is None:
            yield utt, "no text"
        else:
            yield Utt(utt, feat, int(n), text, spks.get(utt) or utt)


@dataclass
class Stage2Report:
    oov: Counter = field(default_factory=Counter)
    counts: Counter = field(default_factory=Counter)  # role -> kept utterances
    filtered: Counter = field(default_factory=Counter)  # "role: reason" -> count
    cmvn_frames: int = 0
    units_added: list[str] = field(default_factory=list)

    def oov_lines(self, extend: bool) -> list[str]:
        total = sum(self.oov.values())
        if not self.oov:
            return ["OOV: none (every character of the text is a unit)"]
        what = "added as new units" if extend else "mapped to <unk>"
        top = ", ".join(f"{c} {n}" for c, n in self.oov.most_common(20))
        more = " …" if len(self.oov) > 20 else ""
        return [
            f"OOV: {len(self.oov)} units not in the unit list, {total} occurrences, {what}: "
            f"{top}{more}"
        ]

    def summary_lines(self, json_nj: int) -> list[str]:
        lines = [
            f"train: {self.counts['train']} utterances in {json_nj} json files; "
            f"dev: {self.counts['dev']} utterances"
        ]
        if self.filtered:
            lines.append(
                "filtered: " + ", ".join(f"{k}: {v}" for k, v in sorted(self.filtered.items()))
            )
        lines.append(f"cmvn: {self.cmvn_frames} train frames")
        return lines


def _decide(
    u: Utt, tok: Tokenizer, role: str, filters: dict[str, LengthFilter], dev: set[str]
) -> tuple[str, str | None, list[str]]:
    """(role, filter reason or None, tokens) for one utterance of the main data dir."""
    if role == "auto":
        key = base_key(u.utt)
        if key in dev:
            if is_copy(u.utt):  # an augmented dev utterance would leak into training
                return "dropped", "augmented copy of a dev utterance", []
            role = "dev"
        else:
            role = "train"
    tokens = tok.tokens(u.text)
    return role, filters[role].reason(u.frames, len(tokens)), tokens


def prepare_json(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    units: list[str],
    json_nj: int,
    num_utt_percent: int,
    dev_data_dir: str | os.PathLike | None = None,
    config: str | os.PathLike | None = None,
    extend: bool = False,
    model_feature_config: dict | None = None,
    log=print,
) -> Stage2Report:
    """Write ``train.{1..json_nj}.json dev.json cmvn.ark units.txt feature.yaml oov.txt`` and
    ``train_shards.txt`` (the train json file names, one a line, read by stage 3)."""
    data_dir, out = Path(data_dir), Path(out_dir)
    if json_nj < 1:
        raise JsonPrepError("json_nj must be >= 1")
    if not (data_dir / "feature.yaml").is_file():
        raise JsonPrepError(f"{data_dir}: missing feature.yaml (run stage 1)")
    fcfg = FeatureConfig.from_yaml(data_dir / "feature.yaml")
    check_feature_match(fcfg, model_feature_config, str(data_dir))
    sources: list[tuple[Path, str]] = [(data_dir, "auto" if dev_data_dir is None else "train")]
    if dev_data_dir is not None:
        dd = Path(dev_data_dir)
        if not (dd / "feature.yaml").is_file():
            raise JsonPrepError(f"{dd}: missing feature.yaml (run stage 1 on the dev set)")
        dcfg = FeatureConfig.from_yaml(dd / "feature.yaml")
        diff = feature_mismatch(dcfg, fcfg, ("dev", "train"))
        if diff:
            raise JsonPrepError(
                f"{dd}/feature.yaml differs from {data_dir}/feature.yaml ({'; '.join(diff)})"
            )
        sources.append((dd, "dev"))
    train_f, dev_f = load_filters(config)
    filters = {"train": train_f, "dev": dev_f}
    dev = (
        set()
        if dev_data_dir is not None
        else dev_keys((k for k, _ in iter_kv(data_dir / "feats.scp")), num_utt_percent)
    )

    # Pass 1: OOV report and counts, before anything is written.
    tok = Tokenizer(units)
    report = Stage2Report()
    for src, role in sources:
        for u in iter_data(src):
            if isinstance(u, tuple):
                report.filtered[f"{role}: {u[1]}"] += 1
                continue
            r, why, tokens = _decide(u, tok, role, filters, dev)
            report.oov.update(t for t in tokens if t not in tok.index)
            if why is not None:
                report.filtered[f"{r}: {why}"] += 1
            else:
                report.counts[r] += 1
    for line in report.oov_lines(extend):
        log(line)
    if report.counts["train"] == 0:
        raise JsonPrepError(f"{data_dir}: no training utterances left after the split and filters")
    if report.counts["train"] < json_nj:
        raise JsonPrepError(f"json_nj {json_nj} > {report.counts['train']} training utterances")
    if extend and report.oov:
        new = sorted(report.oov, key=lambda c: (-report.oov[c], c))
        units = extend_units(units, new)
        report.units_added = new
        tok = Tokenizer(units)

    out.mkdir(parents=True, exist_ok=True)
    for p in out.glob(".*.tmp"):  # temp files of a killed run (atomic_open names)
        p.unlink(missing_ok=True)

    # Pass 2: json and CMVN.
    stats = CmvnStats(fcfg.dim)
    fds: dict = {}  # kaldiio keeps one open handle per ark
    writers = [JsonWriter(out / f"train.{i}.json") for i in range(1, json_nj + 1)]
    dev_writer = JsonWriter(out / "dev.json")
    n_train = 0
    try:
        for src, role in sources:
            for u in iter_data(src):
                if isinstance(u, tuple):
                    continue
                r, why, tokens = _decide(u, tok, role, filters, dev)
                if why is not None:
                    continue
                ids = [tok.index.get(t, tok.unk_id) for t in tokens]
                entry = make_entry(u.feat, u.frames, fcfg.dim, u.text, tokens, ids, tok.odim, u.spk)
                if r == "train":
                    feats = kaldiio.load_mat(u.feat, fd_dict=fds)
                    if feats.shape != (u.frames, fcfg.dim):
                        raise JsonPrepError(
                            f"{src}: {u.utt}: features {list(feats.shape)} but utt2num_frames "
                            f"{u.frames} and dim {fcfg.dim}"
                        )
                    stats.add(feats)
                    writers[n_train % json_nj].add(u.utt, entry)
                    n_train += 1
                else:
                    dev_writer.add(u.utt, entry)
    except BaseException:
        for w in (*writers, dev_writer):
            w.abort()
        raise
    finally:
        for fd in fds.values():
            fd.close()
    # feature.yaml is written last and stage 3 refuses a directory without it: a run killed
    # between the renames below cannot leave a mix of new and old json that looks complete
    (out / "feature.yaml").unlink(missing_ok=True)
    for w in (*writers, dev_writer):
        w.close()
    for p in out.glob("train.*.json"):  # from an earlier run with a larger json_nj
        idx = p.name.split(".")[1]
        if idx.isdigit() and int(idx) > json_nj:
            p.unlink()
    # The small files last: a failed run leaves the previous set whole, not a mix.
    # train_shards.txt: the train json files of this run, which stage 3 reads (no --json-nj)
    atomic_write_lines(out / "train_shards.txt", (f"train.{i}.json" for i in range(1, json_nj + 1)))
    write_cmvn(out / "cmvn.ark", stats.stats)
    atomic_write_lines(
        out / "oov.txt",
        (f"{c} {n}" for c, n in sorted(report.oov.items(), key=lambda x: (-x[1], x[0]))),
    )
    write_units(out / "units.txt", units)
    atomic_write_bytes(out / "feature.yaml", (data_dir / "feature.yaml").read_bytes())
    report.cmvn_frames = stats.frames
    for line in report.summary_lines(json_nj):
        log(line)
    return report
