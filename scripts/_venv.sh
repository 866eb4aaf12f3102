# Sourced by scripts/serve and scripts/test: make ./.venv with erqpy and the first-party
# plugins under plugins/ installed (editable) when it is missing or a pyproject.toml
# changed since the last install.
set -eu
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
python=${PYTHON:-python3}
stamp="$venv/.erqpy-installed"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
changed=
for project in "$root/pyproject.toml" "$root"/plugins/*/pyproject.toml; do
  if [ -f "$project" ] && { [ ! -f "$stamp" ] || [ "$project" -nt "$stamp" ]; }; then changed=1; fi
done
if [ -n "$changed" ]; then
  "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
  plugin_args=()
  for plugin in "$root"/plugins/*/; do
    [ -f "$plugin/pyproject.toml" ] && plugin_args+=(-e "$plugin")
  done
  "$venv/bin/python" -m pip install -q -e "$root[test]" "${plugin_args[@]}"
  touch "$stamp"
fi
