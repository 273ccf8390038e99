"""Load runs: the sessions are Locust users in processes of their own (Locust runs on gevent,
which must never enter the harness's asyncio process). ``users.py`` is the Locust file,
``locust.py`` starts and stops Locust, ``resources.py`` samples the server (the run is
``harness.run.load``; its benchmark: ``benchmarks/load.py``). Nothing here imports ``users.py``.
"""
