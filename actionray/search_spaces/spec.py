"""Search spaces written as YAML: dotted config keys -> a domain (``{loguniform: [lo, hi]}``) or a constant.

A space file is a mapping. Reserved top-level keys: ``description`` (one line shown by ``--list-spaces``) and
``include`` (names or paths of other spaces merged first). Every other key is an ``ExperimentConfig`` key
(``optim.lr``) or a section (``schedule``) whose value sets several keys at once (a "bundle"):

    optim.lr: {loguniform: [1.0e-4, 1.0e-1]}
    schedule: {choice: [{name: step, milestones: [25, 35]}, {name: cosine}]}
    method.ccl.enabled: true            # constant: applied to every trial

Keys are checked against the config schema before anything runs; a typo names the file, the key and the
closest valid keys.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from actionray.platform.config import ConfigError, ExperimentConfig, MethodCatalog, MethodConfig

BUILTIN_DIR = Path(__file__).resolve().parent
USER_DIRS = (Path("configs/spaces"),)  # relative to the working directory, searched after the built-ins
DOMAIN_KINDS = ("loguniform", "uniform", "randint", "choice", "grid")
RESERVED = ("description", "include")


@dataclass(frozen=True)
class Domain:
    """One key's search domain: ``kind`` in DOMAIN_KINDS or ``"const"``, with its arguments."""

    kind: str
    args: tuple[Any, ...]

    def candidates(self) -> list[Any]:
        """Values that stand for the domain when validating (every option, or the range ends)."""
        if self.kind == "const":
            return [self.args[0]]
        if self.kind == "randint":  # Tune's upper bound is exclusive
            return [self.args[0], self.args[1] - 1]
        return list(self.args)

    def to_tune(self) -> Any:
        """The Ray Tune sampler for this domain (a constant stays a plain value)."""
        from ray import tune

        if self.kind == "const":
            return self.args[0]
        if self.kind == "grid":
            return tune.grid_search(list(self.args))
        if self.kind == "choice":
            return tune.choice(list(self.args))
        return getattr(tune, self.kind)(*self.args)

    def describe(self) -> str:
        """Short text for listings: ``loguniform[0.0001, 0.1]``."""
        if self.kind == "const":
            return f"= {json.dumps(self.args[0])}"
        return f"{self.kind}{json.dumps(list(self.args))}"


@dataclass
class SearchSpace:
    """A named set of key -> Domain, with where it came from (for error messages)."""

    name: str
    description: str
    domains: dict[str, Domain] = field(default_factory=dict)
    source: str = "<dict>"

    def keys(self) -> list[str]:
        return list(self.domains)

    def param_space(self) -> dict[str, Any]:
        """Tune ``param_space``: dotted key -> sampler (Tune splits nested keys on '/', so dots are safe)."""
        return {key: domain.to_tune() for key, domain in self.domains.items()}

    def num_grid_points(self) -> int:
        """How many trials one ``num_samples`` repetition of the grid axes makes."""
        count = 1
        for domain in self.domains.values():
            if domain.kind == "grid":
                count *= len(domain.args)
        return count


def _catalog(catalog: MethodCatalog | None) -> MethodCatalog:
    if catalog is not None:
        return catalog
    from actionray.trainables import METHODS

    return METHODS


def config_keys(model: type[BaseModel] = ExperimentConfig, prefix: str = "",
                catalog: MethodCatalog | None = None) -> tuple[set[str], set[str]]:
    """(leaf keys, section keys) of the config schema as dotted paths, including optional sub-sections; the
    ``method`` section has the keys of every method in ``catalog`` (default: the project's)."""
    leaves: set[str] = set()
    sections: set[str] = set()
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = info.annotation
        nested = [c for c in (annotation, *getattr(annotation, "__args__", ()))
                  if isinstance(c, type) and issubclass(c, BaseModel)]
        if nested and issubclass(nested[0], MethodConfig):
            nested = [methods.get(n).config_class for methods in [_catalog(catalog)] for n in methods.names]
        if nested:
            sections.add(path)
            for section in nested:
                sub_leaves, sub_sections = config_keys(section, path + ".", catalog)
                leaves |= sub_leaves
                sections |= sub_sections
        else:
            leaves.add(path)
    return leaves, sections


def check_key(key: str, source: str, catalog: MethodCatalog | None = None) -> None:
    """Raise ConfigError when ``key`` is not a config key or section, listing the closest valid keys."""
    leaves, sections = config_keys(catalog=catalog)
    if key in leaves or key in sections:
        return
    close = difflib.get_close_matches(key, sorted(leaves | sections), n=4, cutoff=0.5)
    hint = f"; did you mean: {', '.join(close)}" if close else ""
    raise ConfigError(f"{source}: {key!r} is not an ExperimentConfig key{hint}")


def expand_value(key: str, value: Any, catalog: MethodCatalog | None = None) -> dict[str, Any]:
    """A sampled value -> dotted overrides; a mapping under a section key sets several keys (a bundle)."""
    _, sections = config_keys(catalog=catalog)
    if key in sections:
        if not isinstance(value, dict):
            raise ConfigError(f"{key!r} is a config section: its values must be mappings of its keys, got {value!r}")
        out: dict[str, Any] = {}
        for sub_key, sub_value in value.items():
            out.update(expand_value(f"{key}.{sub_key}", sub_value, catalog))
        return out
    return {key: value}


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c`` inside a nested dict in place, creating sections as needed."""
    *parents, leaf = key.split(".")
    node = tree
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[leaf] = value


def apply_dotted(tree: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``tree`` with dotted overrides (bundles expanded) applied."""
    import copy

    out = copy.deepcopy(tree)
    for key, value in overrides.items():
        for dotted, leaf_value in expand_value(key, value).items():
            set_dotted(out, dotted, leaf_value)
    return out


def format_set_value(value: Any) -> str:
    """A value as ``--set`` text that ``parse_override`` reads back to the same value (YAML/JSON)."""
    if isinstance(value, str):
        return value if yaml.safe_load(value) == value else json.dumps(value)
    return json.dumps(value)


def parse_domain(key: str, spec: Any, source: str) -> Domain:
    """``{loguniform: [lo, hi]}`` / ``{choice: [...]}`` / constant -> Domain; errors name the file and key."""
    if not (isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in DOMAIN_KINDS):
        return Domain("const", (spec,))
    kind, args = next(iter(spec.items()))
    if not isinstance(args, list) or not args:
        raise ConfigError(f"{source}: {key}: {kind} needs a non-empty list, got {args!r}")
    if kind in ("loguniform", "uniform", "randint"):
        if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
            raise ConfigError(f"{source}: {key}: {kind} needs [low, high] numbers, got {args!r}")
        low, high = args
        if not low < high:
            raise ConfigError(f"{source}: {key}: {kind} needs low < high, got {args!r}")
        if kind == "loguniform" and low <= 0:
            raise ConfigError(f"{source}: {key}: loguniform needs low > 0, got {args!r}")
        if kind == "randint" and not all(isinstance(a, int) for a in args):
            raise ConfigError(f"{source}: {key}: randint needs integers, got {args!r}")
    return Domain(kind, tuple(args))


def validate_space(space: SearchSpace, base: ExperimentConfig | None = None) -> None:
    """Reject unknown keys and values the config would refuse (each option checked against ``base``; without one,
    against the defaults of the catalog's first method for platform keys, method keys by name only)."""
    if base is None:
        from actionray.platform.config import build_config

        catalog = _catalog(None)
        base = build_config({"method": {"name": catalog.names[0]}}, methods=catalog, resolve=False)
    catalog = base.catalog
    for key, domain in space.domains.items():
        check_key(key, space.source, catalog)
        for candidate in domain.candidates():
            try:
                overrides = expand_value(key, candidate, catalog)
            except ConfigError as error:
                raise ConfigError(f"{space.source}: {error}") from None
            for dotted in overrides:
                check_key(dotted, f"{space.source}: {key}", catalog)
            own = type(base.method).model_fields
            if any(d.startswith("method.") and d.split(".")[1] not in own for d in overrides):
                continue  # another method's key: it exists (check_key); a config of that method checks its values
            try:
                base.with_overrides(overrides)
            except ConfigError as error:
                problems = str(error).replace("invalid config <overrides>:", "").replace("\n", " ").strip()
                raise ConfigError(f"{space.source}: {key}: value {candidate!r} is not accepted: {problems}") from None


def space_from_mapping(name: str, tree: dict[str, Any], source: str, _seen: tuple[str, ...] = (),
                       catalog: MethodCatalog | None = None) -> SearchSpace:
    """Build a SearchSpace from a parsed YAML mapping (``include`` resolved first, later keys win); method keys
    are checked against the methods of ``catalog`` (default: the project's)."""
    if not isinstance(tree, dict):
        raise ConfigError(f"{source}: a search space must be a mapping of config keys, got {type(tree).__name__}")
    description = str(tree.get("description", "")).strip()
    includes = tree.get("include", [])
    includes = [includes] if isinstance(includes, str) else list(includes)
    domains: dict[str, Domain] = {}
    for included in includes:
        if included in _seen:
            raise ConfigError(f"{source}: include cycle through {included!r}")
        domains.update(load_space(included, _seen=(*_seen, name), catalog=catalog).domains)
    for key, spec in tree.items():
        if key in RESERVED:
            continue
        check_key(str(key), source, catalog)
        domains[str(key)] = parse_domain(str(key), spec, source)
    if not domains:
        raise ConfigError(f"{source}: the space names no config keys")
    return SearchSpace(name=name, description=description, domains=domains, source=source)


def space_paths() -> dict[str, Path]:
    """Every named space: built-in YAML files, then ``configs/spaces/*.yaml`` (a user file shadows a built-in)."""
    found: dict[str, Path] = {}
    for folder in (BUILTIN_DIR, *USER_DIRS):
        for path in sorted(folder.glob("*.yaml")):
            found[path.stem] = path
    return found


def load_space(name_or_path: str | Path, *, _seen: tuple[str, ...] = (),
               catalog: MethodCatalog | None = None) -> SearchSpace:
    """A space by name (built-in or configs/spaces/) or by YAML path; unknown keys raise ConfigError."""
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith((".yaml", ".yml")) or path.is_file()):
        known = space_paths()
        if text not in known:
            raise ConfigError(f"unknown search space {text!r}; known: {', '.join(sorted(known))} "
                              f"(or pass a YAML file path)")
        path = known[text]
    if not path.is_file():
        raise ConfigError(f"search space file not found: {path}")
    try:
        tree = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    return space_from_mapping(path.stem, tree, str(path), _seen, catalog)


def list_spaces() -> list[SearchSpace]:
    """All named spaces, loaded (a broken user file raises with its path)."""
    return [load_space(path) for path in space_paths().values()]
