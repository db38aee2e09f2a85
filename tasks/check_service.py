"""Deploy step 2: check that the prediction service is up before a model is sent to it.

Waits for GET /health, then reads GET /ready. A service without a model passes, because on a first
deploy the next step loads one. The step fails when /health does not respond in time, or when /ready
returns a status other than 200 or 503.
By hand: python tasks/check_service.py --service-url http://127.0.0.1:8000 --timeout 30
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from common import TaskError, arg_type, run_main, set_output, setup_logging, validate_float, validate_uri
from service_client import ServiceClient, ServiceError

logger = logging.getLogger("check_service")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--service-url", required=True, type=arg_type(validate_uri, "--service-url"),
                        help="base URL of the prediction service, such as http://127.0.0.1:8000")
    parser.add_argument("--timeout", type=arg_type(validate_float, "--timeout", 1, 3600), default=30.0,
                        help="seconds to keep retrying /health while the service starts (default: 30)")
    return parser.parse_args(argv)


def wait_for_health(client: ServiceClient, timeout: float) -> None:
    """Retry GET /health until it returns 200 or `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        attempt += 1
        try:
            client.health()
            logger.info("the service at %s is up (attempt %d)", client.base_url, attempt)
            return
        except ServiceError as error:
            if time.monotonic() >= deadline:
                raise TaskError(
                    f"the service at {client.base_url} did not respond to /health within {timeout:.0f} s: {error}"
                ) from None
            logger.info("the service is not up yet (attempt %d): %s; retrying", attempt, error)
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def main(argv: list[str] | None = None) -> int:
    setup_logging("check_service")
    args = parse_args(argv)

    with ServiceClient(args.service_url, timeout=min(args.timeout, 10.0)) as client:
        wait_for_health(client, args.timeout)
        is_ready, body = client.ready()

    if is_ready:
        logger.info("the service is ready and serving model %s version %s", body.get("model_name"), body.get("model_version"))
    else:
        logger.info("the service is up but has no model loaded yet (%s); this is expected on a first deploy, "
                    "and the update_model step loads one", body.get("reason"))
    set_output("service_ready", "true" if is_ready else "false")
    return 0


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
