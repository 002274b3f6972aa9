"""Named Ray Tune search spaces, written as YAML files (built-ins live next to this module)."""

from actionray.search_spaces.spec import (
    Domain,
    SearchSpace,
    apply_dotted,
    check_key,
    config_keys,
    expand_value,
    format_set_value,
    list_spaces,
    load_space,
    validate_space,
)

__all__ = ["Domain", "SearchSpace", "apply_dotted", "check_key", "config_keys", "expand_value",
           "format_set_value", "list_spaces", "load_space", "validate_space"]
