"""Per-epoch validation on dev: loss, attention accuracy, CTC-greedy CER.

Each rank scores a disjoint share of the dev batches (no padding, so nothing is counted twice)
and the sums are added over ranks. CER is total edits / total reference tokens over the whole
dev set, in percent - never a mean of per-utterance rates. It is counted exactly as stage 6
counts (``decode.scoring.cer_stats``): the hypothesis ids are turned into text as the
recognizer does, and compared with the utterance's reference text from the json (so a
character the model does not know is an error here too, and ``<unk>`` is one unit).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from e2e_asr.data.units import Tokenizer
from e2e_asr.decode.scoring import cer_stats
from e2e_asr.decode.search import ctc_greedy
from e2e_asr.model import E2EModel
from e2e_asr.train.distributed import DistInfo, all_reduce_sum


@torch.no_grad()
def validate(
    model: E2EModel,
    batches: Iterable[dict[str, Any]],
    units: list[str],
    info: DistInfo,
    compute_cer: bool = True,
) -> dict[str, float]:
    was_training = model.training
    model.eval()
    sums = [0.0] * 6  # utts, loss*utts, correct tokens, target tokens, edits, ref tokens
    tokenizer = Tokenizer(units)
    try:
        for batch in batches:
            feats = batch["feats"].to(info.device)
            lens = batch["feat_lens"].to(info.device)
            ys = batch["ys"].to(info.device)
            out = model(feats, lens, ys)
            n = feats.shape[0]
            # the decoder predicts every token plus <eos>: that is what acc is a fraction of
            n_tok = float((ys != -1).sum().item() + n)
            sums[0] += n
            sums[1] += float(out["loss"].item()) * n
            sums[2] += float(out["acc"].item()) * n_tok
            sums[3] += n_tok
            if compute_cer:
                enc, enc_lens = model.encode(feats, lens)
                hyps = ctc_greedy(model.ctc_log_probs(enc), enc_lens, blank=model.blank)
                texts = batch.get("texts") or [None] * n
                for row, hyp, text in zip(ys.tolist(), hyps, texts, strict=True):
                    ref = text if text is not None else tokenizer.decode(t for t in row if t != -1)
                    st = cer_stats(ref, tokenizer.decode(hyp))
                    sums[4] += st.edits
                    sums[5] += st.ref_units
    finally:
        model.train(was_training)
    utts, loss, correct, ntok, edits, nref = all_reduce_sum(sums, info)
    if utts == 0:
        return {"dev_loss": float("nan"), "dev_acc": float("nan"), "dev_cer": float("nan")}
    return {
        "dev_loss": loss / utts,
        "dev_acc": correct / max(ntok, 1.0),
        "dev_cer": (100.0 * edits / nref) if compute_cer and nref > 0 else float("nan"),
        "dev_utts": int(utts),
    }
