"""Public import path of checkpoint loading (kept for scripts written against it): the code lives in
:mod:`gqa_eval.variant.checkpoints`."""

from gqa_eval.variant.checkpoints import (
    CheckpointError,
    checkpoint_source,
    load_checkpoint,
    resolve_device,
    torch_dtype,
)

__all__ = ["CheckpointError", "checkpoint_source", "load_checkpoint", "resolve_device", "torch_dtype"]
