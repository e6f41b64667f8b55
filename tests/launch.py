"""Running Python in a child process for the tests: `run` (one process) and `torchrun` (2 processes under
torch.distributed.run on a free port), with one OpenMP thread per process and matplotlib's file backend."""
import os, socket, subprocess, sys


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def run(cmd, **kw):
    "`python *cmd` in a child process; its CompletedProcess, output captured as text."
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MPLBACKEND': 'Agg', **(kw.pop('env', None) or {})}
    return subprocess.run([sys.executable, *map(str, cmd)], capture_output=True, text=True, env=env, timeout=300, **kw)

def torchrun(*args, env=None):
    "`torchrun --nproc-per-node 2 *args` on a free port; its CompletedProcess."
    return run(['-m', 'torch.distributed.run', '--nproc-per-node', '2', '--master-port', free_port(), *args], env=env)
