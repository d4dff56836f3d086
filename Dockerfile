# syntax=docker/dockerfile:1.7
# Multi-stage: build the venv from the lock file, ship it on a slim image as a non-root user.

FROM python:3.11-slim AS build
COPY --from=ghcr.io/astral-sh/uv:0.9 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY src ./src
RUN uv sync --frozen --no-dev

FROM python:3.11-slim AS runtime
RUN groupadd --system tenantry && useradd --system --gid tenantry --home-dir /app tenantry
WORKDIR /app
COPY --from=build --chown=tenantry:tenantry /app /app
ENV PATH="/app/.venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    ENV=production \
    HOST=0.0.0.0 \
    PORT=8000 \
    LOG_FORMAT=json \
    VAR_DIR=/app/var
RUN mkdir -p /app/var && chown tenantry:tenantry /app/var
USER tenantry
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health/live').status != 200)"
CMD ["tenantry", "serve", "--no-migrate"]
