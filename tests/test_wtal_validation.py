"""ACM-Net/FTCL holdout validation scores what the model says about each held-out video (issue 23, part 3b).

An oracle ``nn.Module`` recognises each held-out video by its features and emits that video's ground-truth CAS
(1 inside the video's annotated segments of a class, 0 elsewhere); run through the method's real ``validate``
on the real Ray Data validation rows (``FeatureSource``, ``method.selection: holdout``) it must score a high
mAP. The same oracle answering with another held-out video's ground truth (the videos' order shuffled) must
score near 0: a validate() that paired predictions with the wrong videos, the wrong ground truth or the wrong
time axis would fail one of the two.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from actionray.config import build_config

DIM, T = 32, 64


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    from actionray.synthetic.features import write_synthetic_feature_set

    root = tmp_path_factory.mktemp("wtal_val") / "features"
    return write_synthetic_feature_set(root, num_classes=4, train_videos=40, test_videos=8, feature_dim=DIM,
                                       min_snippets=40, max_snippets=100, instance_snippets=(4, 12), seed=3)


def holdout_config(features, workdir: Path):
    return build_config({
        "name": "oracle_acmnet",
        "method": {"name": "acmnet", "feature_root": str(features.root), "feature_dim": DIM, "num_segments": T,
                   "selection": "holdout", "val_fraction": 0.25},
        "data": {"num_classes": 4, "batch_size": 4, "decode_tasks": 1},
        "train": {"epochs": 1, "storage_path": str(workdir / "runs")},
        "scaling": {"num_workers": 1},
        "tracking": {"uri": f"sqlite:///{workdir / 'mlflow.db'}"},
    })


class GroundTruthOracle(torch.nn.Module):
    """Emits, for the held-out video whose (uniformly sampled) features it is given, the ground-truth CAS of the
    video ``answer[that video]``: ``inst_cas`` (1, T_in, C + 1), ``attention`` (1, T_in, 1), ``inst_scores``
    (1, C + 1), on the time axis the proposals use (position i covers seconds [i, i + 1) x 0.64 L / T_in)."""

    def __init__(self, fs, videos: list[int], answer: dict[int, int], proposal_options: dict):
        super().__init__()
        from actionray.platform.data.feature_source import _uniform
        from actionray.platform.data.features import feature_set_classes
        from actionray.trainables.wtal_inference import snippet_seconds

        self.proposal_options = proposal_options
        classes = feature_set_classes(fs.gt)
        self.keys = [torch.from_numpy(np.asarray(fs.features(i)[_uniform(len(fs.features(i)), T)], np.float32))
                     for i in videos]
        self.outputs = []
        for i in videos:
            j = answer[i]
            length = len(fs.features(j))
            times = (np.arange(T) + 0.5) * snippet_seconds() * length / T
            cas = np.zeros((T, len(classes) + 1), np.float32)
            for a in fs.gt["database"][fs.videos[j]]["annotations"]:
                start, end = a["segment"]
                cas[(times >= start) & (times < end), classes.index(a["label"])] = 1.0
            present = cas[:, :-1].max(0)
            self.outputs.append(SimpleNamespace(
                inst_cas=torch.from_numpy(cas)[None], attention=torch.from_numpy(cas[:, :-1].max(1))[None, :, None],
                inst_scores=torch.from_numpy(np.append(present, 0.0).astype(np.float32))[None]))
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # a module with a parameter, like any model

    def forward(self, features: torch.Tensor):
        match = [k for k, key in enumerate(self.keys) if key.shape == features[0].shape
                 and torch.allclose(key, features[0].float(), atol=1e-4)]
        assert len(match) == 1, "every validation row is one held-out video, recognised by its features"
        return self.outputs[match[0]]


def _validate(cfg, answer_of) -> tuple[float, int]:
    from actionray.platform.data.feature_source import FeatureSource, feature_splits

    method = cfg.recipe
    splits = feature_splits(cfg)
    fs = splits.val_set
    videos = list(range(len(fs.videos)))
    oracle = GroundTruthOracle(fs, videos, answer_of(videos), method.build_model(cfg).proposal_options)
    source = FeatureSource(cfg)
    try:
        val = source.datasets()["val"]
        evaluation = method.validate(oracle, source.batches(val, "val", epoch=0, device=torch.device("cpu")), cfg)
    finally:
        source.close()
    return evaluation.metrics["val_map_avg"], evaluation.artifacts["val_detection.json"]["videos"]


def test_an_oracle_of_the_held_out_ground_truth_scores_high_and_a_shuffled_one_near_zero(ray_local, features,
                                                                                          tmp_path):
    from actionray.platform.data.feature_source import feature_splits

    cfg = holdout_config(features, tmp_path)
    held_out = feature_splits(cfg).val_videos
    assert len(held_out) == 10 and not set(held_out) & set(feature_splits(cfg).train_videos)
    exact, seen = _validate(cfg, lambda videos: {i: i for i in videos})
    assert seen == len(held_out)
    assert exact > 0.9, exact
    # each video answered with the ground truth of the next one (a cyclic shift: nobody keeps their own)
    shuffled, _ = _validate(cfg, lambda videos: {i: videos[(k + 1) % len(videos)] for k, i in enumerate(videos)})
    assert shuffled < 0.2, shuffled
