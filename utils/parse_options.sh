#!/usr/bin/env bash
# Kaldi-style option parsing, sourced by a recipe after its variables are set:
#   . utils/parse_options.sh
# `--name value` sets the shell variable `name` (dashes become underscores); the variable must
# already exist, so a typo is an error instead of a silently ignored option. A variable whose
# current value is true/false only accepts true/false. `--config FILE` sources FILE, a file of
# `name=value` lines; each name in it counts as given with `--name value` (it must exist, and
# apply_defaults does not replace it).
# `--help` prints $help_message, then each variable named in the array `recipe_vars` with its
# current value, then the `recipe_stages` array ("N: name" entries), and exits 0.
# Positional arguments after the options are left in "$@".
# The names of the variables set on the command line (options and --config files) are kept in
# `cmdline_vars` (a string of " name " entries): `given_on_command_line NAME` tests it, and
# `apply_defaults FILE` sources a file of defaults (e.g. the demo's conf/demo.conf) without
# replacing any of those values.

cmdline_vars=${cmdline_vars:-" "}
given_on_command_line() { [[ "$cmdline_vars" == *" $1 "* ]]; }
apply_defaults() {  # apply_defaults FILE: source FILE, keep every value given on the command line
  local _ad_saved=() _ad_v _ad_s
  for _ad_v in $cmdline_vars; do _ad_saved+=("$_ad_v=${!_ad_v}"); done
  # shellcheck disable=SC1090
  . "$1"
  for _ad_s in ${_ad_saved[@]+"${_ad_saved[@]}"}; do
    printf -v "${_ad_s%%=*}" '%s' "${_ad_s#*=}"
  done
}

_po_bool_value() {  # NAME OLD NEW WHERE: a true/false variable only takes true or false
  if { [ "$2" = true ] || [ "$2" = false ]; } && [ "$3" != true ] && [ "$3" != false ]; then
    echo "$0: $4 is boolean: give true or false, not '$3'" >&2
    exit 1
  fi
}

_po_print_help() {
  [ -n "${help_message:-}" ] && printf '%s\n' "$help_message"
  if [ -n "${recipe_vars+x}" ]; then
    echo
    echo "Variables (set with --name value; dashes and underscores are interchangeable):"
    local _v
    for _v in "${recipe_vars[@]}"; do
      printf '  --%-22s %s\n' "${_v//_/-}" "'${!_v}'"
    done
  fi
  if [ -n "${recipe_stages+x}" ]; then
    echo
    echo "Stages (--stage N --stop-stage M runs N..M):"
    local _s
    for _s in "${recipe_stages[@]}"; do
      printf '  %s\n' "$_s"
    done
  fi
}

while true; do
  [ $# -eq 0 ] && break
  case "$1" in
    --help|-h)
      _po_print_help
      exit 0 ;;
    --config)
      if [ $# -lt 2 ]; then echo "$0: option --config needs a file" >&2; exit 1; fi
      if [ ! -f "$2" ]; then echo "$0: config file '$2' not found" >&2; exit 1; fi
      # Each `name=value` line of FILE counts as `--name value`: the variable must exist, a
      # true/false variable takes only true/false, and the value is recorded as given.
      _po_names=() _po_olds=() _po_n=0
      while IFS= read -r _po_line || [ -n "$_po_line" ]; do
        _po_n=$((_po_n + 1))
        [[ "$_po_line" =~ ^[[:space:]]*(export[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*)\+?= ]] ||
          continue
        _po_name=${BASH_REMATCH[2]}
        if [ -z "${!_po_name+x}" ]; then
          echo "$0: config file '$2' line $_po_n: unknown variable '${_po_name}' (see --help)" >&2
          exit 1
        fi
        _po_names+=("$_po_name"); _po_olds+=("${!_po_name}")
      done < "$2"
      # shellcheck disable=SC1090
      . "$2" || { echo "$0: failed to source config file '$2'" >&2; exit 1; }
      for _po_n in "${!_po_names[@]}"; do
        _po_name=${_po_names[$_po_n]}
        _po_bool_value "$_po_name" "${_po_olds[$_po_n]}" "${!_po_name}" "config file '$2': $_po_name"
        given_on_command_line "$_po_name" || cmdline_vars+="$_po_name "
      done
      shift 2 ;;
    --*=*)
      echo "$0: write '--name value', not '$1'" >&2
      exit 1 ;;
    --?*)
      _po_opt="${1#--}"
      _po_name="${_po_opt//-/_}"
      if ! [[ "$_po_name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
        echo "$0: invalid option '$1'" >&2; exit 1
      fi
      if [ -z "${!_po_name+x}" ]; then
        echo "$0: unknown option '--${_po_opt}' (no variable '${_po_name}'; see --help)" >&2
        exit 1
      fi
      if [ $# -lt 2 ]; then
        echo "$0: option '--${_po_opt}' needs a value" >&2; exit 1
      fi
      _po_bool_value "$_po_name" "${!_po_name}" "$2" "option '--${_po_opt}'"
      printf -v "$_po_name" '%s' "$2"
      given_on_command_line "$_po_name" || cmdline_vars+="$_po_name "
      shift 2 ;;
    *) break ;;
  esac
done
unset _po_opt _po_name _po_names _po_olds _po_n _po_line
true
