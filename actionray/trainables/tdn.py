"""TDN (CVPR 2021): short- and long-term temporal difference modules on ResNet, cross-entropy only.

Default recipe (TDN README, recognition.md 2.6): 8 segments x 5 frames, SGD m 0.9 wd 5e-4, per-iteration
MultiStep schedule, gradient clip 20, dropout 0.5 (0.8 in GCNet's UCF/HMDB baselines), logit consensus, no
partial BN (the reference flag can never turn it on). The model keeps an unused conv1 copy registered, as the
reference does, so DDP runs with ``find_unused_parameters=True``.
"""

from actionray.trainables.base import SupervisedTrainable

TRAINABLE = SupervisedTrainable("tdn", find_unused_parameters=True)
