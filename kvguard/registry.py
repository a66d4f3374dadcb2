"""A registry: named things of one kind (rules, handlers, alert sinks), in the order they were added.

Declaring a thing (a decorated rule or handler) registers nothing: the catalog (`kvguard.catalog`)
adds the declarations of its modules in one fixed order, so what is registered never depends on
which module happened to be imported first. A registry given a `load` function fills itself on
its first read, once, so a pipeline built by hand sees the same catalog as the composition root's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, ValuesView
from types import ModuleType
from typing import TypeVar

T = TypeVar("T")


class Registry(Mapping[str, T]):
    def __init__(self, kind: str, load: Callable[[Registry[T]], None] | None = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._load = load
        self._loading = threading.Lock()

    def add(self, name: str, item: T) -> None:
        """Register `item` under `name`; a name is taken once (two rules with one id is a bug)."""
        if name in self._items:
            raise ValueError(f"{self.kind} {name} registered twice")
        self._items[name] = item

    def load(self) -> Registry[T]:
        """Fill the registry from its `load` function, if it has one and has not yet run it."""
        if self._load is not None:
            with self._loading:
                load, self._load = self._load, None
                if load is not None:
                    try:
                        load(self)
                    except BaseException:  # never leave a half-filled registry behind: the next read retries
                        self._items.clear()
                        self._load = load
                        raise
        return self

    def _loaded(self) -> dict[str, T]:
        if self._load is not None:
            self.load()
        return self._items

    def __getitem__(self, name: str) -> T:
        return self._loaded()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())

    def __contains__(self, name: object) -> bool:
        return name in self._loaded()

    def values(self) -> ValuesView[T]:
        """The items themselves, not one look-up per name: `detect_all` walks every rule on every event."""
        return self._loaded().values()


def declared(module: ModuleType, kind: type[T]) -> list[T]:
    """The `kind` objects a module declares at its top level, in the order it defines them
    (objects it only imported from another module are that module's, not its own)."""
    return [value for name, value in vars(module).items()
            if isinstance(value, kind) and getattr(value, "module", module.__name__) == module.__name__
            and not name.startswith("__")]
