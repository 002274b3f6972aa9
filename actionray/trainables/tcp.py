"""TCPNet: TSN with temporal-attentive covariance pooling and iSQRT-COV normalisation; cross-entropy.

Default recipe (TCPNet repo, HMDB51 TSN-R50 8f): SGD lr 0.001, steps 5/10 of 15 epochs, wd 5e-4, dropout 0.8,
gradient clip 20, partial BN on. The reference's per-group lr/decay multipliers (biases x2 lr no decay, BN no
decay, fc x``lr_x_factor``) are not reproduced: one group, like TDN/GCNet (a documented deviation). Multi-view
test combines views by the maximum of softmax scores (``eval.combine: max``).
"""

from typing import Any, Literal

from pydantic import Field

from actionray.platform.config import ExperimentConfig
from actionray.trainables.clip_classifier import ClassifierConfig, ClipClassifier


class TCPConfig(ClassifierConfig):
    """The covariance-pooling head: reduced channel width and Newton-Schulz iterations of iSQRT-COV."""

    name: Literal["tcp"] = "tcp"
    tcp_reduced_dim: int = Field(128, ge=8)
    tcp_iterations: int = Field(3, ge=1)


class TCPMethod(ClipClassifier):
    """Cross-entropy; the model adds the covariance-pooling head options."""

    def model_options(self, cfg: ExperimentConfig) -> dict[str, Any]:
        """TCPNet's reduction width and iteration count."""
        return {"tcp_reduced_dim": cfg.method.tcp_reduced_dim, "tcp_iterations": cfg.method.tcp_iterations}


METHOD = TCPMethod("tcp", TCPConfig)
