"""`make rehearse`: a stack's real program applied to the local multi-node swarm.

An operator tool, not a test: the applier (the engine imitation in engine.py,
extended to create each resource for real), the MSR and content-cache stand-ins
and their images (images/), the local swarm's description (localswarm.py), and
the command (`python -m rehearsal up|down`). The tests and the benchmark use it;
it imports nothing from tests/.
"""
