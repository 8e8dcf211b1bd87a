#!/usr/bin/env bash
# Runs a command with the environment that points the orchestrator at the local stack.
#   infra/with-stack-env.sh [--webhook-token] <command...>
# Credentials go into the environment of that command only; they are never printed. The webhook's
# token only with --webhook-token: nothing else needs it.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
load_credentials
export TEMPORAL_ADDRESS="127.0.0.1:$TEMPORAL_PORT"
export TEMPORAL_UI_URL="http://127.0.0.1:$TEMPORAL_UI_PORT"
export LAWGPT_S3_ENDPOINT="http://127.0.0.1:$MINIO_PORT"
export LAWGPT_S3_FORCE_PATH_STYLE=true
export AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID="$MINIO_ROOT_USER"
export AWS_SECRET_ACCESS_KEY="$MINIO_ROOT_PASSWORD"
unset MINIO_ROOT_USER MINIO_ROOT_PASSWORD
if [[ "${1:-}" == "--webhook-token" ]]; then shift; else unset LAWGPT_WEBHOOK_TOKEN; fi
# The pinned SDK supports Node 20 (this machine's); its notice about 2027 releases is not actionable here.
export AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED=true
export LAWGPT_PYTHON="$VENV/bin/python"
export LAWGPT_WORK_DIR="$STATE/work"
cd "$ROOT"
exec "$@"
