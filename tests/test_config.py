"""Configs: typos and bad values fail at load time with their key path; every shipped config loads."""

from pathlib import Path

import pytest

from actionray.platform.config import ConfigError, build_config, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_unknown_key_is_rejected_with_its_path_and_the_allowed_keys():
    with pytest.raises(ConfigError) as error:
        build_config({"model": {"dropuot": 0.5}})
    message = str(error.value)
    assert "model.dropuot: unknown key" in message
    assert "dropout" in message  # the allowed keys are listed


def test_bad_value_is_rejected_with_its_path():
    with pytest.raises(ConfigError, match=r"optim\.lr: .*greater than 0"):
        build_config({"optim": {"lr": -1}})


def test_bad_override_value_is_rejected_with_its_path():
    with pytest.raises(ConfigError, match=r"scaling\.num_workers"):
        build_config({}, ["scaling.num_workers=zero"])


def test_override_into_a_value_is_rejected():
    with pytest.raises(ConfigError, match="is a value, not a section"):
        build_config({"optim": {"lr": 0.1}}, ["optim.lr.x=1"])


def test_overrides_parse_yaml_values():
    cfg = build_config({}, ["optim.lr=0.05", "schedule.milestones=[2, 4]", "model.pretrained=null"])
    assert cfg.optim.lr == 0.05 and cfg.schedule.milestones == [2, 4] and cfg.model.pretrained is None


def test_model_name_must_match_trainable():
    with pytest.raises(ConfigError, match="must equal trainable"):
        build_config({"trainable": "tdn"})


def test_relative_paths_become_absolute_and_tracking_defaults_to_sqlite_in_cwd(workdir):
    cfg = build_config({"data": {"train_list": "lists/train.txt"}})
    assert cfg.data.train_list == str(workdir / "lists/train.txt")
    assert cfg.tracking.uri == f"sqlite:///{workdir / 'mlflow.db'}"


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_embedded_defaults_are_the_demo_setup(workdir):
    cfg = load_config(None)
    assert cfg.data.synth is not None
    assert cfg.data.train_list == str(workdir / cfg.data.synth.out_dir.split("/")[-1] / "train.txt")
    # the embedded defaults are the TSN demo recipe: the same training, whether or not a CONFIG is given
    demo = load_config(Path(__file__).resolve().parents[1] / "configs" / "demo_tsn.yaml")
    for key in ("data.input_size", "data.scale_size", "data.batch_size", "data.synth.videos_per_class", "optim.lr",
                "optim.weight_decay", "schedule.name", "train.epochs", "scaling.torch_threads", "model.backbone"):
        assert cfg.flat()[key] == demo.flat()[key], key


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads(path, workdir):
    cfg = load_config(path)
    assert cfg.name == path.stem
    assert cfg.model.name == cfg.trainable


def test_the_reference_recipes_and_demos_are_all_shipped():
    names = {p.stem for p in CONFIGS}
    expected = {"tsn_ucf101", "tsn_hmdb51", "demo_tsn", "demo_tdn", "demo_gcnet", "demo_tcp"}
    expected |= {f"{m}_{d}_{f}f" for m in ("tdn", "gcnet") for d in ("ucf101", "hmdb51", "sthv1") for f in (8, 16)}
    assert expected <= names
