"""Benchmark tools: a simulated WAN link (`bench.wan`) and the cost of evaluating the
program under Pulumi's mocks (`bench.program_cost`)."""
