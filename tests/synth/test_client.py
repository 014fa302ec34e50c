"""The chat client against real HTTP on 127.0.0.1 with scripted answers and injected faults."""

import asyncio
import time

import pytest

from configs.synth import default
from tgg_jax.synth import client as client_lib, cli
from tgg_jax.synth.server import ChatServer, Reply

from tests.synth import common


class Scripted:
    """Serves `script` (one entry per request, in order) and then `fallback`; records times."""

    def __init__(self, script, fallback):
        self.script, self.fallback, self.times = list(script), fallback, []

    def __call__(self, request):
        self.times.append(time.monotonic())
        step = self.script.pop(0) if self.script else None
        return self.fallback(request) if step is None else step


def mllm(base_url, **overrides):
    c = default.get_config().mllm
    c.base_url, c.timeout_s, c.backoff_base_s, c.backoff_max_s = base_url, 5.0, 0.01, 0.05
    c.max_in_flight = 1
    c.update_from_flattened_dict(overrides)
    return c


def chat(c):
    async def go():
        client = client_lib.ChatClient(c)
        try:
            return await client.chat([{"role": "user", "content": "hi"}]), client.stats
        except client_lib.RequestFailed as e:
            return e, client.stats
        finally:
            client.close()
    return asyncio.run(go())


def test_faults_are_retried_and_counted():
    script = [Reply(429, b"{}", {"Retry-After": "0.3"}), Reply(500, b"{}"),
              Reply(200, b'{"choices": 5}'), Reply(200, b"", hang_s=1.5)]
    answers = Scripted(script, lambda r: "fine")
    with ChatServer(answers) as server:
        text, stats = chat(mllm(server.base_url, timeout_s=0.5))
    assert text == "fine"
    assert stats.errors == {"http 429": 1, "http 500": 1, "bad response": 1, "timeout": 1}
    assert stats.requests == 5 and stats.retries == 4 and stats.answers == 1
    # Retry-After: 0.3 s was honoured (the backoff alone is at most 0.05 s).
    assert answers.times[1] - answers.times[0] >= 0.3


def test_an_answer_cut_short_is_retried():
    """The server announces a whole body and closes after 10 bytes (http.client.IncompleteRead):
    a connection fault like any other, retried, never the end of the run."""
    script = [Reply(200, b'{"choices": [{"message": {"content": "lost"}}]}', cut_after=10)]
    with ChatServer(Scripted(script, lambda r: "fine")) as server:
        text, stats = chat(mllm(server.base_url))
    assert text == "fine"
    assert stats.errors == {"connection": 1} and stats.requests == 2


def test_retries_spent_is_a_counted_failure():
    with ChatServer(lambda r: Reply(503, b"{}")) as server:
        error, stats = chat(mllm(server.base_url, max_retries=2))
    assert isinstance(error, client_lib.RequestFailed) and error.kind == "http 503"
    assert stats.requests == 3 and stats.failures == {"http 503": 1}


def test_bad_key_is_fatal_without_showing_it(monkeypatch):
    monkeypatch.setenv("SYNTH_TEST_KEY", "sk-do-not-show-4242")
    with ChatServer(lambda r: Reply(401, b'{"error": "invalid key"}')) as server:
        c = mllm(server.base_url, api_key_env="SYNTH_TEST_KEY")
        with pytest.raises(client_lib.FatalError) as e:
            asyncio.run(client_lib.ChatClient(c).chat([{"role": "user", "content": "hi"}]))
        assert server.authorizations == ["Bearer sk-do-not-show-4242"]
    assert "sk-do-not-show" not in str(e.value) and "401" in str(e.value)


def test_in_flight_bound_and_rate_limit():
    in_flight, peak = [0], [0]
    import threading
    lock = threading.Lock()

    def answer(request):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.05)
        with lock:
            in_flight[0] -= 1
        return "ok"

    async def many(c, n):
        client = client_lib.ChatClient(c)
        start = time.monotonic()
        await asyncio.gather(*(client.chat([{"role": "user", "content": "x"}]) for _ in range(n)))
        client.close()
        return time.monotonic() - start

    with ChatServer(answer) as server:
        asyncio.run(many(mllm(server.base_url, max_in_flight=3), 12))
        assert peak[0] == 3
        # 600 requests per minute = one per 0.1 s: 6 requests need at least 0.5 s.
        elapsed = asyncio.run(many(mllm(server.base_url, max_in_flight=8,
                                        requests_per_minute=600.0), 6))
    assert elapsed >= 0.5


def test_retry_after_forms():
    assert client_lib.retry_after_s("2") == 2.0
    assert client_lib.retry_after_s(None) is None and client_lib.retry_after_s("soon") is None
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 < client_lib.retry_after_s(date) <= 30


def test_pipeline_counts_match_the_script(tmp_path):
    """One image, one request at a time: faults and a malformed answer at known requests."""
    images = common.make_images(tmp_path / "images", 1)
    from tgg_jax.synth.shapes_server import ShapesAnswerer
    truth = ShapesAnswerer(images, common.PROMPTS)
    # Requests: 1-3 recognition (429, 500, then hung past the timeout), 4 recognition answered,
    # 5 relations answered with malformed JSON, 6 relations asked again, then the QA prompts.
    script = [Reply(429, b"{}", {"Retry-After": "0"}), Reply(500, b"{}"), Reply(200, b"", hang_s=1.5),
              None, '{"relations": [["obj1", "left of"', None]
    with ChatServer(Scripted(script, truth)) as server:
        config = common.shapes_config(server.base_url, **{"mllm.max_in_flight": 1,
                                                          "mllm.timeout_s": 0.5})
        code, summary = cli.synthesize(config, images, tmp_path / "out")
    assert code == 0
    assert summary["request_errors"] == {"http 429": 1, "http 500": 1, "timeout": 1}
    assert summary["retries"] == 3
    assert summary["problems"] == {"answer not JSON": 1}
    assert summary["requests"] == 6 + 3 and summary["images"]["done"] == 1
