#!/usr/bin/env bash
# Builds the two test images from Debian packages installed on this machine, because
# no image can be pulled here (see /work/shared/docs/local-swarm.md), and serves them
# the way production does: from a registry that every node pulls from.
#
#   $MSRC_REGISTRY/msrc-test/upstream-registry:2.8.2
#       Docker Distribution 2.8.2, standing in for MSR as the cache's upstream.
#   $MSRC_REGISTRY/msrc-test/dtr-content-cache-stand-in:2.8.2
#       A STAND-IN for mirantis/dtr-content-cache:2.8.2: the same registry plus busybox
#       and content-cache/start.sh, which honours that image's `/start.sh /config.yml`.
#
# The images are built on the msr node ($MSRC_MSR_HOST), which also runs the
# registry ($MSRC_REGISTRY, plain HTTP on the swarm's private bridge: every node
# lists that subnet as an insecure registry), and are pushed there. The cache node
# then really pulls its image, as it would from a production registry; the names
# carry the registry's address, so no daemon ever asks a public registry for them.
# Each image is labelled with a hash of everything that goes into it and is only
# rebuilt when that hash changes, so re-running this is cheap.
#
# Usage: rehearsal/images/build.sh   (with `scripts/swarm.sh env` in the environment)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[[ -n ${MSRC_REGISTRY:-} && -n ${MSRC_MSR_HOST:-} ]] ||
	{ echo "images: error: MSRC_REGISTRY/MSRC_MSR_HOST are not set; run with \`eval \"\$(scripts/swarm.sh env)\"\`" >&2; exit 1; }
export DOCKER_HOST=$MSRC_MSR_HOST
PREFIX=$MSRC_REGISTRY/msrc-test
REGISTRY_CONTAINER=msrc-image-registry
VERSION=2.8.2
UPSTREAM_IMAGE=$PREFIX/upstream-registry:$VERSION
STAND_IN_IMAGE=$PREFIX/dtr-content-cache-stand-in:$VERSION
LABEL_ROLE=com.mirantis.msr-cache.test-image
LABEL_BUILD=com.mirantis.msr-cache.build

REGISTRY_BIN=/usr/bin/docker-registry
BUSYBOX_BIN=/bin/busybox
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
START_SH=$HERE/content-cache/start.sh
SELF=$HERE/$(basename "${BASH_SOURCE[0]}")

die() {
	echo "images: error: $*" >&2
	exit 1
}

# --- Prerequisites -------------------------------------------------------------------
if [[ ! -x $REGISTRY_BIN || ! -x $BUSYBOX_BIN ]]; then
	if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
		echo "images: installing docker-registry and busybox-static with apt-get" >&2
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq >&2
		apt-get install -y -qq docker-registry busybox-static >&2
	fi
	[[ -x $REGISTRY_BIN ]] || die "$REGISTRY_BIN is missing: install the Debian package docker-registry (as root)"
	[[ -x $BUSYBOX_BIN ]] || die "$BUSYBOX_BIN is missing: install the Debian package busybox-static (as root)"
fi
[[ -f $CA_BUNDLE ]] || die "$CA_BUNDLE is missing: install the Debian package ca-certificates"
[[ -f $START_SH ]] || die "$START_SH is missing"
command -v docker >/dev/null || die "the docker client is not on PATH"
docker version --format '{{.Server.Version}}' >/dev/null 2>&1 ||
	die "cannot reach the Docker daemon (DOCKER_HOST=${DOCKER_HOST:-unset})"

# The shared libraries a binary loads, as ldd names them (the loader path must be the
# one compiled into the binary, so copy to exactly that path). A static binary has none.
shared_libs() {
	local out
	out=$(LC_ALL=C ldd "$1" 2>&1) || {
		[[ $out == *"not a dynamic executable"* ]] && return 0
		die "ldd $1 failed: $out"
	}
	[[ $out != *"not found"* ]] || die "ldd $1: a library is missing on this machine:"$'\n'"$out"
	# Fields that are absolute paths: `libc.so.6 => /lib/...` and `/lib64/ld-linux...`.
	awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' <<<"$out"
}

# Command substitution first, so that a failing ldd stops the script (set -e).
libs=$(shared_libs "$REGISTRY_BIN")
mapfile -t REGISTRY_LIBS <<<"$libs"
libs=$(shared_libs "$BUSYBOX_BIN")
BUSYBOX_LIBS=()
if [[ -n $libs ]]; then mapfile -t BUSYBOX_LIBS <<<"$libs"; fi
[[ -n ${REGISTRY_LIBS[0]} ]] || die "ldd found no libraries for $REGISTRY_BIN; expected libc and the loader"
for lib in "${REGISTRY_LIBS[@]}" "${BUSYBOX_LIBS[@]}"; do
	[[ -f $lib ]] || die "$lib (from ldd) is missing"
done

# --- Building ------------------------------------------------------------------------
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# Hash of the files' contents (not their names), in a fixed order.
inputs_hash() {
	local f
	for f in "$@"; do sha256sum <"$f"; done | sha256sum | cut -d' ' -f1
}

# Copy a file to the same absolute path under the root file system $1.
put() {
	local root=$1 src=$2
	mkdir -p "$root$(dirname "$src")"
	cp -L "$src" "$root$src"
}

# The registry's root file system, shared by both images.
registry_root() {
	local root=$1 lib
	mkdir -p "$root"/{usr/bin,etc/ssl/certs,etc/docker/registry,var/lib/registry,tmp}
	chmod 1777 "$root/tmp"
	put "$root" "$REGISTRY_BIN"
	put "$root" "$CA_BUNDLE"
	for lib in "${REGISTRY_LIBS[@]}"; do put "$root" "$lib"; done
}

# build TAG ROLE ROOT_FN INPUT... -- CHANGE...
build() {
	local tag=$1 role=$2 fill=$3
	shift 3
	local inputs=() changes=()
	while [[ $1 != -- ]]; do
		inputs+=("$1")
		shift
	done
	shift
	changes=("$@")

	local want have old root
	want=$(inputs_hash "${inputs[@]}")
	have=$(docker image inspect --format "{{ index .Config.Labels \"$LABEL_BUILD\" }}" "$tag" 2>/dev/null || true)
	if [[ $have == "$want" ]]; then
		echo "images: $tag is up to date" >&2
		return 0
	fi
	old=$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)

	root=$WORK/$role
	mkdir -p "$root"
	"$fill" "$root"
	local args=(-c "LABEL $LABEL_ROLE=$role" -c "LABEL $LABEL_BUILD=$want")
	local c
	for c in "${changes[@]}"; do args+=(-c "$c"); done
	tar -C "$root" --numeric-owner --owner=0 --group=0 -c . |
		docker import "${args[@]}" - "$tag" >/dev/null
	rm -rf "$root"

	# The previous build lost its tag; drop it unless a container still uses it.
	if [[ -n $old ]] && [[ $old != "$(docker image inspect --format '{{.Id}}' "$tag")" ]]; then
		docker image rm "$old" >/dev/null 2>&1 || true
	fi
	echo "images: built $tag" >&2
}

fill_upstream() {
	registry_root "$1"
}

fill_stand_in() {
	local root=$1 lib applet
	registry_root "$root"
	mkdir -p "$root/bin"
	cp "$BUSYBOX_BIN" "$root/bin/busybox"
	for lib in "${BUSYBOX_LIBS[@]}"; do put "$root" "$lib"; done
	# Every applet, not only those start.sh uses, so `docker exec ... sh` can debug it.
	for applet in $("$BUSYBOX_BIN" --list); do
		[[ -e $root/bin/$applet ]] || ln -s busybox "$root/bin/$applet"
	done
	install -m 0755 "$START_SH" "$root/start.sh"
	# Swarm creates /run/secrets itself; `docker cp` into a plain container cannot.
	mkdir -p "$root/run/secrets"
}

REGISTRY_INPUTS=("$REGISTRY_BIN" "$CA_BUNDLE" "${REGISTRY_LIBS[@]}" "$SELF")

build "$UPSTREAM_IMAGE" upstream-registry fill_upstream "${REGISTRY_INPUTS[@]}" -- \
	'ENTRYPOINT ["/usr/bin/docker-registry","serve"]' \
	'CMD ["/etc/docker/registry/config.yml"]'

build "$STAND_IN_IMAGE" dtr-content-cache-stand-in fill_stand_in \
	"${REGISTRY_INPUTS[@]}" "$BUSYBOX_BIN" "${BUSYBOX_LIBS[@]}" "$START_SH" -- \
	'ENTRYPOINT ["/start.sh"]' \
	'CMD ["/config.yml"]'

# --- Serving -------------------------------------------------------------------------
# The image registry on the msr node: the upstream image's Distribution, over HTTP,
# storing in a volume of that node.
registry_address=${MSRC_REGISTRY%:*}
registry_port=${MSRC_REGISTRY##*:}
# Started anew when it is not running or runs an older build of the image.
want_image=$(docker image inspect --format '{{.Id}}' "$UPSTREAM_IMAGE")
have=$(docker inspect --format '{{.State.Status}} {{.Image}}' "$REGISTRY_CONTAINER" 2>/dev/null || true)
if [[ $have != "running $want_image" ]]; then
	docker rm -f "$REGISTRY_CONTAINER" >/dev/null 2>&1 || true
	config=$(dirname "${MSRC_SWARM:?}")/image-registry.yml
	printf '%s\n' 'version: 0.1' 'log: {level: warn}' 'http: {addr: "0.0.0.0:5000"}' \
		'storage: {filesystem: {rootdirectory: /var/lib/registry}, delete: {enabled: true}}' >"$config"
	docker run -d --name "$REGISTRY_CONTAINER" --restart always \
		--label "$LABEL_ROLE=image-registry" \
		-v msrc-image-registry:/var/lib/registry \
		-v "$config:/etc/docker/registry/config.yml:ro" \
		-p "$registry_address:$registry_port:5000" "$UPSTREAM_IMAGE" >/dev/null ||
		die "could not start the image registry on $MSRC_REGISTRY"
fi
for _ in $(seq 1 40); do
	if (exec 3<>"/dev/tcp/$registry_address/$registry_port") 2>/dev/null; then break; fi
	sleep 0.25
done
for image in "$UPSTREAM_IMAGE" "$STAND_IN_IMAGE"; do
	# Layers the registry has are not sent again, so this is cheap when nothing changed.
	out=$(docker push "$image" 2>&1) || die "docker push $image to $MSRC_REGISTRY failed:"$'\n'"$out"
done
echo "images: served from $MSRC_REGISTRY" >&2
