"""tgg-synth throughput against a chat server with a fixed latency per call: images per second
through the whole pipeline at 1, 16 and 64 requests in flight, as a ratio to the ideal
in_flight / latency / calls_per_image (the rate if every request slot were always busy).

    python benchmarks/synth_throughput.py [--latency_s 0.3] [--in_flight 1,16,64] [--scale 1]

The server (`tgg-synth serve_shapes --latency_s`) runs in its own process, as a remote endpoint
would. Each level processes 4 x in_flight images (x --scale); "steady" is the rate between the
first and last eighth of the completions (no ramp-up or drain), "overall" the whole run's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from configs.synth import default  # noqa: E402
from tgg_jax.synth import client as client_lib, detectors, pipeline, prompts, store  # noqa: E402
from tgg_jax.synth.shapes_server import write_images  # noqa: E402


class TimedShard(store.Shard):
    """A shard that remembers when each image finished."""

    def __init__(self, path):
        super().__init__(path)
        self.times: list[float] = []

    def append(self, record):
        super().append(record)
        self.times.append(time.monotonic())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(images: pathlib.Path, latency_s: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tgg_jax.synth.cli", "serve_shapes", f"--image_root={images}",
         f"--port={port}", f"--latency_s={latency_s}"], cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    server.stdout.readline()  # "serving ..." once it listens
    return server, f"http://127.0.0.1:{port}/v1"


async def measure(config, images: pathlib.Path, names: list[str], workdir: pathlib.Path):
    client = client_lib.ChatClient(config.mllm)
    runner = pipeline.Runner(config, prompts.load(config.prompts.dir, config.prompts.version),
                             client.chat, detectors.build(config.detector, images), images)
    shard = TimedShard(store.shard_path(workdir, 0, 1))
    start = time.monotonic()
    try:
        await pipeline.run_shard(runner, names, shard, client)
    finally:
        shard.close()
        runner.close()
        client.close()
    return start, shard.times, client.stats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--latency_s", type=float, default=0.3)
    p.add_argument("--in_flight", default="1,16,64")
    p.add_argument("--scale", type=float, default=1.0, help="images per level x this")
    args = p.parse_args()
    levels = [int(v) for v in args.in_flight.split(",")]
    counts = {n: max(4, int(4 * n * args.scale)) for n in levels}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        images = tmp / "images"
        all_names = write_images(images, max(counts.values()))
        server, base_url = start_server(images, args.latency_s)
        try:
            print(f"latency {args.latency_s * 1000:.0f} ms per call; CPU cores: {os.cpu_count()}")
            for n in levels:
                c = default.get_config("shapes")
                c.mllm.base_url, c.mllm.max_in_flight = base_url, n
                c.prompts.dir = str(REPO / "configs/synth/prompts")
                c.progress_every_s = 3600.0
                names = all_names[:counts[n]]
                start, times, stats = asyncio.run(measure(c, images, names, tmp / f"run{n}"))
                done = len(times)
                calls = stats.answers / done
                ideal = n / args.latency_s / calls
                overall = done / (times[-1] - start)
                k1, k2 = (done // 8, done - done // 8 - 1) if done >= 16 else (0, done - 1)
                t1 = times[k1] if done >= 16 else start
                steady = (k2 - k1 + (0 if done >= 16 else 1)) / (times[k2] - t1)
                print(f"in flight {n:3d}: {done} images, {calls:.1f} calls/image, ideal "
                      f"{ideal:.2f} img/s; steady {steady:.2f} img/s, ratio {steady / ideal:.2f}x; "
                      f"overall {overall:.2f} img/s, ratio (overall) {overall / ideal:.2f}x; "
                      f"errors {dict(stats.errors)}")
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
