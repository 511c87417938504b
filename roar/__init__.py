"""roar: provenance of ML runs by content hash. `import roar; roar.open()`
gives the Python API (roar/api.py).

Nothing is imported here: `roar run` starts through this package and must
not pay for the query side; `roar.open` and `roar.Roar` load roar.api the
first time they are asked for (module __getattr__).
"""

__all__ = ["open", "Roar"]


def __getattr__(name: str):
    if name in __all__:
        from roar import api

        return getattr(api, name)
    raise AttributeError(f"module 'roar' has no attribute {name!r}")
