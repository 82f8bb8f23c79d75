#!/usr/bin/env bash
# build.sh builds the binaries of a small real Kubernetes control plane for
# Kontinuous's integration tests, from the Go module proxy alone:
#
#   kube-apiserver, kube-controller-manager, kube-scheduler  v1.35.4
#   etcd                                                      v3.6.16
#   kwok (fakes nodes and pod lifecycles)                     v0.8.0
#   kubelet (the real test node; KUBE_TESTENV_KUBELET=0 skips) v1.35.4
#
# into ${KONTINUOUS_KUBE_CACHE:-$HOME/.cache/kontinuous-kube}/bin, plus KWOK's
# stage configuration in .../kwok-stages. The scratch Go modules used for the
# builds are generated at run time under .../src, outside this repository, so
# they never become part of the main module. A finished build leaves a stamp
# file; later runs with the same versions return at once. Concurrent runs are
# serialised with flock on .../build.lock, so two test binaries provisioning
# at the same time build once.
#
# Usage: scripts/kube-testenv/build.sh        (prints the bin directory)
# Cold, on 2 shared cores: see README.md (tens of minutes on a busy machine,
# a few GB of Go build cache). The current step is in $CACHE/build.status.
set -euo pipefail

K8S_VERSION=v1.35.4
K8S_STAGING_VERSION=v0.35.4
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0

CACHE="${KONTINUOUS_KUBE_CACHE:-$HOME/.cache/kontinuous-kube}"
BIN="$CACHE/bin"
SRC="$CACHE/src"
# Bump LAYOUT when what this script leaves in the cache changes.
LAYOUT=3
STAMP="$CACHE/stamp-$LAYOUT-k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION"

log() {
	echo "kube-testenv: $*" >&2
	echo "$(date -u +%FT%TZ) $*" >>"$CACHE/build.status"
}

mkdir -p "$CACHE"
exec 9>"$CACHE/build.lock"
if ! flock -n 9; then
	log "another build holds $CACHE/build.lock; waiting"
	flock 9
fi

# The kubelet (the real node, testenv/node.go) has its own stamp: a cache holding
# a finished control plane gets only the kubelet added. It is built only with
# KUBE_TESTENV_KUBELET=0 leaves it out (the real-node tests then fail in CI
# and skip elsewhere).
KUBELET_STAMP="$CACHE/stamp-kubelet-$K8S_VERSION"
want_kubelet=1
[[ "${KUBE_TESTENV_KUBELET:-1}" == 0 ]] && want_kubelet=0

if [[ -f "$STAMP" && ($want_kubelet == 0 || -f "$KUBELET_STAMP") ]]; then
	echo "$BIN"
	exit 0
fi

if [[ ! -f "$STAMP" ]]; then
	: >"$CACHE/build.status"
	log "cold build started (this file shows each step; tail -f it)"
fi
mkdir -p "$BIN" "$SRC"
# The scratch modules must not see a go.work or the caller's module.
export GOWORK=off GOFLAGS=-mod=mod GO111MODULE=on CGO_ENABLED=0
unset GOOS GOARCH
# Niced on a developer's machine, where it builds in the background of other
# work; not in CI, where it is the longest step and everything waits for it.
NICE="nice -n 10"
[[ "${CI:-}" == true ]] && NICE=""
# Module queries run where no go.mod is, so they can never touch the
# caller's module.
cd "$SRC"
start=$(date +%s)

# --- kwok ------------------------------------------------------------------
if [[ ! -x "$BIN/kwok" || ! -f "$CACHE/.kwok-$KWOK_VERSION" ]]; then
	log "building kwok $KWOK_VERSION"
	d="$SRC/kwok"
	rm -rf "$d"
	mkdir -p "$d"
	(
		cd "$d"
		go mod init kontinuous.local/kube-testenv/kwok >/dev/null 2>&1
		go get "sigs.k8s.io/kwok@$KWOK_VERSION" >/dev/null 2>&1
		$NICE go build -trimpath -ldflags "-s -w" -o "$BIN/kwok.tmp" sigs.k8s.io/kwok/cmd/kwok
	)
	mv "$BIN/kwok.tmp" "$BIN/kwok"
	touch "$CACHE/.kwok-$KWOK_VERSION"
fi

# --- kwok's shipped stages ---------------------------------------------------
# The node and pod lifecycles KWOK needs to run Jobs' pods: copied from its
# module (kustomize/stage). The test helper adds its own pod-complete and
# pod-fail stages (scripts/kube-testenv/testenv/stages.yaml).
if [[ ! -f "$CACHE/.kwok-stages-$KWOK_VERSION" ]]; then
	moddir=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	rm -rf "$CACHE/kwok-stages"
	mkdir -p "$CACHE/kwok-stages"
	for f in node/fast/node-initialize node/heartbeat/node-heartbeat pod/fast/pod-ready pod/fast/pod-delete; do
		if [[ ! -f "$moddir/kustomize/stage/$f.yaml" ]]; then
			log "kwok stage $f.yaml not found under $moddir/kustomize/stage"
			exit 1
		fi
		cp "$moddir/kustomize/stage/$f.yaml" "$CACHE/kwok-stages/"
		chmod u+w "$CACHE/kwok-stages/$(basename "$f").yaml"
	done
	touch "$CACHE/.kwok-stages-$KWOK_VERSION"
fi

# k8s_module DIR CMD... writes in DIR a scratch module requiring
# k8s.io/kubernetes and importing k8s.io/kubernetes/cmd/CMD for each CMD, and
# sets $ldflags (version stamping) for building them. A CMD that contains a
# dot is a whole import path (etcd), required at its @version suffix.
k8s_module() {
	local d=$1 modfile staging n m c
	shift
	rm -rf "$d"
	mkdir -p "$d"
	# k8s.io/kubernetes replaces its staging modules with ./staging paths;
	# a module that requires it must replace them with the published ones.
	modfile=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
	if [[ -z "$modfile" || ! -f "$modfile" ]]; then
		log "cannot download k8s.io/kubernetes@$K8S_VERSION"
		exit 1
	fi
	staging=$(sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9./-]*\) => \./staging/.*#\1#p' "$modfile")
	n=$(echo "$staging" | grep -c . || true)
	if [[ "$n" -lt 20 ]]; then
		log "found only $n staging replaces in $modfile"
		exit 1
	fi
	{
		echo "module kontinuous.local/kube-testenv/$(basename "$d")"
		echo
		echo "go 1.25.0"
		echo
		echo "require k8s.io/kubernetes $K8S_VERSION"
		for c in "$@"; do
			[[ $c == *@* ]] && echo "require ${c%@*} ${c#*@}"
		done
		echo
		echo "replace ("
		for m in $staging; do
			echo "	$m => $m $K8S_STAGING_VERSION"
		done
		echo ")"
	} >"$d/go.mod"
	{
		echo "//go:build tools"
		echo
		echo "package tools"
		echo
		echo "import ("
		for c in "$@"; do
			case $c in
			*.*) echo "	_ \"${c%@*}\"" ;;
			*) echo "	_ \"k8s.io/kubernetes/cmd/$c\"" ;;
			esac
		done
		echo ")"
	} >"$d/tools.go"
	local minor=${K8S_VERSION#v1.}
	minor=${minor%%.*}
	ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
	(
		cd "$d"
		GOFLAGS=-mod=mod go mod tidy -e >/dev/null 2>&1 || GOFLAGS=-mod=mod go mod tidy
	)
}

if [[ ! -f "$STAMP" ]]; then
# --- kube-apiserver, kube-controller-manager, kube-scheduler, etcd ------------
# etcd is built in the same module and the same go build as the control
# plane: k8s.io/kubernetes already requires etcd's server module (v3.6.x),
# so grpc, protobuf, etcd's client and API, zap, prometheus and the rest are
# compiled once for all four binaries. Built on its own, etcd cost about 9
# of a cold CI's minutes on 2 cores.
if [[ ! -x "$BIN/kube-apiserver" || ! -x "$BIN/kube-controller-manager" || ! -x "$BIN/kube-scheduler" || ! -x "$BIN/etcd" || ! -f "$CACHE/.k8s-$K8S_VERSION-etcd-$ETCD_VERSION" ]]; then
	log "building kube-apiserver, kube-controller-manager, kube-scheduler $K8S_VERSION and etcd $ETCD_VERSION"
	d="$SRC/kubernetes"
	k8s_module "$d" kube-apiserver kube-controller-manager kube-scheduler "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
	(
		cd "$d"
		mkdir -p out
		$NICE go build -tags tools -trimpath -ldflags "$ldflags" -o out/ \
			k8s.io/kubernetes/cmd/kube-apiserver \
			k8s.io/kubernetes/cmd/kube-controller-manager \
			k8s.io/kubernetes/cmd/kube-scheduler \
			go.etcd.io/etcd/server/v3
		# go build names a main package after its import path's last
		# element that is not a major-version suffix: server/v3 → server.
		mv out/server out/etcd
		mv out/kube-apiserver out/kube-controller-manager out/kube-scheduler out/etcd "$BIN/"
	)
	touch "$CACHE/.k8s-$K8S_VERSION-etcd-$ETCD_VERSION"
fi

touch "$STAMP"
log "control plane done in $(($(date +%s) - start))s"
fi

# --- kubelet -------------------------------------------------------------------
# Built after the control plane with the same module pins and flags, so the
# packages they share come from the Go build cache. The control-plane stamp
# is written first: a run that needs only the control plane can go on.
if [[ $want_kubelet == 1 && ! -f "$KUBELET_STAMP" ]]; then
	# Its own lock, so runs needing only the control plane need not wait.
	exec 8>"$CACHE/kubelet.lock"
	flock -u 9
	if ! flock -n 8; then
		log "another build holds $CACHE/kubelet.lock; waiting"
		flock 8
	fi
fi
if [[ $want_kubelet == 1 && ! -f "$KUBELET_STAMP" ]]; then
	log "building kubelet $K8S_VERSION"
	kstart=$(date +%s)
	d="$SRC/kubelet"
	# The same module requirements as the control plane (etcd included), so
	# the packages they share resolve to the same versions and come from the
	# Go build cache.
	k8s_module "$d" kubelet "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
	(
		cd "$d"
		mkdir -p out
		$NICE go build -tags tools -trimpath -ldflags "$ldflags" -o out/ k8s.io/kubernetes/cmd/kubelet
		mv out/kubelet "$BIN/"
	)
	touch "$KUBELET_STAMP"
	log "kubelet done in $(($(date +%s) - kstart))s"
fi

log "done in $(($(date +%s) - start))s"
echo "$BIN"
