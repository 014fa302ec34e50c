"""launch/: the local multi-process launcher trains (and resumes) the tiny model with two JAX
processes; the SLURM and TPU scripts run the stage configs that exist, with XLA flags that XLA
knows, on every worker. Cluster tools (srun, gcloud) are replaced by stubs that record their
arguments."""

import importlib
import os
import shlex
import stat
import subprocess
import sys
import time

import pytest

from tests import tiny_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(REPO, "launch")
STAGES = ("stage1_pretrain", "stage1_finetune", "stage2", "stage3")


def stub(path, body: str) -> str:
    with open(path, "w") as f:
        f.write("#!/bin/bash\n" + body)
    os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)
    return str(path)


def recorded_argv(file) -> list[str]:
    with open(file) as f:
        return f.read().split("\0")[:-1]


@pytest.fixture
def bin_dir(tmp_path):
    """A PATH entry whose srun / gcloud / tgg-train / tgg-eval write their argv (NUL-separated)
    and environment of interest to files in the same folder."""
    d = tmp_path / "bin"
    d.mkdir()
    stub(d / "srun", f'printf "%s\\0" "$@" > {d}/srun.argv\necho "$XLA_FLAGS" > {d}/xla_flags\n')
    stub(d / "gcloud", f'if [[ "$4" == describe ]]; then echo 10.1.2.3; exit; fi\n'
                       f'printf "%s\\0" "$@" > {d}/gcloud.argv\n')
    for tool in ("tgg-train", "tgg-eval"):
        stub(d / tool, f'printf "%s\\0" "$PWD" "$JAX_COORDINATOR_ADDRESS" {tool} "$@" > {d}/remote.argv\n')
    return d


def with_path(bin_dir, **env) -> dict:
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", **env}


@pytest.mark.parametrize("script", ["slurm_gpu.sbatch", "tpu_vm.sh", "local_multiprocess.sh"])
def test_scripts_parse(script):
    out = subprocess.run(["bash", "-n", os.path.join(LAUNCH, script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def check_train_command(argv: list[str], stage: str, size: str, workdir: str) -> None:
    """tgg-train --config configs/<stage>.py:<size> --workdir <workdir> ..., with a config file
    that exists and accepts the size."""
    assert argv[:3] == ["tgg-train", "--config", f"configs/{stage}.py:{size}"]
    assert argv[3:5] == ["--workdir", workdir]
    assert os.path.isfile(os.path.join(REPO, "configs", f"{stage}.py"))
    config = importlib.import_module(f"configs.{stage}").get_config(size)
    assert config.model.preset == size


@pytest.mark.parametrize("stage", STAGES)
def test_sbatch_runs_each_stage_config(bin_dir, stage):
    out = subprocess.run(["bash", os.path.join(LAUNCH, "slurm_gpu.sbatch"), "--config.lr=1e-5"], cwd=REPO,
                         env=with_path(bin_dir, STAGE=stage, SIZE="1.5b"), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    argv = recorded_argv(bin_dir / "srun.argv")
    assert argv[0] == "--kill-on-bad-exit=1"
    check_train_command(argv[1:], stage, "1.5b", f"runs/{stage}")
    assert argv[-1] == "--config.lr=1e-5"


def test_sbatch_runs_a_sharded_eval(bin_dir):
    out = subprocess.run(["bash", os.path.join(LAUNCH, "slurm_gpu.sbatch")], cwd=REPO,
                         env=with_path(bin_dir, EVAL="rec.py:refcoco", CHECKPOINT="ckpt"),
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    argv = recorded_argv(bin_dir / "srun.argv")
    assert argv[1:] == ["tgg-eval", "--config", "configs/eval/rec.py:refcoco", "--checkpoint", "ckpt",
                        "--workdir", "runs/eval/rec_refcoco"]
    assert importlib.import_module("configs.eval.rec").get_config("refcoco").splits == ("val", "testA", "testB")


def test_sbatch_refuses_an_unknown_stage(bin_dir):
    out = subprocess.run(["bash", os.path.join(LAUNCH, "slurm_gpu.sbatch")], cwd=REPO,
                         env=with_path(bin_dir, STAGE="stage9"), capture_output=True, text=True)
    assert out.returncode == 2 and "no configs/stage9.py" in out.stderr
    assert not (bin_dir / "srun.argv").exists()


def test_sbatch_xla_flags_are_known_to_xla(bin_dir):
    """XLA aborts on a flag it does not know (flags get renamed and removed between releases)."""
    subprocess.run(["bash", os.path.join(LAUNCH, "slurm_gpu.sbatch")], cwd=REPO, check=True,
                   env=with_path(bin_dir, XLA_FLAGS=""), capture_output=True)
    flags = (bin_dir / "xla_flags").read_text().strip()
    assert "--xla_gpu_enable_latency_hiding_scheduler=true" in flags
    check = "import jax; jax.numpy.zeros(2).block_until_ready()"
    ok = subprocess.run([sys.executable, "-c", check], env={**os.environ, "XLA_FLAGS": flags},
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr[-2000:]
    bad = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "XLA_FLAGS": flags + " --xla_gpu_no_such_flag=true"})
    assert bad.returncode != 0  # the check above can fail


@pytest.mark.parametrize("stage", STAGES)
def test_tpu_script_runs_the_stage_on_every_worker(bin_dir, tmp_path, stage):
    mixture = "--config.data.mixture=(('a','b',1.0),)"  # quotes, commas and parentheses survive ssh
    out = subprocess.run(["bash", os.path.join(LAUNCH, "tpu_vm.sh"), "train", mixture],
                         env=with_path(bin_dir, TPU_NAME="tgg-v5p-64", ZONE="europe-west4-b", STAGE=stage,
                                       SIZE="7b", WORKDIR="/mnt/runs/x y"), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    argv = recorded_argv(bin_dir / "gcloud.argv")
    assert argv[:5] == ["compute", "tpus", "tpu-vm", "ssh", "tgg-v5p-64"]
    assert "--worker=all" in argv and "--zone=europe-west4-b" in argv
    remote = next(a for a in argv if a.startswith("--command="))[len("--command="):]
    # What each worker's shell does with the command: cd into the checkout, then the trainer.
    home = tmp_path / "home"
    (home / "tgg-jax").mkdir(parents=True)
    subprocess.run(["bash", "-c", remote], env=with_path(bin_dir, HOME=str(home)), cwd=home, check=True)
    cwd, coordinator, *command = recorded_argv(bin_dir / "remote.argv")
    assert cwd == str(home / "tgg-jax") and coordinator == "10.1.2.3:8476"
    check_train_command(command, stage, "7b", "/mnt/runs/x y")
    assert command[-1] == mixture


def test_tpu_script_eval(bin_dir, tmp_path):
    env = with_path(bin_dir, TPU_NAME="t", ZONE="z", EVAL="pope.py", CHECKPOINT="/mnt/c", COORDINATOR="h:1")
    subprocess.run(["bash", os.path.join(LAUNCH, "tpu_vm.sh"), "eval", "--config.limit=10"], env=env, check=True)
    remote = recorded_argv(bin_dir / "gcloud.argv")[-1][len("--command="):]
    (tmp_path / "tgg-jax").mkdir()
    subprocess.run(["bash", "-c", remote], env=with_path(bin_dir), cwd=tmp_path, check=True)
    _, coordinator, *command = recorded_argv(bin_dir / "remote.argv")
    assert coordinator == "h:1"
    assert command == ["tgg-eval", "--config", "configs/eval/pope.py", "--checkpoint", "/mnt/c",
                       "--workdir", "runs/eval/pope", "--config.limit=10"]


# ---- local_multiprocess.sh ------------------------------------------------------------------

FAKE_PYTHON = """\
# Stands in for python: `-c` (the port picker) runs the real one; `-m MODULE ARGS` records ARGS
# and exits with status $FAIL_STATUS if this is process $FAIL_ID, after $SLEEP seconds otherwise.
if [[ "$1" == -c ]]; then exec {python} "$@"; fi
for a in "$@"; do [[ "$a" == --process_id=* ]] && id=${{a#--process_id=}}; done
printf "%s\\0" "$@" > "$RECORD/$id.argv"
if [[ "$id" == "${{FAIL_ID:-}}" ]]; then sleep 0.5; exit "$FAIL_STATUS"; fi
exec sleep "${{SLEEP:-0}}"
"""


@pytest.fixture
def fake_python(tmp_path):
    (tmp_path / "record").mkdir()
    return stub(tmp_path / "python", FAKE_PYTHON.format(python=shlex.quote(sys.executable)))


def test_local_launcher_starts_n_processes_with_one_coordinator(fake_python, tmp_path):
    env = {**os.environ, "PYTHON": fake_python, "RECORD": str(tmp_path / "record"),
           "LOG_DIR": str(tmp_path / "logs")}
    out = subprocess.run(["bash", os.path.join(LAUNCH, "local_multiprocess.sh"), "3", "--config",
                          "configs/tiny.py", "--workdir", "w d"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    argvs = [recorded_argv(tmp_path / "record" / f"{i}.argv") for i in range(3)]
    coordinators = {a[6] for a in argvs}
    assert len(coordinators) == 1
    port = int(coordinators.pop().removeprefix("--coordinator_address=127.0.0.1:"))
    assert 0 < port < 65536
    for i, argv in enumerate(argvs):
        assert argv == ["-m", "tgg_jax.train.main", "--config", "configs/tiny.py", "--workdir", "w d",
                        f"--coordinator_address=127.0.0.1:{port}", "--num_processes=3", f"--process_id={i}"]


def test_local_launcher_fails_fast_when_a_process_fails(fake_python, tmp_path):
    env = {**os.environ, "PYTHON": fake_python, "RECORD": str(tmp_path / "record"), "FAIL_ID": "1",
           "FAIL_STATUS": "7", "SLEEP": "600", "PORT": "12345", "MODULE": "tgg_jax.evals.main"}
    start = time.time()
    out = subprocess.run(["bash", os.path.join(LAUNCH, "local_multiprocess.sh"), "2"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 7
    assert "process 1 exited with status 7" in out.stderr
    assert time.time() - start < 30  # process 0 (sleeping 600 s) was stopped
    assert recorded_argv(tmp_path / "record" / "0.argv")[:3] == ["-m", "tgg_jax.evals.main",
                                                                  "--coordinator_address=127.0.0.1:12345"]


def test_local_launcher_usage():
    out = subprocess.run(["bash", os.path.join(LAUNCH, "local_multiprocess.sh"), "two"], capture_output=True,
                         text=True)
    assert out.returncode == 2 and "usage" in out.stderr


# The real thing: two JAX processes x two simulated CPU devices each, the tiny model (small
# overrides as in tests/train/test_trainer.py), a global batch of 8 over the 4-device data axis.

def tiny_args(data_dir, workdir, steps) -> list[str]:
    return ["--cpu_devices=2", *tiny_run.cli_args(data_dir, workdir, steps, **{"checkpoint.every_steps": 1000})]


def launch_two(data_dir, workdir, steps, log_dir) -> str:
    out = subprocess.run(["bash", os.path.join(LAUNCH, "local_multiprocess.sh"), "2",
                          *tiny_args(data_dir, workdir, steps)], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "LOG_DIR": log_dir, "PYTHON": sys.executable}, timeout=600)
    logs = out.stdout + out.stderr
    assert out.returncode == 0, logs[-4000:] + open(os.path.join(log_dir, "process_1.log")).read()[-4000:]
    return logs


def test_two_processes_train_the_tiny_model(data_dir, tmp_path):
    workdir = str(tmp_path / "w")
    logs = launch_two(data_dir, workdir, 1, str(tmp_path / "logs"))
    assert "[step 1/1" in logs
    saved = os.listdir(os.path.join(workdir, "checkpoints", "1", "data_iter"))
    assert sorted(f for f in saved if f.startswith("process_")) == ["process_0-of-2.json", "process_1-of-2.json"]


@pytest.mark.slow
def test_two_processes_resume_from_the_checkpoint_then_evaluate_sharded(data_dir, tmp_path):
    workdir = str(tmp_path / "w")
    first = launch_two(data_dir, workdir, 2, str(tmp_path / "logs1"))
    assert "[step 2/2" in first
    again = launch_two(data_dir, workdir, 4, str(tmp_path / "logs2"))
    assert "resumed from step 2" in again
    assert "[step 3/4" in again and "[step 4/4" in again and "[step 1/4" not in again
    assert sorted(d for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit()) == ["2", "4"]
    # tgg-eval through the same launcher: each process answers its half of the split.
    evaldir = str(tmp_path / "eval")
    out = subprocess.run(["bash", os.path.join(LAUNCH, "local_multiprocess.sh"), "2", "--config",
                          "configs/eval/shapes.py:tiny", "--checkpoint", os.path.join(workdir, "checkpoints", "4"),
                          "--workdir", evaldir, "--config.data_dir", data_dir, "--config.limit=8",
                          "--config.max_new_tokens=4", "--cpu_devices=1"], cwd=REPO, capture_output=True,
                         text=True, env={**os.environ, "MODULE": "tgg_jax.evals.main", "LOG_DIR": str(tmp_path / "logs3"),
                              "PYTHON": sys.executable}, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    lines = {name: len(open(os.path.join(evaldir, "predictions", name)).readlines())
             for name in ("test.jsonl", "test.process_0.jsonl", "test.process_1.jsonl")}
    assert lines == {"test.jsonl": 8, "test.process_0.jsonl": 4, "test.process_1.jsonl": 4}
    assert os.path.isfile(os.path.join(evaldir, "metrics.json"))
