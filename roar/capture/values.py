"""A plain value class for the run path's records (decoded events, hash
results), without importing dataclasses."""

from __future__ import annotations


class SlotsValue:
    """Equality and repr by the fields in __slots__, as a dataclass has them
    (dataclasses cost `roar run` ~13 ms to import: inspect, ast, dis)."""

    __slots__ = ()

    def _fields(self) -> tuple:
        return tuple(getattr(self, k) for k in self.__slots__)

    def __eq__(self, other) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # mutable, as a dataclass with eq and without frozen

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__)
        return f"{self.__class__.__name__}({fields})"
