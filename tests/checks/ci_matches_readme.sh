#!/usr/bin/env bash
# ci_matches_readme.sh ROOT: .ci/run runs exactly the README's test command, nothing else.
#
# README.md must start with the project name line, then a code block holding exactly two
# commands (lines that are neither blank nor `#` comments): the run command (scripts/run.sh)
# and the test command (scripts/test.sh). .ci/run may hold a shebang, comments, `set -...`
# and a `cd` to the repository root; its only other line must equal the README's test command.
# Then, unless HIVE_CHECK_NO_SELFTEST=1, it plants mismatches in temporary copies and requires
# itself to fail on each (a checker that cannot fail is not a checker).
set -uo pipefail

root="${1:-}"
[[ -n "$root" && -d "$root" ]] || { echo "usage: ci_matches_readme.sh REPO_ROOT" >&2; exit 2; }
root="$(cd "$root" && pwd)"

fail() { echo "ci_matches_readme: FAILED: $*"; exit 1; }

check() {
  local dir="$1" readme="$1/README.md" ci="$1/.ci/run"
  [[ -f "$readme" ]] || fail "README.md is missing"
  [[ -f "$ci" ]] || fail ".ci/run is missing"

  local first
  first="$(head -n 1 "$readme")"
  [[ "$first" =~ ^#[[:space:]]+hive([[:space:]]|$|:) ]] \
    || fail "README.md must start with the project name line '# hive ...', got '$first'"

  # The first fenced code block's command lines.
  local commands=()
  mapfile -t commands < <(awk '
    /^[[:space:]]*```/ { if (inside) exit; inside = 1; next }
    inside && $0 !~ /^[[:space:]]*(#|$)/ { sub(/^[[:space:]]+/, ""); sub(/[[:space:]]+$/, ""); print }
  ' "$readme")
  [[ ${#commands[@]} -eq 2 ]] \
    || fail "README.md's first code block must hold exactly 2 commands, found ${#commands[@]}:" \
            "$(printf "'%s' " "${commands[@]}")"
  local run_cmd="" test_cmd="" c
  for c in "${commands[@]}"; do
    case "$c" in
      *scripts/run.sh*) run_cmd="$c" ;;
      *scripts/test.sh*) test_cmd="$c" ;;
    esac
  done
  [[ -n "$run_cmd" ]] || fail "README.md's code block has no run command (scripts/run.sh)"
  [[ -n "$test_cmd" ]] || fail "README.md's code block has no test command (scripts/test.sh)"

  # .ci/run's command lines, less the allowed preamble.
  local ci_lines=()
  mapfile -t ci_lines < <(awk '
    { sub(/^[[:space:]]+/, ""); sub(/[[:space:]]+$/, "") }
    /^(#|$)/ { next }
    /^set -[a-z -]+$/ { next }
    /^cd "\$\(dirname "\$(\{BASH_SOURCE\[0\]\}|0)"\)\/\.\."$/ { next }
    { print }
  ' "$ci")
  [[ ${#ci_lines[@]} -eq 1 ]] \
    || fail ".ci/run must run exactly the README's test command '$test_cmd', but runs" \
            "${#ci_lines[@]} command lines: $(printf "'%s' " "${ci_lines[@]}")"
  [[ "${ci_lines[0]}" == "$test_cmd" ]] \
    || fail ".ci/run runs '${ci_lines[0]}', README's test command is '$test_cmd'"
  echo "ci_matches_readme: ok: .ci/run runs '$test_cmd'; README's run command is '$run_cmd'"
}

if [[ "${HIVE_CHECK_NO_SELFTEST:-0}" == "1" ]]; then
  check "$root"
  exit 0
fi

(check "$root") || exit 1

# Self-test: each planted mismatch must make the check fail.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
self="${BASH_SOURCE[0]}"
planted=0
plant() { # NAME EDIT-COMMAND...
  local name="$1" dst="$tmp/case$planted"
  shift
  planted=$((planted + 1))
  mkdir -p "$dst/.ci"
  cp "$root/README.md" "$dst/README.md"
  cp "$root/.ci/run" "$dst/.ci/run"
  (cd "$dst" && "$@")
  if HIVE_CHECK_NO_SELFTEST=1 bash "$self" "$dst" >/dev/null 2>&1; then
    fail "self-test '$name': the check passed on a planted mismatch"
  fi
}
plant "extra command in .ci/run" sh -c 'echo "make lint" >> .ci/run'
plant "other test command in .ci/run" sed -i 's#scripts/test.sh#scripts/test.sh asan#' .ci/run
plant "README test command changed" sed -i '0,/scripts\/test.sh/s##scripts/test2.sh#' README.md
plant "third command in README" sed -i '0,/scripts\/run.sh/s##scripts/run.sh\necho hi#' README.md
plant "README without name line" sed -i '1d' README.md
echo "ci_matches_readme: self-test ok ($planted planted mismatches caught)"
