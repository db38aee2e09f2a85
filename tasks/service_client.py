"""Client for the prediction service, used by the deploy steps and by hand.

Library: ServiceClient(base_url).predict(["some text"]). By hand:
    python tasks/service_client.py --service-url http://127.0.0.1:8000 predict "some text" "another text"
Subcommands: health, ready, model, predict, update (the admin token comes from PREDICT_ADMIN_TOKEN or a file).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import httpx

from common import TaskError, arg_type, run_main, setup_logging, validate_path, validate_uri

logger = logging.getLogger("service_client")

ADMIN_TOKEN_ENV = "PREDICT_ADMIN_TOKEN"


class ServiceError(TaskError):
    """The service could not be reached or returned an error status."""

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code


def read_admin_token(token_file: str | None = None) -> str:
    """Read the admin token from a file when given, else from PREDICT_ADMIN_TOKEN.

    The token never comes from a command-line value, because the command line is visible to every
    user of the machine and is stored in the DS task definition.
    """
    if token_file:
        path = Path(token_file).expanduser()
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise TaskError(f"failed to read the admin token file {path}: {error.strerror}") from None
        if not token:
            raise TaskError(f"the admin token file {path} is empty")
        return token
    token = os.environ.get(ADMIN_TOKEN_ENV, "").strip()
    if not token:
        raise TaskError(f"no admin token: set the environment variable {ADMIN_TOKEN_ENV} or pass --admin-token-file")
    return token


def error_detail(response: httpx.Response) -> str:
    """Return the service's reason for an error response: FastAPI's `detail`, or the body text."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict):
        detail = body.get("detail", body.get("reason", body))
        return detail if isinstance(detail, str) else json.dumps(detail)
    return json.dumps(body)


class ServiceClient:
    """Thin synchronous client for the prediction service's HTTP API."""

    def __init__(self, base_url: str, timeout: float = 30.0, admin_token: str | None = None):
        validate_uri("service_url", base_url)
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._admin_token = admin_token
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def request(self, method: str, path: str, expected: tuple[int, ...] = (200,), **kwargs: Any) -> httpx.Response:
        """Send a request; raise ServiceError on a connection failure or a status outside `expected`."""
        url = f"{self.base_url}{path}"
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise ServiceError(f"{method} {url} timed out after {self.timeout} s") from None
        except httpx.HTTPError as error:
            raise ServiceError(f"{method} {url} failed: {error}; is the service running at {self.base_url}?") from None
        if response.status_code not in expected:
            raise ServiceError(
                f"{method} {url} returned {response.status_code}: {error_detail(response)}", response.status_code
            )
        return response

    def health(self) -> dict[str, Any]:
        return self.request("GET", "/health").json()

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Return (whether a model is loaded, the readiness body)."""
        response = self.request("GET", "/ready", expected=(200, 503))
        return response.status_code == 200, response.json()

    def model_info(self) -> dict[str, Any]:
        return self.request("GET", "/model").json()

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        return self.request("POST", "/predict", json={"texts": texts}).json()["predictions"]

    def predict_one(self, text: str) -> dict[str, Any]:
        return self.request("GET", "/predict", params={"text": text}).json()["predictions"][0]

    def update_model(
        self, model_dir: str | None = None, model_name: str | None = None, model_version: str | None = None
    ) -> dict[str, Any]:
        """Ask the service to load and swap in a model dir, or a registered name and version."""
        if not self._admin_token:
            raise TaskError("update_model needs an admin token; pass admin_token to ServiceClient")
        body = {"model_dir": model_dir} if model_dir else {"model_name": model_name, "model_version": model_version}
        headers = {"Authorization": f"Bearer {self._admin_token}"}
        return self.request("POST", "/update_model", json=body, headers=headers).json()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--service-url", required=True, type=arg_type(validate_uri, "--service-url"),
                        help="base URL of the prediction service, such as http://127.0.0.1:8000")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each response (default: 30)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("health", help="check that the process is up")
    commands.add_parser("ready", help="check that a model is loaded")
    commands.add_parser("model", help="show the model being served")
    predict = commands.add_parser("predict", help="classify texts")
    predict.add_argument("texts", nargs="+", help="texts to classify")
    update = commands.add_parser("update", help=f"swap in a model dir (admin token from {ADMIN_TOKEN_ENV} or a file)")
    update.add_argument("--model-dir", required=True, type=arg_type(validate_path, "--model-dir"),
                        help="model dir on the service's machine")
    update.add_argument("--admin-token-file", type=arg_type(validate_path, "--admin-token-file"),
                        help=f"file that contains the admin token; default: the {ADMIN_TOKEN_ENV} variable")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    setup_logging("service_client")
    args = parse_args(argv)
    token = read_admin_token(args.admin_token_file) if args.command == "update" else None
    with ServiceClient(args.service_url, args.timeout, token) as client:
        if args.command == "health":
            result: Any = client.health()
        elif args.command == "ready":
            is_ready, result = client.ready()
            print(json.dumps(result, indent=2))
            return 0 if is_ready else 1
        elif args.command == "model":
            result = client.model_info()
        elif args.command == "predict":
            result = client.predict(args.texts)
        else:
            result = client.update_model(model_dir=args.model_dir)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
