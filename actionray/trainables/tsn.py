"""TSN (MMAction2 0.x recipe): a 2D backbone per segment, segmental consensus, cross-entropy.

Default recipe (configs/tsn_hmdb51.yaml; MMAction2 configs/recognition/tsn): ResNet-50 ImageNet init, 8 segments,
RandomResizedCrop 224 + flip, dropout 0.4, SGD lr 0.025 (8 GPUs x 32), wd 1e-4, steps at 20/40 of 50 epochs,
gradient clip 40, feature-level consensus (mean of pooled features, then fc).
"""

from typing import Literal

from actionray.trainables.clip_classifier import ClassifierConfig, ClipClassifier


class TSNConfig(ClassifierConfig):
    """TSN takes only the shared classifier options."""

    name: Literal["tsn"] = "tsn"


METHOD = ClipClassifier("tsn", TSNConfig)
