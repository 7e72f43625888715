#!/usr/bin/env bash
# Fetch the Debian "victoria-metrics" package (a second Prometheus-compatible server for the
# tests) and unpack it locally, without installing it (no service is started).
#
# Usage: scripts/get-victoria-metrics.sh [DEST]
#   DEST defaults to .cache/victoria-metrics in the repository root.
# Prints the path of the victoria-metrics binary (DEST/usr/bin/victoria-metrics) on stdout.
# Idempotent: if the binary already exists it only prints the path.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${1:-$REPO_ROOT/.cache/victoria-metrics}"
case "$DEST" in
  /*) ;;
  *) DEST="$PWD/$DEST" ;;  # an explicit relative DEST is relative to the current directory
esac
BIN="$DEST/usr/bin/victoria-metrics"

die() { echo "get-victoria-metrics.sh: error: $*" >&2; exit 1; }
log() { echo "get-victoria-metrics.sh: $*" >&2; }

if [[ -x "$BIN" ]]; then
  echo "$BIN"
  exit 0
fi

command -v apt-get >/dev/null 2>&1 || die "apt-get not found (this script needs a Debian/Ubuntu system)"
command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb not found"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

download() {
  (cd "$TMP" && apt-get download victoria-metrics) >"$TMP/download.log" 2>&1
}

log "downloading the Debian victoria-metrics package"
if ! download; then
  log "apt-get download failed; running apt-get update and retrying"
  if ! apt-get update >"$TMP/update.log" 2>&1; then
    cat "$TMP/update.log" >&2
    die "apt-get update failed (are you root, and can the package mirror be reached?)"
  fi
  if ! download; then
    cat "$TMP/download.log" >&2
    die "apt-get download victoria-metrics failed even after apt-get update"
  fi
fi

shopt -s nullglob
debs=("$TMP"/victoria-metrics_*.deb)
shopt -u nullglob
[[ ${#debs[@]} -ge 1 ]] || die "no victoria-metrics_*.deb was downloaded (see: apt-cache policy victoria-metrics)"

# Unpack into a staging directory first so a failure never leaves a half-filled DEST.
STAGE="$TMP/stage"
mkdir -p "$STAGE"
dpkg-deb -x "${debs[0]}" "$STAGE" || die "dpkg-deb -x ${debs[0]} failed"
[[ -x "$STAGE/usr/bin/victoria-metrics" ]] || die "the package does not contain usr/bin/victoria-metrics"

mkdir -p "$DEST"
cp -a "$STAGE/." "$DEST/"
log "installed $(basename "${debs[0]}") into $DEST"
echo "$BIN"
