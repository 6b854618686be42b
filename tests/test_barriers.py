"""barriers: two processes over loopback, one of them 40 s late to a collective it shares."""

import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Process 1 arrives 40 s after process 0 at the first run of a compiled all-device sum: without
# the barrier, process 0's gloo context waits 30 s for process 1's address and fails
# ("GetKeyValue() timed out"), as a training step did when one process compiled slower.
WORKER = """
import sys, time
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
port, pid = sys.argv[1], int(sys.argv[2])
jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}', num_processes=2,
                           process_id=pid)
from fcos_jax import barriers
mesh = Mesh(np.array(jax.devices()), ('d',))
x = jax.make_array_from_process_local_data(NamedSharding(mesh, P('d')),
                                           np.full((jax.local_device_count(),), pid + 1.0))
total = jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, P())).lower(x).compile()
if pid == 1:
  time.sleep(40)
barriers.wait_for_all('compiled')
print('sum', float(total(x)), flush=True)
"""


def test_a_late_process_is_waited_for_beyond_gloos_30_s():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2', PYTHONPATH=ROOT)
  procs = [subprocess.Popen([sys.executable, '-c', WORKER, str(port), str(i)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  logs = [p.communicate(timeout=300)[0] for p in procs]
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
    assert 'sum 6.0' in log, log[-3000:]  # 2 devices x 1.0 + 2 devices x 2.0
