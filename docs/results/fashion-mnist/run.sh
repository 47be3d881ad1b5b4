#!/usr/bin/env bash
# Re-run the committed Fashion-MNIST grid from a fresh clone of kdlab, with the product's own
# machinery, and write kdlab report's output here. About 1.5 h on a 2-core CPU; needs the
# Debian package dataset-fashion-mnist (or the official files, see the README's Datasets).
#   docs/results/fashion-mnist/run.sh [repo-dir]     (default: a new clone in ./fashion-mnist-grid)
set -euo pipefail
src=$(git rev-parse --show-toplevel)
work=${1:-fashion-mnist-grid}
git clone -q "$src" "$work"
cd "$work"
git config user.name "${GIT_AUTHOR_NAME:-kdlab}"; git config user.email "${GIT_AUTHOR_EMAIL:-kdlab@localhost}"
make install >/dev/null
source .venv/bin/activate
kdlab preset configs/fashion-mnist-kd.yaml
git commit -qam "Fashion-MNIST grid: kdlab preset configs/fashion-mnist-kd.yaml"
date -u +%FT%TZ > grid-started
kdlab grid queue
dvc queue start -j 1
while dvc queue status | grep -qE "Queued|Running"; do sleep 60; done
dvc queue status
kdlab report --out docs/results/fashion-mnist
echo "started $(cat grid-started); report in $work/docs/results/fashion-mnist"
