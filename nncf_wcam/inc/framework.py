"""INC 3.7's training API, imported in one place: where INC is absent or has no training-time compression
(3.8+), importing any module that needs it ends in one line (`IncVersionError`) instead of an ImportError."""

from nncf_wcam.inc.versions import require_training_api

require_training_api("nncf_wcam.inc")

from neural_compressor.config import QuantizationAwareTrainingConfig  # noqa: E402
from neural_compressor.config import WeightPruningConfig  # noqa: E402
from neural_compressor.training import CallBacks  # noqa: E402
from neural_compressor.training import CompressionManager  # noqa: E402
from neural_compressor.training import prepare_compression  # noqa: E402

__all__ = ["CallBacks", "CompressionManager", "QuantizationAwareTrainingConfig", "WeightPruningConfig", "prepare_compression"]
