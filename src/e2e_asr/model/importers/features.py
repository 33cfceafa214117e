"""Which of this project's feature configs a foreign model was trained on.

The imported model is only useful if stage 1 computes the same kind of features it was trained
on. WeNet and Kaldi-style recipes use Kaldi fbank; the seed system used 40-dim hires MFCC.
When the source does not say, the input dimension decides, or the user passes a feature yaml.
"""

from __future__ import annotations

import os
from typing import Any

from e2e_asr.data.features import FeatureConfig, FeatureError
from e2e_asr.model.importers.common import BaseModelImportError


def fbank_config(num_mel_bins: int, **kaldi_opts: Any) -> dict[str, Any]:
    return FeatureConfig(type="fbank", num_mel_bins=num_mel_bins, **kaldi_opts).to_dict()


def mfcc_hires_config(dim: int) -> dict[str, Any]:
    # Kaldi conf/mfcc_hires.conf, as in conf/mfcc_hires.yaml
    return FeatureConfig(
        type="mfcc_hires", num_mel_bins=dim, num_ceps=dim, high_freq=-400.0
    ).to_dict()


def feature_config_for(
    idim: int, where: str, override: str | os.PathLike | None = None
) -> dict[str, Any]:
    """Feature config dict for a model with `idim` inputs; `override` is a feature yaml."""
    if override is not None:
        try:
            cfg = FeatureConfig.from_yaml(override)
        except (OSError, FeatureError) as e:
            raise BaseModelImportError(f"{override}: cannot read feature config: {e}") from e
        if cfg.dim != idim:
            raise BaseModelImportError(
                f"{override}: gives {cfg.dim}-dim features but the model in {where} takes "
                f"{idim}-dim input"
            )
        return cfg.to_dict()
    if idim == 40:
        return mfcc_hires_config(40)  # the seed system's features
    if idim in (80, 64):
        return fbank_config(idim)
    if idim in (83, 43):
        raise BaseModelImportError(
            f"{where}: the model takes {idim}-dim input, i.e. {idim - 3} filterbank/MFCC + 3 "
            "Kaldi pitch features; this project computes no pitch features, so the model "
            "cannot be fed the input it was trained on"
        )
    raise BaseModelImportError(
        f"{where}: cannot tell which features a {idim}-dim input model was trained on; pass "
        "--feature-config with a feature yaml (see conf/fbank.yaml) whose dim is "
        f"{idim}"
    )
