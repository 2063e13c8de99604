"""msr-cache: MSR content caches on Docker Swarm, one or several per stack.

Reads and validates the stack's `msr-cache:` settings (every problem reported
before anything is created), builds each cache (parents before the caches
chained to them), and exports what an operator needs to check them.
"""

import pulumi

from components import certs
from components.caches import build_caches, export_all
from components.gc_tuning import tune_for_program
from components.msr_ca import resolve_msr_ca
from components.settings import load_settings

# Before the first resource: see components/gc_tuning.py for the measurement.
tune_for_program()
settings = load_settings()
# MSR's address and CA are the stack's, the same for every cache.
msr_ca = resolve_msr_ca(settings.caches[0])

caches = build_caches(settings, pulumi.get_stack(), msr_ca)

export_all(caches)
# Compare with MSR's CA before trusting a fetched one (fetchMsrCa).
pulumi.export("msrCaSha256", certs.summarize(msr_ca).sha256 if msr_ca else None)
