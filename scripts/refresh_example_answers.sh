#!/usr/bin/env bash
# Record in examples/cifar10/.copier-answers.yml the template version the example holds: the last
# commit that changed the template (copier.yml or template/), and the template source as the
# repository root relative to the example (../..). Then `dlscaffold update examples/cifar10` in any
# clone of this repository finds nothing to update.
#
# Run it after the template's last change is committed, once examples/cifar10 holds that change
# (bring it in with `dlscaffold update examples/cifar10` first), then commit the answers file.
set -euo pipefail
root="$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
cd "$root"
answers=examples/cifar10/.copier-answers.yml
if [ -n "$(git status --porcelain -- copier.yml template)" ]; then
    echo "error: copier.yml or template/ has uncommitted changes; commit them first, then run $0 again" >&2
    exit 2
fi
commit="$(git log -1 --format=%H -- copier.yml template)"
sed -e "s|^_commit: .*|_commit: $commit|" -e "s|^_src_path: .*|_src_path: ../..|" "$answers" > "$answers.tmp"
mv "$answers.tmp" "$answers"
echo "$answers: _commit $commit, _src_path ../..; commit it (git add $answers && git commit)"
