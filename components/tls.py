"""The cache's TLS private key and certificate.

Three modes (`msr-cache:tls.mode`):
- selfSigned: pulumi-tls makes a key and a self-signed certificate;
- caSigned:   pulumi-tls makes a key and a certificate signed by the
              operator's internal CA (CertRequest + LocallySignedCert);
- provided:   the operator's own certificate, key and intermediate chain,
              already checked by settings.py, are passed through.

In every mode the outputs are what goes into the Swarm secrets: `cert_pem` is
the leaf followed by any intermediate (as the MSR docs ask for
cache.cert.pem) and `key_pem` is a Pulumi secret.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pulumi
import pulumi_tls as tls

from components import certs, rotation
from components.settings import TlsSettings, is_fqdn, is_ip

# What a TLS server certificate needs; snake_case is the Python SDK's spelling.
SERVER_USES = ["key_encipherment", "digital_signature", "server_auth"]


def subject_alt_names(
    cache_host: str, cache_nodes: list[str], extra_dns: list[str], extra_ips: list[str]
) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) for the certificate, without duplicates.

    cacheHost is what clients dial. The node's own FQDN is added too, because
    a cache published on a host port is often reached by the node's name
    (the MSR docs require it in that case). A bare node hostname is left out:
    it resolves only inside its own network.
    """
    dns: list[str] = []
    ips: list[str] = []
    for host in [cache_host, *extra_dns, *extra_ips]:
        target = ips if is_ip(host) else dns
        if host.lower() not in (t.lower() for t in target):
            target.append(host)
    for node in cache_nodes:
        if is_fqdn(node) and node.lower() not in (d.lower() for d in dns):
            dns.append(node)
    return dns, ips


@dataclass
class CacheTlsArgs:
    settings: TlsSettings
    """The tls settings (mode and material)."""
    cache_host: str
    """Name clients use; the certificate's first SAN and its common name."""
    cache_nodes: list[str]
    """Swarm node hostnames; each added as a SAN when it is an FQDN (a task
    published on a host port is often reached by its node's name)."""
    # Looked up at call time so tests can move the clock (rotation.utcnow).
    now: dt.datetime = field(default_factory=lambda: rotation.utcnow())
    """When this run happens: picks the rotation period (tls.rotateEvery)."""


class CacheTls(pulumi.ComponentResource):
    """Key and certificate the cache serves."""

    cert_pem: pulumi.Output[str]
    """Certificate for cache.cert.pem: the leaf, then any intermediate."""
    key_pem: pulumi.Output[str]
    """Unencrypted private key for cache.key.pem (secret)."""
    next_rotation: pulumi.Output[str | None]
    """When the planned rotation period ends (ISO 8601), or None without tls.rotateEvery."""

    def __init__(self, name: str, args: CacheTlsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("msrcache:index:CacheTls", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        s = args.settings
        dns, ips = subject_alt_names(args.cache_host, args.cache_nodes, s.dns_names, s.ip_addresses)
        subject = {"common_name": args.cache_host, "organization": "MSR content cache"}

        if s.mode == "provided":
            assert s.cert_pem and s.key_pem  # guaranteed by settings validation
            bundle = s.cert_pem.strip() + "\n"
            if s.chain_pem:
                bundle += s.chain_pem.strip() + "\n"
            self.cert_pem = pulumi.Output.from_input(bundle)
            self.key_pem = pulumi.Output.secret(s.key_pem.get_secret_value())
        else:
            # A new rotation period replaces the key; the certificate and the
            # Swarm secrets follow from it, and the service is updated in place.
            trigger = rotation.trigger(s.rotate_every, args.now) if s.rotate_every else None
            key = tls.PrivateKey(
                f"{name}-key",
                algorithm=s.key_algorithm,
                rsa_bits=s.rsa_bits if s.key_algorithm == "RSA" else None,
                # pulumi-tls defaults to P224, which clients reject; P256 is universal.
                ecdsa_curve="P256" if s.key_algorithm == "ECDSA" else None,
                opts=pulumi.ResourceOptions(parent=self, replacement_trigger=trigger),
            )
            self.key_pem = pulumi.Output.secret(key.private_key_pem)
            if s.mode == "selfSigned":
                cert = tls.SelfSignedCert(
                    f"{name}-cert",
                    private_key_pem=key.private_key_pem,
                    subject=tls.SelfSignedCertSubjectArgs(**subject),
                    dns_names=dns,
                    ip_addresses=ips,
                    validity_period_hours=s.validity_hours,
                    # pulumi-tls replaces the certificate (same key) on the first
                    # `pulumi up` in this window: planned renewal, on by default.
                    # An in-place change for deployed stacks, not a replacement.
                    early_renewal_hours=s.effective_renew_before_hours,
                    allowed_uses=SERVER_USES,
                    opts=child,
                )
                self.cert_pem = cert.cert_pem
            else:
                assert s.ca_cert_pem and s.ca_key_pem  # guaranteed by settings validation
                csr = tls.CertRequest(
                    f"{name}-csr",
                    private_key_pem=key.private_key_pem,
                    subject=tls.CertRequestSubjectArgs(**subject),
                    dns_names=dns,
                    ip_addresses=ips,
                    opts=child,
                )
                signed = tls.LocallySignedCert(
                    f"{name}-cert",
                    cert_request_pem=csr.cert_request_pem,
                    ca_cert_pem=s.ca_cert_pem,
                    ca_private_key_pem=pulumi.Output.secret(s.ca_key_pem.get_secret_value()),
                    validity_period_hours=s.validity_hours,
                    early_renewal_hours=s.effective_renew_before_hours,
                    allowed_uses=SERVER_USES,
                    opts=child,
                )
                ca = certs.load_certificates(s.ca_cert_pem)[0]
                if ca.issuer != ca.subject:
                    # Signed by an intermediate: clients that trust only the root
                    # need it in the served chain, so append it as the docs say.
                    ca_pem = s.ca_cert_pem.strip() + "\n"
                    self.cert_pem = signed.cert_pem.apply(lambda leaf: leaf.strip() + "\n" + ca_pem)
                else:
                    self.cert_pem = signed.cert_pem

        due = rotation.next_rotation(s.rotate_every, args.now).isoformat() if s.rotate_every else None
        self.next_rotation = pulumi.Output.from_input(due)
        self.register_outputs(
            {"certPem": self.cert_pem, "keyPem": self.key_pem, "nextRotation": self.next_rotation}
        )
