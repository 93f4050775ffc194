# Production image: the pipe-relay package installed from this checkout, run as an unprivileged user.
# Invariant: flags after the image name reach pipe-relay; `docker stop` drains it (SIGTERM), the health
# check asks the server itself. tests/test_dockerfile.py holds this file to the code.
FROM python:3.11-slim

# The build dir: pipe_relay/static is a symlink to ../static (COPY keeps it a symlink), so static/ is
# copied beside pipe_relay/ and the wheel takes the files through the link.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pipe_relay ./pipe_relay
COPY static ./static
RUN pip install --no-cache-dir . \
    && rm -rf /src \
    && groupadd --system --gid 10001 relay \
    && useradd --system --uid 10001 --gid relay --no-create-home --shell /usr/sbin/nologin relay

WORKDIR /
USER relay
# 8080: plain HTTP (the CMD's listener); 8443: HTTPS, with --enable-https and certificates by volume.
EXPOSE 8080 8443

# Cheap: one GET every 30 s, with the image's python (slim has no curl); a draining server answers
# 503, which is unhealthy.
# (No proxy: urllib would otherwise take 127.0.0.1 through an http_proxy set in the environment.)
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:8080/api/v1/pipe/health', timeout=4)"]

# The first SIGTERM drains (--drain-timeout), a second cuts; give `docker stop -t` more than the drain.
STOPSIGNAL SIGTERM
ENTRYPOINT ["pipe-relay"]
# Listens on :: (dual-stack; 0.0.0.0 on a host without IPv6). Flags given to `docker run` replace these.
CMD ["--http-port", "8080"]
