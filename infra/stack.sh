#!/usr/bin/env bash
# The local stack: a Temporal dev server (with UI), the webhook, and a MinIO server that notifies
# the webhook of uploads under every trigger's prefix; state under .state/.
#   infra/stack.sh up | down | status        (npm run stack:up / stack:down / stack:status)
# `up` is safe to run twice: a server that is already answering is left alone.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
mkdir -p "$STATE/logs"

alive() { [[ -f "$STATE/$1.pid" ]] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

temporal_ready() { temporal operator cluster health --address "127.0.0.1:$TEMPORAL_PORT" >/dev/null 2>&1; }
minio_ready() { curl -sf "http://127.0.0.1:$MINIO_PORT/minio/health/live" >/dev/null; }
webhook_ready() { curl -sf "http://127.0.0.1:$WEBHOOK_PORT/healthz" >/dev/null; }

wait_for() {
  local name="$1" check="$2"
  for _ in $(seq 1 120); do
    if $check; then return 0; fi
    if ! alive "$name"; then log "$name exited; last lines of .state/logs/$name.log:"; tail -20 "$STATE/logs/$name.log" >&2; return 1; fi
    sleep 0.5
  done
  log "$name did not answer within 60 s (see .state/logs/$name.log)"
  return 1
}

start_temporal() {
  if alive temporal && temporal_ready; then log "temporal already up"; return; fi
  local sa=()
  for attribute in "${SEARCH_ATTRIBUTES[@]}"; do sa+=(--search-attribute "$attribute"); done
  nohup temporal server start-dev --ip 127.0.0.1 --port "$TEMPORAL_PORT" --ui-port "$TEMPORAL_UI_PORT" \
    --db-filename "$STATE/temporal.db" --log-level warn "${sa[@]}" >"$STATE/logs/temporal.log" 2>&1 &
  echo $! >"$STATE/temporal.pid"
  wait_for temporal temporal_ready
  log "temporal up: 127.0.0.1:$TEMPORAL_PORT, UI http://127.0.0.1:$TEMPORAL_UI_PORT"
}

start_minio() {
  if alive minio && minio_ready; then log "minio already up"; return; fi
  load_credentials
  mkdir -p "$STATE/minio" "$STATE/minio-events"
  # Uploads are announced to the webhook with its token; undelivered events wait in a queue dir.
  MINIO_NOTIFY_WEBHOOK_ENABLE_LAWGPT=on \
    MINIO_NOTIFY_WEBHOOK_ENDPOINT_LAWGPT="http://127.0.0.1:$WEBHOOK_PORT/s3-events" \
    MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_LAWGPT="$LAWGPT_WEBHOOK_TOKEN" \
    MINIO_NOTIFY_WEBHOOK_QUEUE_DIR_LAWGPT="$STATE/minio-events" \
    nohup minio server "$STATE/minio" --address "127.0.0.1:$MINIO_PORT" --console-address "127.0.0.1:$MINIO_CONSOLE_PORT" --quiet \
    >"$STATE/logs/minio.log" 2>&1 &
  echo $! >"$STATE/minio.pid"
  wait_for minio minio_ready
  log "minio up: http://127.0.0.1:$MINIO_PORT, console http://127.0.0.1:$MINIO_CONSOLE_PORT (login in .state/credentials.env)"
}

start_webhook() {
  if alive webhook && webhook_ready; then log "webhook already up"; return; fi
  # Its own process group, so that stopping it stops tsx and node alike.
  setsid bash "$ROOT/infra/with-stack-env.sh" --webhook-token tsx webhook/server.ts >"$STATE/logs/webhook.log" 2>&1 &
  echo $! >"$STATE/webhook.pid"
  wait_for webhook webhook_ready
  log "webhook up: http://127.0.0.1:$WEBHOOK_PORT/s3-events (triggers: $TRIGGERS)"
}

# MinIO notifies the webhook of objects created under each trigger's prefix (mc reaches MinIO
# through MC_HOST_*, so no credential is written to a config file).
watch_triggers() {
  load_credentials
  export MC_HOST_lawgpt="http://$MINIO_ROOT_USER:$MINIO_ROOT_PASSWORD@127.0.0.1:$MINIO_PORT" MC_CONFIG_DIR="$STATE/mc"
  node -e 'for (const t of JSON.parse(require("fs").readFileSync(require("path").resolve(process.argv[1], process.argv[2]), "utf8")).triggers) console.log(`${t.bucket}\t${t.prefix}`)' "$ROOT" "$TRIGGERS" |
    while IFS=$'\t' read -r bucket prefix; do
      mc --quiet mb --ignore-existing "lawgpt/$bucket" >/dev/null
      mc --quiet event add "lawgpt/$bucket" arn:minio:sqs::LAWGPT:webhook --event put --prefix "$prefix" --ignore-existing >/dev/null
      log "minio notifies the webhook of uploads under s3://$bucket/$prefix"
    done
}

stop() {
  local name="$1"
  if alive "$name"; then
    local pid; pid="$(cat "$STATE/$name.pid")"
    # The webhook leads its own process group; the servers are single processes.
    kill -- "-$pid" 2>/dev/null || kill "$pid"
    for _ in $(seq 1 40); do alive "$name" || break; sleep 0.25; done
    alive "$name" && { kill -9 -- "-$pid" 2>/dev/null || kill -9 "$pid"; }
    log "$name stopped"
  fi
  rm -f "$STATE/$name.pid"
}

case "${1:-}" in
  up) start_temporal; start_webhook; start_minio; watch_triggers ;;
  down) stop webhook; stop temporal; stop minio ;;
  status)
    for name in temporal webhook minio; do
      if alive "$name"; then echo "$name: running (pid $(cat "$STATE/$name.pid"))"; else echo "$name: stopped"; fi
    done
    ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
