#!/usr/bin/env bash
# Builds the Debian package into OUTDIR (default target/debian): with cargo-deb when it is
# installed (metadata in Cargo.toml), else with dpkg-deb from a staging dir with the same
# layout. CCO_DEB_BIN picks the binary to ship (default target/release/cco, built if absent).
#   packaging/deb/build.sh [OUTDIR]
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=$(realpath -m "${1:-$repo/target/debian}")
bin=${CCO_DEB_BIN:-$repo/target/release/cco}
mkdir -p "$out"
cd "$repo"
if [[ "$bin" == "$repo/target/release/cco" && ! -x "$bin" ]]; then
  cargo build --release --locked
fi

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)

if cargo deb --version >/dev/null 2>&1 && [[ "$bin" == "$repo/target/release/cco" ]]; then
  cargo deb --no-build --output "$out"
  echo "cargo-deb: $(ls "$out"/cco_*.deb)"
  exit 0
fi

# dpkg-deb: the same assets as [package.metadata.deb] in Cargo.toml.
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
install -Dm755 "$bin" "$stage/usr/bin/cco"
for u in cco-daemon.socket cco-daemon.service cco-sidecar.socket cco-sidecar.service; do
  install -Dm644 "systemd/$u" "$stage/usr/lib/systemd/user/$u"
done
install -Dm644 packaging/daemon.toml "$stage/usr/share/doc/cco/daemon.toml.example"
mkdir -p "$stage/DEBIAN"
libc=$(dpkg-query -W -f='${Version}' libc6 2>/dev/null | cut -d- -f1)
cat >"$stage/DEBIAN/control" <<CONTROL
Package: cco
Version: $version
Architecture: $arch
Maintainer: cco maintainers <cco@example.invalid>
Section: devel
Priority: optional
Depends: libc6 (>= ${libc:-2.36})
Installed-Size: $(du -sk "$stage/usr" | cut -f1)
Description: Claude Code Orchestra: socket-activated orchestration for Claude Code
 cco lets one Claude Code session coordinate many specialised sub-agents. The daemon
 (127.0.0.1:3000) and the sidecar (127.0.0.1:3001) are socket-activated systemd user
 services; run `cco install` once per user to enable their sockets.
CONTROL
deb="$out/cco_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$stage" "$deb" >/dev/null
echo "dpkg-deb: $deb"
