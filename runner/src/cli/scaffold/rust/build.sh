#!/bin/sh
# Builds __NAME__.wasm, a WebAssembly component, with cargo for the wasm32-wasip2 target (added with rustup when
# it is missing). The first build fetches wit-bindgen, wasi and serde from crates.io.
set -eu
cd "$(dirname "$0")"
if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi
cargo build --release --target wasm32-wasip2
cp "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/__IDENT__.wasm" __NAME__.wasm
echo "built __NAME__.wasm"
