"""e2e_asr.model: hybrid CTC/attention ASR model (Transformer or Conformer encoder).

Public API (docs/interfaces.md, "model"): `build_model`, `E2EModel`, `ModelConfig`,
`CriterionConfig`; checkpoint I/O in `e2e_asr.model.checkpoint`.
"""

from e2e_asr.model.config import CriterionConfig, ModelConfig
from e2e_asr.model.e2e import E2EModel, add_sos_eos, build_model

__all__ = ["CriterionConfig", "E2EModel", "ModelConfig", "add_sos_eos", "build_model"]
