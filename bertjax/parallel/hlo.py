"""What a compiled step moves between devices, read from its HLO text: each collective's kind, the
bytes of its result per device, and the jax op it came from. Used to check that a mesh shards a
step as intended (tests/sharding_check.py, benchmarks/sharded_collectives.py)."""

from __future__ import annotations

import dataclasses
import math
import re

HLO_DTYPE_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "s64": 8, "u16": 2, "s8": 1, "u8": 1, "pred": 1}
_COLLECTIVE = re.compile(r" = (.*?) (all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter)(?:-start)?\(")
_OP_NAME = re.compile(r'op_name="([^"]*)"')


@dataclasses.dataclass(frozen=True)
class Collective:
    """One collective of a compiled step: its kind ("all-gather", ...), its result type as the HLO
    writes it (`f32[8,128]{1,0}`, or a tuple of such), and the jax op it came from."""

    kind: str
    result: str
    source: str

    @property
    def bytes(self) -> int:
        """Bytes of the result (per device: compiled HLO is the per-device program)."""
        total = 0
        for dtype, dims in re.findall(r"(\w+)\[([0-9,]*)\]", self.result):
            total += math.prod(int(dim) for dim in filter(None, dims.split(","))) * HLO_DTYPE_BYTES.get(dtype, 4)
        return total


def hlo_collectives(hlo: str) -> list[Collective]:
    """The collectives of compiled HLO text, in program order (an async one counted at its start)."""
    found = []
    for line in hlo.splitlines():
        match = _COLLECTIVE.search(line)
        if match:
            source = _OP_NAME.search(line)
            found.append(Collective(match.group(2), match.group(1), source.group(1) if source else ""))
    return found
