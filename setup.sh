#!/usr/bin/env bash
# Sets recap up in ./.venv: Debian packages from packages.txt (when apt-get can be used), then the
# pinned Python packages. packages.txt: WordNet for the offline synonym rewriter, and Chromium, which kaleido
# drives for the PNG and SVG copies of every figure (and the browser tests). `bash setup.sh dev` adds the test tools.
set -euo pipefail
cd "$(dirname "$0")"
mode="${1:-}"

apt_packages="$(grep -v '^#' packages.txt | tr '\n' ' ')"
if [ "${RECAP_SKIP_APT:-0}" != 1 ] && command -v apt-get >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo -n"; fi
  if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $apt_packages; } >/dev/null; then
    echo "warning: could not install Debian packages ($apt_packages)." >&2
    echo "         Offline synonym rewording needs WordNet: apt-get install wordnet-base, or nltk.download('wordnet')." >&2
  fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ "$mode" = dev ]; then
  .venv/bin/python -m pip install -q -r requirements-dev.txt
else
  .venv/bin/python -m pip install -q -r requirements.txt
fi
echo "recap is set up in .venv (activate with: source .venv/bin/activate)"
