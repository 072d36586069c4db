"""The numeric precision names vitlab uses everywhere ("fp32", "bf16", "fp16") as autocast contexts."""

from __future__ import annotations

import torch

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(precision: str, device_type: str) -> torch.autocast:
    """Autocast to bf16/fp16 on `device_type`; a disabled context for "fp32"."""
    dtype = _AUTOCAST_DTYPES.get(precision)
    return torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None)
