"""Grain worker processes exit with the process that started them, even one killed with SIGKILL
(which runs no cleanup): orphaned workers would keep their memory until someone finds them."""

import os
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = """
import os, sys, time
from tests.data.pipeline_testdata import BUCKETS, READ, SPEC, shape_records, tokenizer
from tgg_jax.data import pipeline
it = pipeline.make_train_iterator([("shapes", "train", 1.0)], tokenizer=tokenizer(), spec=SPEC,
                                  batch_size=2, seed=0, buckets=BUCKETS, read_options=READ,
                                  sources={("shapes", "train"): list(shape_records())},
                                  shard_index=0, shard_count=1, worker_count=2, prefetch=1)
next(it)
print("ready", flush=True)
time.sleep(600)
"""


def _workers(parent: int) -> list[int]:
    """Live (not zombie) processes started by `parent` through multiprocessing's spawn."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if int(fields[1]) == parent and fields[0] != "Z" and b"spawn_main" in cmdline:
            found.append(int(pid))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_workers_exit_when_the_trainer_is_killed():
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONPATH": REPO})
    try:
        assert proc.stdout.readline().strip() == "ready"
        workers = _workers(proc.pid)
        assert len(workers) == 2
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 20
        while time.time() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.2)
        left = [p for p in workers if _alive(p)]
        for pid in left:  # never leave them behind, whatever the outcome
            os.kill(pid, signal.SIGKILL)
        assert not left, f"Grain workers {left} outlived their parent"
    finally:
        if proc.poll() is None:
            proc.kill()
