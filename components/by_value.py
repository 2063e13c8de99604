"""Dynamic providers that travel with their code, serialized once per process."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi.dynamic as dyn
from pulumi.dynamic.dynamic import PROVIDER_KEY, serialize_provider
from pulumi.runtime._serialization import _serialize


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


# (serialized provider, whether it captured a secret Output) per provider class.
_SERIALIZED: dict[type, tuple[str, bool]] = {}


def serialized_provider(provider: dyn.ResourceProvider) -> tuple[str, bool]:
    """What `pulumi.dynamic.Resource` computes for `provider`: its dill pickle, base64,
    and whether it captured a secret Output; the same string.

    Pulumi computes it for every resource, and that dominated the program's cost
    with many caches: about 12 ms a resource (dill pickles the class by value,
    disassembling every method), and more for each resource before it, as
    pulumi 3.272's serialize_provider wraps pickle._Pickler._batch_setitems once
    more each time. The pickle depends only on the class and the instance's
    attributes, so it is made once per class, from a fresh instance; a provider
    whose attributes differ from a fresh one's is serialized on its own, as Pulumi
    would.
    """
    cls = type(provider)
    if vars(provider) != vars(cls()):
        return _serialize(True, serialize_provider, provider)
    if cls not in _SERIALIZED:
        _SERIALIZED[cls] = _serialize(True, serialize_provider, cls())
    return _SERIALIZED[cls]


class ByValueResource(dyn.Resource):
    """A `pulumi.dynamic.Resource` whose provider is serialized once per class.

    The same resource as the Pulumi class makes: the same type
    (`pulumi-python:dynamic/<module>:<name>`, from the subclass's `module=` and
    `name=`), URN, inputs and `__provider` string, a secret on the same terms.
    """

    def __init__(
        self,
        provider: dyn.ResourceProvider,
        name: str,
        props: dict[str, Any],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        # What dyn.Resource.__init__ does, with the serialized form computed once.
        if PROVIDER_KEY in props:
            raise Exception("A dynamic resource must not define the __provider key")
        serialized, contains_secrets = serialized_provider(provider)
        value: pulumi.Input[str] = serialized
        if getattr(provider, "serialize_as_secret_always", True) or contains_secrets:
            value = pulumi.Output.secret(serialized)
        props[PROVIDER_KEY] = value
        # dyn.Resource.__init__ skipped: CustomResource's, as it would call it.
        super(dyn.Resource, self).__init__(f"pulumi-python:{self._resource_type_name}", name, props, opts)
