#!/usr/bin/env bash
# make lint: shellcheck over every shell script and clang-format over every C file. It
# changes nothing; any shellcheck finding or formatting difference fails it.
# scripts/test.sh runs it first, so CI stops on a slip before the long suites.
#
#   scripts/lint.sh           both checks (make lint)
#   scripts/lint.sh shell     shellcheck only
#   scripts/lint.sh format    clang-format only (make format-check)
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
case $what in
all | shell | format) ;;
*)
  echo "usage: $0 [shell|format]" >&2
  exit 2
  ;;
esac

# Tracked and new (not ignored) files matching the pathspecs, so a script is checked
# before its first commit; a file deleted in the work tree is skipped.
files() {
  local f
  git ls-files --cached --others --exclude-standard -- "$@" | sort -u | while IFS= read -r f; do
    if [ -f "$f" ]; then printf '%s\n' "$f"; fi
  done
}

need() { # command package
  if ! command -v "$1" >/dev/null; then
    echo "lint: $1 is missing (Debian package $2; make deps installs it)" >&2
    exit 1
  fi
}

rc=0

if [ "$what" != format ]; then
  need shellcheck shellcheck
  # A git pathspec '*' also matches '/', so tests/*.sh covers every folder below tests/.
  mapfile -t scripts < <(files 'scripts/*.sh' 'bench/*.sh' 'tests/*.sh' .ci/run)
  if [ ${#scripts[@]} -eq 0 ]; then
    echo "lint: no shell scripts found (not a git checkout?)" >&2
    exit 1
  fi
  echo "== lint: shellcheck (${#scripts[@]} scripts)"
  # -x follows `source` (the `# shellcheck source=` lines name the file).
  shellcheck -x "${scripts[@]}" || rc=1
fi

if [ "$what" != shell ]; then
  need clang-format clang-format
  mapfile -t sources < <(files '*.c' '*.h')
  if [ ${#sources[@]} -eq 0 ]; then
    echo "lint: no C sources found (not a git checkout?)" >&2
    exit 1
  fi
  echo "== lint: clang-format (${#sources[@]} files)"
  if ! clang-format --dry-run --Werror "${sources[@]}"; then
    echo "lint: formatting differs from .clang-format; \`make format\` rewrites the files" >&2
    rc=1
  fi
fi

exit "$rc"
