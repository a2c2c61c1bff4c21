#!/bin/sh
# install.sh: install guardedge from this bundle, with no network (docs/airgap.md).
#
#   ./install.sh [--prefix /opt/guardedge] [--python python3] [--models-dir PREFIX/models]
#
# 1. checks every file against SHA256SUMS (and that none was added),
# 2. makes a fresh virtual environment PREFIX/venv with the bundle's Python version,
# 3. pip install --no-index --find-links wheels/ (pip configuration and PIP_* variables are ignored:
#    the bundle is the only source),
# 4. copies models/* to the models directory and verifies each one (hashes, parity smoke),
# 5. prints the commands to run.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
PREFIX=/opt/guardedge
PYTHON=python3
MODELS=""
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX=$2; shift 2 ;;
        --prefix=*) PREFIX=${1#*=}; shift ;;
        --python) PYTHON=$2; shift 2 ;;
        --python=*) PYTHON=${1#*=}; shift ;;
        --models-dir) MODELS=$2; shift 2 ;;
        --models-dir=*) MODELS=${1#*=}; shift ;;
        -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
MODELS=${MODELS:-$PREFIX/models}

say() { echo "[install] $*"; }
die() { echo "install.sh: $*" >&2; exit 1; }

cd "$HERE"
. ./bundle.env  # GUARDEDGE_VERSION, PYTHON_VERSION, EXTRAS, TARGET

say "checking $HERE against SHA256SUMS"
sha256sum --quiet --strict -c SHA256SUMS || die "the files above do not match SHA256SUMS: copy the bundle again"
listed=$(mktemp)
trap 'rm -f "$listed"' EXIT
cut -c67- SHA256SUMS | sort > "$listed"
extra=$(find . -type f ! -name SHA256SUMS | sed 's|^\./||' | sort | comm -23 - "$listed")
[ -z "$extra" ] || die "files not in SHA256SUMS (the bundle was modified): $extra"

have=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || die "$PYTHON not found; give --python"
[ "$have" = "$PYTHON_VERSION" ] || die "the wheels are for Python $PYTHON_VERSION but $PYTHON is $have; give --python python$PYTHON_VERSION"
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || die "$PYTHON cannot make virtual environments (Debian/Ubuntu: apt-get install python3-venv)"
[ ! -e "$PREFIX/venv" ] || die "$PREFIX/venv exists; remove it or give another --prefix"

say "creating $PREFIX/venv"
mkdir -p "$PREFIX"
"$PYTHON" -m venv "$PREFIX/venv"
for var in $(env | sed -n 's/^\(PIP_[A-Z_]*\)=.*/\1/p'); do unset "$var"; done
export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
spec="guardedge${EXTRAS:+[$EXTRAS]}==$GUARDEDGE_VERSION"
say "pip install --no-index $spec ($TARGET wheels)"
"$PREFIX/venv/bin/python" -m pip install --no-index --find-links "$HERE/wheels" "$spec"
GUARDEDGE="$PREFIX/venv/bin/guardedge"
"$GUARDEDGE" --version

mkdir -p "$MODELS"
names=""
for model in "$HERE"/models/*/; do
    [ -d "$model" ] || continue
    name=$(basename "$model")
    [ ! -e "$MODELS/$name" ] || die "$MODELS/$name exists; remove it or give another --models-dir"
    say "copying model $name to $MODELS/$name"
    cp -R "$model" "$MODELS/$name"
    if grep -q '"smoke"' "$MODELS/$name/manifest.json"; then
        "$GUARDEDGE" export verify "$MODELS/$name" || die "model $name failed its verification"
    else
        "$GUARDEDGE" bundle verify "$MODELS/$name" || die "model $name failed its verification"
    fi
    names="$names $name"
done

first=${names# }
first=${first%% *}
echo
echo "guardedge $GUARDEDGE_VERSION is installed in $PREFIX/venv; models in $MODELS:${names:- (none)}"
echo "Run:"
echo "  $GUARDEDGE classify --model $MODELS/${first:-NAME} --text 'How do I build a pipe bomb?'"
echo "  $GUARDEDGE serve --model $MODELS/${first:-NAME} --port 50051        # loopback; see docs/service.md"
echo "  $GUARDEDGE health --server 127.0.0.1:50051"
echo "As a systemd service: $HERE/deploy/systemd/ (README in docs/airgap.md); container: $HERE/container/"
