"""The incremental decoder (self-attention key/value cache, prefix-tree rescoring) gives the
same log-probabilities as the whole-prefix decoder and the same hypotheses as before it
existed, in PyTorch and in the exported ONNX graphs; old exports without it still decode."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from decode_fixtures import UNITS, exported, tiny_model
from model_fixtures import one_thread  # noqa: F401 (autouse fixture)

from e2e_asr.decode import search
from e2e_asr.decode.config import DecodeConfig
from e2e_asr.decode.onnx_scorer import OnnxScorer
from e2e_asr.decode.recognizer import Recognizer, RecognizerError
from e2e_asr.decode.torch_scorer import TorchScorer
from e2e_asr.export.onnx_export import export_model

V = len(UNITS)
SOS = V - 1
STEP_GRAPHS = ("decoder_memory", "decoder_step")


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    return exported(tmp_path_factory.mktemp("decode_model"))


@pytest.fixture(scope="module")
def old_export_dir(export_dir: Path, tmp_path_factory) -> Path:
    """The same export as made before the incremental decoder: no step/memory graphs."""
    old = tmp_path_factory.mktemp("old") / "export"
    shutil.copytree(export_dir, old)
    for name in STEP_GRAPHS:
        for suffix in (".onnx", ".int8.onnx"):
            (old / f"{name}{suffix}").unlink()
    return old


def _enc(model, frames: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(seed)
    feats = (rng.standard_normal((1, frames, 20)) * 3 + 8).astype(np.float32)
    enc, enc_lens, _ = TorchScorer(model).encode(feats, np.array([frames]))
    return enc, enc_lens


def _tree(parents: list[int]) -> tuple[np.ndarray, np.ndarray]:
    u = len(parents)
    mask, depth = np.eye(u, dtype=bool), np.zeros(u, dtype=np.int64)
    for v, p in enumerate(parents):
        if p >= 0:
            mask[v] |= mask[p]
            depth[v] = depth[p] + 1
    return mask, depth


def causal(n: int, hyps: int = 3) -> np.ndarray:
    return np.tril(np.ones((hyps, n, n), dtype=bool))


def test_torch_step_equals_whole_prefix_decoder() -> None:
    model = tiny_model(seed=4)
    scorer = TorchScorer(model)
    enc, enc_lens = _enc(model, 130)
    rng = np.random.default_rng(0)
    ys = rng.integers(1, V - 1, size=(3, 8))
    ys[:, 0] = SOS
    full = scorer.decoder_logprobs(ys, np.full(3, 8), enc, enc_lens)
    memory = scorer.decoder_memory(enc, enc_lens)
    # beam steps, one position each, over a cache that is reordered (hypothesis 2 dropped,
    # hypothesis 0 duplicated) halfway through
    cache, rows = None, np.arange(3)
    for t in range(8):
        if t == 4:
            rows = np.array([0, 0, 1])
            cache = scorer.take_cache(cache, rows)
        seqs = ys[rows]
        out, cache = scorer.decoder_step(
            seqs[:, t : t + 1], np.full((3, 1), t), np.ones((3, 1, t + 1), bool), cache, memory
        )
        assert np.abs(out[:, 0] - full[rows, t]).max() <= 1e-5
    # one encoder row per hypothesis instead of one shared row
    rows = scorer.decoder_memory(enc.expand(3, -1, -1), np.repeat(enc_lens, 3))
    out, _ = scorer.decoder_step(ys[:, :3], np.tile(np.arange(3), (3, 1)), causal(3), None, rows)
    assert np.abs(out - full[:, :3]).max() <= 1e-5
    # a prefix tree in one call: node v is ys[0, :depth+1] or a branch off it
    parents = [-1, 0, 1, 2, 1, 4, 0]
    mask, depth = _tree(parents)
    tokens = np.array([SOS, ys[0, 1], ys[0, 2], ys[0, 3], 5, 6, 7])
    out, _ = scorer.decoder_step(tokens[None], depth[None], mask[None], None, memory)
    for v, path in ((3, [0, 1, 2, 3]), (5, [0, 1, 4, 5]), (6, [0, 6])):
        seq = tokens[path][None]
        ref = scorer.decoder_logprobs(seq, np.array([len(path)]), enc, enc_lens)[0, -1]
        assert np.abs(out[0, v] - ref).max() <= 1e-5


def _items(n: int, seed: int, low: int = 20, high: int = 260):
    rng = np.random.default_rng(seed)
    return [
        (f"u{i}", (rng.standard_normal((int(rng.integers(low, high)), 20)) * 3 + 8).astype("f4"))
        for i in range(n)
    ]


def _forbid_whole_prefix(scorer) -> None:
    def fail(*a, **k):
        raise AssertionError("the incremental path called the whole-prefix decoder")

    scorer.decoder_logprobs = fail


# maxlenratio 0 lets the attention search run to the end on the short inputs
CASES = [
    ("attention", {"maxlenratio": 0.3}, 0),
    ("attention", {"maxlenratio": 0.0, "beam": 3, "ctc_beam": 5}, 1),
    ("attention", {"maxlenratio": 0.3, "ctc_weight": 0.0, "penalty": 0.5}, 2),
    ("attention_rescoring", {}, 3),
    ("attention_rescoring", {"beam": 8, "ctc_beam": 12}, 4),
]


@pytest.mark.parametrize(("mode", "kw", "seed"), CASES)
def test_same_hypotheses_as_whole_prefix_decoding(
    export_dir: Path, old_export_dir: Path, mode: str, kw: dict, seed: int
) -> None:
    items = _items(5, seed) + _items(2, seed + 10, low=8, high=40)
    kw = {"mode": mode, "batch_size": 3, **kw}
    # ONNX: an old export (whole-prefix decoder graph) against the new one
    old = Recognizer.from_model_dir(old_export_dir, "onnx", num_threads=1, **kw)
    new = Recognizer.from_model_dir(export_dir, "onnx", num_threads=1, **kw)
    assert not old.scorer.incremental and new.scorer.incremental
    _forbid_whole_prefix(new.scorer)
    onnx_old, onnx_new = old.decode_features(items), new.decode_features(items)
    assert onnx_new == onnx_old
    assert sum(map(len, onnx_new)) >= len(items)  # not trivially empty
    # PyTorch: the whole-prefix decoder (incremental off) against the cache
    t_old = Recognizer.from_model_dir(export_dir, "torch", num_threads=1, **kw)
    t_old.scorer.incremental = False
    t_new = Recognizer.from_model_dir(export_dir, "torch", num_threads=1, **kw)
    _forbid_whole_prefix(t_new.scorer)
    torch_old, torch_new = t_old.decode_features(items), t_new.decode_features(items)
    assert torch_new == torch_old
    assert torch_new == onnx_new


@pytest.mark.parametrize("seed", [5, 6])
def test_same_hypotheses_other_random_models(tmp_path: Path, seed: int) -> None:
    """Other random weights, the ONNX graphs straight from export_model."""
    model = tiny_model(seed=seed)
    export_model(model, tmp_path)
    graphs = [tmp_path / f"{n}.onnx" for n in ("encoder", "decoder", *STEP_GRAPHS)]
    rng = np.random.default_rng(seed)
    lens = np.array([231, 180, 57], dtype=np.int64)
    feats = (rng.standard_normal((3, 231, 20)) * 3 + 8).astype(np.float32)
    for b, n in enumerate(lens):
        feats[b, n:] = 0
    for mode in ("attention", "attention_rescoring"):
        cfg = DecodeConfig(mode=mode, beam=5, ctc_beam=8, maxlenratio=0.4)
        results = []
        for scorer in (
            TorchScorer(model, incremental=False),
            TorchScorer(model),
            OnnxScorer.from_files(*graphs[:2], V, 1),
            OnnxScorer.from_files(*graphs[:2], V, 1, *graphs[2:]),
        ):
            results.append(search.decode_batch(scorer, feats, lens, cfg))
        assert all(r == results[0] for r in results[1:]), mode
        assert any(results[0])


def test_rescoring_tree_in_chunks(export_dir: Path, monkeypatch) -> None:
    """A prefix tree larger than one call's chunk is decoded over the key/value cache."""
    items = _items(4, 7)
    rec = Recognizer.from_model_dir(export_dir, "onnx", num_threads=1, beam=8, ctc_beam=12)
    whole = rec.decode_features(items)
    monkeypatch.setattr(search, "TREE_CHUNK", 3)
    calls = []
    step = rec.scorer.decoder_step
    rec.scorer.decoder_step = lambda *a: calls.append(a[0].shape[1]) or step(*a)
    assert rec.decode_features(items) == whole
    assert max(calls) == 3 and len(calls) > len(items)


def test_rescoring_tree_scores(export_dir: Path) -> None:
    """Prefix-tree log-probabilities of an n-best with shared prefixes, a duplicate, an empty
    hypothesis and one prefix of another equal the padded whole-prefix batch."""
    model = tiny_model()
    enc, enc_lens = _enc(model, 150, seed=3)
    hyps = [[3, 4, 5, 6], [3, 4, 7], [3, 4, 5, 6], [], [3, 4], [9, 9, 9, 9, 9, 2]]
    for incremental in (False, True):
        scorer = TorchScorer(model, incremental=incremental)
        got = search.hypothesis_logprobs(scorer, enc, enc_lens, hyps)
        if not incremental:
            ref = got
    assert np.abs(got - ref).max() <= 1e-4
    assert got[0] == got[2]
    graphs = [export_dir / f"{n}.onnx" for n in ("encoder", "decoder", *STEP_GRAPHS)]
    o = OnnxScorer.from_files(*graphs[:2], V, 1, *graphs[2:])
    got = search.hypothesis_logprobs(o, enc.numpy(), enc_lens, hyps)
    assert np.abs(got - ref).max() <= 1e-4
    # the step graph with one encoder row per hypothesis (traced with one shared row)
    ys = np.array([[SOS, 3, 4], [SOS, 5, 6]])
    full = o.decoder_logprobs(ys, np.array([3, 3]), enc.numpy(), enc_lens)
    rows = o.decoder_memory(np.repeat(enc.numpy(), 2, 0), np.repeat(enc_lens, 2))
    out, _ = o.decoder_step(ys, np.tile(np.arange(3), (2, 1)), causal(3, 2), None, rows)
    assert np.abs(out - full).max() <= 1e-4


def test_export_has_the_step_graphs(export_dir: Path) -> None:
    names = {p.name for p in export_dir.iterdir()}
    for name in STEP_GRAPHS:
        assert {f"{name}.onnx", f"{name}.int8.onnx"} <= names
    meta = json.loads((export_dir / "metadata.json").read_text())
    assert meta["incremental_decoder"] is True
    assert set(meta["files"]) >= {f"{n}.onnx" for n in STEP_GRAPHS}
    diffs = meta["parity_fp32"]["max_abs_diff"]
    assert diffs["decoder_step_logp"] <= 1e-4 and diffs["decoder_memory"] <= 1e-4
    assert "decoder_step_logp" in meta["parity_int8"]["max_abs_diff"]
    assert any("tree" in c for c in meta["parity_fp32"]["cases"])
    q = Recognizer.from_model_dir(export_dir, "onnx", quantized=True, num_threads=1)
    assert q.scorer.incremental
    assert any(q.decode_features(_items(2, 9)))


def test_half_a_step_graph_pair_is_refused(old_export_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "export"
    shutil.copytree(old_export_dir, broken)
    shutil.copy(old_export_dir / "decoder.onnx", broken / "decoder_step.onnx")
    with pytest.raises(RecognizerError, match="decoder_memory.onnx and decoder_step.onnx"):
        Recognizer.from_model_dir(broken, "onnx")
