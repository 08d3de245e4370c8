"""The command line, PocketBase-style:

    python app.py serve [--http 127.0.0.1:8090] [--dir pb_data]
    python app.py superuser create|upsert|delete EMAIL [PASSWORD]
"""

import argparse
import getpass
import logging
import os
import sys


def build_parser():
    parser = argparse.ArgumentParser(prog="app.py", description="PromptProxy, a small LLM gateway.")
    parser.add_argument("--dir", default=None,
                        help="data directory (default: $PROMPTPROXY_DATA_DIR or pb_data)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="start the web server")
    serve.add_argument("--http", default=os.environ.get("PROMPTPROXY_HTTP", "127.0.0.1:8090"),
                       help="address to listen on (default: 127.0.0.1:8090)")
    serve.add_argument("--dir", default=argparse.SUPPRESS, help="data directory")

    superuser = commands.add_parser("superuser", help="manage admin accounts")
    superuser.add_argument("action", choices=["create", "upsert", "delete"])
    superuser.add_argument("email")
    superuser.add_argument("password", nargs="?", help="asked for when left out (not for delete)")
    superuser.add_argument("--dir", default=argparse.SUPPRESS, help="data directory")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=os.environ.get("PROMPTPROXY_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {"DATA_DIR": args.dir} if args.dir else {}
    if args.command == "serve":
        from . import create_app
        from .server import serve

        if "PUBLIC_URL" not in overrides and not os.environ.get("PROMPTPROXY_PUBLIC_URL"):
            host, _, port = args.http.rpartition(":")
            shown = "127.0.0.1" if host in ("", "0.0.0.0", "::", "[::]") else host
            overrides["PUBLIC_URL"] = f"http://{shown}:{port}"
        serve(create_app(overrides), args.http)
        return 0
    return superuser_command(args, overrides)


def superuser_command(args, overrides):
    from . import config, superusers
    from .db import db, open_database, upgrade

    data_dir = config.from_environ(overrides)["DATA_DIR"]
    os.makedirs(data_dir, exist_ok=True)
    open_database(data_dir)
    upgrade([superusers.Superuser])
    with db.connection_context():
        existing = superusers.Superuser.get_or_none(superusers.Superuser.email == args.email.strip().lower())
        if args.action == "delete":
            if existing is None:
                print(f"No admin {args.email}.", file=sys.stderr)
                return 1
            existing.delete_instance()
            print(f"Deleted admin {existing.email}.")
            return 0
        if args.action == "create" and existing is not None:
            print(f"Admin {args.email} already exists (use upsert to set a new password).", file=sys.stderr)
            return 1
        password = args.password or getpass.getpass("Password: ")
        problems = superusers.check_credentials(args.email, password)
        if problems:
            for name, message in problems.items():
                print(f"{name}: {message}", file=sys.stderr)
            return 1
        admin, created = superusers.upsert(args.email, password)
        print(f"{'Created' if created else 'Updated'} admin {admin.email}.")
    return 0
