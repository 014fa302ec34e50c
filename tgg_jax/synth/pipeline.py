"""One image through every step (`process_image`), and a shard of images through it with
bounded concurrency, progress and a summary (`run_shard`)."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import io
import json
import pathlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

from absl import logging
from PIL import Image, ImageOps

from tgg_jax.synth import families, filters, schema, steps
from tgg_jax.synth.client import ChatClient, RequestFailed
from tgg_jax.synth.store import Shard

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
UNREADABLE_IMAGE = "unreadable image"
DETECTOR_ERROR = "detector error"
_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}


def list_images(image_root: str | pathlib.Path, image_list: str = "") -> list[str]:
    """Image paths relative to image_root, sorted: those in image_list, else every image file."""
    root = pathlib.Path(image_root)
    if image_list:
        lines = pathlib.Path(image_list).read_text(encoding="utf-8").splitlines()
        return sorted({line.strip() for line in lines if line.strip()})
    if not root.is_dir():
        raise FileNotFoundError(f"image_root {root} is not a directory")
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def shard_of(images: Sequence[str], index: int, count: int) -> list[str]:
    return list(images[index::count])


def load_image(path: pathlib.Path) -> tuple[dict[str, Any], Image.Image]:
    """(chat image part, RGB picture as displayed); raises schema.Bad for an unreadable file."""
    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            fmt = image.format
            picture = ImageOps.exif_transpose(image).convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise schema.Bad(UNREADABLE_IMAGE, f"{type(e).__name__}: {e}") from None
    if fmt not in _MIME:  # formats chat servers may not take go as PNG
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        data, fmt = buffer.getvalue(), "PNG"
    return steps.image_part(data, _MIME[fmt]), picture


def thresholds(config) -> dict[str, float]:
    return dict(config.filters)


def judge(record: dict[str, Any], limits: Mapping[str, float]) -> None:
    """Sets every output record's verdict from the stored objects and `limits`."""
    for out in record.get("records", []):
        out["verdict"] = filters.verdict(out, record["S1"], record["width"], record["height"],
                                         limits)
    record["filters"] = dict(limits)


class Runner:
    """Everything one image needs: config, prompts, chat client, detector (run on one thread)."""

    def __init__(self, config, prompts, chat, detector, image_root):
        self.config, self.prompts, self.chat, self.detector = config, prompts, chat, detector
        self.image_root = pathlib.Path(image_root)
        self._detector_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="detect")
        self.provenance = {"model": config.mllm.model, "prompt_version": config.prompts.version,
                           "detector": getattr(detector, "name", config.detector.backend)}

    def close(self):
        self._detector_thread.shutdown(wait=False, cancel_futures=True)

    async def process_image(self, rel: str) -> dict[str, Any]:
        """The store record of one image (status "ok" or "skipped" with a reason). Raises
        RequestFailed when the endpoint failed for good (the image is retried by a rerun)."""
        c = self.config
        problems: collections.Counter = collections.Counter()
        record: dict[str, Any] = {"image": rel, "status": "ok", "reason": None, **self.provenance}
        ask = steps.Asker(self.chat, self.prompts, c.mllm.answer_retries, problems)
        try:
            await self._steps(rel, record, ask, problems)
        except schema.Bad as e:
            record.update(status="skipped", reason=e.reason)
            logging.warning("%s: skipped: %s", rel, e)
        finally:
            record["raw"], record["problems"] = ask.raw, dict(problems)
        for reason, n in problems.items():
            logging.info("%s: %s x%d", rel, reason, n)
        return record

    async def _steps(self, rel, record, ask, problems):
        c = self.config
        loop = asyncio.get_running_loop()
        image, picture = await loop.run_in_executor(None, load_image, self.image_root / rel)
        record["width"], record["height"] = picture.size
        record["L1"] = await steps.recognize_objects(ask, image, c.max_objects)
        try:
            objects, record["detections"] = await loop.run_in_executor(
                self._detector_thread, steps.ground, self.detector, picture, rel, record["L1"],
                problems, c.max_objects)
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
            # One image the detector chokes on (an odd size, a phrase its tokenizer rejects)
            # is a counted skip, not the end of the run.
            raise schema.Bad(DETECTOR_ERROR, f"{type(e).__name__}: {e}") from None
        record["S1"] = objects
        if not objects:
            raise schema.Bad(steps.NOTHING_FOUND)
        renderer = families.Renderer(objects, *picture.size)
        record["L2"] = []
        if len(objects) > 1:
            try:
                record["L2"] = await steps.extract_relations(ask, image, objects, renderer,
                                                             c.max_relations, problems)
            except schema.Bad:
                pass  # counted; QA generation still has the objects
        relations, image_id = record["L2"], rel.rsplit(".", 1)[0]
        wanted = set(c.families)
        jobs = {}
        if wanted & set(families.STAGE2):
            jobs["local_qa"] = steps.generate_local_qa(ask, image, objects, renderer, relations,
                                                       c.max_qas, problems)
        if "grounding_conversations" in wanted:
            jobs["conversation"] = steps.generate_conversation(ask, image, objects, renderer,
                                                               relations, c.max_rounds, problems)
        if "grounding_descriptions" in wanted:
            jobs["description"] = steps.generate_description(ask, image, objects, renderer,
                                                             relations)
        answers = await asyncio.gather(*jobs.values(), return_exceptions=True)
        qas, out = {}, []
        for name, answer in zip(jobs, answers):
            if isinstance(answer, schema.Bad):
                continue  # counted by the Asker
            if isinstance(answer, BaseException):
                raise answer
            qas[name] = answer
        if "local_qa" in qas:
            out += families.stage2(image_id, qas["local_qa"], renderer, c.families)
        if "conversation" in qas:
            out.append(families.conversation(image_id, qas["conversation"], renderer))
        if "description" in qas:
            out.append(families.description(image_id, qas["description"], renderer))
        record["qas"], record["records"] = qas, out
        judge(record, thresholds(c))


def _eta(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m{seconds % 60:02d}s"


class Progress:
    """Counts and the periodic progress line (images, rate, ETA, requests, failures)."""

    def __init__(self, total: int, already: int, stats, label: str):
        self.total, self.already, self.stats, self.label = total, already, stats, label
        self.done = 0
        self.skipped: collections.Counter = collections.Counter()
        self.problems: collections.Counter = collections.Counter()
        self.failed: collections.Counter = collections.Counter()
        self.records: collections.Counter = collections.Counter()
        self.start = time.monotonic()

    def add(self, record: dict[str, Any]) -> None:
        self.done += 1
        if record["status"] != "ok":
            self.skipped[record["reason"]] += 1
        self.problems.update(record.get("problems", {}))
        for out in record.get("records", []):
            self.records[(out["family"], out["verdict"])] += 1

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = self.done / elapsed
        left = self.total - self.already - self.done - sum(self.failed.values())
        eta = _eta(left / rate) if rate > 0 else "?"
        return (f"{self.label}: {self.already + self.done}/{self.total} images, {rate:.2f} img/s, "
                f"ETA {eta}; {self.stats.requests} requests, {self.stats.retries} retries, "
                f"failures {dict(self.stats.failures)}")

    def summary(self, config) -> dict[str, Any]:
        elapsed = time.monotonic() - self.start
        kept, dropped = {}, {}
        for (family, verdict), n in sorted(self.records.items()):
            if verdict == filters.KEEP:
                kept[family] = n
            else:
                dropped[f"{family}: {verdict}"] = n
        return {
            "images": {"total": self.total, "already_done": self.already, "done": self.done,
                       "skipped": dict(self.skipped), "failed": dict(self.failed)},
            "elapsed_s": round(elapsed, 3),
            "images_per_s": round(self.done / elapsed, 4) if elapsed > 0 else 0.0,
            "requests": self.stats.requests, "answers": self.stats.answers,
            "retries": self.stats.retries,
            "tokens": {"prompt": self.stats.prompt_tokens,
                       "completion": self.stats.completion_tokens},
            "estimated_cost_usd": round(self.stats.cost(config.mllm.price_input_per_mtok,
                                                        config.mllm.price_output_per_mtok), 4),
            "request_errors": dict(self.stats.errors),
            "request_failures": dict(self.stats.failures),
            "problems": dict(self.problems),
            "records_kept": kept, "records_dropped": dropped,
        }


async def run_shard(runner: Runner, images: Sequence[str], shard: Shard, client: ChatClient,
                    label: str = "synth") -> dict[str, Any]:
    """Every image of `images` not yet in the shard, `mllm.max_in_flight` at a time; returns the
    summary. An image whose requests failed for good is counted and left for a rerun."""
    todo = [rel for rel in images if rel not in shard.done]
    progress = Progress(len(images), len(images) - len(todo), client.stats, label)
    queue: asyncio.Queue[str] = asyncio.Queue()
    for rel in todo:
        queue.put_nowait(rel)

    async def worker():
        while True:
            try:
                rel = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                record = await runner.process_image(rel)
            except RequestFailed as e:
                progress.failed[e.kind] += 1
                logging.warning("%s: request failed for good (%s); a rerun retries it", rel, e)
                continue
            shard.append(record)
            progress.add(record)

    async def report():
        while True:
            await asyncio.sleep(runner.config.progress_every_s)
            logging.info("%s", progress.line())

    reporter = asyncio.create_task(report())
    try:
        # Images in flight = request slots: each image waits on one request at a time, except
        # for its QA prompts, which go together.
        workers = max(1, min(runner.config.mllm.max_in_flight, len(todo)))
        await asyncio.gather(*(worker() for _ in range(workers)))
    finally:
        reporter.cancel()
    logging.info("%s", progress.line())
    return progress.summary(runner.config)


def write_summary(path: pathlib.Path, summary: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
