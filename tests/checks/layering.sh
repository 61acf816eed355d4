#!/usr/bin/env bash
# layering.sh ROOT: fails when a lower layer depends on a higher one.
#
# The layers (ARCHITECTURE.md), and what each folder may include or link of ours:
#   protocols/  protocols
#   config/     config, protocols
#   storage/    storage, protocols
#   runtime/    runtime, storage, protocols, config
#   actors/     actors, runtime, storage, protocols, config
#   nodes/      everything but bench/ and tests/
#   bench/      everything but nodes/ and tests/
#   tests/      anything (not checked)
#
# Checked: every `#include "X/..."` or `#include <X/...>` (also `../X/...` relative forms) in
# the folder's C++ files, and every hive_<module> library named in the folder's CMake files.
# Each violation is printed as FILE:LINE: what it includes / links. Exit 1 on any violation,
# 2 on a usage error, 0 when clean.
set -uo pipefail

root="${1:-}"
[[ -n "$root" && -d "$root" ]] || { echo "usage: layering.sh REPO_ROOT" >&2; exit 2; }
root="$(cd "$root" && pwd)"

modules=(protocols config storage runtime actors nodes bench)

# allowed[folder] = the modules that folder may depend on (its own included).
declare -A allowed=(
  [protocols]="protocols"
  [config]="config protocols"
  [storage]="storage protocols"
  [runtime]="runtime storage protocols config"
  [actors]="actors runtime storage protocols config"
  [nodes]="nodes actors runtime storage protocols config"
  [bench]="bench actors runtime storage protocols config"
)

is_module() {
  local m
  for m in "${modules[@]}" tests; do [[ "$1" == "$m" ]] && return 0; done
  return 1
}

may_use() { # folder dependency
  [[ " ${allowed[$1]} " == *" $2 "* ]]
}

violations=0
checked_files=0
checked_includes=0

report() {
  echo "layering violation: $*"
  violations=$((violations + 1))
}

for folder in "${modules[@]}"; do
  dir="$root/$folder"
  [[ -d "$dir" ]] || continue

  # 1. C++ includes: one grep per folder, lines parsed with bash regexes (no fork per line).
  checked_files=$((checked_files + $(find "$dir" -type f \( -name '*.hpp' -o -name '*.h' \
    -o -name '*.hh' -o -name '*.ipp' -o -name '*.cpp' -o -name '*.cc' -o -name '*.cxx' \) | wc -l)))
  include_re='^[[:space:]]*#[[:space:]]*include[[:space:]]*["<]([^">]*)[">]'
  while IFS= read -r hit; do
    # grep -rn prints FILE:LINE:TEXT for each include directive (`// #include` is excluded).
    file="${hit%%:*}"
    rest="${hit#*:}"
    line="${rest%%:*}"
    text="${rest#*:}"
    [[ "$text" =~ $include_re ]] || continue # macro include: not ours to judge
    path="${BASH_REMATCH[1]}"
    target="$path"
    if [[ "$path" == ../* || "$path" == ./* ]]; then
      # Relative include: resolve against the including file's folder, then back to the repo.
      resolved="$(realpath -m "$(dirname "$file")/$path")"
      [[ "$resolved" == "$root"/* ]] || continue
      target="${resolved#"$root"/}"
    fi
    top="${target%%/*}"
    [[ "$top" == "$target" ]] && continue # no folder part: a sibling or a system header
    is_module "$top" || continue
    checked_includes=$((checked_includes + 1))
    if ! may_use "$folder" "$top"; then
      report "${file#"$root"/}:$line: $folder/ includes \"$path\" ($top/ is not below" \
             "$folder/; $folder/ may use: ${allowed[$folder]})"
    fi
  done < <(grep -rnE --include='*.hpp' --include='*.h' --include='*.hh' --include='*.ipp' \
             --include='*.cpp' --include='*.cc' --include='*.cxx' \
             '^[[:space:]]*#[[:space:]]*include[[:space:]]*["<]' "$dir" | sort || true)

  # 2. CMake link dependencies: any hive_<module> library named in the folder's CMake files
  #    (comments dropped first).
  while IFS= read -r -d '' cmake_file; do
    while IFS= read -r hit; do
      lineno="${hit%%:*}"
      lib="${hit#*:}"
      dep="${lib#hive_}"
      if ! may_use "$folder" "$dep"; then
        report "${cmake_file#"$root"/}:$lineno: $folder/ links $lib ($dep/ is not below" \
               "$folder/; $folder/ may use: ${allowed[$folder]})"
      fi
    done < <(sed 's/#.*//' "$cmake_file" \
               | grep -noE '\bhive_(protocols|config|storage|runtime|actors|nodes|bench)\b' || true)
  done < <(find "$dir" -type f \( -name 'CMakeLists.txt' -o -name '*.cmake' \) -print0 | sort -z)
done

if [[ $violations -gt 0 ]]; then
  echo "layering: FAILED: $violations violation(s) (see ARCHITECTURE.md, Layers)"
  exit 1
fi
echo "layering: ok ($checked_files files, $checked_includes includes of our modules checked)"
exit 0
