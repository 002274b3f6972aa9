"""Methods: one module per method, each defining ``METHOD`` (the contract in ``actionray.platform.method``).

``METHODS`` is the catalog the CLI and ``actionray.config`` hand to the platform: adding a method is its own
module(s) plus one line here (docs/adding_a_method.md).
"""

from actionray.platform.config import MethodCatalog

METHODS = MethodCatalog({
    "tsn": "actionray.trainables.tsn",
    "tdn": "actionray.trainables.tdn",
    "gcnet": "actionray.trainables.gcnet",
    "tcp": "actionray.trainables.tcp",
    "acmnet": "actionray.trainables.acmnet",
    "ftcl": "actionray.trainables.ftcl",
    "dclr": "actionray.trainables.dclr",
    "dclr_downstream": "actionray.trainables.dclr_downstream",
})


def get_method(name: str):
    """The method registered under ``name`` (raises ConfigError naming the known ones)."""
    return METHODS.get(name)


__all__ = ["METHODS", "get_method"]
