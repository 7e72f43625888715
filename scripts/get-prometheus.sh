#!/usr/bin/env bash
# Fetch the Debian "prometheus" package (prometheus + promtool binaries) and
# unpack it locally, without installing it (no service is started).
#
# Usage: scripts/get-prometheus.sh [DEST]
#   DEST defaults to .cache/prometheus in the repository root.
# Prints the directory holding the binaries (DEST/usr/bin) on stdout.
# Idempotent: if DEST/usr/bin/prometheus already exists it only prints the path.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${1:-$REPO_ROOT/.cache/prometheus}"
case "$DEST" in
  /*) ;;
  *) DEST="$PWD/$DEST" ;;  # an explicit relative DEST is relative to the current directory
esac
BIN_DIR="$DEST/usr/bin"

die() { echo "get-prometheus.sh: error: $*" >&2; exit 1; }
log() { echo "get-prometheus.sh: $*" >&2; }

if [[ -x "$BIN_DIR/prometheus" && -x "$BIN_DIR/promtool" ]]; then
  echo "$BIN_DIR"
  exit 0
fi

command -v apt-get >/dev/null 2>&1 || die "apt-get not found (this script needs a Debian/Ubuntu system)"
command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb not found"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

download() {
  (cd "$TMP" && apt-get download prometheus) >"$TMP/download.log" 2>&1
}

log "downloading the Debian prometheus package"
if ! download; then
  log "apt-get download failed; running apt-get update and retrying"
  if ! apt-get update >"$TMP/update.log" 2>&1; then
    cat "$TMP/update.log" >&2
    die "apt-get update failed (are you root, and can the package mirror be reached?)"
  fi
  if ! download; then
    cat "$TMP/download.log" >&2
    die "apt-get download prometheus failed even after apt-get update"
  fi
fi

shopt -s nullglob
debs=("$TMP"/prometheus_*.deb)
shopt -u nullglob
[[ ${#debs[@]} -ge 1 ]] || die "no prometheus_*.deb was downloaded (see: apt-cache policy prometheus)"

# Unpack into a staging directory first so a failure never leaves a half-filled DEST.
STAGE="$TMP/stage"
mkdir -p "$STAGE"
dpkg-deb -x "${debs[0]}" "$STAGE" || die "dpkg-deb -x ${debs[0]} failed"
[[ -x "$STAGE/usr/bin/prometheus" ]] || die "the package does not contain usr/bin/prometheus"
[[ -x "$STAGE/usr/bin/promtool" ]] || die "the package does not contain usr/bin/promtool"

mkdir -p "$DEST"
cp -a "$STAGE/." "$DEST/"
log "installed $(basename "${debs[0]}") into $DEST"
echo "$BIN_DIR"
