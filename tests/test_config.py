"""Configs: typos and bad values fail at load time with their key path; every shipped config loads."""

from pathlib import Path

import pytest

from actionray.config import ConfigError, build_config, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


TSN = {"method": {"name": "tsn"}}


def test_unknown_method_key_is_rejected_with_its_path_and_the_method_keys():
    with pytest.raises(ConfigError) as error:
        build_config({"method": {"name": "tsn", "dropuot": 0.5}})
    message = str(error.value)
    assert "method.dropuot: unknown key" in message
    assert "dropout" in message  # the allowed keys of TSN's section are listed


def test_a_method_knob_belongs_to_its_method_only():
    assert build_config({"method": {"name": "gcnet", "gtm": False}}).method.gtm is False
    with pytest.raises(ConfigError, match=r"method\.gtm: unknown key"):
        build_config({"method": {"name": "tsn", "gtm": False}})


def test_unknown_platform_key_is_rejected_with_its_path():
    with pytest.raises(ConfigError, match=r"optim\.lrr: unknown key"):
        build_config({**TSN, "optim": {"lrr": 0.1}})


def test_the_method_must_be_named():
    with pytest.raises(ConfigError, match=r"method\.name: missing.*tsn"):
        build_config({"optim": {"lr": 0.1}})
    with pytest.raises(ConfigError, match=r"method\.name: 'nope' is not a known method"):
        build_config({"method": {"name": "nope"}})


def test_checkpoint_metric_must_be_one_the_method_reports():
    assert build_config({**TSN, "train": {"checkpoint_metric": "val_top5"}}).checkpoint_metric == ("val_top5", "max")
    assert build_config(TSN).checkpoint_metric == ("val_top1", "max")  # the method's primary metric
    with pytest.raises(ConfigError, match=r"train\.checkpoint_metric: 'val_nope' is not a metric tsn reports"):
        build_config({**TSN, "train": {"checkpoint_metric": "val_nope"}})


def test_an_empty_config_file_is_an_error(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# only a comment\n")
    with pytest.raises(ConfigError, match="empty"):
        load_config(path)


def test_a_config_rebuilt_from_its_dict_keeps_its_method_section():
    cfg = build_config({"method": {"name": "tcp", "tcp_iterations": 5}})
    again = cfg.with_overrides({"optim.lr": 0.5})
    assert type(again.method) is type(cfg.method) and again.method.tcp_iterations == 5 and again.optim.lr == 0.5


def test_bad_value_is_rejected_with_its_path():
    with pytest.raises(ConfigError, match=r"optim\.lr: .*greater than 0"):
        build_config({"method": {"name": "tsn"}, "optim": {"lr": -1}})


def test_bad_override_value_is_rejected_with_its_path():
    with pytest.raises(ConfigError, match=r"scaling\.num_workers"):
        build_config(TSN, ["scaling.num_workers=zero"])


def test_override_into_a_value_is_rejected():
    with pytest.raises(ConfigError, match="is a value, not a section"):
        build_config({"method": {"name": "tsn"}, "optim": {"lr": 0.1}}, ["optim.lr.x=1"])


def test_overrides_parse_yaml_values():
    cfg = build_config(TSN, ["optim.lr=0.05", "schedule.milestones=[2, 4]", "method.pretrained=null"])
    assert cfg.optim.lr == 0.05 and cfg.schedule.milestones == [2, 4] and cfg.method.pretrained is None


def test_relative_paths_become_absolute_and_tracking_defaults_to_sqlite_in_cwd(workdir):
    cfg = build_config({"method": {"name": "tsn"}, "data": {"train_list": "lists/train.txt"}})
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
                "optim.weight_decay", "schedule.name", "train.epochs", "scaling.torch_threads", "method.backbone"):
        assert cfg.flat()[key] == demo.flat()[key], key


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads(path, workdir):
    cfg = load_config(path)
    assert cfg.name == path.stem
    stem = path.stem.removeprefix("demo_")
    parts = stem.split("_")
    if "claim" in parts:  # demo_<method>_claim, or demo_<method>_claim_<stage method> (actionray demo NAME)
        at = parts.index("claim")
        expected = parts[at + 1] if at + 1 < len(parts) else parts[at - 1]
    elif stem.startswith("dclr_"):  # dclr_{pretrain,finetune,probe}_<data>, demo_dclr_{pretrain,probe}
        expected = {"pretrain": "dclr", "finetune": "dclr_downstream", "probe": "dclr_downstream"}[stem.split("_")[1]]
    else:
        expected = path.stem.split("_")[-1 if path.stem.startswith("demo_") else 0]
    assert cfg.method.name == expected


def test_the_reference_recipes_and_demos_are_all_shipped():
    names = {p.stem for p in CONFIGS}
    expected = {"tsn_ucf101", "tsn_hmdb51", "demo_tsn", "demo_tdn", "demo_gcnet", "demo_tcp"}
    expected |= {f"{m}_{d}_{f}f" for m in ("tdn", "gcnet") for d in ("ucf101", "hmdb51", "sthv1") for f in (8, 16)}
    assert expected <= names


def test_the_decode_pool_follows_the_cluster_unless_pinned():
    auto = build_config(TSN)
    assert auto.data.decode_tasks == "auto"  # the default: Ray Data grows the pool into the free CPUs
    assert auto.data.decode_pool(world=4) == 16 and auto.data.decode_cpus_reserved == 1  # cap 64 over 4 shards
    pinned = build_config(TSN, ["data.decode_tasks=6"])
    assert pinned.data.decode_pool(world=4) == 1 and pinned.data.decode_pool() == 6
    assert pinned.data.decode_cpus_reserved == 6
    with pytest.raises(ConfigError, match=r"data\.decode_tasks"):
        build_config(TSN, ["data.decode_tasks=0"])
    with pytest.raises(ConfigError, match=r"data\.decode_tasks"):
        build_config(TSN, ["data.decode_tasks=many"])


def test_num_workers_min_max_makes_an_elastic_group_and_a_number_a_fixed_one():
    elastic = build_config({**TSN, "scaling": {"num_workers": [1, 4]}}).scaling
    assert (elastic.min_workers, elastic.num_workers, elastic.elastic, elastic.fewest_workers) == (1, 4, True, 1)
    fixed = build_config({**TSN, "scaling": {"num_workers": 4}}).scaling
    assert (fixed.min_workers, fixed.elastic, fixed.fewest_workers) == (None, False, 4)
    assert not build_config({**TSN, "scaling": {"num_workers": [2, 2]}}).scaling.elastic
    # the stored form reloads to the same group
    again = build_config(build_config({**TSN, "scaling": {"num_workers": [1, 4]}}).to_dict()).scaling
    assert (again.min_workers, again.num_workers) == (1, 4)


@pytest.mark.parametrize("value, wanted", [([3, 2], "min <= max"), ([0, 2], "min >= 1"), ([1, 2, 3], "[min, max]"),
                                           ([1.5, 2], "[min, max]")])
def test_a_bad_worker_range_names_the_key(value, wanted):
    with pytest.raises(ConfigError, match=r"scaling") as error:
        build_config({**TSN, "scaling": {"num_workers": value}})
    assert "num_workers" in str(error.value) and wanted in str(error.value)


def test_dclr_queue_must_suit_every_size_of_an_elastic_group():
    tree = {"method": {"name": "dclr", "queue_size": 64}, "data": {"batch_size": 8}}
    build_config({**tree, "scaling": {"num_workers": [1, 2]}})  # 64 = 8 x 8 = 16 x 4
    with pytest.raises(ConfigError, match=r"method.queue_size=48") as error:
        build_config({**tree, "scaling": {"num_workers": [1, 3]}})  # 24 does not divide 64
    assert "an elastic group may have 3" in str(error.value)


# -- reference blocks (docs/reproduce.md) -----------------------------------------------------------------------
REFERENCE = {"metric": "test_top1", "value": 0.8303, "source": "MMAction2 tsn_r50_1x1x3_75e_ucf101_rgb.py",
             "setting": "25 segments x 3 crops"}


@pytest.mark.parametrize("path", [p for p in CONFIGS if not p.name.startswith("demo_")],
                         ids=[p.name for p in CONFIGS if not p.name.startswith("demo_")])
def test_every_reference_recipe_states_its_published_number_or_an_explicit_null(path, workdir):
    import yaml

    lines = path.read_text().splitlines()
    assert "reference" in yaml.safe_load(path.read_text()), f"{path.name}: no reference block (or reference: null)"
    cfg = load_config(path)
    if cfg.reference is None:  # null only with a comment saying why (no number in the sources)
        at = lines.index("reference: null")
        assert at > 0 and lines[at - 1].startswith("#"), f"{path.name}: reference: null needs a comment above it"
    else:
        assert 0.0 < cfg.reference.value <= 1.0 and cfg.reference.metric.startswith("test_")
        assert cfg.flat()["reference.source"] == cfg.reference.source  # an MLflow param of the training run


def test_a_reference_block_rejects_unknown_keys_and_metrics_the_method_does_not_report():
    with pytest.raises(ConfigError, match=r"reference\.valu: unknown key; allowed keys here: metric, setting, "
                                          r"source, value"):
        build_config({**TSN, "reference": {**REFERENCE, "valu": 1}})
    with pytest.raises(ConfigError, match=r"reference\.metric: 'test_map_avg' is not a metric this method reports; "
                                          r"choose one of test_top1"):
        build_config({**TSN, "reference": {**REFERENCE, "metric": "test_map_avg"}})
    with pytest.raises(ConfigError, match=r"reference\.value: 83\.03 is not a fraction in \[0, 1\]; .*0\.8303"):
        build_config({**TSN, "reference": {**REFERENCE, "value": 83.03}})
    with pytest.raises(ConfigError, match=r"reference\.source: Field required"):
        build_config({**TSN, "reference": {k: v for k, v in REFERENCE.items() if k != "source"}})
    assert build_config({**TSN, "reference": {**REFERENCE, "metric": "val_top5"}}).reference.metric == "val_top5"


def test_eval_compares_ours_with_the_reference_and_tags_the_run():
    from actionray.platform.evaluate import compare_with_reference, reference_line
    from actionray.platform.tracking import reference_tags

    cfg = build_config({**TSN, "reference": REFERENCE})
    comparison = compare_with_reference(cfg, {"test_top1": 0.85, "test_top5": 0.97})
    assert comparison["ours"] == 0.85 and comparison["reference"] == 0.8303
    assert comparison["difference"] == pytest.approx(0.0197)
    line = reference_line(comparison)
    assert line.startswith("test_top1: ours 85.00 %, reference 83.03 % (MMAction2") and line.endswith("+1.97 points")
    assert reference_tags(cfg) == {"reference.metric": "test_top1", "reference.value": "0.8303",
                                   "reference.source": REFERENCE["source"]}
    assert reference_tags(build_config(TSN)) == {}
    val = build_config({**TSN, "reference": {**REFERENCE, "metric": "val_top1"}})
    assert compare_with_reference(val, {"test_top1": 0.8})["metric"] == "test_top1"  # eval measures the test twin
