#!/usr/bin/env bash
# Refresh the vendored Leaflet from the npm registry, reproducibly.
#
# The version and the sha256 of its npm tarball are pinned below; the script refuses a tarball
# whose hash differs. It copies only what the viewer ships: leaflet.js, leaflet.css, images/ and
# LICENSE into viewer/vendor/leaflet-<version>/. To move to another version, change both pins,
# run the script, update the path in weightvis/html.py and viewer/index.html.j2.
set -euo pipefail

LEAFLET_VERSION="1.9.4"
LEAFLET_SHA256="84c65a256e50657896f54c33bd857b6849ebe94c817803be818bf32a3dde0b77"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="$here/leaflet-$LEAFLET_VERSION"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

(cd "$work" && npm pack --silent "leaflet@$LEAFLET_VERSION" >/dev/null)
tarball="$work/leaflet-$LEAFLET_VERSION.tgz"
echo "$LEAFLET_SHA256  $tarball" | sha256sum --check --quiet -

tar -xzf "$tarball" -C "$work"
rm -rf "$dest"
mkdir -p "$dest/images"
cp "$work/package/dist/leaflet.js" "$work/package/dist/leaflet.css" "$dest/"
cp "$work/package/dist/images/"*.png "$dest/images/"
cp "$work/package/LICENSE" "$dest/LICENSE"
echo "leaflet $LEAFLET_VERSION -> $dest"
