"""A Swarm node label as a Pulumi resource (pulumi-docker has none, issue #282).

`NodeLabelProvider` is a Python dynamic provider on the `docker` SDK: create
adds `<label>=<value>` to the node, delete removes it, read reports the label
as it really is so `pulumi refresh` sees a label removed by hand, and update
puts it back. Create, update and diff refuse a node that is drained, paused or
not ready, naming the node and the fix: Swarm would start no cache task there,
and `pulumi up` would otherwise end in a bare converge timeout of the service.
Pulumi serializes the provider into the state and runs it in a separate
process, so it is self-contained: it imports `docker` inside its methods and
keeps its helpers as static methods (nothing from this project is imported
when it runs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi.dynamic as dyn

# How many times to retry a node update that lost a race with another update
# (Swarm rejects an update carrying a stale version).
_UPDATE_ATTEMPTS = 5


class NodeLabelProvider(dyn.ResourceProvider):
    """CRUD of one label on one Swarm node.

    Inputs: node (hostname, ID, or "self" for the manager we talk to), label, value, and the Docker connection
    (docker_host, docker_cert_path, docker_tls_verify), which follows the same
    settings as the docker provider: unix socket, tcp:// with a client bundle
    (the cert path holds ca.pem, cert.pem, key.pem) or ssh://.
    """

    # The provider captures no secret; keep the serialized form readable in state.
    serialize_as_secret_always = False

    # -- connection and lookup -------------------------------------------

    @staticmethod
    def client(props: dict[str, Any]) -> Any:
        import os

        import docker
        from docker.tls import TLSConfig

        host = props.get("docker_host") or None
        cert_path = props.get("docker_cert_path") or None
        if host is None:
            return docker.from_env()
        if host.startswith("ssh://"):
            # The system ssh client honours ~/.ssh/config and agents, like the docker CLI.
            return docker.DockerClient(base_url=host, use_ssh_client=True)
        tls: Any = False
        if cert_path:
            verify = props.get("docker_tls_verify", True)
            tls = TLSConfig(
                client_cert=(os.path.join(cert_path, "cert.pem"), os.path.join(cert_path, "key.pem")),
                ca_cert=os.path.join(cert_path, "ca.pem") if verify else None,
                verify=bool(verify),
            )
        return docker.DockerClient(base_url=host, tls=tls)

    @staticmethod
    def find_node(client: Any, node: str) -> Any:
        """The node with this ID or hostname, or None; other API errors are explained."""
        import docker.errors

        try:
            if node == "self":
                # The manager we talk to, as in `docker node inspect self`
                # (the API itself does not know "self").
                node = client.info()["Swarm"]["NodeID"] or node
            return client.nodes.get(node)
        except docker.errors.NotFound:
            return None
        except docker.errors.APIError as exc:
            if "not a swarm manager" in str(exc) or exc.status_code == 503:
                raise Exception(
                    "the Docker host is not a Swarm manager; point DOCKER_HOST (or docker:host) "
                    "at a manager or an MKE client bundle"
                ) from None
            raise

    @staticmethod
    def require_node(client: Any, node: str) -> Any:
        found = NodeLabelProvider.find_node(client, node)
        if found is None:
            names = sorted(n.attrs["Description"]["Hostname"] for n in client.nodes.list())
            raise Exception(
                f"Swarm node {node!r} not found; msr-cache:cacheNode must be one of: "
                f"{', '.join(names) or '(no nodes)'} (docker node ls)"
            )
        return found

    @staticmethod
    def unusable_reason(node: str, found: Any) -> str | None:
        """Why Swarm would start no task on this node, with the fix; None if it would."""
        hostname = found.attrs["Description"]["Hostname"]
        name = repr(node) if hostname == node else f"{node!r} (hostname {hostname!r})"
        status = found.attrs.get("Status") or {}
        state = status.get("State") or "unknown"
        availability = (found.attrs.get("Spec") or {}).get("Availability") or "active"
        # A node that is not ready is reported first: making it active would not help.
        if state != "ready":
            message = status.get("Message")
            detail = f"state: {state}, message: {message}" if message else f"state: {state}"
            adjective = state if state in ("down", "disconnected") else "not ready"
            return (
                f"Swarm node {name} is {adjective} ({detail}): its engine does not answer the "
                "manager; bring it back or set msr-cache:cacheNode to another node (docker node ls)"
            )
        if availability != "active":
            adjective = {"drain": "drained", "pause": "paused"}.get(availability, "not active")
            activate = f"docker node update --availability active {node}"
            return (
                f"Swarm node {name} is {adjective} (availability: {availability}): Swarm starts no "
                f"task there, so the cache could not run; make it active ({activate}) or set "
                "msr-cache:cacheNode to another node"
            )
        return None

    @staticmethod
    def require_usable(client: Any, node: str) -> Any:
        """The node, if Swarm would run the cache there; otherwise a clear error."""
        found = NodeLabelProvider.require_node(client, node)
        reason = NodeLabelProvider.unusable_reason(node, found)
        if reason is not None:
            raise Exception(reason)
        return found

    @staticmethod
    def set_label(client: Any, node: str, label: str, value: str | None) -> Any:
        """Set (value) or remove (None) the label; returns the node after the update."""
        import docker.errors

        for attempt in range(_UPDATE_ATTEMPTS):
            found = NodeLabelProvider.require_node(client, node)
            spec = dict(found.attrs["Spec"])
            labels = dict(spec.get("Labels") or {})
            if labels.get(label) == value or (value is None and label not in labels):
                return found
            if value is None:
                labels.pop(label, None)
            else:
                labels[label] = value
            spec["Labels"] = labels
            try:
                found.update(spec)
            except docker.errors.APIError as exc:
                # "update out of sequence": someone else updated the node; re-read and retry.
                if "out of sequence" in str(exc) and attempt < _UPDATE_ATTEMPTS - 1:
                    continue
                raise
            found.reload()
            return found
        raise Exception(f"could not update node {node!r}: it kept changing under us")

    @staticmethod
    def state(props: dict[str, Any], found: Any) -> dict[str, Any]:
        labels = found.attrs["Spec"].get("Labels") or {}
        return {
            **props,
            "node_id": found.id,
            "hostname": found.attrs["Description"]["Hostname"],
            # What the node really carries ("" when the label is absent), so a
            # refresh records drift and the next `up` puts the label back.
            "value": labels.get(props["label"], ""),
        }

    # -- CRUD --------------------------------------------------------------

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dyn.CheckResult:
        failures = [
            dyn.CheckFailure(key, f"{key} must be a non-empty string")
            for key in ("node", "label", "value")
            if not isinstance(news.get(key), str) or not news.get(key)
        ]
        return dyn.CheckResult(news, failures)

    def create(self, props: dict[str, Any]) -> dyn.CreateResult:
        client = self.client(props)
        self.require_usable(client, props["node"])
        found = self.set_label(client, props["node"], props["label"], props["value"])
        return dyn.CreateResult(f"{found.id}/{props['label']}", self.state(props, found))

    def read(self, id_: str, props: dict[str, Any]) -> dyn.ReadResult:
        client = self.client(props)
        found = self.find_node(client, props["node"])
        if found is None:
            # The node left the swarm: the label is gone with it.
            return dyn.ReadResult(None, {})
        return dyn.ReadResult(id_, self.state(props, found))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dyn.DiffResult:
        # Another node or label key is another resource. How we reach Docker
        # (socket, bundle, ssh) is not part of what the resource is.
        replaces = [key for key in ("node", "label") if olds.get(key) != news.get(key)]
        changes = bool(replaces) or olds.get("value") != news.get("value")
        # Diff runs on every preview and up, so a drained or lost cache node is
        # reported before anything changes (a node still unknown in a preview is
        # checked at create). Only the new node is checked: moving the cache off
        # a drained node must not be blocked by that node.
        node = news.get("node")
        if isinstance(node, str) and node and node != pulumi.runtime.rpc.UNKNOWN:
            self.require_usable(self.client(news), node)
        return dyn.DiffResult(changes=changes, replaces=replaces, delete_before_replace=bool(replaces))

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> dyn.UpdateResult:
        client = self.client(news)
        self.require_usable(client, news["node"])
        found = self.set_label(client, news["node"], news["label"], news["value"])
        return dyn.UpdateResult(self.state(news, found))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        client = self.client(props)
        if self.find_node(client, props["node"]) is not None:
            self.set_label(client, props["node"], props["label"], None)


# Pulumi pickles the provider with dill and unpickles it in a separate process
# that cannot import this project (pulumi/pulumi#7453). dill copies classes of
# `__main__` by value, so the provider travels with its code, as a provider
# written in __main__.py would.
def _pickle_by_value(cls: type) -> None:
    cls.__module__ = "__main__"
    for member in vars(cls).values():
        func = getattr(member, "__func__", member)  # unwrap staticmethod
        if callable(func) and hasattr(func, "__module__"):
            func.__module__ = "__main__"


_pickle_by_value(NodeLabelProvider)


@dataclass(frozen=True)
class DockerConnection:
    """How to reach the Swarm manager, as the docker provider would."""

    host: str | None = None
    cert_path: str | None = None
    tls_verify: bool = True


class NodeLabel(dyn.Resource, module="msrcache", name="NodeLabel"):
    """One `<label>=<value>` on one Swarm node."""

    node_id: pulumi.Output[str]
    hostname: pulumi.Output[str]
    value: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        node: pulumi.Input[str],
        label: pulumi.Input[str],
        connection: DockerConnection,
        value: pulumi.Input[str] = "true",
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            "node": node,
            "label": label,
            "value": value,
            "docker_host": connection.host,
            "docker_cert_path": connection.cert_path,
            "docker_tls_verify": connection.tls_verify,
            "node_id": None,
            "hostname": None,
        }
        super().__init__(NodeLabelProvider(), name, props, opts)


def docker_connection() -> DockerConnection:
    """The Docker host the docker provider would use: docker:host / docker:certPath
    config first, then DOCKER_HOST / DOCKER_CERT_PATH / DOCKER_TLS_VERIFY."""
    import os

    cfg = pulumi.Config("docker")
    host = cfg.get("host") or os.environ.get("DOCKER_HOST") or None
    cert_path = cfg.get("certPath") or os.environ.get("DOCKER_CERT_PATH") or None
    # DOCKER_TLS_VERIFY is "1" or unset in client bundles; a bundle path alone
    # still means mutual TLS, and we verify the manager unless told not to.
    verify_env = os.environ.get("DOCKER_TLS_VERIFY")
    tls_verify = verify_env is None or verify_env not in ("0", "", "false")
    return DockerConnection(host=host, cert_path=cert_path, tls_verify=tls_verify)
