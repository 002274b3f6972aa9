"""Generated data sets for tests and demos that need no download."""

from actionray.synthetic.features import write_synthetic_feature_set

__all__ = ["write_synthetic_feature_set"]
