#!/usr/bin/env bash
# Fetches the dashboard's vendored assets again, exactly as src/corral/api/dashboard/static/vendor/assets.lock
# pins them: `npm pack NAME@VERSION`, the tarball's sha512 checked against the lock, the named file copied.
# Needs npm (only here: `make up` and the wheel need no Node).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=src/corral/api/dashboard/static/vendor
lock=$dest/assets.lock
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
grep -v '^#' "$lock" | while IFS=$'\t' read -r name version integrity member target; do
  [ -n "$name" ] || continue
  tgz="$work/$name-$version.tgz"
  if [ ! -f "$tgz" ]; then
    (cd "$work" && npm pack --silent "$name@$version" >/dev/null)
    mv "$work/$name-$version.tgz" "$tgz" 2>/dev/null || true
  fi
  got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
  if [ "$got" != "$integrity" ]; then
    echo "$name@$version: integrity $got is not the locked $integrity" >&2
    exit 1
  fi
  tar -xzf "$tgz" -C "$work" "$member"
  cp "$work/$member" "$dest/$target"
  rm -rf "$work/package"
  echo "$name@$version $member -> $dest/$target"
done
