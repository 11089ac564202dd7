#!/bin/sh
# Builds __NAME__.wasm, a WebAssembly component, from app.py and the respawn_plugin SDK beside it, with the
# componentize-py this scaffold was written for, against the WIT in wit/ (world provider-http: respawn's
# provider world plus wasi:http). When that componentize-py is not on PATH (or in $COMPONENTIZE_PY), it is
# installed once into a virtualenv under ~/.cache/respawn (pip, from PyPI).
set -eu
cd "$(dirname "$0")"
version=__COMPONENTIZE_PY_VERSION__
want="componentize-py $version"
cpy=${COMPONENTIZE_PY:-componentize-py}
if [ "$("$cpy" --version 2>/dev/null || true)" != "$want" ]; then
  venv=${XDG_CACHE_HOME:-$HOME/.cache}/respawn/componentize-py-$version
  cpy=$venv/bin/componentize-py
  # Two builds at once on a fresh machine would install into one virtualenv together: one installs, the
  # other waits for it (flock, where util-linux has it) and then finds it installed.
  mkdir -p "$(dirname "$venv")"
  exec 9>"$venv.lock"
  if command -v flock >/dev/null 2>&1; then flock 9; fi
  if [ "$("$cpy" --version 2>/dev/null || true)" != "$want" ]; then
    echo "build.sh: installing componentize-py $version into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$version"
  fi
fi
"$cpy" --quiet -d wit -w provider-http componentize app -o __NAME__.wasm
echo "built __NAME__.wasm"
