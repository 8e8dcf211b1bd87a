#!/usr/bin/env bash
# `npm run bench:gpu`: training speed and memory on a GPU machine (bench/gpu.py), in three steps.
#
#   npm run bench:gpu -- --prepare   here, with the package registries: the wheels the GPU image
#                                    lacks, a corpus slice, the tokenizers and the run plan, into
#                                    .state/gpu-carry/ (carried with the repository: 64 MiB in all)
#   bash infra/bench-gpu.sh          on the GPU machine (no network, maybe no Node): installs the
#                                    carried wheels beside the image's torch and runs the plan;
#                                    results go to bench/results/ (or --out DIR); --seconds N
#                                    bounds the plan's time, for a machine with a command limit
#   npm run bench:gpu -- --smoke     here, on CPU: the same script on a tiny shape, to check it
#
# The GPU image has torch (CUDA), transformers, peft, accelerate and sentencepiece, but not
# DeepSpeed or this project's pins; WHEELS is what has to travel (checked by an import after install).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
CARRY="$STATE/gpu-carry"
WHEELS=(
  transformers==5.24.0 peft==0.21.2
  jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
  hjson==3.1.0 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  typing_extensions==4.16.0
)
DEEPSPEED=deepspeed==0.19.8
CARRY_LIMIT_MIB=60  # of the 64 MiB the device tool carries, with room for the repository itself

prepare() {
  bash "$ROOT/infra/setup.sh"
  source "$ROOT/infra/tool-env.sh"
  mkdir -p "$CARRY/wheels"
  log "downloading the wheels the GPU image lacks (CPython 3.12, manylinux)"
  "$VENV/bin/pip" download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d "$CARRY/wheels" "${WHEELS[@]}"
  if ! ls "$CARRY/wheels"/deepspeed-*.whl >/dev/null 2>&1; then
    log "building a pure-Python DeepSpeed wheel (ops compile just in time on the GPU machine)"
    DS_BUILD_OPS=0 "$VENV/bin/pip" wheel --quiet --no-deps --no-build-isolation -w "$CARRY/wheels" "$DEEPSPEED"
  fi
  (cd "$ROOT" && tsx bench/gpu-plan.ts --carry "$CARRY" "$@")
  local mib; mib=$(( $(du -sk "$CARRY" | cut -f1) / 1024 ))
  (( mib <= CARRY_LIMIT_MIB )) || { log "$CARRY is $mib MiB, over the $CARRY_LIMIT_MIB MiB that can travel"; exit 1; }
  log "ready: $mib MiB in .state/gpu-carry; on the GPU machine run: bash infra/bench-gpu.sh (carry .state/gpu-carry)"
}

run_plan() {
  local python="$1"; shift
  (cd "$ROOT" && PYTHONPATH="${SITE:+$SITE:}$ROOT/trainer-py" "$python" bench/gpu.py --carry "$CARRY" "$@")
}

case "${1:-}" in
  --prepare)
    shift
    prepare "$@"
    ;;
  --smoke)
    shift
    prepare --smoke
    source "$ROOT/infra/tool-env.sh"
    run_plan "$VENV/bin/python" --out "$STATE/bench-gpu-smoke" "$@"
    ;;
  *)
    [[ -f "$CARRY/plan.json" ]] || { log "no .state/gpu-carry/plan.json: run 'npm run bench:gpu -- --prepare' where the registries are, and carry .state/gpu-carry"; exit 1; }
    SITE="${LAWGPT_GPU_SITE:-/tmp/lawgpt-gpu-site}"
    if [[ ! -f "$SITE/.complete" ]]; then
      python3 -m pip install --quiet --no-index --no-deps --target "$SITE" "$CARRY"/wheels/*.whl
      touch "$SITE/.complete"
    fi
    PYTHONPATH="$SITE:$ROOT/trainer-py" python3 -c 'import deepspeed, peft, transformers, jsonschema, lawgpt_trainer' \
      || { log "the carried wheels do not make a working trainer here: add what the import above misses to WHEELS"; exit 1; }
    export SITE
    run_plan python3 "$@"
    ;;
esac
