#!/usr/bin/env bash
# Builds the Debian package with `cargo deb` and checks it: its contents, conffile and
# maintainer scripts (dpkg-deb), lintian, then install, upgrade, remove and purge in a
# throwaway Debian root made by debootstrap, never on this machine's own root. Then checks
# the reverse-proxy examples with nginx -t and caddy validate.
#
# Run as root from anywhere: packaging/test-deb.sh. Needs cargo-deb, dpkg-dev, lintian,
# debootstrap, systemd (systemd-analyze), nginx, openssl and, where Debian has it, caddy;
# .ci/run installs them. debootstrap downloads about 50 MB of Debian packages.
set -euo pipefail

cd "$(dirname "$0")/.."

scratch="$(mktemp -d)"
root="$scratch/root"

# debootstrap mounts /proc and /sys in the root while it works and unmounts them when it
# succeeds; after a failure they may still be there, and rm -rf must never run through one.
cleanup() {
    local mounts
    mounts="$(findmnt -rn -o TARGET | grep -F "$scratch/" | sort -r || true)"
    if [[ -n "$mounts" ]]; then
        xargs -r -d '\n' umount <<<"$mounts" || true
    fi
    if findmnt -rn -o TARGET | grep -qF "$scratch/"; then
        echo "test-deb: $scratch still has mounts; not removing it:" >&2
        findmnt -rn -o TARGET | grep -F "$scratch/" >&2
        return
    fi
    rm -rf "$scratch"
}
trap cleanup EXIT

fail() {
    echo "test-deb: $*" >&2
    exit 1
}

section() {
    echo
    echo "--- $1"
}

# --- the package file -------------------------------------------------------------------

section "cargo deb"
deb="$(cargo deb --locked | tail -n 1)"
[[ -f "$deb" ]] || fail "cargo deb did not print the package it made (got: $deb)"
echo "$deb"

section "contents (dpkg-deb)"
contents="$(dpkg-deb --contents "$deb")"
echo "$contents"
# One line per expected file: mode, owner and path as dpkg-deb lists them.
for expected in \
    '-rwxr-xr-x 0/0 ./usr/bin/voltd' \
    '-rw-r----- 0/0 ./etc/voltd/volt.toml' \
    '-rw-r--r-- 0/0 ./usr/lib/systemd/system/voltd.service' \
    '-rw-r--r-- 0/0 ./usr/share/man/man8/voltd.8.gz' \
    '-rw-r--r-- 0/0 ./usr/share/bash-completion/completions/voltd' \
    '-rw-r--r-- 0/0 ./usr/share/zsh/vendor-completions/_voltd' \
    '-rw-r--r-- 0/0 ./usr/share/fish/vendor_completions.d/voltd.fish' \
    '-rw-r--r-- 0/0 ./usr/share/doc/voltd/examples/nginx.conf' \
    '-rw-r--r-- 0/0 ./usr/share/doc/voltd/examples/Caddyfile'; do
    read -r mode owner path <<<"$expected"
    awk -v m="$mode" -v o="$owner" -v p="$path" '$1 == m && $2 == o && $NF == p { found = 1 }
        END { exit !found }' <<<"$contents" || fail "the package lacks $expected"
done
! grep -q 'volt-token' <<<"$contents" || fail "the package must not ship a token file"

conffiles="$(dpkg-deb --info "$deb" conffiles)"
[[ "$conffiles" == "/etc/voltd/volt.toml" ]] ||
    fail "conffiles should be /etc/voltd/volt.toml only, not: $conffiles"
echo "conffiles: $conffiles"

dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/lib/systemd/system/voltd.service |
    cmp -s - packaging/voltd.service ||
    fail "the packaged unit differs from packaging/voltd.service"
echo "the unit is packaging/voltd.service as it is"

control="$scratch/control"
dpkg-deb --control "$deb" "$control"
# Not started on install: the shipped volt.toml cannot start (README.md says why).
! grep -Eq 'deb-systemd-invoke (start|restart)|deb-systemd-helper enable [^>]*$' \
    "$control/postinst" || fail "postinst must neither start nor enable voltd on install"
grep -q 'deb-systemd-invoke stop' "$control/prerm" || fail "prerm must stop voltd on removal"
grep -q 'rm -rf /var/lib/private/voltd /var/lib/voltd' "$control/postrm" ||
    fail "postrm must delete the state directory on purge"
echo "maintainer scripts: no start or enable on install, stop on removal, state purged"

section "lintian"
# Accepted warnings are overridden in packaging/debian/lintian-overrides, each with its
# reason (also listed in README.md); any other warning or error fails.
lintian --fail-on error,warning "$deb"
echo "clean"

# --- a throwaway Debian root ---------------------------------------------------------------

section "debootstrap a throwaway root"
codename="$(. /etc/os-release && echo "$VERSION_CODENAME")"
started=$SECONDS
# man-db for `man voltd`; systemd and procps (/bin/kill) so that systemd-analyze verify finds
# the units and programs voltd.service refers to inside the root.
debootstrap --variant=minbase --include=man-db,systemd,procps "$codename" "$root" \
    >"$scratch/debootstrap.log" 2>&1 ||
    { tail -n 30 "$scratch/debootstrap.log" >&2; fail "debootstrap failed"; }
echo "Debian $codename in $root ($((SECONDS - started)) s)"
in_root() { chroot "$root" "$@"; }

section "install"
dpkg --root="$root" -i "$deb"
version="$(in_root voltd --version)"
[[ "$version" == "voltd $(dpkg-deb --field "$deb" Version | sed 's/-[^-]*$//')" ]] ||
    fail "voltd --version said: $version"
echo "voltd --version: $version"
[[ "$(stat -c '%a %U:%G' "$root/etc/voltd/volt.toml")" == "640 root:root" ]] ||
    fail "/etc/voltd/volt.toml is not 0640 root:root"
[[ ! -e "$root/etc/voltd/volt-token" ]] || fail "installing created /etc/voltd/volt-token"
[[ ! -e "$root/etc/systemd/system/multi-user.target.wants/voltd.service" ]] ||
    fail "installing enabled voltd"

page="$(in_root env MANWIDTH=100 man -P cat voltd 2>&1)" || fail "man voltd failed: $page"
for command in run check-config migrate register 'events list' 'events show' 'events tail' \
    'events replay' 'deliveries list' send-test-event; do
    grep -q "voltd $command" <<<"$page" || fail "man voltd lacks the command $command"
done
echo "man voltd: $(grep -c '' <<<"$page") lines, every command"

in_root bash -c 'source /usr/share/bash-completion/completions/voltd && complete -p voltd' ||
    fail "the bash completion does not load"

# The packaged configuration refuses to start until public_url is set.
set +e
check="$(in_root voltd check-config 2>&1)"
status=$?
set -e
[[ $status -eq 78 ]] && grep -q 'server.public_url' <<<"$check" ||
    fail "check-config on the shipped volt.toml should exit 78 naming server.public_url: $status $check"
echo "check-config on the shipped volt.toml: exit 78, $(grep -o 'server.public_url: [^;]*' <<<"$check")"

section "systemd-analyze verify (in the root)"
verify="$(systemd-analyze verify --root="$root" /usr/lib/systemd/system/voltd.service 2>&1)" ||
    fail "systemd-analyze verify failed: $verify"
# Warnings about other units are not the package's; any about voltd are.
! grep -q voltd <<<"$verify" || fail "systemd-analyze verify: $verify"
echo "clean"

section "upgrade keeps an edited conffile"
sed -i 's|hooks.your-domain.example/volt/CHANGE-ME|hooks.mycompany.com/volt/0a1b2c3d4e5f60718293a4b5c6d7e8f9|' \
    "$root/etc/voltd/volt.toml"
upgrade_dir="$scratch/upgrade"
mkdir "$upgrade_dir"
upgrade="$(cargo deb --locked --no-build --fast --deb-revision 2 --output "$upgrade_dir" | tail -n 1)"
dpkg --root="$root" --force-confold -i "$upgrade"
grep -q 'hooks.mycompany.com' "$root/etc/voltd/volt.toml" || fail "the upgrade replaced the edited volt.toml"
[[ "$(stat -c '%a' "$root/etc/voltd/volt.toml")" == "640" ]] || fail "the upgrade changed the mode of volt.toml"
echo "kept"

section "remove keeps the configuration and the database, purge deletes them"
# What the service leaves behind: DynamicUser=yes keeps its state in /var/lib/private/voltd.
mkdir -p "$root/var/lib/private/voltd"
touch "$root/var/lib/private/voltd/voltd.db"
ln -s private/voltd "$root/var/lib/voltd"
dpkg --root="$root" -r voltd
[[ ! -e "$root/usr/bin/voltd" ]] || fail "remove left /usr/bin/voltd"
[[ -f "$root/etc/voltd/volt.toml" ]] || fail "remove deleted the configuration"
[[ -f "$root/var/lib/voltd/voltd.db" ]] || fail "remove deleted the database"
dpkg --root="$root" -P voltd
[[ ! -e "$root/etc/voltd/volt.toml" ]] || fail "purge left /etc/voltd/volt.toml"
[[ ! -e "$root/var/lib/voltd" && ! -e "$root/var/lib/private/voltd" ]] ||
    fail "purge left the state directory"
! dpkg --root="$root" --status voltd >/dev/null 2>&1 || fail "dpkg still knows voltd after purge"
echo "removed, then purged"

# --- reverse-proxy examples ----------------------------------------------------------------

section "nginx -t packaging/nginx.conf"
proxy="$scratch/proxy"
mkdir "$proxy"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=hooks.your-domain.example \
    -keyout "$proxy/key.pem" -out "$proxy/cert.pem" 2>/dev/null
# The example as an operator installs it, with a certificate that exists here.
sed -e "s|/etc/letsencrypt/live/hooks.your-domain.example/fullchain.pem|$proxy/cert.pem|" \
    -e "s|/etc/letsencrypt/live/hooks.your-domain.example/privkey.pem|$proxy/key.pem|" \
    packaging/nginx.conf >"$proxy/voltd.conf"
cat >"$proxy/nginx.conf" <<EOF
pid $proxy/nginx.pid;
error_log $proxy/error.log;
events {}
http {
    access_log off;
    include $proxy/voltd.conf;
}
EOF
nginx -t -p "$proxy" -c "$proxy/nginx.conf" -e "$proxy/error.log"

section "caddy validate packaging/Caddyfile"
if command -v caddy >/dev/null; then
    HOME="$proxy" XDG_DATA_HOME="$proxy/data" XDG_CONFIG_HOME="$proxy/config" \
        caddy validate --adapter caddyfile --config packaging/Caddyfile 2>&1 | tail -n 1
else
    echo "skipped: caddy is not installed (Debian has no caddy package on this release)"
fi

echo
echo "test-deb: all checks passed"
