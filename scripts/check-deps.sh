#!/usr/bin/env bash
# Keeps dependencies pointing inward (docs/architecture.md): the domain, the
# HTTP layer, auth and the executors never import storage or forge
# adapters, clientv3 or go-github; a forge imports no other forge (only the
# neutral pipeline/forge/forgeutil, which imports no forge).
set -euo pipefail
cd "$(dirname "$0")/.."
mod=$(go list -m)
fail=0
check() { # package pattern, forbidden regexp
  local pkgs
  pkgs=$(go list "$1")
  for p in $pkgs; do
    bad=$(go list -deps "$p" | grep -E "$2" || true)
    if [ -n "$bad" ]; then echo "$p must not depend on: $bad"; fail=1; fi
  done
}
check ./api/... "^(go.etcd.io/etcd/client/v3|github.com/google/go-github|$mod/pipeline/(etcdstore|forge|executor))"
check ./auth/... "^(go.etcd.io/etcd/client/v3|github.com/google/go-github|$mod/pipeline/(etcdstore|forge|executor)|$mod/api)"
check ./pipeline/executor/... "^($mod/pipeline/forge|github.com/google/go-github)"
check ./pipeline/logstore/... "^$mod/pipeline/forge"
# A forge imports no other forge: each sits beside the others, under the port.
# forgeutil is what they share; it imports no forge.
for p in $(go list ./pipeline/forge/forgeutil/...); do
  bad=$(go list -deps "$p" | grep -E "^($mod/pipeline/forge/|github.com/google/go-github)" | grep -vE "^$mod/pipeline/forge/forgeutil(/|\$)" || true)
  if [ -n "$bad" ]; then echo "$p must not depend on: $bad"; fail=1; fi
done
for d in pipeline/forge/*/; do
  f=$(basename "$d")
  [ "$f" = forgeutil ] && continue
  for p in $(go list "./$d..."); do
    bad=$(go list -deps "$p" | grep -E "^$mod/pipeline/forge/" | grep -vE "^$mod/pipeline/forge/($f|forgeutil)(/|\$)" || true)
    if [ -n "$bad" ]; then echo "$p must not depend on: $bad"; fail=1; fi
  done
done
check ./pipeline "^(go.etcd.io/etcd|github.com/google/go-github|github.com/emicklei|net/http/httptest|$mod/(api|auth|cmd)|$mod/pipeline/notify)"
# The notifier is an adapter beside the forges: it posts through the Forge
# port the engine hands it, never a forge or the store itself.
check ./pipeline/notify "^(go.etcd.io/etcd|github.com/google/go-github|$mod/pipeline/(etcdstore|forge|executor|logstore)|$mod/(api|auth|cmd))"
check ./pipeline/spec "^(go.etcd.io/etcd|github.com/google/go-github|net/http$|os/exec)"
[ "$fail" = 0 ] && echo "dependency layering ok"
exit "$fail"
