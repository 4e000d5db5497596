# syntax=docker/dockerfile:1
# The project image: Ray head and workers (trials run here) and the MLflow server of docker-compose.yml.
#
#   docker build -t mssd-study:gpu .                      # default: CUDA PyTorch base image
#   docker build -t mssd-study:cpu --build-arg VARIANT=cpu .
#
# VARIANT picks the base stage below. The GPU base already ships torch with CUDA; pick a tag whose torch
# matches the Makefile's pin and whose CUDA runs on your driver (GPU_BASE_IMAGE). The CPU variant installs
# torch itself (TORCH_SPEC); point PIP_EXTRA_INDEX_URL at PyTorch's CPU wheel index to skip the CUDA libs.
ARG VARIANT=gpu
ARG GPU_BASE_IMAGE=pytorch/pytorch:2.13.0-cuda12.8-cudnn9-runtime
ARG CPU_BASE_IMAGE=python:3.11-slim-bookworm

# torch comes with the GPU image: pip sees `torch>=2.3` satisfied and keeps it.
FROM ${GPU_BASE_IMAGE} AS base-gpu

FROM ${CPU_BASE_IMAGE} AS base-cpu
ARG TORCH_SPEC="torch==2.13.0"
ARG PIP_EXTRA_INDEX_URL=""
RUN pip install --no-cache-dir ${PIP_EXTRA_INDEX_URL:+--extra-index-url "$PIP_EXTRA_INDEX_URL"} "$TORCH_SPEC"

FROM base-${VARIANT} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    MPLBACKEND=Agg
# OpenCV's runtime libraries, curl-less healthchecks use python; util-linux gives flock (GPU claims).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libglib2.0-0 libgl1 util-linux \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/mssd
# Dependencies first so code edits do not reinstall them.
COPY pyproject.toml README.md ./
COPY detectors ./detectors
COPY losses ./losses
COPY study ./study
# The `server` extra: MLflow with basic auth (pinned >= 3.16.1 in pyproject.toml, see the comment there),
# the PostgreSQL driver and Ray Client. boto3 lets the MLflow server write to the S3 artifact store;
# clients never need it (artifacts are proxied through the server).
RUN pip install --no-cache-dir ".[server]" "boto3>=1.34,<2"
COPY configs ./configs
COPY search_spaces ./search_spaces
COPY docker/mlflow/start-mlflow.sh docker/ray/start-ray-node.sh /usr/local/bin/

# Never run as root inside the container.
RUN useradd --create-home --uid 1000 mssd \
    && mkdir -p /shared /var/lock/mssd-gpus \
    && chown mssd:mssd /shared /var/lock/mssd-gpus
USER mssd
CMD ["mssd", "--help"]
