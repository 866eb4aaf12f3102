# Sourced by scripts/serve, scripts/test and the benchmarks: make ./.venv with erqpy and
# the first-party plugins under plugins/ installed (editable) when it is missing or a
# pyproject.toml changed since the last install.
#
# Two flavours, chosen by setting venv_flavour before sourcing: "test" (the default:
# erqpy[test], pytest and the HTTP test tools, a few hundred MB) and "serve" (erqpy and
# the plugins only, what running a server needs).  Each has its own stamp; a test install
# also satisfies serve, so scripts/serve after scripts/test installs nothing.
set -eu
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
python=${PYTHON:-python3}
flavour=${venv_flavour:-test}
test_stamp="$venv/.erqpy-installed"
serve_stamp="$venv/.erqpy-installed-serve"

# True when $1 exists and is newer than every pyproject.toml.
_venv_fresh() {
  [ -f "$1" ] || return 1
  local project
  for project in "$root/pyproject.toml" "$root"/plugins/*/pyproject.toml; do
    if [ -f "$project" ] && [ "$project" -nt "$1" ]; then return 1; fi
  done
  return 0
}

if [ "$flavour" = serve ]; then
  stamp=$serve_stamp
  target="$root"
  _venv_fresh "$test_stamp" && stamp=$test_stamp
else
  stamp=$test_stamp
  target="$root[test]"
fi
if ! _venv_fresh "$stamp"; then
  if [ ! -x "$venv/bin/python" ]; then
    echo "$(basename "$0"): creating $venv" >&2
    "$python" -m venv "$venv"
  fi
  echo "$(basename "$0"): installing erqpy ($flavour) into $venv; first run or a changed pyproject.toml only" >&2
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
  plugin_args=()
  for plugin in "$root"/plugins/*/; do
    [ -f "$plugin/pyproject.toml" ] && plugin_args+=(-e "$plugin")
  done
  # pip's own progress (each download and its bar) goes to the terminal: stderr, so that
  # the server's start-up line stays the first line on stdout.
  "$venv/bin/python" -m pip install --progress-bar on -e "$target" "${plugin_args[@]}" >&2
  touch "$stamp"
  echo "$(basename "$0"): installed" >&2
fi
