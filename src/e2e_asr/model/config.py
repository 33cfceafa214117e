"""Model and criterion configuration, built from the seed system's yaml sections.

The seed (`ce_espnet_baseline_fintune.yaml`) names its classes with `eteh...` paths; those map
onto ours. Every key is checked (``e2e_asr.data.schema.parse_section``, the project's one
validation mechanism): a misspelt key or a value of the wrong type in a user's config must fail
loudly, naming the section and key, instead of silently training a different model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from e2e_asr.data.schema import Fail, parse_section

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


def _check_choice(value: str, choices: tuple[str, ...], key: str, fail: Fail) -> None:
    if value not in choices:
        fail(key, f"= {value!r}; expected one of {', '.join(choices)}")


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
    def from_dict(cls, d: dict[str, Any], src: str = "model config") -> ModelConfig:
        """Read and check a ``model_config`` section; ``ValueError`` naming ``src`` and key."""
        return parse_section(cls, d, "model_config", src)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check(self, fail: Fail) -> None:
        if self.name is not None and self.name not in SEED_MODEL_NAMES:
            fail(
                "name",
                f"= {self.name!r} is not a known model; expected one of "
                f"{', '.join(SEED_MODEL_NAMES)}",
            )
        _check_choice(self.encoder_type, ENCODER_TYPES, "encoder_type", fail)
        _check_choice(self.encoder_input_layer, SUBSAMPLING_LAYERS, "encoder_input_layer", fail)
        _check_choice(self.decoder_input_layer, ("embed",), "decoder_input_layer", fail)
        if self.pos_enc_layer_type is None:
            self.pos_enc_layer_type = "rel_pos" if self.encoder_type == "conformer" else "abs_pos"
        _check_choice(self.pos_enc_layer_type, POS_ENC_TYPES, "pos_enc_layer_type", fail)
        if self.encoder_type == "transformer" and self.pos_enc_layer_type != "abs_pos":
            fail(
                "pos_enc_layer_type",
                f"{self.pos_enc_layer_type} needs encoder_type conformer",
            )
        if not self.layer_norm_eps > 0:
            fail("layer_norm_eps", f"= {self.layer_norm_eps} must be > 0")
        for dim, heads, which in (
            (self.encoder_attention_dim, self.encoder_attention_heads, "encoder"),
            (self.decoder_attention_dim, self.decoder_attention_heads, "decoder"),
        ):
            if dim % heads:
                fail(
                    f"{which}_attention_dim",
                    f"{dim} is not divisible by {which}_attention_heads {heads}",
                )
        if self.cnn_module_kernel % 2 == 0:
            fail("cnn_module_kernel", "must be odd (symmetric padding)")


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
    def from_dict(cls, d: dict[str, Any] | None, src: str = "model config") -> CriterionConfig:
        """Read and check a ``criterion_config`` section; ``ValueError`` naming src and key."""
        return parse_section(cls, d, "criterion_config", src)

    def check(self, fail: Fail) -> None:
        if self.name is not None and self.name not in SEED_CRITERION_NAMES:
            fail(
                "name",
                f"= {self.name!r} is not a known loss; expected one of "
                f"{', '.join(sorted(SEED_CRITERION_NAMES))}",
            )
        if self.padding_idx != -1:
            fail("padding_idx", "must be -1 (targets are padded with -1)")
        if not 0.0 <= self.rate <= 1.0:
            fail("rate", f"= {self.rate} must be within [0, 1]")
        if not 0.0 <= self.smoothing < 1.0:
            fail("smoothing", f"= {self.smoothing} must be within [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
