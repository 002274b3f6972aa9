"""prefetch.to_device_ahead: the same batches in the same order, one batch pulled ahead, its time in the data wait."""

from __future__ import annotations

import time

import pytest
import torch

from actionray.platform.data.prefetch import to_device_ahead
from actionray.platform.loop import _timed


def host_batches(n: int, log: list[int], sleep_s: float = 0.0):
    """``n`` distinct batches like iter_torch_batches gives; ``log`` records each batch as it is pulled."""
    for k in range(n):
        if sleep_s:
            time.sleep(sleep_s)
        log.append(k)
        yield {"video": torch.full((2, 3, 4), k, dtype=torch.uint8), "label": torch.tensor([k, k + 1]),
               "name": f"batch{k}"}


def test_same_batches_in_the_same_order_with_one_batch_pulled_ahead():
    pulled: list[int] = []
    seen = []
    for k, batch in enumerate(to_device_ahead(host_batches(5, pulled), "cpu")):
        # when batch k is handed out, batch k + 1 has been pulled (and its copy issued), never more
        assert pulled == list(range(min(k + 2, 5)))
        seen.append(batch)
    assert [int(b["video"][0, 0, 0]) for b in seen] == [0, 1, 2, 3, 4]
    for k, batch in enumerate(seen):
        assert torch.equal(batch["video"], torch.full((2, 3, 4), k, dtype=torch.uint8))
        assert batch["label"].tolist() == [k, k + 1] and batch["name"] == f"batch{k}"
        assert batch["video"].device.type == "cpu" and batch["video"].dtype == torch.uint8


def test_on_the_cpu_the_move_is_the_tensor_itself():
    source = list(host_batches(2, []))
    moved = list(to_device_ahead(iter(source), torch.device("cpu")))
    assert all(m["video"] is s["video"] and m is not s for m, s in zip(moved, source))


def test_an_empty_or_single_batch_stream():
    assert list(to_device_ahead(iter(()), "cpu")) == []
    pulled: list[int] = []
    assert [b["name"] for b in to_device_ahead(host_batches(1, pulled), "cpu")] == ["batch0"]


def test_the_loops_data_wait_includes_the_look_ahead():
    """loop._timed (the data-wait clock of train_one_epoch) around the prefetcher: each batch's upstream time
    is spent inside some next() of the consumer, so the total wait covers all of it, none hidden."""
    n, sleep_s = 4, 0.05
    waits = [waited for _, waited in _timed(to_device_ahead(host_batches(n, [], sleep_s), "cpu"))]
    assert len(waits) == n
    assert sum(waits) >= n * sleep_s * 0.95
    assert waits[0] >= 2 * sleep_s * 0.95  # the first next() pulls batch 0 and batch 1 (the look-ahead)


def test_an_upstream_error_reaches_the_consumer_after_every_batch_before_it():
    def failing():
        yield {"video": torch.zeros(1)}
        yield {"video": torch.ones(1)}
        raise RuntimeError("decode failed")

    got = []
    with pytest.raises(RuntimeError, match="decode failed"):
        for batch in to_device_ahead(failing(), "cpu"):
            got.append(float(batch["video"][0]))
    assert got == [0.0, 1.0]  # the error comes while pulling ahead of batch 1, and after batch 1, as without it


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_batches_arrive_equal_from_pinned_memory():
    source = list(host_batches(3, []))
    moved = list(to_device_ahead(iter(source), "cuda"))
    torch.cuda.synchronize()
    for m, s in zip(moved, source):
        assert m["video"].device.type == "cuda" and torch.equal(m["video"].cpu(), s["video"])
        assert m["name"] == s["name"]
