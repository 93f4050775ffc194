FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipe_relay ./pipe_relay
COPY static ./static
RUN pip install --no-cache-dir . && useradd --system --no-create-home relay
USER relay
EXPOSE 8080
ENTRYPOINT ["pipe-relay"]
CMD ["--http-port", "8080"]
