# versions.sh: every pinned version and shared path for hack/ scripts.
# Sourced, never executed.
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS_BIN=${TOOLS_BIN:-$REPO_ROOT/_output/tools}
CNITOOL_VERSION=v1.3.1
REF_PLUGINS_VERSION=v1.9.1
export PATH="$TOOLS_BIN:/usr/local/go/bin:$PATH"
