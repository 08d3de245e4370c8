"""The command line, PocketBase-style:

    python app.py serve [--http 127.0.0.1:8090] [--dir pb_data]
    python app.py superuser create|upsert|delete EMAIL [PASSWORD]
    python app.py encryption rotate
    python app.py backup [FILE] [--force]
    python app.py restore FILE
    python app.py copy-data --to postgresql://user:password@host:5432/dbname
"""

import argparse
import getpass
import logging
import os
import sys
from pathlib import Path


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

    encryption = commands.add_parser("encryption", help="manage the key that encrypts stored API keys")
    encryption.add_argument("action", choices=["rotate"],
                            help="re-encrypt every stored API key with the first key of "
                                 "PROMPTPROXY_ENCRYPTION_KEY")
    encryption.add_argument("--dir", default=argparse.SUPPRESS, help="data directory")

    backup = commands.add_parser("backup", help="copy the database, while the server runs (SQLite)")
    backup.add_argument("file", nargs="?",
                        help="the file, or a directory to put promptproxy-<UTC time>.db in "
                             "(default: <data dir>/backups/)")
    backup.add_argument("--force", action="store_true", help="replace FILE if it exists")
    backup.add_argument("--dir", default=argparse.SUPPRESS, help="data directory")

    restore = commands.add_parser("restore", help="put a backup in place of the database (server stopped)")
    restore.add_argument("file", help="a file made by `app.py backup`")
    restore.add_argument("--dir", default=argparse.SUPPRESS, help="data directory")
    copy_data = commands.add_parser(
        "copy-data", help="copy everything into another, empty database (to move to PostgreSQL)",
        description="Copy admins, records with their ids, request rows and usage figures from the "
                    "current database into an empty one. Stop the server first: calls made during "
                    "the copy are not in it.")
    copy_data.add_argument("--to", required=True, metavar="URL",
                           help="postgresql://user:password@host:5432/dbname (or sqlite:///DIR/data.db)")
    copy_data.add_argument("--dir", default=argparse.SUPPRESS, help="data directory")
    return parser


def main(argv=None):
    from .config import MissingSetting

    try:
        return run(argv)
    except MissingSetting as missing:
        print(f"PromptProxy cannot start: {missing}", file=sys.stderr)
        return 2


def run(argv):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=os.environ.get("PROMPTPROXY_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {"DATA_DIR": args.dir} if args.dir else {}
    if args.command == "serve":
        from . import create_app
        from .serving import metrics_dir
        from .serving.server import serve

        kept_in = metrics_dir.prepare()  # before the app imports prometheus_client
        logging.getLogger(__name__).info("Prometheus figures of this server are kept in %s", kept_in)
        if "PUBLIC_URL" not in overrides and not os.environ.get("PROMPTPROXY_PUBLIC_URL"):
            host, _, port = args.http.rpartition(":")
            shown = "127.0.0.1" if host in ("", "0.0.0.0", "::", "[::]") else host
            overrides["PUBLIC_URL"] = f"http://{shown}:{port}"
        serve(create_app(overrides), args.http)
        return 0
    if args.command == "encryption":
        return rotate_command(overrides)
    if args.command == "backup":
        return backup_command(args, overrides)
    if args.command == "restore":
        return restore_command(args, overrides)
    if args.command == "copy-data":
        return copy_command(args.to, overrides)
    return superuser_command(args, overrides)


def open_data(overrides):
    """The data directory's database, upgraded exactly as the server does on start."""
    from . import config, declared_models
    from .data import crypto, migrations
    from .data.db import open_database

    settings = config.from_environ(overrides)
    config.check(settings)
    data_dir = settings["DATA_DIR"]
    os.makedirs(data_dir, exist_ok=True)
    session_secret, encryption_key = config.load_secrets(data_dir)
    crypto.init(encryption_key, session_secret)
    open_database(settings)
    migrations.upgrade(declared_models())


def superuser_command(args, overrides):
    from .auth import superusers
    from .data.db import db

    open_data(overrides)
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


def rotate_command(overrides):
    """Re-encrypt every stored API key (and each admin's kept playground key) with the
    first encryption key, through the same write paths as an edit, so the old keys can
    then be dropped from the setting."""
    from .auth import superusers
    from .collections import BY_NAME
    from .data import crypto, records
    from .data.db import db

    open_data(overrides)
    apis = BY_NAME["apis"]
    rotated, unreadable = 0, []
    with db.connection_context():
        for admin in superusers.Superuser.select().where(superusers.Superuser.playground_key.is_null(False)):
            try:  # the playground's kept key: re-encrypted too, or let go (a new one is made on the next visit)
                kept = crypto.encrypt(crypto.decrypt_stored(admin.playground_key))
            except crypto.CannotDecrypt:
                kept = None
            superusers.keep_playground_key(admin, kept)
        for row in apis.model.select().where(apis.model.api_key.is_null(False)).order_by(apis.model.name):
            try:
                clear = crypto.decrypt_stored(row.api_key)
            except crypto.CannotDecrypt:
                unreadable.append(row.name)
                continue
            records.save(apis, {"api_key": clear}, row=row)
            rotated += 1
    print(f"Re-encrypted {rotated} API key(s) with the first encryption key.")
    for name in unreadable:
        print(f"The API key of the api '{name}' cannot be decrypted with any configured key: "
              "type it again in the admin.", file=sys.stderr)
    return 1 if unreadable else 0


# What goes wrong without each secret a database needs (their files: config.SECRET_FILES).
WITHOUT = {
    "PROMPTPROXY_SECRET_KEY": "its gateway keys and API tokens would stop working",
    "PROMPTPROXY_ENCRYPTION_KEY": "its stored API keys could not be decrypted",
}


def sqlite_data_dir(overrides):
    """The data dir whose data.db `backup` and `restore` work on, or None (with a
    one-line message) when the data is in PostgreSQL, whose own tools do that."""
    from . import config

    settings = config.from_environ(overrides)
    if settings["DATABASE_URL"]:
        print("PROMPTPROXY_DATABASE_URL is set: the data is in PostgreSQL; back it up with pg_dump "
              "and restore it with pg_restore (app.py backup and restore are for SQLite).", file=sys.stderr)
        return None
    return Path(settings["DATA_DIR"])


def backup_command(args, overrides):
    """A consistent copy of data.db taken while the server runs (data/backup.py says how)."""
    from .data import backup

    data_dir = sqlite_data_dir(overrides)
    if data_dir is None:
        return 1
    target = Path(args.file or data_dir / "backups")
    if not args.file or target.is_dir():
        target = backup.default_target(target)
    try:
        size = backup.backup(data_dir / "data.db", target, replace=args.force)
    except (backup.Refused, OSError) as problem:  # OSError: e.g. a directory it may not write to
        print(problem, file=sys.stderr)
        return 1
    print(f"Backed up {data_dir / 'data.db'} to {target} ({size:,} bytes).")
    from .config import SECRET_FILES

    files = " and ".join(str(data_dir / name) for name in SECRET_FILES.values())
    print(f"Keep the secrets too, apart from it: {files} (or {' and '.join(SECRET_FILES)}).")
    return 0


def restore_command(args, overrides):
    """Put a backup in place of data.db, refusing while a server runs on the data dir:
    each of its workers holds a lock in the spool directory for as long as it lives."""
    from .accounting import spool
    from .accounting.counts import forget_spends
    from .data import backup

    data_dir = sqlite_data_dir(overrides)
    if data_dir is None:
        return 1
    workers = spool.live_owners(data_dir / "spool")
    if workers:
        print(f"PromptProxy is running on {data_dir} ({len(workers)} worker(s)): stop it, then restore.",
              file=sys.stderr)
        return 1
    try:
        kept = backup.restore(args.file, data_dir / "data.db")
    except (backup.Refused, OSError) as problem:
        print(problem, file=sys.stderr)
        return 1
    forget_spends(data_dir / "limits.db")  # budgets count again from the restored rows
    print(f"Restored {args.file} as {data_dir / 'data.db'}.")
    if kept:
        print(f"The database it replaced is kept as {kept}.")
    from .config import SECRET_FILES

    for variable, name in SECRET_FILES.items():
        if not os.environ.get(variable) and not (data_dir / name).exists():
            print(f"No {data_dir / name} and no {variable}: put back the one of the install the backup "
                  f"comes from, or {WITHOUT[variable]}.", file=sys.stderr)
    return 0
def copy_command(url, overrides):
    """Copy the current database (data.db, or PROMPTPROXY_DATABASE_URL's) into the
    empty one at `url`, then say what a server on it needs: the same secrets,
    since gateway keys are stored as HMACs under the secret key and api keys are
    encrypted with the encryption key."""
    import time

    import peewee

    from . import config, declared_models
    from .data import copy
    from .data.db import db

    settings = config.from_environ(overrides)
    data_file = Path(settings["DATA_DIR"]).resolve() / "data.db"
    if not settings["DATABASE_URL"] and not data_file.exists():
        print(f"copy-data: nothing to copy, there is no {data_file} (name the data directory with --dir).",
              file=sys.stderr)
        return 1
    source = copy.masked(settings["DATABASE_URL"]) if settings["DATABASE_URL"] else str(data_file)
    try:
        open_data(overrides)
    except (peewee.DatabaseError, peewee.InterfaceError) as error:
        print(f"copy-data: cannot open {source}: {copy.reason(error, settings['DATABASE_URL'])}", file=sys.stderr)
        return 1
    print(f"Copying {source} into {copy.masked(url)}:")

    def copied(table, rows, changed):
        note = f" ({changed} text value(s) held NUL characters, which PostgreSQL cannot store: " \
               "now U+FFFD)" if changed else ""
        print(f"  {table:<16} {rows:>9} row{'' if rows == 1 else 's'}{note}")

    started = time.monotonic()
    try:
        total = copy.copy_data(db.obj, url, declared_models(), on_table=copied)
    except copy.CopyRefused as refused:
        print(f"copy-data: {refused}", file=sys.stderr)
        return 1
    finally:
        close_all = getattr(db.obj, "close_all", None)  # PostgreSQL's pool
        if close_all:
            close_all()
        elif not db.is_closed():
            db.close()
    print(f"Copied {total} rows in {time.monotonic() - started:.1f} s.")
    for line in next_steps(url, settings["DATA_DIR"]):
        print(line)
    return 0


def next_steps(url, data_dir):
    """What to set for a server on the copy: its database and the same two secrets."""
    from .config import SECRET_FILES
    from .data import copy

    target = Path(url[len(copy.SQLITE):]).resolve().parent if url.startswith(copy.SQLITE) else None
    if target:
        lines = [f"Next: stop the server, then start it with --dir {target} and:"]
    else:
        lines = ["Next: stop the server, then start every instance with:",
                 f"  PROMPTPROXY_DATABASE_URL={copy.masked(url)}"
                 + (" (with its password in place of ***)" if copy.passwords(url) else "")]
    for name, filename in SECRET_FILES.items():
        if os.environ.get(name):
            lines.append(f"  {name} with the value it has now")
        elif target:
            lines.append(f"  {(Path(data_dir) / filename).resolve()} copied into {target} "
                         f"(or {name} set to its contents)")
        else:
            lines.append(f"  {name} set to the contents of {(Path(data_dir) / filename).resolve()}")
    lines.append("Gateway keys are stored as HMACs under the secret key and api keys are encrypted with "
                 "the encryption key: with other values, no gateway key or api key works on the copy.")
    return lines
