"""Prediction service for the text classifiers that the train workflow registers in MLflow.

Run with `uvicorn predict_service:app --host 127.0.0.1 --port 8000`; settings come from environment
variables prefixed PREDICT_ (see Settings). Concurrent requests are collected into batches and run on the
model in one worker thread, and a new model is swapped in only after it has classified a test input.
NOTE: run a single uvicorn worker. Each worker process loads its own model, and POST /update_model swaps
only the worker that receives the request.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, SecretStr, StrictStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The task scripts import their helpers as top-level modules from their own folder.
TASKS_DIR = Path(__file__).resolve().parent / "tasks"
if str(TASKS_DIR) not in sys.path:
    sys.path.insert(0, str(TASKS_DIR))

import fetch_model  # noqa: E402
from common import TaskError, validate_model_version, validate_name, validate_path  # noqa: E402

logger = logging.getLogger("predict_service")

SELF_TEST_TEXT = "This is a short test sentence for the new model."


class Settings(BaseSettings):
    """Service settings, read from PREDICT_* environment variables."""

    model_config = SettingsConfigDict(env_prefix="PREDICT_", protected_namespaces=())

    admin_token: SecretStr | None = Field(
        None, description="token that POST /update_model requires as 'Authorization: Bearer <token>'; unset disables updates"
    )
    model_dir: str | None = Field(None, description="model dir to load at start-up (fetched or plain Hugging Face dir)")
    mlflow_uri: str | None = Field(None, description="MLflow tracking URI for updates by model name and version")
    models_dir: str = Field("models", description="folder where updates by name and version are downloaded")
    max_texts: int = Field(64, ge=1, le=10_000, description="maximum number of texts in one request")
    max_text_chars: int = Field(10_000, ge=1, le=1_000_000, description="maximum characters in one text")
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:[0-9]+)?|mps)$", description="torch device for the model")
    batch_size: int = Field(32, ge=1, le=1024, description="maximum number of texts in one model forward pass")
    batch_wait_ms: float = Field(5.0, ge=0, le=1000, description="how long to collect requests into a batch, in ms")
    torch_threads: int = Field(0, ge=0, le=1024, description="torch intra-op threads; 0 uses every CPU the process may run on")
    max_pending_texts: int = Field(
        4096, ge=1, le=1_000_000, description="texts queued or running before /predict returns 503 (overload)"
    )
    fetch_retries: int = Field(2, ge=0, le=20, description="retries when MLflow cannot be reached during an update")


# ---------------------------------------------------------------------------------------------------------
# Request and response bodies.


class Body(BaseModel):
    # Field names such as model_name and model_version are the domain's names, not pydantic internals.
    model_config = ConfigDict(protected_namespaces=())


class PredictRequest(Body):
    texts: list[StrictStr] = Field(min_length=1, description="texts to classify, each non-empty")

    @field_validator("texts")
    @classmethod
    def reject_blank_texts(cls, texts: list[str]) -> list[str]:
        blank = [index for index, text in enumerate(texts) if not text.strip()]
        if blank:
            raise ValueError(f"texts at indexes {blank[:10]} are empty or only whitespace")
        return texts


class Prediction(Body):
    label: str = Field(description="predicted label name")
    score: float = Field(description="softmax probability of the predicted label")
    model_name: str
    model_version: str | None = Field(description="registered version; null for a plain Hugging Face dir")


class PredictResponse(Body):
    predictions: list[Prediction]


class ModelInfo(Body):
    model_name: str
    model_version: str | None
    run_id: str | None
    aliases: list[str]
    labels: list[str]
    max_length: int = Field(description="tokens per text; longer texts are truncated")
    model_dir: str
    device: str
    loaded_at: str = Field(description="UTC time the model finished loading, ISO 8601")
    load_seconds: float


class UpdateRequest(Body):
    model_dir: str | None = Field(None, description="a dir written by fetch_model, or a plain Hugging Face model dir")
    model_name: str | None = Field(None, description="registered model name; use with model_version")
    model_version: str | None = Field(None, description="version number, alias or 'latest'; use with model_name")

    @model_validator(mode="after")
    def check_one_source(self) -> UpdateRequest:
        by_dir = self.model_dir is not None
        by_name = self.model_name is not None or self.model_version is not None
        if by_dir == by_name:
            raise ValueError("send either model_dir, or model_name with model_version")
        try:
            if by_dir:
                validate_path("model_dir", self.model_dir or "")
            else:
                validate_name("model_name", self.model_name or "")
                validate_model_version("model_version", self.model_version or "")
        except TaskError as error:
            raise ValueError(str(error)) from None
        return self


class UpdateResponse(Body):
    previous: ModelInfo | None
    current: ModelInfo
    swap_seconds: float = Field(description="time from the request to the swap, including any download")


class HealthResponse(Body):
    status: str


class ReadyResponse(Body):
    status: str
    model_name: str | None = None
    model_version: str | None = None
    reason: str | None = None


# ---------------------------------------------------------------------------------------------------------
# The model.


class ModelLoadError(Exception):
    """A model dir that cannot be served; status_code is the HTTP status of the update response."""

    def __init__(self, status_code: int, message: str):
        super().__init__(message)
        self.status_code = status_code
        self.message = message


def max_sequence_length(tokenizer: Any, config: Any) -> int:
    """Return the longest input in tokens that both the tokenizer and the position embeddings allow."""
    limits = []
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    # Tokenizers without a configured limit report a huge sentinel (about 1e30).
    if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < 1_000_000:
        limits.append(tokenizer_limit)
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        # RoBERTa-style models number positions from pad_token_id + 1, so they hold fewer tokens than positions.
        offset = (config.pad_token_id or 0) + 1 if "roberta" in (config.model_type or "") else 0
        limits.append(positions - offset)
    return min(limits) if limits else 512


# Padding-aware grouping: on CPU a forward pass costs about the same per token, padding included, so a batch
# padded to its longest text wastes work. Groups of at least MIN_CHUNK texts keep the per-call overhead low.
MIN_CHUNK = 4
MAX_PADDING_FRACTION = 0.25


def plan_chunks(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Group text indexes, shortest first, into forward passes of at most batch_size texts.

    A text joins the current group while the group has fewer than MIN_CHUNK texts, or while padding every
    text to its length adds at most MAX_PADDING_FRACTION to the real token count.
    """
    chunks: list[list[int]] = []
    current: list[int] = []
    real_tokens = 0
    for index in sorted(range(len(lengths)), key=lengths.__getitem__):
        length = lengths[index]
        padded = (len(current) + 1) * length
        fits = len(current) < MIN_CHUNK or padded <= (1 + MAX_PADDING_FRACTION) * (real_tokens + length)
        if current and (len(current) >= batch_size or not fits):
            chunks.append(current)
            current, real_tokens = [], 0
        current.append(index)
        real_tokens += length
    if current:
        chunks.append(current)
    return chunks


class Classifier:
    """A loaded sequence classifier with the registry facts about it."""

    def __init__(self, model_dir: Path, device: str):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        started = time.monotonic()
        self.model_dir = model_dir
        self.device = device
        self._torch = torch

        try:
            hf_dir = fetch_model.find_hf_model_dir(model_dir)
            id2label = fetch_model.verify_hf_model_dir(hf_dir)
            registry = fetch_model.read_registry_json(model_dir) or {}
        except TaskError as error:
            raise ModelLoadError(422, str(error)) from None

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(hf_dir)
            model, loading_info = AutoModelForSequenceClassification.from_pretrained(hf_dir, output_loading_info=True)
        except (OSError, ValueError, RuntimeError, KeyError) as error:
            raise ModelLoadError(422, f"failed to load the model from {hf_dir}: {error}") from None
        missing = sorted(loading_info.get("missing_keys") or [])
        if missing:
            raise ModelLoadError(
                422,
                f"the weights in {hf_dir} lack {len(missing)} tensors ({', '.join(missing[:5])}); "
                "a base model without a trained classification head would predict at random",
            )
        self.model = model.to(device).eval()

        self.id2label = id2label
        self.labels = [id2label[index] for index in sorted(id2label)]
        self.max_length = max_sequence_length(self.tokenizer, model.config)
        self.model_name = str(registry.get("model_name") or model_dir.name)
        version = registry.get("model_version")
        self.model_version = str(version) if version is not None else None
        self.run_id = registry.get("run_id")
        self.aliases = list(registry.get("aliases") or [])

        self._check_answers()
        self.load_seconds = time.monotonic() - started
        self.loaded_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")

    def _check_answers(self) -> None:
        """Run a test input through the model; a model that fails on it is never swapped in."""
        try:
            logits = self._forward([SELF_TEST_TEXT])
        except (RuntimeError, ValueError, IndexError) as error:
            raise ModelLoadError(422, f"the model in {self.model_dir} failed on a test input: {error}") from None
        if logits.shape[-1] != len(self.labels):
            raise ModelLoadError(
                422,
                f"the model in {self.model_dir} outputs {logits.shape[-1]} scores but its config names "
                f"{len(self.labels)} labels",
            )
        if not bool(self._torch.isfinite(logits).all()):
            raise ModelLoadError(422, f"the model in {self.model_dir} returned non-finite scores for a test input")

    def _forward(self, texts: list[str]) -> Any:
        # padding=True pads to the longest text in this batch, not to max_length.
        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")
        return self._logits(dict(encoded))

    def _logits(self, encoded: dict[str, Any]) -> Any:
        encoded = {name: tensor.to(self.device) for name, tensor in encoded.items()}
        with self._torch.inference_mode():
            return self.model(**encoded).logits.float().cpu()

    def _pad(self, encoded: dict[str, list[list[int]]], indexes: list[int]) -> dict[str, Any]:
        """Build padded tensors for some of the tokenized texts, padded to the longest of them."""
        width = max(len(encoded["input_ids"][index]) for index in indexes)
        pad_values = {"input_ids": self.tokenizer.pad_token_id or 0, "token_type_ids": self.tokenizer.pad_token_type_id}
        tensors = {}
        for name, rows in encoded.items():
            tensor = self._torch.full((len(indexes), width), pad_values.get(name, 0), dtype=self._torch.long)
            for row, index in enumerate(indexes):
                values = self._torch.tensor(rows[index], dtype=self._torch.long)
                if self.tokenizer.padding_side == "left":
                    tensor[row, width - len(values):] = values
                else:
                    tensor[row, : len(values)] = values
            tensors[name] = tensor
        return tensors

    def predict(self, texts: list[str], batch_size: int) -> list[tuple[str, float]]:
        """Classify texts in forward passes of at most batch_size; return (label, score) per text, in order.

        Texts are sorted by token count and grouped so that padding adds little work (see plan_chunks).
        """
        encoded = dict(self.tokenizer(texts, truncation=True, max_length=self.max_length))
        lengths = [len(ids) for ids in encoded["input_ids"]]
        results: list[tuple[str, float]] = [("", 0.0)] * len(texts)
        for chunk in plan_chunks(lengths, batch_size):
            probabilities = self._logits(self._pad(encoded, chunk)).softmax(dim=-1)
            best = probabilities.max(dim=-1)
            for index, label_id, score in zip(chunk, best.indices.tolist(), best.values.tolist()):
                results[index] = (self.id2label[label_id], score)
        return results

    def info(self) -> ModelInfo:
        return ModelInfo(
            model_name=self.model_name,
            model_version=self.model_version,
            run_id=self.run_id,
            aliases=self.aliases,
            labels=self.labels,
            max_length=self.max_length,
            model_dir=str(self.model_dir),
            device=self.device,
            loaded_at=self.loaded_at,
            load_seconds=round(self.load_seconds, 3),
        )


# ---------------------------------------------------------------------------------------------------------
# Metrics, batching and the swap.


class Metrics:
    """Prometheus metrics in a registry of their own, so several apps in one process do not collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "predict_http_requests", "HTTP requests by route and status code", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "predict_http_request_duration_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.texts = Counter("predict_texts", "texts classified", registry=self.registry)
        self.batch_size = Histogram(
            "predict_batch_size",
            "texts per collected batch; forward passes take at most PREDICT_BATCH_SIZE of them",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=self.registry,
        )
        self.model_info = Gauge(
            "predict_model_info", "the model being served (value 1)", ["model_name", "model_version"], registry=self.registry
        )
        self.model_loaded = Gauge("predict_model_loaded", "1 while a model is loaded, else 0", registry=self.registry)
        self.swaps = Counter("predict_model_swaps", "model updates by result", ["result"], registry=self.registry)

    def set_model(self, classifier: Classifier) -> None:
        self.model_info.clear()
        self.model_info.labels(classifier.model_name, classifier.model_version or "").set(1)
        self.model_loaded.set(1)


@dataclass
class PendingRequest:
    texts: list[str]
    future: asyncio.Future


@dataclass
class ServiceState:
    """Everything the routes share: settings, the current model, the batch queue and the executors."""

    settings: Settings
    metrics: Metrics
    classifier: Classifier | None = None
    load_error: str | None = None
    pending_texts: int = 0
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    update_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # One thread runs every forward pass, so batches never compete for the CPU with each other.
    inference_executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
    )
    # Loading a new model happens on another thread while the current one keeps serving.
    load_executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-load")
    )

    async def classify(self, texts: list[str]) -> tuple[list[tuple[str, float]], Classifier]:
        """Queue texts for the batcher and wait for their labels and the model that produced them."""
        limit = self.settings.max_pending_texts
        if self.pending_texts + len(texts) > limit:
            logger.warning("rejected %d texts: %d texts are already pending (PREDICT_MAX_PENDING_TEXTS=%d)",
                           len(texts), self.pending_texts, limit)
            raise HTTPException(503, f"the service is overloaded: more than {limit} texts pending; retry later")
        future = asyncio.get_running_loop().create_future()
        self.pending_texts += len(texts)
        try:
            await self.queue.put(PendingRequest(texts, future))
            return await future
        finally:
            self.pending_texts -= len(texts)

    async def collect_batch(self) -> list[PendingRequest]:
        """Wait for a request, then keep collecting until batch_size texts or batch_wait_ms have passed.

        A request is never split between batches, so all of its texts are classified by the same model.
        """
        loop = asyncio.get_running_loop()
        batch = [await self.queue.get()]
        count = len(batch[0].texts)
        deadline = loop.time() + self.settings.batch_wait_ms / 1000
        while count < self.settings.batch_size:
            try:
                pending = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    pending = await asyncio.wait_for(self.queue.get(), remaining)
                except TimeoutError:
                    break
            batch.append(pending)
            count += len(pending.texts)
        return batch

    async def run_batches(self) -> None:
        """Feed collected batches to the inference thread until the service stops."""
        loop = asyncio.get_running_loop()
        while True:
            batch = await self.collect_batch()
            batch = [pending for pending in batch if not pending.future.cancelled()]
            if not batch:
                continue
            # The model is read once per batch: a swap during this batch affects only later batches.
            classifier = self.classifier
            if classifier is None:
                for pending in batch:
                    pending.future.set_exception(HTTPException(503, "no model is loaded"))
                continue
            texts = [text for pending in batch for text in pending.texts]
            self.metrics.batch_size.observe(len(texts))
            try:
                results = await loop.run_in_executor(
                    self.inference_executor, classifier.predict, texts, self.settings.batch_size
                )
            except Exception as error:  # noqa: BLE001 - one bad batch must not stop the batcher
                logger.exception("prediction failed for a batch of %d texts on %s version %s",
                                 len(texts), classifier.model_name, classifier.model_version)
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(HTTPException(500, f"prediction failed: {error}"))
                continue
            self.metrics.texts.inc(len(texts))
            start = 0
            for pending in batch:
                end = start + len(pending.texts)
                if not pending.future.done():
                    pending.future.set_result((results[start:end], classifier))
                start = end

    async def load(self, model_dir: Path) -> Classifier:
        if not model_dir.exists():
            raise ModelLoadError(404, f"model dir {model_dir} not found on the service's machine")
        if not model_dir.is_dir():
            raise ModelLoadError(422, f"model dir {model_dir} is a file, not a folder")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.load_executor, Classifier, model_dir, self.settings.device)

    async def fetch(self, model_name: str, model_version: str) -> Path:
        """Download a registered version through fetch_model, as the deploy workflow's first step does."""
        uri = self.settings.mlflow_uri
        if not uri:
            raise ModelLoadError(
                409, "updates by model name and version need PREDICT_MLFLOW_URI on the service; send model_dir instead"
            )
        loop = asyncio.get_running_loop()
        try:
            model_dir, _ = await loop.run_in_executor(
                self.load_executor,
                fetch_model.fetch,
                uri,
                model_name,
                model_version,
                self.settings.models_dir,
                self.settings.fetch_retries,
                1.0,
            )
        except fetch_model.ModelNotFoundError as error:
            raise ModelLoadError(404, str(error)) from None
        except fetch_model.RegistryUnreachableError as error:
            raise ModelLoadError(502, str(error)) from None
        except TaskError as error:
            raise ModelLoadError(422, str(error)) from None
        return model_dir

    async def update(self, request: UpdateRequest) -> UpdateResponse:
        """Load a new model beside the current one and swap it in once it has classified a test input.

        Raises ModelLoadError with the HTTP status to return; the current model then keeps serving.
        """
        try:
            response = await self._update(request)
        except ModelLoadError as error:
            self.metrics.swaps.labels("failure").inc()
            logger.error("model update %s failed (%d): %s", request.model_dump(exclude_none=True), error.status_code, error)
            raise
        except Exception as error:
            self.metrics.swaps.labels("failure").inc()
            logger.exception("model update %s failed", request.model_dump(exclude_none=True))
            raise ModelLoadError(500, f"model update failed: {type(error).__name__}: {error}") from error
        self.metrics.swaps.labels("success").inc()
        return response

    async def _update(self, request: UpdateRequest) -> UpdateResponse:
        started = time.monotonic()
        async with self.update_lock:
            if request.model_dir is not None:
                model_dir = Path(request.model_dir).expanduser().resolve()
            else:
                model_dir = await self.fetch(request.model_name or "", request.model_version or "")
            new = await self.load(model_dir)
            previous = self.classifier
            self.classifier = new  # the swap: later batches read the new model, running ones keep the old
            self.load_error = None
        self.metrics.set_model(new)
        logger.info("swapped model %s version %s -> %s version %s from %s in %.2f s",
                    previous.model_name if previous else "none", previous.model_version if previous else "none",
                    new.model_name, new.model_version, model_dir, time.monotonic() - started)
        return UpdateResponse(
            previous=previous.info() if previous else None,
            current=new.info(),
            swap_seconds=round(time.monotonic() - started, 3),
        )

    async def load_at_startup(self, model_dir: str) -> None:
        try:
            await self.update(UpdateRequest(model_dir=model_dir))
        except (ModelLoadError, ValueError) as error:  # ValueError: a model_dir that fails validation
            self.load_error = f"failed to load PREDICT_MODEL_DIR={model_dir}: {error}"
            logger.error("%s; the service runs without a model until POST /update_model succeeds", self.load_error)


# ---------------------------------------------------------------------------------------------------------
# HTTP plumbing: metrics middleware, dependencies, routes.


class MetricsMiddleware:
    """Count requests and time them per route template (such as /predict), not per URL."""

    def __init__(self, app: Any, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_with_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(path, str(status["code"])).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - started)


bearer_scheme = HTTPBearer(auto_error=False, description="the service's PREDICT_ADMIN_TOKEN")


def get_state(request: Request) -> ServiceState:
    return request.app.state.service


def require_admin(
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer_scheme),
    state: ServiceState = Depends(get_state),
) -> None:
    """Check the admin token: 401 when none is sent, 403 when it is wrong or updates are disabled."""
    if credentials is None:
        raise HTTPException(401, "missing admin token: send 'Authorization: Bearer <token>'",
                            headers={"WWW-Authenticate": "Bearer"})
    expected = state.settings.admin_token
    if expected is None or not expected.get_secret_value():
        raise HTTPException(403, "model updates are disabled: the service has no PREDICT_ADMIN_TOKEN")
    if not secrets.compare_digest(credentials.credentials.encode(), expected.get_secret_value().encode()):
        logger.warning("rejected an update request with a wrong admin token")
        raise HTTPException(403, "wrong admin token")


def check_limits(texts: list[str], settings: Settings) -> None:
    if len(texts) > settings.max_texts:
        raise HTTPException(413, f"{len(texts)} texts in one request; the limit is {settings.max_texts} (PREDICT_MAX_TEXTS)")
    for index, text in enumerate(texts):
        if len(text) > settings.max_text_chars:
            raise HTTPException(
                413,
                f"text at index {index} has {len(text)} characters; the limit is {settings.max_text_chars} "
                "(PREDICT_MAX_TEXT_CHARS)",
            )


async def predict_texts(texts: list[str], state: ServiceState) -> PredictResponse:
    check_limits(texts, state.settings)
    if state.classifier is None:
        raise HTTPException(503, state.load_error or "no model is loaded; POST /update_model first")
    results, classifier = await state.classify(texts)
    return PredictResponse(
        predictions=[
            Prediction(label=label, score=score, model_name=classifier.model_name, model_version=classifier.model_version)
            for label, score in results
        ]
    )


def configure_torch(settings: Settings) -> None:
    import torch

    if settings.device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"PREDICT_DEVICE={settings.device} but torch finds no CUDA device")
    threads = settings.torch_threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    logger.info("torch uses %d threads on %s", threads, settings.device)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service; `uvicorn predict_service:app` uses the one built from the environment."""
    settings = settings or Settings()
    if not logging.getLogger().handlers:
        logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_torch(settings)
        state = ServiceState(settings=settings, metrics=app.state.metrics)
        app.state.service = state
        if settings.admin_token is None:
            logger.warning("PREDICT_ADMIN_TOKEN is not set: POST /update_model returns 403")
        batcher = asyncio.create_task(state.run_batches(), name="batcher")
        startup_load = None
        if settings.model_dir:
            # Loading in the background lets /health respond at once; /ready returns 200 once the model is loaded.
            startup_load = asyncio.create_task(state.load_at_startup(settings.model_dir), name="startup-load")
        logger.info("prediction service started (batch size %d, batch wait %.1f ms, limits %d texts, %d characters)",
                    settings.batch_size, settings.batch_wait_ms, settings.max_texts, settings.max_text_chars)
        try:
            yield
        finally:
            for task in (batcher, startup_load):
                if task is not None:
                    task.cancel()
            state.inference_executor.shutdown(wait=False, cancel_futures=True)
            state.load_executor.shutdown(wait=False, cancel_futures=True)
            logger.info("prediction service stopped")

    app = FastAPI(
        title="Text classification prediction service",
        description="Classifies texts with a model registered in MLflow; swaps models without downtime.",
        lifespan=lifespan,
    )
    app.state.metrics = Metrics()
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)

    @app.get("/health", response_model=HealthResponse)
    async def health() -> HealthResponse:
        """Return 200 while the process runs, with or without a model."""
        return HealthResponse(status="ok")

    @app.get("/ready", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}})
    async def ready(state: ServiceState = Depends(get_state)) -> Any:
        """Return 200 when a model is loaded and predictions can be served, else 503."""
        classifier = state.classifier
        if classifier is None:
            reason = state.load_error or "no model is loaded"
            return JSONResponse(status_code=503, content=ReadyResponse(status="not ready", reason=reason).model_dump())
        return ReadyResponse(status="ready", model_name=classifier.model_name, model_version=classifier.model_version)

    @app.post("/predict", response_model=PredictResponse)
    async def predict(body: PredictRequest, state: ServiceState = Depends(get_state)) -> PredictResponse:
        """Classify a list of texts."""
        return await predict_texts(body.texts, state)

    @app.get("/predict", response_model=PredictResponse)
    async def predict_one(
        text: str = Query(description="one text to classify"), state: ServiceState = Depends(get_state)
    ) -> PredictResponse:
        """Classify one text given as a query parameter (what a DS HTTP task can send)."""
        if not text.strip():
            raise HTTPException(422, "text is empty or only whitespace")
        return await predict_texts([text], state)

    @app.get("/model", response_model=ModelInfo, responses={503: {"description": "no model is loaded"}})
    async def model_info(state: ServiceState = Depends(get_state)) -> ModelInfo:
        """Describe the model being served."""
        if state.classifier is None:
            raise HTTPException(503, state.load_error or "no model is loaded")
        return state.classifier.info()

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        """Return the Prometheus metrics in the text exposition format."""
        return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/update_model", response_model=UpdateResponse, dependencies=[Depends(require_admin)])
    async def update_model(body: UpdateRequest, state: ServiceState = Depends(get_state)) -> UpdateResponse:
        """Load a model dir (or fetch a registered version), test it, then swap it in; on failure keep the old one."""
        try:
            return await state.update(body)
        except ModelLoadError as error:
            raise HTTPException(error.status_code, error.message) from None

    return app


app = create_app()
