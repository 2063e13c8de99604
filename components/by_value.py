"""Dynamic providers that travel with their code."""

from __future__ import annotations


# Pulumi pickles the provider with dill and unpickles it in a separate process
# that cannot import this project (pulumi/pulumi#7453). dill copies classes of
# `__main__` by value, so the provider travels with its code, as a provider
# written in __main__.py would.
def pickle_by_value(cls: type) -> None:
    cls.__module__ = "__main__"
    for member in vars(cls).values():
        func = getattr(member, "__func__", member)  # unwrap staticmethod
        if callable(func) and hasattr(func, "__module__"):
            func.__module__ = "__main__"
