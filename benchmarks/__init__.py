"""Benchmarks for ripl against Cedar (cedarpy), Casbin (pycasbin) and a naive loop.

The workload is generated once, in a neutral form (`benchmarks.workload`), and
translated for each engine (`benchmarks.peers`, `benchmarks.ripl_peer`), so every
engine decides the same requests under the same rules. `python -m benchmarks`
runs the harness in `benchmarks.run`.
"""

from __future__ import annotations
