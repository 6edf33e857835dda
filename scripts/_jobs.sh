# Sourced by the scripts of scripts/ that run jobs side by side: JOBS checked as --workers is, a whole
# number from 1 to the cores this process may use (0 or a word would mean no bound, or a loop that never ends).
check_jobs() {  # value
  local cores
  cores=$(nproc)
  if ! [[ $1 =~ ^[0-9]+$ ]] || [ "$1" -lt 1 ] || [ "$1" -gt "$cores" ]; then
    echo "$(basename "$0"): error: JOBS $1: must be a whole number from 1 to the $cores cores available" >&2
    exit 2
  fi
}
