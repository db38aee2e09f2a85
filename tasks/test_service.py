"""Deploy step 4: smoke-test the prediction service after an update.

Checks that the service reports the expected model name and version, then classifies sample texts and
fails unless every response names a label from the model's label set and the version just deployed.
By hand: python tasks/test_service.py --service-url http://127.0.0.1:8000 --model-name news --model-version 3
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

from common import (
    TaskError,
    arg_type,
    run_main,
    setup_logging,
    validate_float,
    validate_model_version,
    validate_name,
    validate_path,
    validate_uri,
)
from service_client import ServiceClient

logger = logging.getLogger("test_service")

DEFAULT_TEXTS = [
    "The central bank raised interest rates by half a percentage point on Tuesday.",
    "The striker scored twice in the second half to win the cup final.",
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--service-url", required=True, type=arg_type(validate_uri, "--service-url"),
                        help="base URL of the prediction service, such as http://127.0.0.1:8000")
    parser.add_argument("--model-name", required=True, type=arg_type(validate_name, "--model-name"),
                        help="registered model name the service must be serving")
    parser.add_argument("--model-version", required=True, type=arg_type(validate_model_version, "--model-version"),
                        help="version number just deployed, or an alias that the fetched version carried")
    parser.add_argument("--model-dir", type=arg_type(validate_path, "--model-dir"),
                        help="optional local model dir; when given, the label set is read from its config.json "
                             "instead of from the service's GET /model")
    parser.add_argument("--text", action="append", dest="texts",
                        help="a text to classify; repeat for several (default: two built-in news sentences)")
    parser.add_argument("--timeout", type=arg_type(validate_float, "--timeout", 1, 600), default=30.0,
                        help="seconds to wait for each answer (default: 30)")
    return parser.parse_args(argv)


def expected_labels(model_dir: str | None, model_info: dict) -> set[str]:
    if not model_dir:
        return set(model_info["labels"])
    # Imported here so the step runs without the fetch_model dependencies when --model-dir is not used.
    from fetch_model import find_hf_model_dir, verify_hf_model_dir

    return set(verify_hf_model_dir(find_hf_model_dir(Path(model_dir))).values())


def check_model_info(info: dict, model_name: str, model_version: str) -> str:
    """Check that the service serves the expected model; return its version number."""
    if info["model_name"] != model_name:
        raise TaskError(f"the service serves model {info['model_name']!r}, expected {model_name!r}")
    served = info["model_version"]
    if model_version.isdigit():
        if served != model_version:
            raise TaskError(f"the service serves version {served} of {model_name!r}, expected version {model_version}")
    elif model_version not in (info.get("aliases") or []):
        raise TaskError(
            f"the service serves version {served} of {model_name!r}, which did not carry the alias "
            f"{model_version!r} when it was fetched (its aliases: {info.get('aliases') or 'none'})"
        )
    return served


def check_predictions(predictions: list[dict], texts: list[str], labels: set[str], model_name: str, version: str) -> None:
    if len(predictions) != len(texts):
        raise TaskError(f"the service returned {len(predictions)} predictions for {len(texts)} texts")
    for text, prediction in zip(texts, predictions):
        if prediction["label"] not in labels:
            raise TaskError(f"label {prediction['label']!r} for {text!r} is not in the model's labels {sorted(labels)}")
        score = prediction["score"]
        if not (isinstance(score, (int, float)) and math.isfinite(score) and 0 <= score <= 1):
            raise TaskError(f"score {score!r} for {text!r} is not a probability between 0 and 1")
        if prediction["model_name"] != model_name or prediction["model_version"] != version:
            raise TaskError(
                f"the prediction for {text!r} came from {prediction['model_name']} version {prediction['model_version']}, "
                f"expected {model_name} version {version}"
            )
        logger.info("%r -> %s (%.3f)", text, prediction["label"], score)


def main(argv: list[str] | None = None) -> int:
    setup_logging("test_service")
    args = parse_args(argv)
    texts = args.texts or DEFAULT_TEXTS
    if any(not text.strip() for text in texts):
        raise TaskError("--text values must not be empty")

    with ServiceClient(args.service_url, timeout=args.timeout) as client:
        info = client.model_info()
        version = check_model_info(info, args.model_name, args.model_version)
        labels = expected_labels(args.model_dir, info)
        check_predictions(client.predict(texts), texts, labels, args.model_name, version)
        # The GET form is what a DS HTTP task sends, so it is checked as well.
        check_predictions([client.predict_one(texts[0])], texts[:1], labels, args.model_name, version)

    logger.info("smoke test passed: %s version %s answered %d texts by POST /predict and 1 by GET /predict, "
                "with labels from %s", args.model_name, version, len(texts), json.dumps(sorted(labels)))
    return 0


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
