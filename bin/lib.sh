# Shared set-up steps of bin/test and bin/demo (sourced, not executed).
# Everything a fresh Debian machine lacks is installed here, so both
# README commands work on a new machine and in CI.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"

log() { printf '\033[1m[%s]\033[0m %s\n' "$(basename "$0")" "$*"; }
die() { printf '[%s] error: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        die "installing what is missing needs root: run this as root, or install sudo and let this user use it"
    fi
}

# ensure_debs PACKAGE... : install the Debian packages that are missing
ensure_debs() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null \
            | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing Debian packages: ${missing[*]}"
    # The packaged Orthanc must not start a system-wide service.
    local policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
        as_root chmod +x /usr/sbin/policy-rc.d
        policy=1
    fi
    local status=0
    { as_root apt-get update -qq \
        && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends "${missing[@]}" >/dev/null; } || status=$?
    [ -n "$policy" ] && as_root rm -f /usr/sbin/policy-rc.d
    [ $status -eq 0 ] || die "apt-get could not install: ${missing[*]}"
    case " ${missing[*]} " in *" orthanc "*) disable_orthanc_service;; esac
}

# disable_orthanc_service : Debian's orthanc package enables a system-wide
# Orthanc (ports 8042 and 4242) that would start at the next boot; we
# installed the package for its program and plugins only.  An Orthanc
# installed before is left as it is.
disable_orthanc_service() {
    command -v systemctl >/dev/null || return 0
    as_root systemctl disable --quiet orthanc.service 2>/dev/null || return 0
    log "disabled the orthanc system service that the package enables" \
        "(systemctl enable --now orthanc starts it again)"
}

# LibreOffice converts a result's report to PDF, which the Orthanc module
# stores into the result's studies (the Tryton server runs its soffice)
REPORT_DEBS=libreoffice-writer-nogui

# GNU Health's billing of imaging orders, tested on top of our modules
# (tests/test_services_imaging.py). Installed without its dependencies: it
# requires GNU Health's own imaging package, whose modules have our names.
# Its other dependency, gnuhealth-services, is in the test extra.
SERVICES_IMAGING='gnuhealth-services-imaging >= 5.0, < 5.1'

# ensure_venv : a virtualenv with the project and its test extras installed
ensure_venv() {
    if [ ! -x "$PY" ]; then
        log "creating the virtualenv $VENV"
        python3 -m venv "$VENV"
    fi
    local stamp="$VENV/.installed" want
    want="$( { cat "$ROOT/setup.py"; echo "$SERVICES_IMAGING"; } \
        | sha1sum | cut -c1-16)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        log "installing the project and its dependencies (pip)"
        # pip's output (and setuptools' warnings) only when it fails
        local out="$VENV/pip.log"
        { "$PY" -m pip install --upgrade pip \
            && "$PY" -m pip install -e "$ROOT[test,postgresql]" \
            && "$PY" -m pip install --no-deps "$SERVICES_IMAGING"; } \
            >"$out" 2>&1 || { tail -n 30 "$out" >&2; die "pip failed (whole log: $out)"; }
        echo "$want" > "$stamp"
    fi
}

# ensure_legacy_venv : a virtualenv with GNU Health's own imaging modules
# (tests/test_upgrade.py builds a database with them; never in ours: they
# have our modules' names), cached under .cache and keyed on its
# requirements; exports LEGACY_PYTHON
ensure_legacy_venv() {
    local req="$ROOT/tests/upgrade/requirements-legacy.txt" dir
    dir="$ROOT/.cache/venv-legacy-$(sha1sum < "$req" | cut -c1-12)"
    if [ ! -e "$dir/.installed" ]; then
        log "creating the virtualenv of GNU Health's own imaging modules"
        find "$ROOT/.cache" -maxdepth 1 -name 'venv-legacy-*' \
            -exec rm -rf {} + 2>/dev/null || true
        python3 -m venv "$dir"
        "$dir/bin/python" -m pip install -q --upgrade pip >/dev/null
        "$dir/bin/python" -m pip install -q -r "$req"
        touch "$dir/.installed"
    fi
    export LEGACY_PYTHON="$dir/bin/python"
}

# check_node : fail with a clear message unless node is as recent as the
# browser test needs ("engines" of tests/browser/package.json: Debian 12's
# nodejs is 18, so it pins the last playwright-core release that runs on 18)
check_node() {
    local version minimum
    minimum="$(sed -n 's/^ *"node": *">= *\([0-9]*\).*/\1/p' \
        "$ROOT/tests/browser/package.json" | head -n 1)"
    version="$(node -p 'process.versions.node' 2>/dev/null)" \
        || die "node does not run (apt-get install nodejs npm)"
    [ "${version%%.*}" -ge "${minimum:-0}" ] \
        || die "the browser test needs Node.js $minimum or newer for playwright-core, node is $version (apt-get install nodejs npm: Debian 12 has 18)"
}

# free_port : print a TCP port free on 127.0.0.1
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# postgres_dir DIR : print where root's cluster of DIR lives.  The server
# runs as the postgres user, which cannot enter a directory such as /root:
# then the cluster lives under postgres's home, DIR becomes a link to it.
postgres_dir() {
    local dir="$1" home
    [ -L "$dir" ] && dir="$(readlink -f "$dir")"
    mkdir -p "$dir"
    chown postgres: "$dir"
    if runuser -u postgres -- test -w "$dir" -a -x "$dir"; then
        echo "$dir"
        return
    fi
    home="$(getent passwd postgres | cut -d: -f6)"
    home="$home/gnuhealth-imaging/$(basename "$dir")-$(echo "$dir" | sha1sum | cut -c1-8)"
    rmdir "$dir" 2>/dev/null || die "the postgres user cannot enter $dir and it is not empty: remove it or run from a directory that postgres can read"
    mkdir -p "$home"
    chown postgres: "$home"
    ln -s "$home" "$dir"
    log "the postgres user cannot enter $dir: the PostgreSQL cluster is in $home ($dir links to it)" >&2
    echo "$home"
}

# start_postgresql DIR : a private PostgreSQL cluster on 127.0.0.1 (trust
# authentication, loopback only); sets PG_URI, PG_STOP and PG_DIR (where
# the cluster is: DIR, or when root, where the postgres user can reach)
start_postgresql() {
    local dir="$1" bin port user run=()
    bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    [ -x "$bin/initdb" ] || die "PostgreSQL server binaries not found (apt-get install postgresql)"
    user="$(id -un)"
    if [ "$(id -u)" = 0 ]; then
        user=postgres
        # from /: postgres may not enter the current directory
        run=(runuser -u postgres -- env --chdir=/)
        dir="$(postgres_dir "$dir")"
    else
        mkdir -p "$dir"
    fi
    PG_DIR="$dir"
    if [ ! -s "$dir/data/PG_VERSION" ]; then
        "${run[@]}" "$bin/initdb" -D "$dir/data" -U "$user" -A trust \
            -E UTF8 --locale=C.UTF-8 >/dev/null \
            || die "initdb could not create a cluster in $dir/data"
    fi
    port="$(free_port)"
    "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c full_page_writes=off -c synchronous_commit=off" \
        start >/dev/null || { cat "$dir/server.log" >&2; die "PostgreSQL did not start"; }
    PG_URI="postgresql://$user@127.0.0.1:$port/"
    PG_STOP=("${run[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast stop)
    export PATH="$bin:$PATH"   # pg_dump/pg_restore of the same version for DB_CACHE
}
