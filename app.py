"""PromptProxy's entry point.

    python app.py serve            # the server, with data in pb_data/
    gunicorn -k gevent app:app     # the same app under gunicorn (as the Docker image runs it)
"""

import sys

if __name__ == "__main__":
    # Before anything imports requests or ssl, or HTTPS upstreams break.
    from gevent import monkey

    monkey.patch_all()


def __getattr__(name):
    """`app:app` for gunicorn, built on first use so the CLI does not build one."""
    if name == "app":
        from promptproxy import create_app

        globals()["app"] = application = create_app()
        return application
    raise AttributeError(name)


if __name__ == "__main__":
    from promptproxy.cli import main

    sys.exit(main())
