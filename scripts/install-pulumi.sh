#!/usr/bin/env bash
# Installs the pinned Pulumi CLI (scripts/pulumi-cli.env) into DIR/bin, by default
# the project's .pulumi/bin (git-ignored), from the official release tarball, and
# only when its sha256 is the pinned one. Prints DIR/bin on success.
#
# Usage: scripts/install-pulumi.sh [DIR]
#   MSRC_PULUMI_VERSION with MSRC_PULUMI_SHA256: another version and its checksum
#   (both or neither).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$root/.pulumi}

die() {
  printf 'install-pulumi: %s\n' "$*" >&2
  exit 1
}

# shellcheck source=scripts/pulumi-cli.env
. "$root/scripts/pulumi-cli.env"
if [ -n "${MSRC_PULUMI_VERSION:-}${MSRC_PULUMI_SHA256:-}" ]; then
  [ -n "${MSRC_PULUMI_VERSION:-}" ] && [ -n "${MSRC_PULUMI_SHA256:-}" ] ||
    die "set MSRC_PULUMI_VERSION and MSRC_PULUMI_SHA256 together (a version and the sha256 of its linux-x64 tarball)"
  PULUMI_CLI_VERSION=$MSRC_PULUMI_VERSION
  PULUMI_CLI_SHA256_LINUX_X64=$MSRC_PULUMI_SHA256
fi
version=$PULUMI_CLI_VERSION

case "$(uname -s)/$(uname -m)" in
  Linux/x86_64) platform=linux-x64 sha=$PULUMI_CLI_SHA256_LINUX_X64 ;;
  *) die "no pinned checksum for $(uname -s) $(uname -m) (only linux x86_64 is pinned): install Pulumi CLI v$version yourself (https://www.pulumi.com/docs/install/) and put it on PATH" ;;
esac
url=https://get.pulumi.com/releases/sdk/pulumi-v$version-$platform.tar.gz

command -v curl >/dev/null 2>&1 || die "curl is not installed; it is needed to download $url"
command -v sha256sum >/dev/null 2>&1 || die "sha256sum is not installed (coreutils); it is needed to verify $url"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf 'install-pulumi: downloading %s\n' "$url" >&2
curl --fail --silent --show-error --location --retry 2 --connect-timeout 20 --max-time 600 \
  -o "$work/pulumi.tar.gz" "$url" ||
  die "could not download $url (is there Internet access here?); nothing was installed"
actual=$(sha256sum "$work/pulumi.tar.gz" | cut -d' ' -f1)
[ "$actual" = "$sha" ] ||
  die "$url has sha256 $actual, not the pinned $sha (scripts/pulumi-cli.env); nothing was installed"

mkdir -p "$work/x"
tar -xzf "$work/pulumi.tar.gz" -C "$work/x" || die "could not unpack $url"
# The release tarball holds pulumi/pulumi, pulumi/pulumi-language-python, ...
[ -x "$work/x/pulumi/pulumi" ] || die "$url does not hold pulumi/pulumi; nothing was installed"

mkdir -p "$dir"
rm -rf "$dir/bin.new"
mv "$work/x/pulumi" "$dir/bin.new"
rm -rf "$dir/bin"
mv "$dir/bin.new" "$dir/bin"
"$dir/bin/pulumi" version >/dev/null 2>&1 || die "$dir/bin/pulumi does not run on this machine"
printf 'install-pulumi: installed Pulumi CLI v%s in %s\n' "$version" "$dir/bin" >&2
printf '%s\n' "$dir/bin"
