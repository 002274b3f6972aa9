"""TDN (CVPR 2021): short- and long-term temporal difference modules on ResNet, cross-entropy only.

Default recipe (TDN README, MCG-NJU/TDN): 8 segments x 5 frames, SGD m 0.9 wd 5e-4, per-iteration MultiStep
schedule, gradient clip 20, dropout 0.5 (0.8 in GCNet's UCF/HMDB baselines), logit consensus, no partial BN (the
reference flag can never turn it on). The model keeps an unused conv1 copy registered, as the reference does,
so DDP runs with ``find_unused_parameters=True``.
"""

from typing import Literal

from actionray.trainables.clip_classifier import ClassifierConfig, ClipClassifier


class TDNConfig(ClassifierConfig):
    """TDN takes only the shared classifier options."""

    name: Literal["tdn"] = "tdn"


METHOD = ClipClassifier("tdn", TDNConfig, find_unused_parameters=True)
