"""The project's benchmarks, run by ``connchaos bench NAME``: they print figures and are not
part of the library (nothing under ``harness/`` imports them but the CLI's ``bench``).

Modules, one per ``bench`` subcommand: ``proxy`` (the built-in proxy against direct loopback,
with ``proxy_upstream`` its upstream server process), ``sockdiag`` (one socket-table sample
at 10,000 connections, against pyroute2's reader), ``load`` (two load runs at full size).
Each has a ``main(argv)`` returning the exit status.
"""
