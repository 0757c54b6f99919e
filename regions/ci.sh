#!/usr/bin/env bash
# The compose demo end to end, for CI (.ci/run calls it after the cargo tests):
#   build (static binary + image) → up → demo.sh (assertions) → down -v → nothing left behind.
# Tears down on any exit (trap), including a timeout's SIGTERM. Prints the time of each phase.
# Uses the default project name (`regions`): a demo already running from this checkout is
# replaced.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."

if docker compose version >/dev/null 2>&1; then
  dc() { docker compose -f regions/docker-compose.yml "$@"; }
else
  dc() { docker-compose -f regions/docker-compose.yml "$@"; }
fi
project=${COMPOSE_PROJECT_NAME:-regions}

t0=$(date +%s)
phase_start=$t0
phase() {
  local now; now=$(date +%s)
  echo "compose-ci: $1 took $(( now - phase_start )) s"
  phase_start=$now
}

down() {
  dc down -v --remove-orphans --timeout 5 >/dev/null 2>&1 || true
}
cleanup() {
  local rc=$?
  trap - EXIT
  if [ "$rc" -ne 0 ]; then
    echo "compose-ci: failed (exit $rc); node logs (last 40 lines each):" >&2
    dc logs --no-color --tail 40 >&2 2>/dev/null || true
  fi
  down
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

down # a previous run or demo of this checkout
regions/build.sh
phase build
dc up -d
phase up
regions/demo.sh
phase demo
trap - EXIT
dc down -v --remove-orphans --timeout 5
phase down

# Nothing of the project may survive `down -v`: containers, networks, volumes.
left=$(
  docker ps -aq --filter "label=com.docker.compose.project=$project"
  docker network ls -q --filter "label=com.docker.compose.project=$project"
  docker volume ls -q --filter "label=com.docker.compose.project=$project"
)
if [ -n "$left" ]; then
  echo "compose-ci: down left these behind:" >&2
  echo "$left" >&2
  exit 1
fi
echo "compose-ci: down left nothing behind"
echo "compose-ci: passed in $(( $(date +%s) - t0 )) s"
