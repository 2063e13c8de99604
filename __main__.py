"""msr-cache: an MSR content cache on Docker Swarm, one per stack.

Reads and validates the stack's `msr-cache:` settings (every problem reported
before anything is created), builds the cache, and exports what an operator
needs to register it with MSR and to check it.
"""

import pulumi

from components import certs
from components.cache import MsrCache, MsrCacheArgs
from components.msr_ca import resolve_msr_ca
from components.settings import load_settings

settings = load_settings()
msr_ca = resolve_msr_ca(settings)

cache = MsrCache(
    "msr-cache",
    MsrCacheArgs(
        settings=settings,
        stack=pulumi.get_stack(),
        msr_ca_pem=msr_ca,
    ),
)

pulumi.export("cacheUrl", cache.cache_url)
pulumi.export("upstream", cache.upstream)
pulumi.export("certificatePem", cache.certificate_pem)
pulumi.export("certificateSha256", cache.certificate_sha256)
pulumi.export("certificateNotAfter", cache.certificate_not_after)
# With tls.rotateEvery: the first `pulumi up` after this replaces key and certificate.
pulumi.export("nextRotation", cache.next_rotation)
pulumi.export("serviceName", cache.service_name)
pulumi.export("node", cache.node)
pulumi.export("label", cache.label)
# MSR's id of the cache's registration (None with register: false).
pulumi.export("registrationId", cache.registration_id)
# Compare with MSR's CA before trusting a fetched one (fetchMsrCa).
pulumi.export("msrCaSha256", certs.summarize(msr_ca).sha256 if msr_ca else None)
