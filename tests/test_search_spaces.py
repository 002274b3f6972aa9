"""Search spaces: YAML format, key validation against ExperimentConfig, bundles, and Tune samplers."""

from __future__ import annotations

import pytest

from actionray.config import build_config

from actionray.platform.config import ConfigError
from actionray.search_spaces import (apply_dotted, format_set_value, list_spaces, load_space,
                                     validate_space)
from actionray.platform.config import parse_override


def write(tmp_path, text: str, name: str = "space.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_builtin_spaces_are_listed_with_descriptions_and_valid_keys():
    spaces = {s.name: s for s in list_spaces()}
    assert {"ccl_temperature", "lr_schedule", "ccl_weight", "gcnet_default"} <= set(spaces)
    for space in spaces.values():
        assert space.description
        validate_space(space)


def test_ccl_temperature_space_enables_ccl_and_samples_around_reference_values():
    space = load_space("ccl_temperature")
    assert space.domains["method.ccl.enabled"].kind == "const"
    temperature = space.domains["method.ccl.temperature"]
    assert temperature.kind == "loguniform"
    low, high = temperature.args
    assert low < 0.07 and 0.1 < high


def test_combined_space_includes_the_keys_of_its_parts():
    keys = set(load_space("gcnet_default").keys())
    assert {"optim.lr", "schedule", "schedule.warmup_epochs", "method.ccl.temperature", "method.ccl.weight"} <= keys


def test_unknown_key_is_rejected_naming_file_key_and_close_match(tmp_path):
    path = write(tmp_path, "optim.lrr: {loguniform: [1.0e-4, 1.0e-1]}\n")
    with pytest.raises(ConfigError) as error:
        load_space(path)
    message = str(error.value)
    assert str(path) in message and "optim.lrr" in message and "optim.lr" in message.split("did you mean")[1]


def test_unknown_key_inside_a_bundle_is_rejected(tmp_path):
    path = write(tmp_path, "schedule: {choice: [{name: step, milstones: [2]}]}\n")
    with pytest.raises(ConfigError, match="schedule.milstones"):
        validate_space(load_space(path))


def test_value_the_config_refuses_is_rejected_before_running(tmp_path):
    path = write(tmp_path, "schedule.name: {choice: [step, cosin]}\n")
    with pytest.raises(ConfigError, match="cosin"):
        validate_space(load_space(path))


@pytest.mark.parametrize("spec, fragment", [
    ("{loguniform: [0.0, 1.0]}", "low > 0"),
    ("{uniform: [1.0, 0.5]}", "low < high"),
    ("{choice: []}", "non-empty"),
])
def test_malformed_domains_are_rejected(tmp_path, spec, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_space(write(tmp_path, f"optim.lr: {spec}\n"))


def test_user_space_in_configs_spaces_is_found_by_name(workdir):
    (workdir / "configs" / "spaces").mkdir(parents=True)
    (workdir / "configs" / "spaces" / "my_wd.yaml").write_text(
        "description: weight decay\noptim.weight_decay: {grid: [1.0e-4, 5.0e-4]}\n")
    space = load_space("my_wd")
    assert space.num_grid_points() == 2
    assert "my_wd" in {s.name for s in list_spaces()}


def test_param_space_maps_domains_to_tune_samplers():
    from ray import tune

    space = load_space("lr_schedule")
    params = space.param_space()
    assert isinstance(params["optim.lr"], tune.search.sample.Float)
    assert isinstance(params["schedule"], tune.search.sample.Categorical)


def test_bundle_value_sets_several_keys():
    tree = apply_dotted({}, {"schedule": {"name": "step", "milestones": [25, 35]}, "optim.lr": 0.02})
    cfg = build_config({"method": {"name": "tsn"}, **tree})
    assert (cfg.schedule.name, cfg.schedule.milestones, cfg.optim.lr) == ("step", [25, 35], 0.02)


@pytest.mark.parametrize("value", [0.015, True, "cosine", [25, 35], "true", None])
def test_set_value_text_round_trips_through_the_override_parser(value):
    _, parsed = parse_override(f"key={format_set_value(value)}")
    assert parsed == value
