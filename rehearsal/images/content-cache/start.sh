#!/bin/sh
# STAND-IN for the entrypoint of mirantis/dtr-content-cache:2.8.2, which cannot be
# pulled on test machines. It honours that image's contract -- `/start.sh /config.yml`,
# where config.yml is Docker Distribution's config plus a `downstream` registry
# middleware -- by translating the middleware into Distribution 2.8's own pull-through
# cache (`proxy:`) and running Debian's docker-registry. It is strict on purpose: the
# real image does not silently ignore a broken config, so neither may its stand-in,
# or tests would pass here and the deployment would fail on a real cluster.
#
# Environment (for tests on the host; the image uses the defaults):
#   STAND_IN_WORKDIR  where the derived files go (default /tmp)
#   REGISTRY_BIN      the registry binary to exec (default /usr/bin/docker-registry)
set -eu

PROG=start.sh
IMAGE=mirantis/dtr-content-cache
WORKDIR=${STAND_IN_WORKDIR:-/tmp}
REGISTRY_BIN=${REGISTRY_BIN:-/usr/bin/docker-registry}
SYSTEM_CAS=/etc/ssl/certs/ca-certificates.crt
MW=middleware.registry

fail() {
	printf '%s: error: %s\n' "$PROG" "$*" >&2
	exit 1
}

if [ "$#" -ne 1 ] || [ -z "$1" ]; then
	printf 'usage: %s /config.yml   (stand-in for %s; got %s argument(s): %s)\n' "$PROG" "$IMAGE" "$#" "$*" >&2
	case ${1-} in
	*/start.sh)
		# `docker run IMAGE /start.sh /config.yml` appends to the ENTRYPOINT, whereas a
		# Swarm service's command replaces it; say so rather than guess which was meant.
		printf '%s: hint: the entrypoint is already /start.sh; pass only the config path\n' "$PROG" >&2
		;;
	esac
	exit 1
fi
CONFIG=$1
[ -f "$CONFIG" ] && [ -r "$CONFIG" ] || fail "config file $CONFIG does not exist or is not readable"

# Flatten the block YAML into `dotted.path=value` lines, sequence items numbered from 0,
# e.g. middleware.registry.0.options.upstreams.0=https://msr.example.com:443.
# It covers what yaml.safe_dump writes for this file: block mappings, block sequences
# (items at the key's indent or deeper) of scalars and of mappings, plain and quoted
# scalars, `[]`/`{}` for empty collections. Anything else is rejected rather than
# guessed at, because a misread config would make the stand-in test something else.
flatten() {
	awk '
	function die(msg) { printf "%s: error: %s:%d: %s\n", prog, FILENAME, FNR, msg > "/dev/stderr"; bad = 1; exit 1 }
	function push(ind, path, kind) { n++; sind[n] = ind; spath[n] = path; skind[n] = kind; sidx[n] = -1 }
	function join(prefix, key) { return prefix == "" ? key : prefix "." key }
	# A scalar as written after "key: " or "- ": unquote it, drop a trailing comment.
	function scalar(v,   q, out, i, c) {
		if (v ~ /^"/) {
			out = ""
			for (i = 2; i <= length(v); i++) {
				c = substr(v, i, 1)
				if (c == "\\") { i++; c = substr(v, i, 1); if (c == "n") c = "\n"; else if (c == "t") c = "\t"; out = out c; continue }
				if (c == "\"") { rest_after(substr(v, i + 1)); return out }
				out = out c
			}
			die("unterminated double-quoted scalar")
		}
		if (substr(v, 1, 1) == sq) {
			out = ""
			for (i = 2; i <= length(v); i++) {
				c = substr(v, i, 1)
				if (c == sq) {
					if (substr(v, i + 1, 1) == sq) { out = out c; i++; continue }
					rest_after(substr(v, i + 1)); return out
				}
				out = out c
			}
			die("unterminated single-quoted scalar")
		}
		sub(/[ \t]+#.*$/, "", v)
		sub(/[ \t]+$/, "", v)
		if (v ~ /^[|>]/) die("block scalars (| or >) are not supported")
		if (v ~ /^[&*!]/) die("anchors, aliases and tags are not supported")
		if (v ~ /^[\[{]/ && v != "[]" && v != "{}") die("flow collections are not supported: " v)
		if (v ~ /^(~|null|Null|NULL)$/) return ""
		return v
	}
	function rest_after(r) { sub(/^[ \t]+/, "", r); if (r != "" && r !~ /^#/) die("text after a quoted scalar: " r) }
	# Decide what an empty "key:" (or "-") held, now that the next line is known.
	function resolve(ind, is_item) {
		if (pending == "") return
		if (is_item && ind >= pind && !(pitem && ind == pind)) push(ind, pending, "seq")
		else if (!is_item && ind > pind) push(ind, pending, "map")
		else print pending "="
		pending = ""
	}
	function key_line(ind, text,   k, v, p) {
		while (n > 1 && sind[n] > ind) n--
		# A sequence written at the indent of its key ends where the next key of that mapping starts.
		if (skind[n] == "seq" && sind[n] == ind) n--
		if (skind[n] != "map" || sind[n] != ind) die("unexpected indentation")
		if (match(text, /:([ \t]|$)/) == 0) die("expected \"key: value\", got: " text)
		k = substr(text, 1, RSTART - 1)
		v = substr(text, RSTART + 1)
		sub(/^[ \t]+/, "", v)
		if (k ~ /^["?]/ || substr(k, 1, 1) == sq) die("quoted or complex keys are not supported: " k)
		p = join(spath[n], k)
		if (seen[p]++) die("duplicate key " p)
		if (v == "" || v ~ /^#/) { pending = p; pind = ind; pitem = 0 }
		else { v = scalar(v); if (v != "[]" && v != "{}") print p "=" v }
	}
	BEGIN { prog = "start.sh"; sq = sprintf("%c", 39); n = 0; push(0, "", "map"); pending = "" }
	/^[ \t]*(#.*)?$/ { next }
	/^(---|\.\.\.)[ \t]*$/ { if (FNR > 1 && started) die("only one YAML document is supported"); next }
	{
		started = 1
		if ($0 ~ /^ *\t/) die("tabs in indentation")
		match($0, /^ */); ind = RLENGTH; text = substr($0, ind + 1)
		is_item = (text ~ /^-([ \t]|$)/)
		resolve(ind, is_item)
		if (!is_item) { key_line(ind, text); next }
		while (n > 1 && sind[n] > ind) n--
		if (skind[n] != "seq" || sind[n] != ind) die("unexpected sequence item")
		sidx[n]++
		p = spath[n] "." sidx[n]
		text = substr(text, 2); match(text, /^[ \t]*/); off = RLENGTH; text = substr(text, off + 1)
		if (text == "" || text ~ /^#/) { pending = p; pind = ind; pitem = 1 }
		else if (text !~ /^["]/ && substr(text, 1, 1) != sq && text ~ /^[^ \t#][^:]*:([ \t]|$)/) {
			# "- key: value" opens a mapping whose keys line up with this first key.
			push(ind + 1 + off, p, "map")
			key_line(ind + 1 + off, text)
		} else { v = scalar(text); if (v != "[]" && v != "{}") print p "=" v }
	}
	END { if (!bad && pending != "") print pending "=" }
	' "$1"
}

FLAT=$(flatten "$CONFIG") || fail "cannot parse $CONFIG (the stand-in reads block-style YAML only)"

# All values at exactly `path`, and the sequence items under `path`, in order.
get() { printf '%s\n' "$FLAT" | awk -v p="$1" 'index($0, p "=") == 1 { print substr($0, length(p) + 2) }'; }
list() {
	printf '%s\n' "$FLAT" | awk -v p="$1." '
		index($0, p) == 1 { r = substr($0, length(p) + 1); if (r ~ /^[0-9]+=/) { sub(/^[0-9]+=/, "", r); print r } }'
}
# The distinct keys directly under `path` (mapping keys or sequence indexes).
children() { printf '%s\n' "$FLAT" | awk -v p="$1." 'index($0, p) == 1 { k = substr($0, length(p) + 1); sub(/[.=].*/, "", k); if (!s[k]++) print k }'; }

# --- The middleware: exactly one registry middleware, `downstream`, with known options.
for k in $(children middleware); do
	[ "$k" = registry ] || fail "middleware.$k is not supported by the stand-in (only middleware.registry: downstream)"
done
[ -n "$(children "$MW")" ] || fail "$MW has no 'downstream' entry: the content cache needs one (options.upstreams names MSR)"
for i in $(children "$MW"); do
	case $i in *[!0-9]*) fail "$MW must be a list of middlewares" ;; esac
	name=$(get "$MW.$i.name")
	[ "$name" = downstream ] || fail "$MW.$i.name is '$name': only the 'downstream' middleware exists in $IMAGE"
	for k in $(children "$MW.$i"); do
		case $k in
		name | options) ;;
		*) fail "$MW.$i.$k is not a known key of the downstream middleware (expected name, options)" ;;
		esac
	done
	for k in $(children "$MW.$i.options"); do
		case $k in
		upstreams | cas | blobttl) ;;
		*) fail "$MW.$i.options.$k is not a known downstream option (expected upstreams, cas, blobttl)" ;;
		esac
	done
done
[ "$(children "$MW" | wc -l)" -eq 1 ] || fail "$MW lists more than one middleware; the stand-in supports exactly one 'downstream'"
OPTS=$MW.0.options
for k in upstreams cas; do
	if [ -n "$(get "$OPTS.$k")" ]; then fail "$OPTS.$k must be a list, not a single value"; fi
done

UPSTREAMS=$(list "$OPTS.upstreams")
[ -n "$UPSTREAMS" ] || fail "$OPTS.upstreams is missing or empty: at least one MSR URL is required"
UPSTREAM=$(printf '%s\n' "$UPSTREAMS" | head -n 1)
EXTRA=$(($(printf '%s\n' "$UPSTREAMS" | wc -l) - 1))
case $UPSTREAM in
http://?* | https://?*) ;;
*) fail "$OPTS.upstreams.0 is '$UPSTREAM': expected an http(s):// URL" ;;
esac
CAS=$(list "$OPTS.cas")
BLOBTTL=$(get "$OPTS.blobttl")

# --- Storage: passed through as written. Every key under storage: is an option of
# Distribution 2.8 or names the driver; the stand-in's build (Debian's) has fewer
# drivers than the real image, and a missing one would only make the registry panic
# ("StorageDriver not registered"), so say which and why here.
DRIVERS=
for k in $(children storage); do
	case $k in
	delete | redirect | cache | maintenance) ;;
	filesystem | inmemory | s3 | s3aws | swift) DRIVERS="$DRIVERS${DRIVERS:+ }$k" ;;
	azure | gcs | oss)
		fail "storage.$k: the stand-in's Distribution (Debian's docker-registry 2.8) has no $k driver, only filesystem, inmemory, s3 and swift; $IMAGE has it, but it cannot be run here"
		;;
	*) fail "storage.$k is neither a storage driver nor an option Distribution 2.8 knows (delete, redirect, cache, maintenance)" ;;
	esac
done
case $DRIVERS in
"") fail "storage names no driver: expected one of filesystem, inmemory, s3, swift" ;;
*" "*) fail "storage names more than one driver ($DRIVERS): Distribution takes exactly one" ;;
esac
# For the banner: where layers go, never a credential.
case $DRIVERS in
s3 | s3aws)
	STORAGE_SHOWN="$DRIVERS (bucket=$(get "storage.$DRIVERS.bucket"), regionendpoint=$(get "storage.$DRIVERS.regionendpoint"), rootdirectory=$(get "storage.$DRIVERS.rootdirectory"))"
	;;
swift) STORAGE_SHOWN="swift (container=$(get storage.swift.container), authurl=$(get storage.swift.authurl))" ;;
filesystem) STORAGE_SHOWN="filesystem ($(get storage.filesystem.rootdirectory))" ;;
*) STORAGE_SHOWN=$DRIVERS ;;
esac

# The derived file gets its own proxy: block; a second one would be a YAML duplicate key.
if printf '%s\n' "$FLAT" | grep -q '^proxy[.=]'; then fail "$CONFIG already has a top-level proxy: block; the stand-in derives it from $MW"; fi

# --- Every file config.yml names must exist now: the real image fails at start-up
# when a secret is not mounted, and a test must see that failure here as well.
check_file() { # key path
	[ -e "$2" ] || fail "$1: $2 does not exist (is the secret mounted?)"
	[ -f "$2" ] && [ -r "$2" ] || fail "$1: $2 is not a readable file"
}
for k in http.tls.certificate http.tls.key; do
	p=$(get "$k")
	if [ -n "$p" ]; then check_file "$k" "$p"; fi
done
# Paths are one per line, so loops over them split on newlines only (a path may hold spaces).
NL='
'
DEFAULT_IFS=$IFS
IFS=$NL
i=0
for p in $(list http.tls.clientcas); do
	check_file "http.tls.clientcas.$i" "$p"
	i=$((i + 1))
done
i=0
for p in $CAS; do
	check_file "$OPTS.cas.$i" "$p"
	i=$((i + 1))
done
IFS=$DEFAULT_IFS

mkdir -p "$WORKDIR" || fail "cannot create $WORKDIR"
DERIVED=$WORKDIR/registry.yml

# --- The derived Distribution config: the original minus the top-level middleware:
# block (2.8.2 refuses to start on an unknown middleware name), plus proxy:.
{
	awk '
		/^middleware:([ \t]|$)/ { skip = 1; next }
		skip && /^[^ \t#-]/ { skip = 0 }
		!skip { print }
	' "$CONFIG"
	# Single quotes: YAML takes any text inside them, with '' for a quote.
	printf "proxy:\n  remoteurl: '%s'\n" "$(printf '%s' "$UPSTREAM" | sed "s/'/''/g")"
} >"$DERIVED.tmp" || fail "cannot write $DERIVED"
mv "$DERIVED.tmp" "$DERIVED"

# --- MSR's CA: Go's crypto/tls reads SSL_CERT_FILE instead of the system bundle, so the
# bundle must hold the system CAs too (a public upstream must keep working).
if [ -n "$CAS" ]; then
	BUNDLE=$WORKDIR/cas.pem
	{
		IFS=$NL
		for p in $CAS; do
			cat "$p"
			# A PEM file without a final newline would glue onto the next one.
			echo
		done
		if [ -f "$SYSTEM_CAS" ]; then cat "$SYSTEM_CAS"; fi
	} >"$BUNDLE" || fail "cannot write $BUNDLE"
	IFS=$DEFAULT_IFS
	SSL_CERT_FILE=$BUNDLE
	export SSL_CERT_FILE
	CAS_SHOWN=$(printf '%s' "$CAS" | tr '\n' ',')
else
	CAS_SHOWN="none (system trust store)"
fi

if [ "$EXTRA" -gt 0 ]; then
	UP_SHOWN="$UPSTREAM ($EXTRA more ignored: Distribution's proxy has a single remote)"
else
	UP_SHOWN=$UPSTREAM
fi
if [ -n "$BLOBTTL" ]; then
	TTL_SHOWN="$BLOBTTL (accepted, NOT enforced: Distribution 2.8's proxy expires cached content after a fixed 7 days)"
else
	TTL_SHOWN="unset (Distribution 2.8's proxy expires cached content after a fixed 7 days)"
fi
printf '%s: STAND-IN for %s, NOT the real image: Docker Distribution pull-through cache; upstream=%s; cas=%s; blobttl=%s; storage=%s; config=%s\n' \
	"$PROG" "$IMAGE" "$UP_SHOWN" "$CAS_SHOWN" "$TTL_SHOWN" "$STORAGE_SHOWN" "$DERIVED" >&2

exec "$REGISTRY_BIN" serve "$DERIVED"
