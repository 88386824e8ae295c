"""A cheaper ``__init__`` for the frozen dataclasses the rating builds by the ten thousand.

A frozen dataclass's generated ``__init__`` sets every field through ``object.__setattr__`` (it must
get past the frozen ``__setattr__``): about 7 us for a 13-field ``UsageRow`` on this kind of machine,
~3x the cost of filling the instance's ``__dict__`` in one step. ``dict_init`` swaps in an
``__init__`` that does the latter, with the same signature, defaults and result (same fields, still
frozen, same ``==``, ``hash``, ``repr`` and ``dataclasses.replace``). It refuses the features it does
not reproduce (field factories, ``init=False`` / keyword-only fields, ``__post_init__``, ``InitVar``,
slots) so a later change to such a class fails at import instead of silently misbehaving.
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

C = TypeVar("C", bound=type)


def dict_init(cls: C) -> C:
    """Class decorator, under ``@dataclass(frozen=True)``: see the module docstring."""
    if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:
        raise TypeError(f"{cls.__name__}: dict_init is for frozen dataclasses")
    if hasattr(cls, "__post_init__") or hasattr(cls, "__slots__"):
        raise TypeError(f"{cls.__name__}: dict_init does not support __post_init__ or slots")
    if any(f._field_type is dataclasses._FIELD_INITVAR for f in cls.__dataclass_fields__.values()):
        raise TypeError(f"{cls.__name__}: dict_init does not support InitVar fields")
    params, items, defaults = [], [], {}
    for f in dataclasses.fields(cls):
        if f.default_factory is not dataclasses.MISSING or not f.init or f.kw_only:
            raise TypeError(f"{cls.__name__}.{f.name}: dict_init supports plain fields with plain defaults only")
        if f.default is dataclasses.MISSING:
            params.append(f.name)
        else:
            defaults[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        items.append(f"{f.name!r}: {f.name}")
    src = (f"def __init__(self, {', '.join(params)}):\n"
           f"    _set(self, '__dict__', {{{', '.join(items)}}})\n")
    namespace: dict = {"_set": object.__setattr__, **defaults}
    exec(src, namespace)  # noqa: S102 - source built above from the class's own field names
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = cls.__init__.__doc__
    init.__annotations__ = {**{f.name: f.type for f in dataclasses.fields(cls)}, "return": None}
    cls.__init__ = init
    return cls


__all__ = ["dict_init"]
