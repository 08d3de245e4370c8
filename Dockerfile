# PromptProxy: the app under gunicorn's gevent worker, data in the /pb_data volume.
#
#   docker build -t promptproxy .
#   docker run -d -p 8090:8090 -v promptproxy_data:/pb_data --name promptproxy promptproxy
#   docker logs promptproxy     # shows the one-time link that creates the first admin
#
# The set-up link is printed as http://127.0.0.1:8090/_/setup/... . When the server is
# reached at another address (another host port, a domain behind a proxy), set
# PROMPTPROXY_PUBLIC_URL, e.g. -e PROMPTPROXY_PUBLIC_URL=https://llm.example.com, so the
# link in the log is one you can open.
#
# The app runs as UID 10001. A named volume (as above) is set up for it; a bind-mounted
# host directory (-v "$PWD/pb_data:/pb_data") must be writable by that UID
# (chown 10001:10001 pb_data), or run the container with --user "$(id -u):$(id -g)".
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PROMPTPROXY_DATA_DIR=/pb_data

WORKDIR /app

COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

# The code stays owned by root (read-only to the app); only the data directory is writable.
COPY app.py ./
COPY promptproxy/ ./promptproxy/

RUN groupadd --system --gid 10001 promptproxy \
    && useradd --system --no-log-init --uid 10001 --gid promptproxy \
       --home-dir /nonexistent --shell /usr/sbin/nologin promptproxy \
    && mkdir /pb_data \
    && chown promptproxy:promptproxy /pb_data

USER 10001:10001
VOLUME /pb_data
EXPOSE 8090

HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8090/api/health', timeout=4)"]

# gunicorn's gevent worker (ours answers requests it cannot read in the caller's JSON
# format) patches the standard library before it loads the app. No --preload: it would
# import the app in the master first and break HTTPS upstreams.
# Limits: a request line up to 8 KiB (long /api filters), header lines up to 16 KiB,
# twice gunicorn's default (large tokens and cookies), at most 100 of them. Not more:
# gunicorn's parser costs time quadratic in the size of the headers it reads.
# Every call is already recorded in the requests table, so there is no access log by
# default (it costs CPU on every call); add one with -e GUNICORN_CMD_ARGS="--access-logfile -".
CMD ["gunicorn", "-k", "promptproxy.serving.worker.GeventWorker", "--bind", "0.0.0.0:8090", "--workers", "2", "--limit-request-line", "8190", "--limit-request-field_size", "16384", "--no-control-socket", "app:app"]
