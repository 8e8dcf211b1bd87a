#!/usr/bin/env bash
# `npm run demo`: set up, start the local stack, upload the demo data, run the whole pipeline once
# on configs/demo.json and follow it to the end. It always trains (--no-cache), even where an
# earlier demo run left identical stages. The stack stays up for browsing the run in the Temporal
# UI; `npm run stack:down` stops it.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
CONFIG="${1:-configs/demo.json}"

bash "$ROOT/infra/setup.sh"
bash "$ROOT/infra/stack.sh" up
env_run() { bash "$ROOT/infra/with-stack-env.sh" "$@"; }

env_run tsx infra/demo-data.ts "$CONFIG"

mkdir -p "$STATE/logs"
# Its own process group, so that stopping it stops tsx, node and any trainer they started.
setsid bash "$ROOT/infra/with-stack-env.sh" tsx worker.ts >"$STATE/logs/worker.log" 2>&1 &
worker=$!
trap 'kill -- -"$worker" 2>/dev/null; wait "$worker" 2>/dev/null' EXIT
# The run is followed as soon as it starts: wait until the worker says it polls, or the follow would say
# that it waits for one.
for _ in $(seq 120); do
  grep -q "polling task queue" "$STATE/logs/worker.log" 2>/dev/null && break
  kill -0 "$worker" 2>/dev/null || { log "the worker exited before it polled:"; tail -40 "$STATE/logs/worker.log" >&2; exit 1; }
  sleep 0.5
done
log "worker started (log: .state/logs/worker.log)"

if ! env_run tsx start-run.ts "$CONFIG" --follow --no-cache; then
  log "the run failed; last lines of the worker log:"
  tail -40 "$STATE/logs/worker.log" >&2
  exit 1
fi
log "done. Browse the run at http://127.0.0.1:$TEMPORAL_UI_PORT ; stop the stack with 'npm run stack:down'"
