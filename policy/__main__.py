"""The msr-cache policy pack: `pulumi preview --policy-pack policy` (see msrcache_policies.py).

The CLI runs this directory with runpy, so msrcache_policies is imported from here.
"""

from msrcache_policies import POLICIES
from pulumi_policy import EnforcementLevel, PolicyPack

PolicyPack(
    name="msr-cache",
    policies=list(POLICIES),
    enforcement_level=EnforcementLevel.MANDATORY,
)
