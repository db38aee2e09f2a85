"""Deploy step 3: tell the prediction service to load a model dir and swap it in.

Sends POST /update_model with the dir that fetch_model wrote. The service tests the new model before the
swap and keeps the old one serving if the load fails. The admin token comes from the environment variable
PREDICT_ADMIN_TOKEN or from --admin-token-file, never from the command line.
By hand: PREDICT_ADMIN_TOKEN=... python tasks/update_model.py --service-url http://127.0.0.1:8000 --model-dir models/news/3
"""

from __future__ import annotations

import argparse
import logging
import sys

from common import arg_type, atomic_write_json, run_folder, run_main, set_output, setup_logging, validate_float
from common import validate_path, validate_run_key, validate_uri
from service_client import ADMIN_TOKEN_ENV, ServiceClient, read_admin_token

logger = logging.getLogger("update_model")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--service-url", required=True, type=arg_type(validate_uri, "--service-url"),
                        help="base URL of the prediction service, such as http://127.0.0.1:8000")
    parser.add_argument("--model-dir", required=True, type=arg_type(validate_path, "--model-dir"),
                        help="model dir as the service's machine sees it (fetch_model's model_dir output)")
    parser.add_argument("--admin-token-file", type=arg_type(validate_path, "--admin-token-file"),
                        help=f"file that contains the service's admin token; default: the {ADMIN_TOKEN_ENV} variable")
    parser.add_argument("--timeout", type=arg_type(validate_float, "--timeout", 1, 3600), default=300.0,
                        help="seconds to wait for the service to load and test the model (default: 300)")
    parser.add_argument("--workspace", type=arg_type(validate_path, "--workspace"),
                        help="workflow workspace; when given, update_model.json is written to <workspace>/<run key>/")
    parser.add_argument("--run-key", type=arg_type(validate_run_key, "--run-key"),
                        help="run folder name under the workspace (DS passes the workflow instance id); required with --workspace")
    args = parser.parse_args(argv)
    if args.workspace and not args.run_key:
        parser.error("--run-key is required with --workspace")
    return args


def main(argv: list[str] | None = None) -> int:
    setup_logging("update_model")
    args = parse_args(argv)
    token = read_admin_token(args.admin_token_file)

    logger.info("asking %s to load %s", args.service_url, args.model_dir)
    with ServiceClient(args.service_url, timeout=args.timeout, admin_token=token) as client:
        result = client.update_model(model_dir=args.model_dir)

    previous, current = result.get("previous") or {}, result["current"]
    logger.info("the service now serves %s version %s with labels %s (was %s version %s; swap took %.1f s)",
                current["model_name"], current["model_version"], current["labels"],
                previous.get("model_name", "none"), previous.get("model_version", "none"), result["swap_seconds"])

    if args.workspace:
        atomic_write_json(run_folder(args.workspace, args.run_key) / "update_model.json", result)
    set_output("deployed_model_version", current["model_version"] or "none")
    return 0


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
