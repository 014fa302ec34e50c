"""One of two local jax.distributed processes (2 CPU devices each) that save a parameter
checkpoint together, every parameter sharded over the 4 devices of both processes by the
logical-axis rules. Run by tests/convert/test_export_hf.py:

    python -m tests.convert.two_process_save PORT PROCESS_ID CONFIG_DIR OUT
"""

import sys

import jax

jax.config.update("jax_num_cpu_devices", 2)


def main(port: str, process_id: str, config_dir: str, out: str) -> None:
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                               process_id=int(process_id))
    from flax import nnx

    from tests.evals.fake_data import random_params
    from tgg_jax import sharding
    from tgg_jax.checkpoint import abstract_model, load_config, save_params

    config = load_config(config_dir)
    params = random_params(config, seed=7)  # the same numbers in both processes
    mesh = sharding.make_mesh({"data": 1, "fsdp": 2, "tensor": 2})
    shardings = sharding.state_shardings(nnx.state(abstract_model(config), nnx.Param), mesh).to_pure_dict()
    # Each process builds only the shards on its own devices, as after multi-host training.
    sharded = jax.tree.map(lambda x, s: jax.make_array_from_callback(x.shape, s, lambda idx: x[idx]),
                           params, shardings)
    spread = sharded["llm"]["embed_tokens"]["embedding"]
    assert len(spread.addressable_shards) == 2 and len(spread.sharding.device_set) == 4
    save_params(out, sharded, config)
    print(f"process {process_id}: saved", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
