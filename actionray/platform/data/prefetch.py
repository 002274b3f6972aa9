"""Host batches -> device batches, the copy of the next batch in flight while the model works on this one.

``to_device_ahead(batches, device)`` is the last stage of ``ingest.iter_model_batches`` (issue 26, item 3):

- on a CUDA device every tensor goes to page-locked (pinned) host memory, unless it is pinned already, and is
  copied to the device with ``non_blocking=True`` on a side CUDA stream; an event recorded after each batch's
  copies lets the consumer's stream wait for exactly that batch (``wait_event``, not ``wait_stream``: the side
  stream already holds the next batch's copy), and ``record_stream`` keeps the caching allocator from reusing
  the device memory while the consumer's stream still reads it. One batch is kept ahead: when batch ``k`` is
  handed out, the copy of ``k + 1`` has been issued (the pattern of NVIDIA's Apex ImageNet example,
  https://github.com/NVIDIA/apex, ``examples/imagenet/main_amp.py``, ``data_prefetcher``; PyTorch's
  ``Tensor.pin_memory``, ``Tensor.record_stream``: https://github.com/pytorch/pytorch);
- on the CPU the same code runs and the move is ``tensor.to(cpu)``, which returns the tensor itself (no copy),
  so CPU tests exercise the order, the look-ahead and the end of the iterator.

The time spent here (pulling the next host batch, pinning it, issuing its copy) happens inside the consumer's
``next()``, so the loop's ``data_wait_frac`` (``loop._timed``) includes it. What a GPU run gains: the
host-to-device copy of batch ``k + 1`` overlaps the forward/backward of batch ``k``, and pageable-memory copies
(synchronous in effect, even with ``non_blocking=True``) no longer stall the step.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import torch

__all__ = ["to_device_ahead"]

Batch = dict[str, Any]


def _issue(batch: Batch, device: torch.device, stream: "torch.cuda.Stream | None") -> tuple[Batch, Any]:
    """Start moving ``batch``'s tensors to ``device``; returns (device batch, event marking the copies' end)."""
    if stream is None:
        return {key: value.to(device) if isinstance(value, torch.Tensor) else value
                for key, value in batch.items()}, None
    moved: Batch = {}
    with torch.cuda.stream(stream):
        for key, value in batch.items():
            if isinstance(value, torch.Tensor) and value.device.type == "cpu":
                host = value if value.is_pinned() else value.pin_memory()
                value = host.to(device, non_blocking=True)
            moved[key] = value
        event = torch.cuda.Event()
        event.record(stream)
    return moved, event


def _ready(batch: Batch, event: Any, device: torch.device) -> Batch:
    """Make the consumer's stream wait for ``batch``'s copies and own its memory from now on."""
    if event is not None:
        current = torch.cuda.current_stream(device)
        current.wait_event(event)
        for value in batch.values():
            if isinstance(value, torch.Tensor) and value.device.type == "cuda":
                value.record_stream(current)
    return batch


def to_device_ahead(batches: Iterable[Batch], device: torch.device | str) -> Iterator[Batch]:
    """``batches`` (dicts of host tensors) on ``device``, in the same order, the next one's copy issued before
    the current one is handed out (module docstring). Non-tensor values pass through unchanged. An error of
    ``batches`` reaches the consumer after the batch before it, as it would without the look-ahead."""
    device = torch.device(device)
    stream = torch.cuda.Stream(device) if device.type == "cuda" else None
    source = iter(batches)
    try:
        pending = _issue(next(source), device, stream)
    except StopIteration:
        return
    while True:
        try:
            host = next(source)
        except StopIteration:
            break
        except Exception:  # as without the look-ahead: the batch before a failure still reaches the consumer
            yield _ready(*pending, device)
            raise
        ahead = _issue(host, device, stream)  # batch k + 1's copy in flight before batch k is handed out
        yield _ready(*pending, device)
        pending = ahead
    yield _ready(*pending, device)
