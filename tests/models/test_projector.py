"""Projector against LLaVA's mm_projector layout: torch nn.Sequential(Linear, GELU(), Linear)."""

import numpy as np
import pytest
import torch
from flax import nnx
from jax.sharding import PartitionSpec as P

from tgg_jax import sharding
from tgg_jax.convert.mapping import export_tensors, import_tensors, load_into
from tgg_jax.convert.projector_map import PROJECTOR_TABLE
from tgg_jax.models.naming import tgg_name
from tgg_jax.models.projector import Projector


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(48, 32), torch.nn.GELU(), torch.nn.Linear(32, 32)).eval()


@pytest.fixture(scope="module")
def state(reference):
    return {k: v.numpy() for k, v in reference.state_dict().items()}


@pytest.fixture(scope="module")
def projector(state):
    proj = nnx.eval_shape(lambda: Projector(48, 32, rngs=nnx.Rngs(0)))
    load_into(proj, import_tensors(state.__getitem__, PROJECTOR_TABLE, num_layers=0))
    return proj


def test_matches_torch_sequential(reference, projector):
    # Inputs of a few units put hidden values where tanh-approximate GELU is ~1e-4 off the erf form.
    x = np.random.default_rng(0).standard_normal((2, 5, 48)).astype(np.float32) * 3
    with torch.no_grad():
        ref = reference(torch.from_numpy(x)).numpy()
    out = np.asarray(projector(x))
    assert out.shape == (2, 5, 32)
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)


def test_export_reproduces_the_state_dict_bit_exactly(state, projector):
    params = {tgg_name(p): v for p, v in nnx.to_flat_state(nnx.state(projector, nnx.Param))}
    exported = dict(export_tensors(lambda n: params[n].get_value(), PROJECTOR_TABLE, num_layers=0))
    assert set(exported) == set(state) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    for name, value in state.items():
        assert exported[name].dtype == value.dtype and np.array_equal(exported[name], value), name


def test_bfloat16_compute_stays_close(projector, state):
    proj = nnx.eval_shape(lambda: Projector(48, 32, dtype="bfloat16", rngs=nnx.Rngs(0)))
    load_into(proj, import_tensors(state.__getitem__, PROJECTOR_TABLE, num_layers=0))
    x = np.random.default_rng(1).standard_normal((3, 48)).astype(np.float32)
    out = proj(x)
    assert out.dtype == np.dtype("bfloat16")
    assert proj.linear_1.kernel.get_value().dtype == np.float32  # params stay float32
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(projector(x)), atol=5e-2, rtol=0)


def test_parameters_shard_without_reusing_a_mesh_axis():
    proj = nnx.eval_shape(lambda: Projector(2048, 1536, rngs=nnx.Rngs(0)))
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    specs = sharding.state_shardings(nnx.state(proj, nnx.Param), mesh)
    assert specs["linear_1"]["kernel"].get_value().spec == P("fsdp", "tensor")
    assert specs["linear_2"]["kernel"].get_value().spec == P("tensor", "fsdp")
