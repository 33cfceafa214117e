"""Model and criterion configuration, built from the seed system's yaml sections.

The seed (`ce_espnet_baseline_fintune.yaml`) names its classes with `eteh...` paths; those map
onto ours. Every key is checked: a misspelt key in a user's config must fail loudly instead of
silently training a different model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# Class names of the seed system that mean "the hybrid Transformer-CTC model" / "its loss".
SEED_MODEL_NAMES = {
    "eteh.models.pytorch_backend.model.e2e:E2E_Transformer_CTC": "transformer",
    "e2e_asr.model:E2EModel": None,
}
SEED_CRITERION_NAMES = {
    "eteh.models.pytorch_backend.criterion.loss:E2E_Loss",
    "e2e_asr.model:E2ELoss",
}
SUBSAMPLING_LAYERS = ("conv2d", "conv2d6", "conv2d8")
ENCODER_TYPES = ("transformer", "conformer")
# rel_pos: ESPnet "latest"; legacy_rel_pos: ESPnet's older LegacyRelPosition* pair (ESPnet2's
# default rel_pos_type); wenet_rel_pos: WeNet's rel_pos (absolute key positions, no rel_shift).
POS_ENC_TYPES = ("abs_pos", "rel_pos", "legacy_rel_pos", "wenet_rel_pos")
REL_POS_TYPES = POS_ENC_TYPES[1:]


def _check_keys(cls: type, d: dict[str, Any], section: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    for key in d:
        if key not in known:
            raise ValueError(
                f"unknown key '{key}' in {section}; known keys: {', '.join(sorted(known))}"
            )


def _check_types(obj: Any, section: str) -> None:
    """YAML typos such as `encoder_num_blocks: "14"` fail here, naming the key, not deep
    inside torch. Integers are accepted where floats are expected (`dropout_rate: 0`)."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        allowed = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}
        names = [t.strip() for t in str(f.type).split("|")]
        if value is None and "None" in names:
            continue
        types = tuple(t for n in names for t in allowed.get(n, ()))
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok:
            expected = " or ".join(n for n in names if n != "None")
            raise ValueError(
                f"{section}.{f.name} = {value!r} ({type(value).__name__}); expected {expected}"
            )


def _check_choice(value: str, choices: tuple[str, ...], key: str, section: str) -> None:
    if value not in choices:
        raise ValueError(f"{section}.{key} = {value!r}; expected one of {', '.join(choices)}")


@dataclass
class ModelConfig:
    """The `model_config` section: seed keys plus our encoder-type and Conformer options."""

    idim: int
    odim: int
    name: str | None = None
    encoder_type: str = "transformer"
    encoder_attention_dim: int = 256
    encoder_attention_heads: int = 4
    encoder_linear_units: int = 2048
    encoder_num_blocks: int = 12
    encoder_input_layer: str = "conv2d"
    encoder_dropout_rate: float = 0.1
    encoder_attention_dropout_rate: float = 0.0
    decoder_attention_dim: int = 256
    decoder_attention_heads: int = 4
    decoder_linear_units: int = 2048
    decoder_input_layer: str = "embed"
    decoder_num_block: int = 6
    decoder_dropout_rate: float = 0.1
    decoder_src_attention_dropout_rate: float = 0.0
    decoder_self_attention_dropout_rate: float = 0.0
    ctc_dropout: float = 0.1
    # None means "same as the encoder/decoder dropout rate", as in ESPnet1.
    positional_dropout_rate: float | None = None
    # Conformer only (ESPnet names and defaults).
    cnn_module_kernel: int = 31
    macaron_style: bool = True
    use_cnn_module: bool = True
    pos_enc_layer_type: str | None = None  # default: abs_pos (transformer) / rel_pos (conformer)
    # LayerNorm epsilon of every block: ESPnet's 1e-12; WeNet imports set WeNet's 1e-5.
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        _check_keys(cls, d, "model_config")
        for key in ("idim", "odim"):
            if key not in d:
                raise ValueError(f"model_config: missing required key '{key}'")
        cfg = cls(**d)
        _check_types(cfg, "model_config")
        cfg._normalize()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def _normalize(self) -> None:
        section = "model_config"
        if self.name is not None:
            if self.name not in SEED_MODEL_NAMES:
                raise ValueError(
                    f"model_config.name = {self.name!r} is not a known model; "
                    f"expected one of {', '.join(SEED_MODEL_NAMES)}"
                )
        _check_choice(self.encoder_type, ENCODER_TYPES, "encoder_type", section)
        _check_choice(self.encoder_input_layer, SUBSAMPLING_LAYERS, "encoder_input_layer", section)
        _check_choice(self.decoder_input_layer, ("embed",), "decoder_input_layer", section)
        if self.pos_enc_layer_type is None:
            self.pos_enc_layer_type = "rel_pos" if self.encoder_type == "conformer" else "abs_pos"
        _check_choice(self.pos_enc_layer_type, POS_ENC_TYPES, "pos_enc_layer_type", section)
        if self.encoder_type == "transformer" and self.pos_enc_layer_type != "abs_pos":
            raise ValueError(
                f"model_config.pos_enc_layer_type: {self.pos_enc_layer_type} needs "
                "encoder_type conformer"
            )
        if not self.layer_norm_eps > 0:
            raise ValueError(f"model_config.layer_norm_eps = {self.layer_norm_eps} must be > 0")
        for dim, heads, which in (
            (self.encoder_attention_dim, self.encoder_attention_heads, "encoder"),
            (self.decoder_attention_dim, self.decoder_attention_heads, "decoder"),
        ):
            if dim % heads:
                raise ValueError(
                    f"model_config: {which}_attention_dim {dim} is not divisible by "
                    f"{which}_attention_heads {heads}"
                )
        if self.cnn_module_kernel % 2 == 0:
            raise ValueError("model_config.cnn_module_kernel must be odd (symmetric padding)")


@dataclass
class CriterionConfig:
    """The `criterion_config` section: CTC weight and label smoothing of the hybrid loss."""

    name: str | None = None
    size: int | None = None  # number of output units; must equal model_config.odim
    padding_idx: int = -1
    smoothing: float = 0.1
    rate: float = 0.3  # CTC weight: loss = rate * ctc + (1 - rate) * attention
    length_normalized_loss: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CriterionConfig:
        _check_keys(cls, d, "criterion_config")
        cfg = cls(**d)
        _check_types(cfg, "criterion_config")
        if cfg.name is not None and cfg.name not in SEED_CRITERION_NAMES:
            raise ValueError(
                f"criterion_config.name = {cfg.name!r} is not a known loss; "
                f"expected one of {', '.join(sorted(SEED_CRITERION_NAMES))}"
            )
        if cfg.padding_idx != -1:
            raise ValueError("criterion_config.padding_idx must be -1 (targets are padded with -1)")
        if not 0.0 <= cfg.rate <= 1.0:
            raise ValueError(f"criterion_config.rate = {cfg.rate} must be within [0, 1]")
        if not 0.0 <= cfg.smoothing < 1.0:
            raise ValueError(f"criterion_config.smoothing = {cfg.smoothing} must be within [0, 1)")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
