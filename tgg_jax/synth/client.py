"""An asyncio client for OpenAI-compatible chat-completions endpoints (vLLM, SGLang, hosted APIs).

Requests go out through the standard library (urllib) on a thread pool with one thread per
request slot; asyncio bounds how many are in flight, spaces them by the client-side rate limits
(requests and tokens per minute), and retries 429 / 5xx / timeouts / broken connections with
exponential backoff and jitter, honouring Retry-After. The API key is read from an environment
variable into the Authorization header and appears nowhere else: not in errors, logs or stats.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import email.utils
import http.client
import json
import os
import random
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from absl import logging

RETRY_AFTER_MAX_S = 600.0


class RequestFailed(Exception):
    """A request that failed for good (retries spent, or an error that retrying cannot fix);
    `kind` is its count key ("http 500", "timeout", ...)."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


class FatalError(Exception):
    """An error every request would hit (bad key, wrong URL or model): the run stops."""


@dataclasses.dataclass
class Stats:
    """Counts for the progress line and the summary JSON."""

    requests: int = 0          # HTTP attempts, retries included
    answers: int = 0           # successful chat completions
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    failures: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def cost(self, price_input_per_mtok: float, price_output_per_mtok: float) -> float:
        return (self.prompt_tokens * price_input_per_mtok
                + self.completion_tokens * price_output_per_mtok) / 1e6

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["errors"], out["failures"] = dict(self.errors), dict(self.failures)
        return out


class RateLimiter:
    """Spaces acquisitions so that `per_minute` units are used per minute at most (0: no limit).

    Each acquisition books its units on a timeline (a generic cell-rate algorithm), so a request
    bigger than a second's budget still goes, after the time it costs; `refund` gives back units
    booked but not used (an estimate that came out high).
    """

    def __init__(self, per_minute: float, clock=time.monotonic):
        self.rate = per_minute / 60.0
        self.clock = clock
        self.next_free = 0.0

    async def acquire(self, units: float = 1.0) -> None:
        if self.rate <= 0:
            return
        now = self.clock()
        start = max(now, self.next_free)
        self.next_free = start + units / self.rate
        if start > now:
            await asyncio.sleep(start - now)

    def refund(self, units: float) -> None:
        if self.rate > 0:
            self.next_free -= units / self.rate


def retry_after_s(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), RETRY_AFTER_MAX_S)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return min(max(when - time.time(), 0.0), RETRY_AFTER_MAX_S)


def backoff_s(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: uniform in [half, all] of min(cap, base * 2**attempt)."""
    delay = min(cap, base * 2.0 ** attempt)
    return delay * (0.5 + 0.5 * rng.random())


def _post(url: str, body: bytes, headers: Mapping[str, str], timeout: float):
    """(status, headers, body) of one POST; raises OSError subclasses for network failures."""
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.headers, e.read()


def _network_kind(error: BaseException) -> str:
    reason = getattr(error, "reason", error)
    if isinstance(reason, (TimeoutError, socket.timeout)) or isinstance(error, TimeoutError):
        return "timeout"
    return "connection"


class ChatClient:
    """chat(messages) -> the answer text, with the retries and limits above.

    config: the `mllm` section of configs/synth/default.py.
    """

    def __init__(self, config, stats: Stats | None = None, seed: int = 0):
        self.config = config
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        self.stats = stats or Stats()
        self._headers = {"Content-Type": "application/json"}
        key = os.environ.get(config.api_key_env, "") if config.api_key_env else ""
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        self._slots = asyncio.Semaphore(config.max_in_flight)
        self._pool = concurrent.futures.ThreadPoolExecutor(config.max_in_flight,
                                                           thread_name_prefix="synth-http")
        self._requests = RateLimiter(config.requests_per_minute)
        self._tokens = RateLimiter(config.tokens_per_minute)
        self._rng = random.Random(seed)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def payload(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        c = self.config
        body = {"model": c.model, "messages": messages, "temperature": c.temperature,
                "max_tokens": c.max_tokens, "seed": c.seed}
        if c.json_mode:
            body["response_format"] = {"type": "json_object"}
        return body

    async def chat(self, messages: list[dict[str, Any]]) -> str:
        body = json.dumps(self.payload(messages)).encode()
        # Tokens are not known before the answer: book ~4 bytes of text per token plus the
        # answer's limit, then correct the booking by the usage the server reports.
        estimate = len(body) / 4 + self.config.max_tokens
        loop = asyncio.get_running_loop()
        for attempt in range(self.config.max_retries + 1):
            await self._requests.acquire()
            await self._tokens.acquire(estimate)
            async with self._slots:
                self.stats.requests += 1
                try:
                    status, headers, data = await loop.run_in_executor(
                        self._pool, _post, self.url, body, self._headers, self.config.timeout_s)
                except (OSError, urllib.error.URLError, http.client.HTTPException) as e:
                    # HTTPException: an answer cut short (IncompleteRead) or garbled status line.
                    status, headers, data = None, {}, b""
                    kind = _network_kind(e)
            if status == 200:
                try:
                    answer = json.loads(data)
                    text = answer["choices"][0]["message"]["content"]
                    usage = answer.get("usage") or {}
                    if not isinstance(text, str):
                        raise TypeError("content is not a string")
                except (ValueError, KeyError, IndexError, TypeError):
                    kind = "bad response"
                else:
                    self._account(usage, estimate)
                    return text
            elif status is not None:
                kind = f"http {status}"
                if status in (401, 403, 404):
                    raise FatalError(f"{self.url} answered HTTP {status} "
                                     f"({data[:200].decode('utf-8', 'replace')}): check "
                                     "mllm.base_url, mllm.model and the key in "
                                     f"${self.config.api_key_env}")
                if status != 429 and status < 500:
                    self.stats.failures[kind] += 1
                    raise RequestFailed(kind, data[:200].decode("utf-8", "replace"))
            self.stats.errors[kind] += 1
            self._tokens.refund(estimate)
            if attempt == self.config.max_retries:
                break
            wait = retry_after_s(headers.get("Retry-After")) if status == 429 or (
                status is not None and status >= 500) else None
            if wait is None:
                wait = backoff_s(attempt, self.config.backoff_base_s, self.config.backoff_max_s,
                                 self._rng)
            self.stats.retries += 1
            logging.log_every_n_seconds(logging.WARNING, "chat request: %s, retrying in %.1f s",
                                        10, kind, wait)
            await asyncio.sleep(wait)
        self.stats.failures[kind] += 1
        raise RequestFailed(kind, f"after {self.config.max_retries + 1} attempts")

    def _account(self, usage: Mapping[str, Any], estimate: float) -> None:
        prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        self.stats.answers += 1
        self.stats.prompt_tokens += prompt
        self.stats.completion_tokens += completion
        if prompt or completion:
            self._tokens.refund(estimate - prompt - completion)
