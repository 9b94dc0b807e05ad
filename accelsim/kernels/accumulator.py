"""The PE accumulator: its width and what it does when a sum leaves its range."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

MIN_BITS = 8
MAX_BITS = 62


@dataclass(frozen=True)
class Accumulator:
    """A signed accumulator register of `bits` bits.

    wrap: two's complement wrap-around, so the result is the exact sum modulo 2**bits (bits=32 is
    onnxruntime's int32 arithmetic); the order of additions does not matter.
    saturate: the sum is clamped to [-2**(bits-1), 2**(bits-1)-1] after every addition, in the
    order bias first, then the reduction index in order (c, ky, kx) for conv and k for matmul.
    """

    bits: int = 32
    overflow: Literal["wrap", "saturate"] = "wrap"

    def __post_init__(self) -> None:
        if not MIN_BITS <= self.bits <= MAX_BITS:
            raise ValueError(
                f"accumulator bits must be in [{MIN_BITS}, {MAX_BITS}], got {self.bits}"
            )
        if self.overflow not in ("wrap", "saturate"):
            raise ValueError(
                f"accumulator overflow must be 'wrap' or 'saturate', got {self.overflow!r}"
            )

    @property
    def max(self) -> int:
        return (1 << (self.bits - 1)) - 1

    @property
    def dtype(self) -> type[np.signedinteger]:
        """int32 holds every value of a register of up to 32 bits; wider ones need int64."""
        return np.int32 if self.bits <= 32 else np.int64
