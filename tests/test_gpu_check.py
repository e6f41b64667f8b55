"`make gpu-check` (bench/gpu_check.sh): refuses plainly without a GPU; its limits and summary table work (run on the CPU)."
import os, subprocess, sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / 'bench' / 'gpu_check.sh'


def run_check(tmp_path, **env):
    env = {**os.environ, 'PYTHON': sys.executable, 'GPU_CHECK_OUT': str(tmp_path / 'logs'), **env}
    return subprocess.run(['bash', str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(torch.cuda.is_available(), reason='this machine has a CUDA GPU: the check would run')
def test_without_a_gpu_it_says_so_and_exits_3(tmp_path):
    res = run_check(tmp_path)
    assert res.returncode == 3, res.stdout + res.stderr
    assert 'no CUDA GPU on this machine' in res.stdout and 'nothing was run' in res.stdout
    assert not (tmp_path / 'logs').exists()


def test_a_step_past_its_limit_is_stopped_and_the_table_still_comes(tmp_path):
    # the overhead benchmark takes far longer than 3 s on any machine: it is interrupted, the table says TIMEOUT
    res = run_check(tmp_path, GPU_CHECK_ALLOW_CPU='1', GPU_CHECK_STEPS='overhead time_to_acc', LIMIT_overhead='3',
                    GPU_CHECK_TOTAL='17')
    out = res.stdout
    assert res.returncode == 1, out + res.stderr
    rows = [l for l in out.splitlines() if l.startswith('| overhead') or l.startswith('| time_to_acc')]
    assert len(rows) == 2 and 'TIMEOUT(3s)' in rows[0], out
    assert 'SKIPPED' in rows[1] and 'no time left' in rows[1], out   # under 15 s of the 17 s total are left for it
    assert (tmp_path / 'logs' / 'overhead.log').is_file() and 'logs in' in out
