"""DCLR loss terms against numbers from the DCLR repository's own code (issue 23, part 3c).

tests/data/dclr_reference_terms.json holds the loss terms the released ``MoCo_View`` (Mark12Ding/DCLR @ 47adce9,
moco/builder.py + view_resnet.py ``r2plus1d_18``, loss ``MultiNCELoss`` of main_view.py) computed on CPU for
fixed weights and fixed views, and the released state dict's key names and shapes; no reference code is stored.
The weights are a pure function of each key's name (``reference_state``), generated in the released layout,
so this test loads them through ``convert_dclr_reference_state`` (a key mapped to the wrong head changes the
numbers). The views are seeded noise ``(B=4, [V, S, D], 3, 16, 112, 112)`` with a bright square at another place
in each video (``views``; the released encoder hard-codes 16 x 112 x 112); the key encoder's weights differ from
the query encoder's so the vv term is not trivially 0.

Shuffle-BN: both sides draw the key batch's permutation with ``torch.randperm(B)`` from the global generator
right after ``torch.manual_seed(PERMUTATION_SEED)`` (no other draw in between on either side), and the JSON
records that permutation (not the identity, so BN statistics are computed on a permuted batch and the
un-shuffle matters). The released code permutes the key clip but not its activation maps (deviation 2 in
actionray/models/dclr.py, docs/models.md), so the reference was run twice: as released, where only the vv
term (which uses no maps) must agree with ours, and with the maps permuted along with the clip (one added line
in ``forward_once``), where all three terms must agree.

How the numbers were made (scratch copy of the DCLR repo, never committed): ``.cuda()`` removed,
``concat_all_gather`` / broadcast / rank as single-process no-ops, ``torch.samplerones(...).cuda()`` ->
``torch.ones(...)``, the map-mode unpacking fixed to 5 values (the released code cannot run otherwise);
K = 16, top-k 5, T = 0.07, m = 0.999, both encoders in train mode, no gradient.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

DATA = Path(__file__).parent / "data" / "dclr_reference_terms.json"
BATCH, QUEUE, TOPK, TEMPERATURE, MOMENTUM = 4, 16, 5, 0.07, 0.999
VIEW_SEED, PERMUTATION_SEED = 1234, 7


def reference_state(shapes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """Deterministic weights in the released layout, each tensor from a generator seeded by its key's CRC32:
    conv/linear weights N(0, 1/fan_in), biases and BN shifts N(0, 0.1^2), BN scales 1 + N(0, 0.1^2), queues
    N(0, 1) L2-normalised per column, integer buffers 0."""
    state = {}
    for key, shape in shapes.items():
        g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        if key.endswith("num_batches_tracked") or key == "queue_ptr":
            state[key] = torch.zeros(shape, dtype=torch.long)
        elif key.startswith("queue_"):
            state[key] = F.normalize(torch.randn(shape, generator=g), dim=0)
        elif key.endswith("running_var"):
            state[key] = 1.0 + 0.1 * torch.rand(shape, generator=g)
        elif len(shape) >= 2:
            fan_in = 1
            for s in shape[1:]:
                fan_in *= s
            state[key] = torch.randn(shape, generator=g) / fan_in ** 0.5
        elif key.endswith(".weight"):
            state[key] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            state[key] = 0.1 * torch.randn(shape, generator=g)
    return state


def views() -> tuple[torch.Tensor, torch.Tensor]:
    """Query and key stacks (B, 3 views, 3, 16, 112, 112): seeded noise plus, in every view of video i, a bright
    56 x 56 square in quadrant i, so the videos' activation maps differ and weighting a clip by another video's
    maps (the released shuffle-BN) changes the map-weighted embeddings clearly."""
    g = torch.Generator().manual_seed(VIEW_SEED)
    q, k = (torch.randn(BATCH, 3, 3, 16, 112, 112, generator=g) for _ in range(2))
    for i in range(BATCH):
        y, x = 56 * (i // 2 % 2), 56 * (i % 2)
        q[i, ..., y:y + 56, x:x + 56] += 3.0
        k[i, ..., y:y + 56, x:x + 56] += 3.0
    return q, k


@pytest.mark.slow
def test_loss_terms_match_the_released_code_on_fixed_weights_and_views():
    from actionray.models.dclr import DCLR, convert_dclr_reference_state

    reference = json.loads(DATA.read_text())
    permutation = reference["permutation"]
    torch.manual_seed(PERMUTATION_SEED)
    assert torch.randperm(BATCH).tolist() == permutation != list(range(BATCH))
    model = DCLR([1, 1, 1, 1], 128, QUEUE, MOMENTUM, TEMPERATURE, TOPK)
    model.load_state_dict(convert_dclr_reference_state({"state_dict": reference_state(reference["shapes"])}),
                          strict=True)
    model.train()
    q, k = views()
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.no_grad():
            torch.manual_seed(PERMUTATION_SEED)
            loss, terms = model(q, k)
    finally:
        torch.set_num_threads(threads)
    ours = {name: float(terms[f"loss_{name}"]) for name in ("vv", "vs_sv", "vd_dv")}
    fixed, released = reference["maps_permuted"], reference["released"]
    for name, value in ours.items():
        assert value == pytest.approx(fixed[name], rel=1e-4, abs=1e-5), (name, ours, fixed)
    assert float(loss) == pytest.approx(sum(fixed.values()), rel=1e-4)
    # As released (maps not permuted with the key clip): vv uses no map and agrees; the map-weighted terms
    # differ, which is what deviation 2 changes (if they agreed, the permutation would not be exercised).
    assert ours["vv"] == pytest.approx(released["vv"], rel=1e-4, abs=1e-5)
    assert abs(ours["vs_sv"] - released["vs_sv"]) + abs(ours["vd_dv"] - released["vd_dv"]) > 1e-3
    # the EMA step and the enqueue happened as in the reference
    assert int(model.queue_ptr) == BATCH % QUEUE
