"""What each resource type of the program becomes for real, one handler a type.

tls:    keys, CSRs and certificates with `cryptography`, from every input
        pulumi-tls takes that the program uses (algorithm and size, subject,
        SANs, validity, allowed uses, CA signing);
random: a password from `secrets`;
docker: secrets, configs, volumes and services through the Docker SDK;
dynamic providers (the node label): the provider's own check/create/diff/
        update/delete, unpickled as the Pulumi engine would.

Like the providers, tls, random and Swarm secrets/configs/volumes cannot change
in place: any input change replaces them. A service is updated in place unless
its name changes.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import ipaddress
import secrets
import string
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import dill
import docker.errors
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from components import rotation
from rehearsal.mapping import (
    Field,
    UnmappedInput,
    integer,
    label_list,
    nanoseconds,
    one_of,
    ratio,
    translate,
)

Log = Callable[[str], None]


@dataclass
class Context:
    client: Any
    """docker.DockerClient for the swarm manager."""
    log: Log
    stop: threading.Event = field(default_factory=threading.Event)
    """Set when the run is interrupted (Ctrl-C): a wait for a resource to be
    ready gives up, as `pulumi up` stops waiting on in-flight operations."""


@dataclass
class Created:
    id: str
    outputs: dict[str, Any]
    secret_outputs: set[str] = field(default_factory=set)

    def __repr__(self) -> str:
        shown = {k: "[secret]" if k in self.secret_outputs else v for k, v in self.outputs.items()}
        return f"Created(id={self.id!r}, outputs={shown!r})"


class Handler(Protocol):
    def create(self, ctx: Context, name: str, inputs: dict[str, Any]) -> Created: ...

    def update(
        self, ctx: Context, old: Created, old_inputs: dict[str, Any], inputs: dict[str, Any]
    ) -> Created | None:
        """The resource changed in place, or None when it must be replaced."""

    def delete(self, ctx: Context, old: Created) -> None: ...


class Immutable:
    """Resources the provider replaces on any change."""

    def update(
        self, ctx: Context, old: Created, old_inputs: dict[str, Any], inputs: dict[str, Any]
    ) -> Created | None:
        return None

    def delete(self, ctx: Context, old: Created) -> None:
        """Nothing outside the state to remove (keys, certificates, random values)."""


# -- tls ----------------------------------------------------------------------

SUBJECT = {
    "commonName": Field("CN"),
    "organization": Field("O"),
}
_NAME_OIDS = {"CN": NameOID.COMMON_NAME, "O": NameOID.ORGANIZATION_NAME}

# pulumi-tls allowed_uses -> X.509 key usage flags / extended key usages.
_KEY_USAGES = {
    "digital_signature": "digital_signature",
    "content_commitment": "content_commitment",
    "key_encipherment": "key_encipherment",
    "data_encipherment": "data_encipherment",
    "key_agreement": "key_agreement",
    "cert_signing": "key_cert_sign",
    "crl_signing": "crl_sign",
}
_EXT_USAGES = {
    "server_auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "client_auth": ExtendedKeyUsageOID.CLIENT_AUTH,
}
ALLOWED_USE = one_of(*_KEY_USAGES, *_EXT_USAGES)

_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "P224": ec.SECP224R1,
    "P256": ec.SECP256R1,
    "P384": ec.SECP384R1,
    "P521": ec.SECP521R1,
}


def _name(subject: dict[str, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(_NAME_OIDS[k], v) for k, v in subject.items()])


def _sans(dns: list[str], ips: list[str]) -> x509.SubjectAlternativeName:
    return x509.SubjectAlternativeName(
        [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    )


def _load_key(pem: str) -> Any:
    return serialization.load_pem_private_key(pem.encode(), password=None)


def _sign(
    public_key: Any,
    subject: x509.Name,
    san: x509.SubjectAlternativeName | None,
    hours: int,
    uses: list[str],
    issuer: x509.Name,
    signing_key: Any,
    issuer_cert: x509.Certificate | None,
) -> tuple[str, dict[str, str]]:
    """A leaf certificate as pulumi-tls makes it; returns (PEM, validity outputs)."""
    # The real clock, as pulumi-tls's: clients check validity against it.
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    end = now + dt.timedelta(hours=hours)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if san is not None and len(san):
        builder = builder.add_extension(san, critical=False)
    flags = {v: False for v in _KEY_USAGES.values()} | {"encipher_only": False, "decipher_only": False}
    flags |= {_KEY_USAGES[u]: True for u in uses if u in _KEY_USAGES}
    if any(flags.values()):
        builder = builder.add_extension(x509.KeyUsage(**flags), critical=True)
    ext = [_EXT_USAGES[u] for u in uses if u in _EXT_USAGES]
    if ext:
        builder = builder.add_extension(x509.ExtendedKeyUsage(ext), critical=False)
    if issuer_cert is not None:
        try:
            ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        except x509.ExtensionNotFound:
            aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key())  # type: ignore[arg-type]
        builder = builder.add_extension(aki, critical=False)
    cert = builder.sign(signing_key, hashes.SHA256())
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    return pem, {"validityStartTime": now.isoformat(), "validityEndTime": end.isoformat()}


class PrivateKey(Immutable):
    SHAPE = {
        "algorithm": Field("algorithm", one_of("RSA", "ECDSA")),
        "rsaBits": Field("rsa_bits", integer),
        "ecdsaCurve": Field("curve", one_of(*_CURVES)),
    }

    def create(self, ctx: Context, name: str, inputs: dict[str, Any]) -> Created:
        args = translate(inputs, self.SHAPE, name)
        key: Any
        if args["algorithm"] == "RSA":
            key = rsa.generate_private_key(public_exponent=65537, key_size=args.get("rsa_bits", 2048))
        else:
            # pulumi-tls's default curve is P224; the program always says P256.
            curve: ec.EllipticCurve = _CURVES[args.get("curve", "P224")]()
            key = ec.generate_private_key(curve)
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ).decode()
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return Created(
            name,
            {"privateKeyPem": private, "publicKeyPem": public.decode()},
            secret_outputs={"privateKeyPem"},
        )


class Renewable(Immutable):
    """A certificate pulumi-tls renews: from `earlyRenewalHours` before its end,
    the provider reports it due (ready_for_renewal) and `pulumi up` replaces it;
    a change of `earlyRenewalHours` alone is made in place."""

    def due(self, old: Created, inputs: dict[str, Any]) -> bool:
        hours = int(inputs.get("earlyRenewalHours") or 0)
        end = dt.datetime.fromisoformat(str(old.outputs["validityEndTime"]))
        return rotation.utcnow() >= end - dt.timedelta(hours=hours)

    def update(
        self, ctx: Context, old: Created, old_inputs: dict[str, Any], inputs: dict[str, Any]
    ) -> Created | None:
        def rest(i: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in i.items() if k != "earlyRenewalHours"}

        if rest(old_inputs) == rest(inputs) and not self.due(old, inputs):
            return old
        return None


class SelfSignedCert(Renewable):
    SHAPE = {
        "privateKeyPem": Field("key"),
        "subject": Field("subject", SUBJECT),
        "dnsNames": Field("dns", list),
        "ipAddresses": Field("ips", list),
        "validityPeriodHours": Field("hours", integer),
        "earlyRenewalHours": Field("renew", integer),
        "allowedUses": Field("uses", [ALLOWED_USE]),
    }

    def create(self, ctx: Context, name: str, inputs: dict[str, Any]) -> Created:
        a = translate(inputs, self.SHAPE, name)
        key = _load_key(a["key"])
        subject = _name(a["subject"])
        pem, validity = _sign(
            key.public_key(), subject, _sans(a.get("dns", []), a.get("ips", [])),
            a["hours"], a.get("uses", []), subject, key, None,
        )  # fmt: skip
        return Created(name, {"certPem": pem, **validity})


class CertRequest(Immutable):
    SHAPE = {
        "privateKeyPem": Field("key"),
        "subject": Field("subject", SUBJECT),
        "dnsNames": Field("dns", list),
        "ipAddresses": Field("ips", list),
    }

    def create(self, ctx: Context, name: str, inputs: dict[str, Any]) -> Created:
        a = translate(inputs, self.SHAPE, name)
        builder = x509.CertificateSigningRequestBuilder().subject_name(_name(a["subject"]))
        san = _sans(a.get("dns", []), a.get("ips", []))
        if len(san):
            builder = builder.add_extension(san, critical=False)
        csr = builder.sign(_load_key(a["key"]), hashes.SHA256())
        return Created(name, {"certRequestPem": csr.public_bytes(serialization.Encoding.PEM).decode()})


class LocallySignedCert(Renewable):
    SHAPE = {
        "certRequestPem": Field("csr"),
        "caCertPem": Field("ca_cert"),
        "caPrivateKeyPem": Field("ca_key"),
        "validityPeriodHours": Field("hours", integer),
        "earlyRenewalHours": Field("renew", integer),
        "allowedUses": Field("uses", [ALLOWED_USE]),
    }

    def create(self, ctx: Context, name: str, inputs: dict[str, Any]) -> Created:
        a = translate(inputs, self.SHAPE, name)
        csr = x509.load_pem_x509_csr(a["csr"].encode())
        ca = x509.load_pem_x509_certificate(a["ca_cert"].encode())
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            san = None
        # As pulumi-tls: subject and SANs come from the request, the rest from our inputs.
        pem, validity = _sign(
            csr.public_key(), csr.subject, san, a["hours"], a.get("uses", []),
            ca.subject, _load_key(a["ca_key"]), ca,
        )  # fmt: skip
        return Created(name, {"certPem": pem, **validity})


# -- random -------------------------------------------------------------------


class RandomPassword(Immutable):
    SHAPE = {"length": Field("length", integer), "special": Field("special", bool)}

    def create(self, ctx: Context, name: str, inputs: dict[str, Any]) -> Created:
        a = translate(inputs, self.SHAPE, name)
        alphabet = string.ascii_letters + string.digits
        if a.get("special", True):
            alphabet += "!@#$%&*()-_=+[]{}<>:?"
        value = "".join(secrets.choice(alphabet) for _ in range(a["length"]))
        return Created(name, {"result": value}, secret_outputs={"result"})


# -- docker -------------------------------------------------------------------


def auto_name(logical: str) -> str:
    """Pulumi's auto-name: the logical name and a random suffix (new on every replace)."""
    return f"{logical}-{secrets.token_hex(4)[:7]}"


def _decode(data: str) -> bytes:
    return base64.b64decode(data, validate=True)


def _missing_ok(action: Callable[[], Any]) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        action()


class SwarmSecret(Immutable):
    SHAPE = {"name": Field("name"), "data": Field("data", _decode), "labels": Field("labels", label_list)}

    def create(self, ctx: Context, name: str, inputs: dict[str, Any]) -> Created:
        a = translate(inputs, self.SHAPE, name)
        real = a.get("name") or auto_name(name)
        made = ctx.client.secrets.create(name=real, data=a["data"], labels=a.get("labels"))
        return Created(made.id, {"name": real}, secret_outputs={"data"})

    def delete(self, ctx: Context, old: Created) -> None:
        _missing_ok(lambda: ctx.client.api.remove_secret(old.id))


class SwarmConfig(Immutable):
    SHAPE = SwarmSecret.SHAPE

    def create(self, ctx: Context, name: str, inputs: dict[str, Any]) -> Created:
        a = translate(inputs, self.SHAPE, name)
        real = a.get("name") or auto_name(name)
        made = ctx.client.configs.create(name=real, data=a["data"], labels=a.get("labels"))
        return Created(made.id, {"name": real})

    def delete(self, ctx: Context, old: Created) -> None:
        _missing_ok(lambda: ctx.client.api.remove_config(old.id))


class Volume(Immutable):
    SHAPE = {
        "name": Field("name"),
        "driver": Field("driver"),
        "driverOpts": Field("driver_opts", dict),
        "labels": Field("labels", label_list),
    }

    def create(self, ctx: Context, name: str, inputs: dict[str, Any]) -> Created:
        a = translate(inputs, self.SHAPE, name)
        real = a.pop("name", None) or auto_name(name)
        made = ctx.client.volumes.create(name=real, **a)
        return Created(made.name, {"name": real, "mountpoint": made.attrs.get("Mountpoint", "")})

    def delete(self, ctx: Context, old: Created) -> None:
        # A just-stopped task's container may still hold the volume for a moment.
        for _ in range(20):
            try:
                ctx.client.api.remove_volume(old.id)
                return
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                if exc.status_code != 409:
                    raise
                time.sleep(0.5)
        ctx.client.api.remove_volume(old.id)


def _secret_file(ref: dict[str, Any]) -> dict[str, Any]:
    # pulumi-docker's defaults for a mounted secret or config file.
    file = ref.setdefault("File", {})
    file.setdefault("UID", "0")
    file.setdefault("GID", "0")
    file.setdefault("Mode", 0o444)
    return ref


SECRET_REF = {
    "secretId": Field("SecretID"),
    "secretName": Field("SecretName"),
    "fileName": Field("File.Name"),
    "fileMode": Field("File.Mode", integer),
    "fileUid": Field("File.UID"),
    "fileGid": Field("File.GID"),
}
CONFIG_REF = {
    "configId": Field("ConfigID"),
    "configName": Field("ConfigName"),
    "fileName": Field("File.Name"),
    "fileMode": Field("File.Mode", integer),
    "fileUid": Field("File.UID"),
    "fileGid": Field("File.GID"),
}
MOUNT = {
    "target": Field("Target"),
    "source": Field("Source"),
    "type": Field("Type", one_of("volume", "bind", "tmpfs")),
    "readOnly": Field("ReadOnly", bool),
    "volumeOptions": Field(
        "VolumeOptions",
        {
            "driverName": Field("DriverConfig.Name"),
            "driverOptions": Field("DriverConfig.Options", dict),
            "noCopy": Field("NoCopy", bool),
        },
    ),
}
CONTAINER = {
    "image": Field("Image"),
    "commands": Field("Command", list),
    "args": Field("Args", list),
    "configs": Field("Configs", [CONFIG_REF]),
    "secrets": Field("Secrets", [SECRET_REF]),
    "mounts": Field("Mounts", [MOUNT]),
}
TASK = {
    "containerSpec": Field("ContainerSpec", CONTAINER),
    "placement": Field(
        "Placement", {"constraints": Field("Constraints", list), "maxReplicas": Field("MaxReplicas", integer)}
    ),
    "restartPolicy": Field(
        "RestartPolicy",
        {
            "condition": Field("Condition", one_of("none", "on-failure", "any")),
            "delay": Field("Delay", nanoseconds),
            "window": Field("Window", nanoseconds),
            "maxAttempts": Field("MaxAttempts", integer),
        },
    ),
}
PORT = {
    "targetPort": Field("TargetPort", integer),
    "publishedPort": Field("PublishedPort", integer),
    "protocol": Field("Protocol", one_of("tcp", "udp", "sctp")),
    "publishMode": Field("PublishMode", one_of("ingress", "host")),
    "name": Field("Name"),
}
# update_config and rollback_config: the same fields, except what a failure may do.
UPDATE = {
    "order": Field("Order", one_of("stop-first", "start-first")),
    "parallelism": Field("Parallelism", integer),
    "delay": Field("Delay", nanoseconds),
    "monitor": Field("Monitor", nanoseconds),
    "maxFailureRatio": Field("MaxFailureRatio", ratio),
}
UPDATE_FAILURE = one_of("pause", "continue", "rollback")
ROLLBACK_FAILURE = one_of("pause", "continue")
SERVICE = {
    "name": Field("Name"),
    "labels": Field("Labels", label_list),
    "taskSpec": Field("TaskTemplate", TASK),
    "mode": Field("Mode", {"replicated": Field("Replicated", {"replicas": Field("Replicas", integer)})}),
    "endpointSpec": Field("EndpointSpec", {"ports": Field("Ports", [PORT])}),
    "updateConfig": Field("UpdateConfig", UPDATE | {"failureAction": Field("FailureAction", UPDATE_FAILURE)}),
    "rollbackConfig": Field(
        "RollbackConfig", UPDATE | {"failureAction": Field("FailureAction", ROLLBACK_FAILURE)}
    ),
    # Not sent to Docker: how long `pulumi up` waits for the service to run.
    "convergeConfig": Field(None, {"delay": Field(None), "timeout": Field(None)}),
}


# Tasks that failed (or were rejected) before the rehearsal stops waiting for a
# service: with the 5 s restart delay, about 10-15 s.
FAILED_TASKS_BEFORE_GIVING_UP = 3


class CreatedButFailed(RuntimeError):
    """The resource was made but did not become ready: it belongs in the state."""

    def __init__(self, message: str, created: Created) -> None:
        super().__init__(message)
        self.created = created


class Service:
    """A Swarm service; `pulumi up` waits until its task runs (convergeConfig)."""

    def spec(self, name: str, inputs: dict[str, Any]) -> dict[str, Any]:
        spec = translate(inputs, SERVICE, name)
        container = spec["TaskTemplate"]["ContainerSpec"]
        for ref in container.get("Secrets", []) + container.get("Configs", []):
            _secret_file(ref)
        return spec

    @staticmethod
    def fields(spec: dict[str, Any]) -> dict[str, Any]:
        """The spec as keyword arguments of the SDK's create/update_service."""
        return {
            "task_template": spec["TaskTemplate"],
            "labels": spec.get("Labels"),
            "mode": spec.get("Mode"),
            "update_config": spec.get("UpdateConfig"),
            "rollback_config": spec.get("RollbackConfig"),
            "endpoint_spec": spec.get("EndpointSpec"),
        }

    def create(self, ctx: Context, name: str, inputs: dict[str, Any]) -> Created:
        spec = self.spec(name, inputs)
        made = ctx.client.api.create_service(name=spec.get("Name") or auto_name(name), **self.fields(spec))
        created = Created(made["ID"], {"name": ctx.client.services.get(made["ID"]).name})
        try:
            self.converge(ctx, made["ID"], inputs)
        except Exception as exc:
            # The service exists: it must be in the state for destroy to remove
            # it (and, after it, the secrets it holds), as Pulumi records it.
            raise CreatedButFailed(str(exc), created) from None
        return created

    def update(
        self, ctx: Context, old: Created, old_inputs: dict[str, Any], inputs: dict[str, Any]
    ) -> Created | None:
        if old_inputs.get("name") != inputs.get("name"):
            return None
        spec = self.spec(old.outputs["name"], inputs)
        current = ctx.client.api.inspect_service(old.id)
        # A new task template replaces the task: until Swarm starts its update
        # (UpdateStatus is reset by the update call) the old task still runs,
        # and must not count as the update's.
        # Tasks before this update: their failures (a task killed earlier) are not its.
        earlier = {t["ID"] for t in ctx.client.api.tasks(filters={"service": old.id})}
        stale: set[str] = set()
        if old_inputs.get("taskSpec") != inputs.get("taskSpec"):
            stale = earlier
        ctx.client.api.update_service(
            old.id, current["Version"]["Index"], name=current["Spec"]["Name"], **self.fields(spec)
        )
        self.converge(ctx, old.id, inputs, updated=True, stale=stale, earlier=earlier)
        return Created(old.id, dict(old.outputs))

    def delete(self, ctx: Context, old: Created) -> None:
        _missing_ok(lambda: ctx.client.api.remove_service(old.id))
        # Secrets and volumes are in use until the task's container is gone.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not ctx.client.containers.list(
                all=True, filters={"label": f"com.docker.swarm.service.id={old.id}"}
            ):
                return
            time.sleep(0.3)
        raise TimeoutError(f"the containers of service {old.outputs['name']} did not go away within 60 s")

    @staticmethod
    def converge(
        ctx: Context,
        service_id: str,
        inputs: dict[str, Any],
        updated: bool = False,
        stale: set[str] | frozenset[str] = frozenset(),
        earlier: set[str] | frozenset[str] = frozenset(),
    ) -> None:
        """Wait, as the provider does with convergeConfig, until every replica's
        task runs (tasks not in `stale`) and an update has completed; a paused
        or rolled back update fails."""
        cfg = inputs.get("convergeConfig") or {}
        delay = nanoseconds(cfg.get("delay", "7s")) / 1e9
        timeout = nanoseconds(cfg.get("timeout", "3m")) / 1e9
        deadline = time.monotonic() + timeout
        last = "no task yet"
        wanted = ((inputs.get("mode") or {}).get("replicated") or {}).get("replicas") or 1
        while time.monotonic() < deadline:
            if ctx.stop.is_set():
                raise RuntimeError(f"interrupted while waiting for service {service_id}'s tasks to run")
            service = ctx.client.api.inspect_service(service_id)
            update_state = (service.get("UpdateStatus") or {}).get("State")
            if update_state in ("paused", "rollback_completed", "rollback_paused"):
                # As the provider reports it (terraform-provider-docker's
                # updateFailsAndRollbackConverge test expects "rollback completed"):
                # the update failed, even when Swarm restored the previous spec.
                state = update_state.replace("_", " ")
                raise RuntimeError(
                    f"service update failed, {state}: {service['UpdateStatus'].get('Message')}\n"
                    + Service.log_tail(ctx, service_id)
                )
            tasks = ctx.client.api.tasks(filters={"service": service_id, "desired-state": "running"})
            running = [t for t in tasks if t["Status"]["State"] == "running" and t["ID"] not in stale]
            settled = not updated or update_state in (None, "completed")
            if len(running) >= wanted and settled:
                return
            history = ctx.client.api.tasks(filters={"service": service_id})
            errors = [t["Status"].get("Err") or t["Status"].get("Message") for t in history]
            last = next((e for e in reversed(errors) if e), last)
            # A task that keeps failing (a taken port, a volume that cannot mount, an
            # image that is not there): Swarm says why within seconds, and retrying
            # will not help. Say so now rather than after the converge timeout.
            broken = [
                t
                for t in history
                if t["Status"]["State"] in ("failed", "rejected") and t["ID"] not in earlier
            ]
            giving_up = len(broken) >= FAILED_TASKS_BEFORE_GIVING_UP
            if giving_up and update_state not in ("updating", "rollback_started"):
                raise RuntimeError(
                    f"service {service_id}'s task failed {len(broken)} times; Swarm says: "
                    f"{broken[-1]['Status'].get('Err') or broken[-1]['Status'].get('Message')}\n"
                    + Service.log_tail(ctx, service_id)
                )
            time.sleep(min(delay, 0.5))
        raise TimeoutError(
            f"service {service_id} did not converge within {timeout:.0f} s; last task status: {last}\n"
            + Service.log_tail(ctx, service_id)
        )

    @staticmethod
    def log_tail(ctx: Context, service_id: str, lines: int = 20) -> str:
        """The service's last log lines: the content cache says there why it stopped."""
        try:
            chunks = ctx.client.api.service_logs(service_id, stdout=True, stderr=True, tail=lines)
            return b"".join(chunks).decode(errors="replace")
        except docker.errors.APIError as exc:
            return f"(no service logs: {exc})"


# -- dynamic providers ----------------------------------------------------------


class Dynamic:
    """A Python dynamic provider resource: its own pickled provider does the work.
    As pulumi-python's dynamic provider host does, each provider is unpickled,
    then configure()d with the stack config (every key, namespaced) before any
    other call, and what it writes to stderr is shown (here: logged)."""

    PROJECT = "msr-cache"

    class StderrToLog:
        def __init__(self, ctx: Context) -> None:
            import io

            self.log = ctx.log
            self.stream = io.StringIO()
            self.redirect = contextlib.redirect_stderr(self.stream)

        def __enter__(self) -> None:
            self.redirect.__enter__()

        def __exit__(self, *exc: Any) -> None:
            self.redirect.__exit__(*exc)
            for line in self.stream.getvalue().splitlines():
                if line.strip():
                    self.log(line)

    @staticmethod
    def provider(inputs: dict[str, Any], config: dict[str, Any]) -> Any:
        from pulumi.dynamic import Config, ConfigureRequest

        # The provider the program itself just pickled, unpickled as the engine does.
        provider = dill.loads(base64.b64decode(inputs["__provider"]))  # noqa: S301
        provider.configure(ConfigureRequest(Config(raw_config=dict(config), project_name=Dynamic.PROJECT)))
        return provider

    @staticmethod
    def program_config() -> dict[str, Any]:
        """The running program's stack config. Destroy runs no program: delete
        gets an empty one (the rehearsal's config has no docker: keys anyway, so
        the environment decides, as it does for the engine without them)."""
        from pulumi.runtime.config import CONFIG

        return dict(CONFIG.get())

    @staticmethod
    def props(inputs: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in inputs.items() if k != "__provider"}

    def create(self, ctx: Context, name: str, inputs: dict[str, Any]) -> Created:
        with self.StderrToLog(ctx):
            provider = self.provider(inputs, self.program_config())
            checked = provider.check({}, self.props(inputs))
            if checked.failures:
                raise RuntimeError("; ".join(f.reason for f in checked.failures))
            result = provider.create(checked.inputs)
        return Created(result.id, {**(result.outs or {}), "__provider": inputs["__provider"]})

    def update(
        self, ctx: Context, old: Created, old_inputs: dict[str, Any], inputs: dict[str, Any]
    ) -> Created | None:
        with self.StderrToLog(ctx):
            provider = self.provider(inputs, self.program_config())
            olds = self.props(old.outputs)
            diff = provider.diff(old.id, olds, self.props(inputs))
            if diff.replaces:
                return None
            if diff.changes is False:
                return old
            result = provider.update(old.id, olds, self.props(inputs))
        return Created(old.id, {**(result.outs or {}), "__provider": inputs["__provider"]})

    def delete(self, ctx: Context, old: Created) -> None:
        # The provider recorded with the resource, as the engine runs it.
        with self.StderrToLog(ctx):
            self.provider(old.outputs, {}).delete(old.id, self.props(old.outputs))

    def read(self, ctx: Context, old: Created) -> Created | None:
        """`pulumi refresh`: what the provider sees now; None when it is gone."""
        with self.StderrToLog(ctx):
            result = self.provider(old.outputs, self.program_config()).read(old.id, self.props(old.outputs))
        if result.id is None:
            return None
        outputs = {**(result.outs or {}), "__provider": old.outputs["__provider"]}
        return Created(result.id, outputs, set(old.secret_outputs))


HANDLERS: dict[str, Handler] = {
    "tls:index/privateKey:PrivateKey": PrivateKey(),
    "tls:index/selfSignedCert:SelfSignedCert": SelfSignedCert(),
    "tls:index/certRequest:CertRequest": CertRequest(),
    "tls:index/locallySignedCert:LocallySignedCert": LocallySignedCert(),
    "random:index/randomPassword:RandomPassword": RandomPassword(),
    "docker:index/secret:Secret": SwarmSecret(),
    "docker:index/serviceConfig:ServiceConfig": SwarmConfig(),
    "docker:index/volume:Volume": Volume(),
    "docker:index/service:Service": Service(),
}
DYNAMIC_PREFIX = "pulumi-python:dynamic"


def handler_for(typ: str) -> Handler:
    if typ.startswith(DYNAMIC_PREFIX):
        return Dynamic()
    if typ not in HANDLERS:
        raise UnmappedInput(f"resource type {typ} is not mapped by the rehearsal; add a handler")
    return HANDLERS[typ]
