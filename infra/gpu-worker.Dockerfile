# The pipeline's worker image: a GPU trainer worker (LAWGPT_WORKER_ROLE=trainer) and, run without
# a GPU, the orchestrator and the webhook (infra/compose.yaml).
#
# Needs on the host: an NVIDIA driver for CUDA 12.6 (>= 560; 535+ runs it through CUDA's minor
# version compatibility) and the NVIDIA Container Toolkit. Runs on V100 (sm70) and every newer GPU:
# torch comes from PyTorch's CUDA 12.6 index, because the CUDA 13 builds on PyPI dropped sm70.
#
#   docker build -f infra/gpu-worker.Dockerfile --build-arg LAWGPT_GIT_COMMIT="$(git rev-parse HEAD)" -t lawgpt-worker .
#
# Not built on the project's machines (no Docker engine there); tests/deploy.test.ts lints it.
FROM node:20.19-bookworm-slim AS node

FROM nvidia/cuda:12.6.3-cudnn-devel-ubuntu24.04

# torch 2.15.0 is what trainer-py/requirements.txt pins; the CUDA 12.6 build must exist for it.
ARG TORCH_VERSION=2.15.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu126

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/trainer \
    PATH=/opt/trainer/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    LAWGPT_PYTHON=/opt/trainer/bin/python \
    LAWGPT_HEALTH_FILE=/tmp/lawgpt-worker-alive

# pdsh and ssh: DeepSpeed's launcher reaches the other hosts of a multi-node stage through them.
# Not pinned: Ubuntu replaces a version with its security fix; the base image tag pins the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential git ca-certificates pdsh openssh-client \
    && rm -rf /var/lib/apt/lists/*

COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules /usr/local/lib/node_modules
RUN ln -s /usr/local/lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm

WORKDIR /app

# The trainer's pinned environment, with torch first from the CUDA 12.6 index so that the
# requirements find it satisfied; then DeepSpeed, built against it with none of its kernels
# compiled ahead: training steps torch's AdamW, not DeepSpeed's, and a kernel DeepSpeed does
# need is compiled at its first use by this devel image's nvcc.
COPY trainer-py/requirements.txt trainer-py/requirements-deepspeed.txt trainer-py/
RUN python3 -m venv "$VIRTUAL_ENV" \
    && pip install pip==26.3 setuptools==84.2.1 wheel==0.48.0 \
    && pip install --index-url "$TORCH_INDEX" "torch==$TORCH_VERSION" \
    && pip install -r trainer-py/requirements.txt \
    && pip install --no-build-isolation -r trainer-py/requirements-deepspeed.txt \
    && python -c "import torch; flags = torch._C._cuda_getArchFlags(); assert 'sm_70' in flags, f'this torch has no V100 kernels: {flags}'"

COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

COPY . .
# The commit the image was built from, for run reports' lineage (the image has no .git).
ARG LAWGPT_GIT_COMMIT=unknown
ENV LAWGPT_GIT_COMMIT=$LAWGPT_GIT_COMMIT
RUN pip install --no-deps --no-build-isolation -e trainer-py \
    && useradd --create-home --uid 10001 lawgpt \
    && mkdir -p /work \
    && chown lawgpt:lawgpt /work

USER 10001
ENV LAWGPT_WORK_DIR=/work

# The worker touches LAWGPT_HEALTH_FILE while it polls; a stale file means it is stuck or gone.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["sh", "-c", "test -n \"$(find \"$LAWGPT_HEALTH_FILE\" -mmin -2 2>/dev/null)\""]

CMD ["node_modules/.bin/tsx", "worker.ts"]
