"""A Swarm node label as a Pulumi resource (pulumi-docker has none, issue #282).

`NodeLabelProvider` is a Python dynamic provider on the `docker` SDK: create
adds `<label>=<value>` to the node, delete removes it, read reports the label
as it really is so `pulumi refresh` sees a label removed by hand, and update
puts it back. Create, update and diff refuse a node that is drained, paused or
not ready, naming the node and the fix: Swarm would start no cache task there,
and `pulumi up` would otherwise end in a bare converge timeout of the service.

The label may be shared, so delete does not always remove it:
- a label the node carried before the stack (a manual deployment's
  `dtr.cache=true`, or another stack's) is left in place;
- a label another Swarm service is constrained on (a second stack's cache on
  the same node) is left in place.
Either way the provider says so in the output of `pulumi destroy`/`up`.

How to reach Docker is not part of the resource: the provider resolves it each
time it runs, from the stack's `docker:host` / `docker:certPath` (which the
engine hands to `configure`) or else DOCKER_HOST / DOCKER_CERT_PATH /
DOCKER_TLS_VERIFY, as the docker provider does. So a client bundle that moved
(CI's temp dir) does not break destroy or refresh, and no machine path is in
the state.

Pulumi serializes the provider into the state and runs it in a separate
process, so it is self-contained: it imports `docker` inside its methods and
keeps its helpers as static methods (nothing from this project is imported
when it runs). The program serializes it once, not once per label
(components/by_value.py): the same string, at a fraction of the cost.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi.dynamic as dyn

from components.by_value import ByValueResource, pickle_by_value

# How many times to retry a node update that lost a race with another update
# (Swarm rejects an update carrying a stale version).
_UPDATE_ATTEMPTS = 5

# What the resource is; everything else in its state is observed.
INPUT_KEYS = ("node", "label", "value", "service")
# The stack config keys the docker provider reads for its connection.
DOCKER_CONFIG_KEYS = ("docker:host", "docker:certPath")
# Inputs of versions that froze the connection into the state.
LEGACY_KEYS = ("docker_host", "docker_cert_path", "docker_tls_verify")
# Constraints that pin a service to one node.
PINS = ("node.hostname", "node.id")


class NodeLabelProvider(dyn.ResourceProvider):
    """CRUD of one label on one Swarm node.

    Inputs: node (hostname, ID, or "self" for the manager we talk to), label,
    value, and service: the name of the stack's own service, whose placement
    constraint does not keep the label (it is deleted before the label, or
    moved with it). Outputs add node_id, hostname, the value the node really
    carries, and whether the label was there before the stack (preexisting,
    previous_value).
    """

    # The provider captures no secret; keep the serialized form readable in state.
    serialize_as_secret_always = False

    def __init__(self) -> None:
        super().__init__()
        # The stack's docker:host / docker:certPath, set by configure() in the
        # provider process; empty until then, so the environment decides.
        self.docker_config: dict[str, str] = {}

    def configure(self, req: dyn.ConfigureRequest) -> None:
        # The engine passes the whole stack config, keys with their namespace.
        self.docker_config = {
            key: str(value) for key in DOCKER_CONFIG_KEYS if (value := req.config.get(key)) not in (None, "")
        }

    # -- connection and lookup -------------------------------------------

    @staticmethod
    def connection(docker_config: dict[str, str], environ: Any) -> tuple[str | None, str | None, bool]:
        """(host, cert path, verify the server) as the docker provider would resolve
        them: docker:host / docker:certPath first, then DOCKER_HOST / DOCKER_CERT_PATH.
        DOCKER_TLS_VERIFY is "1" or unset in client bundles; a bundle path alone
        still means mutual TLS, and the manager is verified unless told not to."""
        host = docker_config.get("docker:host") or environ.get("DOCKER_HOST") or None
        cert_path = docker_config.get("docker:certPath") or environ.get("DOCKER_CERT_PATH") or None
        verify_env = environ.get("DOCKER_TLS_VERIFY")
        verify = verify_env is None or verify_env not in ("0", "", "false")
        return host, cert_path, verify

    def client(self) -> Any:
        import os

        import docker
        from docker.tls import TLSConfig

        host, cert_path, verify = NodeLabelProvider.connection(self.docker_config, os.environ)
        if host is None:
            return docker.from_env()
        if host.startswith("ssh://"):
            # The system ssh client honours ~/.ssh/config and agents, like the docker CLI.
            return docker.DockerClient(base_url=host, use_ssh_client=True)
        tls: Any = False
        if cert_path:
            tls = TLSConfig(
                client_cert=(os.path.join(cert_path, "cert.pem"), os.path.join(cert_path, "key.pem")),
                ca_cert=os.path.join(cert_path, "ca.pem") if verify else None,
                verify=verify,
            )
        return docker.DockerClient(base_url=host, tls=tls)

    @staticmethod
    def say(message: str) -> None:
        """Tell the operator. pulumi.log has no engine in a dynamic provider's
        process, but the engine shows the provider's stderr in the output of
        `pulumi up` / `destroy` (dynamic providers' output is not hidden)."""
        import sys

        print(f"msr-cache: {message}", file=sys.stderr, flush=True)

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
    def services_needing(client: Any, found: Any, label: str, own_service: str | None) -> list[str]:
        """Names of the other Swarm services whose placement constraints use this
        label and could place a task on this node; the stack's own service aside."""
        key = f"node.labels.{label}"
        prefix = "node.labels."
        node_names = {found.id.casefold(), found.attrs["Description"]["Hostname"].casefold()}
        needing = []
        for service in client.services.list():
            spec = service.attrs.get("Spec") or {}
            name = spec.get("Name") or service.id
            if name == own_service:
                continue
            placement = (spec.get("TaskTemplate") or {}).get("Placement") or {}
            parsed = [NodeLabelProvider.parse_constraint(c) for c in placement.get("Constraints") or []]
            # Swarm matches the "node.labels." prefix in any case, the label key exactly.
            if not any(
                lhs[: len(prefix)].casefold() == prefix and lhs[len(prefix) :] == key[len(prefix) :]
                for lhs, _op, _rhs in parsed
            ):
                continue
            # Pinned to another node by hostname or ID: it never runs here.
            pinned_elsewhere = any(
                op == "=="
                and lhs.casefold() in ("node.hostname", "node.id")
                and rhs.casefold() not in node_names
                for lhs, op, rhs in parsed
            )
            if not pinned_elsewhere:
                needing.append(name)
        return sorted(needing)

    @staticmethod
    def parse_constraint(constraint: str) -> tuple[str, str, str]:
        """`node.labels.x == true` -> ("node.labels.x", "==", "true")."""
        for op in ("==", "!="):
            if op in constraint:
                lhs, rhs = constraint.split(op, 1)
                return lhs.strip(), op, rhs.strip()
        return constraint.strip(), "", ""

    @staticmethod
    def state(props: dict[str, Any], found: Any, preexisting: bool, previous_value: str) -> dict[str, Any]:
        labels = found.attrs["Spec"].get("Labels") or {}
        return {
            # Inputs only: a state written by an older version may still carry
            # how it reached Docker; that is not kept.
            **{k: v for k, v in props.items() if k in INPUT_KEYS},
            "node_id": found.id,
            "hostname": found.attrs["Description"]["Hostname"],
            # What the node really carries ("" when the label is absent), so a
            # refresh records drift and the next `up` puts the label back.
            "value": labels.get(props["label"], ""),
            # The node carried the label before this stack set it: destroy leaves it.
            "preexisting": preexisting,
            "previous_value": previous_value,
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
        client = self.client()
        node, label = props["node"], props["label"]
        found = self.require_usable(client, node)
        before = found.attrs["Spec"].get("Labels") or {}
        preexisting = label in before
        previous = before.get(label, "")
        if preexisting:
            hostname = found.attrs["Description"]["Hostname"]
            self.say(
                f"Swarm node {hostname} already carries {label}={previous} (set before this stack, by hand "
                "or by another stack); the stack uses it and leaves it in place on destroy"
            )
        found = self.set_label(client, node, label, props["value"])
        return dyn.CreateResult(f"{found.id}/{label}", self.state(props, found, preexisting, previous))

    def read(self, id_: str, props: dict[str, Any]) -> dyn.ReadResult:
        client = self.client()
        found = self.find_node(client, props["node"])
        if found is None:
            # The node left the swarm: the label is gone with it.
            return dyn.ReadResult(None, {})
        return dyn.ReadResult(id_, self.state(props, found, *self.origin(props)))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dyn.DiffResult:
        # Another node or label key is another resource. How we reach Docker
        # (socket, bundle, ssh) is not part of what the resource is.
        replaces = [key for key in ("node", "label") if olds.get(key) != news.get(key)]
        # A state from before the connection left the inputs (docker_host, ...)
        # is rewritten once, in place: its recorded paths go, and the state
        # takes this provider's code, which destroy and refresh then run.
        legacy = any(key in olds for key in LEGACY_KEYS)
        changes = (
            bool(replaces) or legacy or any(olds.get(key) != news.get(key) for key in ("value", "service"))
        )
        # Diff runs on every preview and up, so a drained or lost cache node is
        # reported before anything changes (a node still unknown in a preview is
        # checked at create). Only the new node is checked: moving the cache off
        # a drained node must not be blocked by that node.
        node = news.get("node")
        if isinstance(node, str) and node and node != pulumi.runtime.rpc.UNKNOWN:
            self.require_usable(self.client(), node)
        return dyn.DiffResult(changes=changes, replaces=replaces, delete_before_replace=bool(replaces))

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dyn.UpdateResult:
        client = self.client()
        self.require_usable(client, news["node"])
        found = self.set_label(client, news["node"], news["label"], news["value"])
        return dyn.UpdateResult(self.state(news, found, *self.origin(olds)))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        client = self.client()
        node, label = props["node"], props["label"]
        found = self.find_node(client, node)
        if found is None:
            return
        hostname = found.attrs["Description"]["Hostname"]
        current = (found.attrs["Spec"].get("Labels") or {}).get(label)
        preexisting, previous = self.origin(props)
        if current is None:
            return
        fix = f"docker node update --label-rm {label} {hostname}"
        if preexisting and current == previous:
            self.say(
                f"left {label}={current} on Swarm node {hostname}: it was there before this stack; "
                f"remove it by hand if nothing needs it ({fix})"
            )
            return
        others = self.services_needing(client, found, label, props.get("service"))
        if others:
            self.say(
                f"left {label}={current} on Swarm node {hostname}: service(s) {', '.join(others)} are "
                f"constrained on it; remove it by hand once they are gone ({fix})"
            )
            return
        if preexisting:
            self.set_label(client, node, label, previous)
            self.say(
                f"put {label} on Swarm node {hostname} back to {previous!r}, its value before this stack"
            )
            return
        self.set_label(client, node, label, None)

    @staticmethod
    def origin(props: dict[str, Any]) -> tuple[bool, str]:
        """(preexisting, previous_value) as recorded at create. A state written
        before they were recorded had set the label itself."""
        return bool(props.get("preexisting", False)), str(props.get("previous_value") or "")


pickle_by_value(NodeLabelProvider)


class NodeLabel(ByValueResource, module="msrcache", name="NodeLabel"):
    """One `<label>=<value>` on one Swarm node."""

    node_id: pulumi.Output[str]
    hostname: pulumi.Output[str]
    value: pulumi.Output[str]
    preexisting: pulumi.Output[bool]

    def __init__(
        self,
        name: str,
        node: pulumi.Input[str],
        label: pulumi.Input[str],
        service: pulumi.Input[str],
        value: pulumi.Input[str] = "true",
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            "node": node,
            "label": label,
            "value": value,
            "service": service,
            "node_id": None,
            "hostname": None,
            "preexisting": None,
        }
        super().__init__(NodeLabelProvider(), name, props, opts)
