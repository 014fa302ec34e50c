"""notebooks/: both notebooks run top to bottom on a freshly trained tiny checkpoint (found through
TGG_CHECKPOINT, latest step) and draw their figures; the repository copies hold no outputs."""

import asyncio
import os
import subprocess
import sys

import jax
import nbformat
import pytest
from nbclient import NotebookClient

from tests import tiny_run
from tgg_jax.train import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(REPO, "notebooks")
NAMES = ("demo.ipynb", "attention_maps.ipynb")


def ensure_kernel() -> None:
    """A `python3` kernel spec for nbclient (installed for this user only if none is found)."""
    from jupyter_client.kernelspec import KernelSpecManager
    if "python3" not in KernelSpecManager().find_kernel_specs():
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--user"], check=True)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """WORKDIR/checkpoints of a 2-step tiny run (steps 1 and 2 kept) with small model overrides."""
    from tgg_jax.data.builders.tgg_shapes import ensure_built
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    ensure_built(data_dir, "tiny")
    # Objects pooled 2 x 2 as in the tiny config (56 px: 4 x 4 patches); one device compiles
    # fastest, and the notebooks restore onto their own mesh.
    c = tiny_run.small_config(data_dir, **{"model.object_pool": 2, "total_steps": 2, "checkpoint.every_steps": 1,
                                           "checkpoint.async_save": False, "eval_every_steps": 0,
                                           "mesh.data": 1})
    workdir = str(tmp_path_factory.mktemp("tiny_run"))
    trainer.train(trainer.setup(c, workdir, devices=jax.devices()[:1]))
    return os.path.join(workdir, "checkpoints")


@pytest.fixture(scope="module")
def executed(checkpoints):
    """Both notebooks executed at once (two kernels), with TGG_CHECKPOINT pointing at the run."""
    ensure_kernel()
    notebooks = {name: nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4) for name in NAMES}
    os.environ["TGG_CHECKPOINT"] = checkpoints  # the kernels inherit it
    try:
        async def run_all():
            await asyncio.gather(*(NotebookClient(nb, kernel_name="python3", timeout=300,
                                                  resources={"metadata": {"path": NOTEBOOKS}}).async_execute()
                                   for nb in notebooks.values()))
        asyncio.run(run_all())
    finally:
        del os.environ["TGG_CHECKPOINT"]
    return notebooks


def outputs(nb, kind: str) -> list:
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs if o.output_type == kind]


def printed(nb) -> str:
    return "".join(o.text for o in outputs(nb, "stream") if o.name == "stdout")


@pytest.mark.parametrize("name, figures", [("demo.ipynb", 2), ("attention_maps.ipynb", 2)])
def test_notebook_runs_and_draws(executed, checkpoints, name, figures):
    nb = executed[name]
    assert not outputs(nb, "error")
    images = [o for o in outputs(nb, "display_data") if "image/png" in o.data]
    assert len(images) == figures
    # TGG_CHECKPOINT names a run's checkpoints/ directory: its latest step is loaded.
    assert printed(nb).startswith(os.path.join(checkpoints, "2") + ":")


def test_demo_asks_every_kind_of_question(executed):
    text = printed(executed["demo.ipynb"])
    assert text.count("Describe the region [") == 6 and text.count("truth:") == 6


def test_attention_notebook_maps_three_representations(executed):
    text = printed(executed["attention_maps.ipynb"])
    for kind in ("coordinates: 'Output the coordinate of", "text: 'Describe the region",
                 "object image: 'Which shape is shown in <object>?'"):
        assert kind in text


@pytest.mark.parametrize("name", NAMES)
def test_stored_notebooks_have_no_outputs(name):
    nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)
    assert nb.metadata.kernelspec.name == "python3"
