#!/usr/bin/env bash
# `npm run bench [-- --quick] [-- --only P1,P4]`: set up, then the CPU benchmarks (bench/run.ts).
# Each starts the services it needs on free ports; nothing here needs the stack.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bash "$ROOT/infra/setup.sh"
source "$ROOT/infra/tool-env.sh"
cd "$ROOT"
exec tsx bench/run.ts "$@"
