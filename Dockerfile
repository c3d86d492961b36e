# syntax=docker/dockerfile:1
# The images of pumpfleet, named as the manifests under cluster/ use them:
#   docker build --build-arg GIT_COMMIT="$(git rev-parse HEAD)" -t ghcr.io/pumpfleet/pumpfleet:0.1.0 .
#       Ray head and CPU workers: Ray 2.60.0, Python 3.11, CPU-only torch. GIT_COMMIT
#       becomes the image's revision label and the commit its jobs record.
#   docker build --build-arg VARIANT=gpu --build-arg TORCH_INDEX=https://pypi.org/simple \
#       -t ghcr.io/pumpfleet/pumpfleet:0.1.0-gpu .
#       Ray GPU workers: the same on Ray's CUDA image, with PyPI's CUDA build of torch.
#   docker build --target mlflow -t ghcr.io/pumpfleet/pumpfleet-mlflow:0.1.0 .
#       The MLflow tracking server (PostgreSQL, S3, basic-auth), the clients' version.
# Every image runs as a non-root user (uid 1000).

ARG VARIANT=cpu

FROM python:3.11.13-slim-bookworm AS mlflow
LABEL org.opencontainers.image.title="pumpfleet-mlflow" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.pumpfleet.image="ghcr.io/pumpfleet/pumpfleet-mlflow"
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=1
RUN pip install --no-cache-dir "mlflow[auth,db]==3.17.2" "boto3==1.44.5" \
    && useradd --create-home --uid 1000 --user-group mlflow
USER 1000:1000
WORKDIR /home/mlflow
EXPOSE 5000
ENTRYPOINT ["mlflow", "server"]
CMD ["--host", "0.0.0.0", "--port", "5000"]

FROM rayproject/ray:2.60.0-py311-${VARIANT} AS pumpfleet
# torch comes from this index: PyTorch's CPU wheels by default (an unpinned index would
# bring the CUDA build, gigabytes the CPU nodes never use).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# The commit the image is built from: its revision label, and what every run in it
# records (Settings.git_commit); a job that ships its own working dir passes its own
# PUMPFLEET_GIT_COMMIT in its runtime env, which wins.
ARG GIT_COMMIT=""
LABEL org.opencontainers.image.title="pumpfleet" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      io.pumpfleet.image="ghcr.io/pumpfleet/pumpfleet"
ENV PUMPFLEET_GIT_COMMIT="${GIT_COMMIT}" \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    MLFLOW_DISABLE_TELEMETRY=true \
    ORT_DISABLE_TELEMETRY=1 \
    NML_DISABLE_USAGE_LOGGING=1 \
    DO_NOT_TRACK=1
# The base image's user `ray` (uid 1000, group users: 100) owns its Python environment;
# numeric, so that Kubernetes' runAsNonRoot can check it.
USER 1000:100
WORKDIR /home/ray/pumpfleet
COPY --chown=1000:100 pyproject.toml README.md ./
COPY --chown=1000:100 pumpfleet/ pumpfleet/
COPY --chown=1000:100 pumpfleet_cli/ pumpfleet_cli/
COPY --chown=1000:100 ray_jobs/ ray_jobs/
COPY --chown=1000:100 serve_apps/ serve_apps/
COPY --chown=1000:100 edge_export/ edge_export/
# The project itself: its dependencies are pinned in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --extra-index-url "${TORCH_INDEX}" ".[cloud]" \
    && python -c "import pumpfleet, pumpfleet_cli.main, ray_jobs.train, serve_apps.scoring"
# Entry points run from anywhere: `python -m ray_jobs.<name>`, serve_apps.scoring:build_app.
WORKDIR /home/ray
