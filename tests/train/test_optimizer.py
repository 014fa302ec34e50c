"""The learning-rate schedule against hand-worked values (SPEC §3's warm-up + cosine, and the
warm-up / stable / decay form of config.decay_ratio)."""

import math

import pytest

from configs import tiny
from tgg_jax.train.optimizer import learning_rate_schedule


def schedule(**overrides):
    c = tiny.get_config()
    c.total_steps, c.lr, c.warmup_ratio, c.decay_ratio = 100, 2.0, 0.1, 1.0
    for key, value in overrides.items():
        c[key] = value
    return learning_rate_schedule(c)


def test_warmup_then_cosine_over_the_rest():
    f = schedule()
    # Linear to the peak over 10 steps, then 2 * (1 + cos(pi * t / 90)) / 2 for t = step - 10.
    for step, expected in [(0, 0.0), (5, 1.0), (10, 2.0), (55, 1.0), (100, 0.0),
                           (40, 1.0 + math.cos(math.pi * 30 / 90))]:
        assert float(f(step)) == pytest.approx(expected, abs=1e-5), step


def test_decay_ratio_holds_the_peak_then_decays_over_the_last_steps():
    f = schedule(decay_ratio=0.2)
    # Warm-up to step 10, the peak to step 80, then 2 * (1 + cos(pi * t / 20)) / 2, t = step - 80.
    for step, expected in [(5, 1.0), (10, 2.0), (45, 2.0), (80, 2.0), (90, 1.0), (100, 0.0),
                           (85, 1.0 + math.cos(math.pi * 5 / 20))]:
        assert float(f(step)) == pytest.approx(expected, abs=1e-5), step


@pytest.mark.parametrize("ratio", [0.0, 1.5])
def test_decay_ratio_out_of_range_is_refused(ratio):
    with pytest.raises(ValueError, match="decay_ratio must be in"):
        schedule(decay_ratio=ratio)
