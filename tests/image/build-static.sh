#!/usr/bin/env bash
# Builds keymint for the image (Dockerfile.host on this host, Dockerfile in
# an engine): a release build, stripped, statically linked (glibc's
# static-pie), in a target directory of its own so that it never
# invalidates target/release.
# Cargo's cache makes a second run a no-op; after a change to src/ it
# rebuilds the keymint crate only. Prints the binary's path on stdout.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/../.."
# The host's own triple (x86_64-unknown-linux-gnu here), named explicitly so
# that RUSTFLAGS reach only keymint's crates (below).
target="$(rustc -vV | sed -n 's/^host: //p')"
# The image test runs this from `cargo test`, with the variables cargo sets
# for a test process. Build scripts watch some of them (ring: the manifest
# directory), and a value that differs from the last build's rebuilds every
# crate: build as from a plain shell, always.
unset CARGO_MANIFEST_DIR CARGO_MANIFEST_PATH CARGO_CRATE_NAME CARGO_BIN_NAME \
  CARGO_PRIMARY_PACKAGE CARGO_TARGET_TMPDIR OUT_DIR
for var in $(compgen -e | grep '^CARGO_PKG_' || true); do unset "$var"; done
# With --target, RUSTFLAGS reach only the target's crates: build scripts and
# proc macros stay dynamically linked, as they must.
RUSTFLAGS='-C target-feature=+crt-static' CARGO_PROFILE_RELEASE_STRIP=symbols \
  cargo build --release --locked --bin keymint --target "$target" --target-dir target/static >&2
echo "$PWD/target/static/$target/release/keymint"
