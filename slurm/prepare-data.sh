#!/usr/bin/env bash
# On the LOGIN node (the only one with internet): download, verify and prepare each dataset,
# then push it, so jobs on compute nodes restore `prepare` from the run-cache and never download.
#   slurm/prepare-data.sh                  # every dataset in grid.datasets of params.yaml
#   slurm/prepare-data.sh cifar100 svhn    # these
# params.yaml and dvc.lock are put back afterwards; the prepared data stays in the DVC cache.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
datasets=("$@")
if [ ${#datasets[@]} -eq 0 ]; then
  mapfile -t datasets < <(python -c 'import yaml
print("\n".join((yaml.safe_load(open("params.yaml")).get("grid") or {}).get("datasets", ["digits"])))')
fi
backup=$(mktemp -d)
cp params.yaml dvc.lock "$backup/"
unstaged=0; git diff --cached --quiet -- params.yaml dvc.lock && unstaged=1
restore() {
  cp "$backup/params.yaml" "$backup/dvc.lock" .
  rm -rf "$backup"
  # dvc stages dvc.lock (core.autostage); put the index back as it was too
  if [ "$unstaged" = 1 ]; then git reset -q -- params.yaml dvc.lock; fi
}
trap restore EXIT
for name in "${datasets[@]}"; do
  echo "== $name"
  python - "$name" <<'PY'
import sys, yaml
params = yaml.safe_load(open("params.yaml"))
params["data"]["name"] = sys.argv[1]
yaml.safe_dump(params, open("params.yaml", "w"), sort_keys=False)
PY
  dvc repro prepare
done
if dvc remote default >/dev/null 2>&1; then
  dvc push --run-cache   # data and the run-cache entries of `prepare` to the SSH remote
else
  echo "no DVC remote: the prepared data is in the (shared) cache $(dvc cache dir)"
fi
