"""The one place that imports torchvision.

PyPI's torchvision 0.28.0 is a CUDA build. Under a CPU-only torch its compiled ops library does not load, and
``import torchvision`` then fails while registering Python fallbacks for ops whose schemas were never defined
("operator torchvision::nms does not exist"). We define exactly those two schemas and import again. Where the
ops load (a CUDA machine, or a matching CPU build), the first import succeeds and nothing is touched.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

_MISSING_OP_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library_handle = None  # keeps the torch.library fragment alive for the life of the process


def _is_missing_op_error(error: BaseException) -> bool:
    return "torchvision::nms does not exist" in str(error) or "torchvision::qnms does not exist" in str(error)


def _forget_partial_import() -> None:
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]


def import_torchvision() -> ModuleType:
    """Import torchvision, defining the nms/qnms op schemas first if its C++ ops cannot load."""
    global _library_handle
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as error:
        if not _is_missing_op_error(error):
            raise
    import torch

    _forget_partial_import()
    _library_handle = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _MISSING_OP_SCHEMAS.values():
        _library_handle.define(schema)
    return importlib.import_module("torchvision")
