"""distributed.use_tpu_flags: the XLA:TPU flags every compile uses, merged into what the user set."""

from tgg_jax import distributed


def test_tpu_flags_join_the_users_and_leave_theirs_alone():
    env = {}
    distributed.use_tpu_flags(env)
    assert env["LIBTPU_INIT_ARGS"].split() == [
        "--xla_tpu_enable_windowed_einsum_for_all_gather=false",
        "--xla_tpu_enable_windowed_einsum_for_reduce_scatter=false"]
    distributed.use_tpu_flags(env)  # twice: nothing repeated
    assert len(env["LIBTPU_INIT_ARGS"].split()) == 2

    env = {"LIBTPU_INIT_ARGS": "--xla_enable_async_all_gather=true "
                               "--xla_tpu_enable_windowed_einsum_for_all_gather=true"}
    distributed.use_tpu_flags(env)
    assert env["LIBTPU_INIT_ARGS"].split() == [
        "--xla_enable_async_all_gather=true", "--xla_tpu_enable_windowed_einsum_for_all_gather=true",
        "--xla_tpu_enable_windowed_einsum_for_reduce_scatter=false"]
