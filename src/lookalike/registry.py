"""A tiny name -> factory registry, one per plugin kind (encoders, index backends).

Names may carry an argument after a colon, like timm's ``create_model``: ``timm:resnet50`` looks up the
family ``timm`` and passes ``"resnet50"`` as the factory's first argument.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}
        self._takes_arg: dict[str, bool] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, *, takes_arg: bool = False, help: str = "") -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Register ``factory`` under ``name``; ``takes_arg`` families are written ``name:<arg>``."""

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            self._takes_arg[name] = takes_arg
            self._help[name] = help or (factory.__doc__ or "").strip().split("\n")[0]
            return factory

        return deco

    def names(self) -> list[str]:
        return sorted(f"{n}:<name>" if self._takes_arg[n] else n for n in self._factories)

    def describe(self) -> dict[str, str]:
        return {(f"{n}:<name>" if self._takes_arg[n] else n): self._help[n] for n in sorted(self._factories)}

    def split(self, name: str) -> tuple[str, str | None]:
        family, _, arg = name.partition(":")
        if family not in self._factories:
            raise ValueError(f"Unknown {self.kind} {name!r}. Valid {self.kind}s: {', '.join(self.names())}")
        if self._takes_arg[family] and not arg:
            raise ValueError(f"{self.kind} {family!r} needs an argument: write it as '{family}:<name>'")
        if not self._takes_arg[family] and arg:
            raise ValueError(f"{self.kind} {family!r} takes no argument, got {name!r}")
        return family, (arg or None)

    def create(self, name: str, **kwargs: object) -> T:
        family, arg = self.split(name)
        factory = self._factories[family]
        return factory(arg, **kwargs) if arg is not None else factory(**kwargs)
