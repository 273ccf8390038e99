"""The suite's fixtures and helpers ship as harness.testing (tests import them from there):
the lab and docker gates, the leftover check, the results-schema check and the lab/docker
markers."""

pytest_plugins = ["harness.testing"]
