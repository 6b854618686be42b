"""Barriers of all processes through JAX's coordination service.

A collective barrier (`multihost_utils.sync_global_devices`, a broadcast) is an op on the
devices: on CPUs its gloo connection gives up after 30 s, so a process that is still compiling,
scoring COCO or writing data while the others wait makes the run fail. This barrier waits as
long as the slowest process needs, and still fails when a process dies (the service notices).
"""

import jax

TIMEOUT_S = 3600


def wait_for_all(name: str) -> None:
  """Returns once every process has called it with `name` (unique within the run)."""
  if jax.process_count() == 1:
    return
  from orbax.checkpoint import multihost
  multihost.sync_global_processes(name, timeout=TIMEOUT_S,
                                  processes=set(range(jax.process_count())))
