"""The longer tiny run (at most an hour on a 2-core CPU), aimed at REC Acc@0.5 >= 0.5 on the
held-out tgg_shapes split; measure it with benchmarks/tiny_learning.py.

    python benchmarks/tiny_learning.py --config configs/tiny_long.py --workdir runs/tiny_long
"""

from configs import tiny


def get_config(arg: str = ""):
    c = tiny.get_config(arg)
    c.model.hidden_size = 192
    c.model.intermediate_size = 512
    c.model.num_layers = 6
    c.model.num_heads = 6
    c.model.num_kv_heads = 2
    c.total_steps = 1600              # ~0.45 steps/s on a 2-core CPU: about an hour
    c.lr = 1e-3
    # REC is this run's target: keep the token mean, under which its 20-token answers pull most
    # (its measured curve in the README was taken so).
    c.loss_normalization = "token"
    c.checkpoint.every_steps = 400
    c.eval_every_steps = 400
    c.log_every_steps = 50
    return c
