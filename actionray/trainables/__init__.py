"""Method recipes: one module per method (tsn, tdn, gcnet, tcp); ``get_trainable(name)`` finds them."""

from actionray.trainables.base import Trainable, get_trainable

__all__ = ["Trainable", "get_trainable"]
