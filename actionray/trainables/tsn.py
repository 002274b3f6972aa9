"""TSN (MMAction2 0.x recipe): a 2D backbone per segment, segmental consensus, cross-entropy.

Default recipe (configs/tsn_hmdb51.yaml, recognition.md 1.6): ResNet-50 ImageNet init, 8 segments,
RandomResizedCrop 224 + flip, dropout 0.4, SGD lr 0.025 (8 GPUs x 32), wd 1e-4, steps at 20/40 of 50 epochs,
gradient clip 40, feature-level consensus (mean of pooled features, then fc).
"""

from actionray.trainables.base import SupervisedTrainable

TRAINABLE = SupervisedTrainable("tsn")
