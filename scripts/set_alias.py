"""Point an MLflow model alias (such as `production`) at a registered version, and print that version.

  python scripts/set_alias.py --remote-server-uri http://127.0.0.1:5000 --model-name bbc-news-topic \
      --model-version latest --alias production

`--model-version latest` picks the highest version number. The deploy workflow can then fetch
`model_version=production`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tasks"))

from common import (  # noqa: E402 - the tasks folder is put on the path above
    TaskError,
    arg_type,
    run_main,
    setup_logging,
    validate_model_version,
    validate_name,
    validate_uri,
)

logger = logging.getLogger("set_alias")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--remote-server-uri", required=True, type=arg_type(validate_uri, "--remote-server-uri"),
                        help="MLflow tracking URI")
    parser.add_argument("--model-name", required=True, type=arg_type(validate_name, "--model-name"),
                        help="registered model name")
    parser.add_argument("--model-version", required=True, type=arg_type(validate_model_version, "--model-version"),
                        help="version number, an existing alias, or latest")
    parser.add_argument("--alias", required=True, type=arg_type(validate_model_version, "--alias"),
                        help="alias to set, for example production or champion")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.alias.isdigit() or args.alias == "latest":
        raise TaskError(f"invalid value for --alias: {args.alias!r}; an alias must not be a number or 'latest'")

    try:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise TaskError(f"mlflow is not installed for {sys.executable}; run this with .venv/bin/python") from None

    client = MlflowClient(tracking_uri=args.remote_server_uri)
    try:
        versions = client.search_model_versions(f"name = '{args.model_name}'")
        if not versions:
            raise TaskError(f"registered model {args.model_name!r} has no versions at {args.remote_server_uri}")
        if args.model_version == "latest":
            version = str(max(int(item.version) for item in versions))
        elif args.model_version.isdigit():
            version = args.model_version
        else:
            version = client.get_model_version_by_alias(args.model_name, args.model_version).version
        client.set_registered_model_alias(args.model_name, args.alias, version)
    except MlflowException as error:
        raise TaskError(f"could not set alias {args.alias!r} on {args.model_name} version {args.model_version} at "
                        f"{args.remote_server_uri}: {error.message}") from None
    logger.info("alias %s now points to %s version %s", args.alias, args.model_name, version)
    print(version)
    return 0


if __name__ == "__main__":
    setup_logging("set_alias")
    run_main(main, sys.argv[1:])
