"""The msr-cache policy pack (PulumiPolicy.yaml). The CLI runs this directory's __main__.py
with runpy and never imports it as a package; this file only gives its modules a package
name, policy.*, so that mypy does not take policy/__main__.py for the program's __main__.py
and the tests can import policy.msrcache_policies."""
