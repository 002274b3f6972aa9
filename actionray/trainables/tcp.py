"""TCPNet: TSN with temporal-attentive covariance pooling and iSQRT-COV normalisation; cross-entropy.

Default recipe (tcp_dclr.md A.4, HMDB51 TSN-R50 8f): SGD lr 0.001, steps 5/10 of 15 epochs, wd 5e-4,
dropout 0.8, gradient clip 20, partial BN on. The reference's per-group lr/decay multipliers (biases x2 lr no
decay, BN no decay, fc x``lr_x_factor``) are not reproduced: one group, like TDN/GCNet (a documented deviation).
Multi-view test combines views by the maximum of softmax scores (``eval.combine: max``).
"""

from actionray.platform.config import ExperimentConfig
from actionray.trainables.base import SupervisedTrainable, build_model_from_config


class TCPTrainable(SupervisedTrainable):
    """Cross-entropy; the model adds the covariance-pooling head options."""

    def build_model(self, cfg: ExperimentConfig):
        """TCPNet with the configured reduction width and Newton-Schulz iterations."""
        return build_model_from_config(cfg, tcp_reduced_dim=cfg.model.tcp_reduced_dim,
                                       tcp_iterations=cfg.model.tcp_iterations)


TRAINABLE = TCPTrainable("tcp")
