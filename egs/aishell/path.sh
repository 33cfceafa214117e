# Environment of this recipe: the top-level one (venv, utils/ and steps/ on PATH).
# shellcheck disable=SC1091
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/path.sh"
