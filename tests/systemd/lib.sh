# shellcheck shell=bash
# Harness for testing cco against a real systemd user manager: a cached Debian
# bookworm rootfs booted with systemd-nspawn. Source this file; needs root,
# debootstrap, systemd-container (systemd-nspawn) and util-linux (nsenter).
#
#   rootfs_ensure              build/cache the rootfs once (idempotent)
#   container_boot NAME        boot a throwaway overlay container, wait for systemd
#   container_exec CMD...      run CMD as root inside
#   user_create NAME           add a lingering user, wait for its user manager
#   user_exec NAME CMD...      run CMD inside as NAME with a working `systemctl --user`
#   container_stop             power off, clean up (idempotent; use in a trap)
#
# Env: CCO_ROOTFS_CACHE (default /var/cache/cco-ci), CCO_BIN_DIR (host dir
# bind-mounted read-only at /opt/cco/bin), CCO_DEBIAN_MIRROR (override the
# mirror derived from the host's apt sources), CCO_BOOT_TIMEOUT (default 60 s),
# CCO_STOP_TIMEOUT (default 20 s), TMPDIR (overlay upper dirs, default /var/tmp).
# See README.md next to this file.

# A library must not change the caller's shell options; callers set -euo pipefail.

CCO_SUITE=bookworm
CCO_CT_BIN=/opt/cco/bin
# Packages in the image; part of the stamp, so changing it forces a rebuild.
CCO_ROOTFS_INCLUDE=systemd,systemd-sysv,dbus,libpam-systemd,dbus-user-session,curl,ca-certificates,procps,iproute2,wrk,jq,python3,util-linux,passwd
CCO_CT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# Container state (one container per shell); CCO_CT_LOG is the nspawn/console log.
CCO_CT_NAME=''
CCO_CT_DIR=''
CCO_CT_NSPAWN_PID=''
CCO_CT_INIT_PID=''
CCO_CT_LOG=''
CCO_CT_CGROUP=''
# Hierarchies nspawn places the container in on a systemd-less host.
if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
  _CCO_CG_HIERARCHIES=(/sys/fs/cgroup)                        # pure cgroup v2
else
  _CCO_CG_HIERARCHIES=(/sys/fs/cgroup/systemd /sys/fs/cgroup/unified) # hybrid/legacy
fi

_cco_log() { printf '[cco-ct] %s\n' "$*" >&2; }
_cco_die() { _cco_log "ERROR: $*"; return 1; }

_cco_rootfs_dir() { printf '%s/rootfs-%s' "${CCO_ROOTFS_CACHE:-/var/cache/cco-ci}" "$CCO_SUITE"; }

# Print "URI KEYRING" of the first enabled host apt source serving $CCO_SUITE,
# so no mirror host name is ever written into the repository.
_cco_mirror() {
  if [[ -n "${CCO_DEBIAN_MIRROR:-}" ]]; then
    printf '%s %s\n' "$CCO_DEBIAN_MIRROR" ""
    return 0
  fi
  local f found=
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [[ -r "$f" ]] || continue
    if [[ "$f" == *.sources ]]; then
      # deb822: blank-line separated stanzas of "Key: value" fields.
      found=$(awk -v suite="$CCO_SUITE" '
        function flush() {
          if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && tolower(enabled) != "no" && uris != "") {
            split(uris, u, " "); print u[1], signed; exit
          }
          types = uris = suites = signed = enabled = ""
        }
        /^[ \t]*#/ { next }
        /^[ \t]*$/ { flush(); next }
        {
          key = tolower($1); sub(/:$/, "", key); $1 = ""; sub(/^[ \t]+/, "")
          if (key == "types") types = $0; else if (key == "uris") uris = $0
          else if (key == "suites") suites = $0; else if (key == "signed-by") signed = $0
          else if (key == "enabled") enabled = $0
        }
        END { flush() }' "$f")
    else
      # one-line format: deb [options] URI SUITE COMPONENTS...
      found=$(awk -v suite="$CCO_SUITE" '
        $1 != "deb" { next }
        {
          signed = ""; i = 2
          if ($2 ~ /^\[/) {
            for (; i <= NF; i++) {
              if ($i ~ /^\[?signed-by=/) { signed = $i; sub(/^\[?signed-by=/, "", signed); sub(/\]$/, "", signed) }
              if ($i ~ /\]$/) { i++; break }
            }
          }
          if ($(i + 1) == suite) { print $i, signed; exit }
        }' "$f")
    fi
    if [[ -n "$found" ]]; then
      printf '%s\n' "$found"
      return 0
    fi
  done
  _cco_die "no '$CCO_SUITE' deb source in host apt sources; set CCO_DEBIAN_MIRROR"
}

# Build the cached rootfs once. The stamp is written last, so an interrupted
# build is redone; a flock serialises concurrent CI jobs sharing the cache.
rootfs_ensure() {
  local dir stamp want
  dir=$(_cco_rootfs_dir)
  stamp="$dir.stamp"
  want="suite=$CCO_SUITE include=$CCO_ROOTFS_INCLUDE rev=1"
  [[ -f "$stamp" && -d "$dir" && "$(cat "$stamp")" == "$want" ]] && return 0
  mkdir -p "$(dirname "$dir")" || return 1
  # Every step is guarded explicitly: errexit does not apply inside `( ) || ...`.
  (
    flock 9 || exit 1
    # Another job may have finished the build while we waited for the lock.
    [[ -f "$stamp" && -d "$dir" && "$(cat "$stamp")" == "$want" ]] && exit 0
    _cco_rootfs_build "$dir" "$stamp" "$want"
  ) 9>"$dir.lock" || { _cco_log "rootfs_ensure failed (log: $dir.build.log)"; return 1; }
}

_cco_rootfs_build() {
  local dir=$1 stamp=$2 want=$3 tmp=$1.tmp mirror keyring
  read -r mirror keyring < <(_cco_mirror) && [[ -n "$mirror" ]] || return 1
  _cco_log "building $dir from $mirror (first run only, 1-2 minutes)"
  rm -f "$stamp" || return 1
  # An interrupted debootstrap can leave proc/sys mounted in its target.
  findmnt -rn -o TARGET | { grep -E "^($tmp|$dir)/" || true; } | sort -r | xargs -r -n1 umount -l
  rm -rf --one-file-system "$tmp" "$dir" || return 1
  local -a args=(--variant=minbase --include="$CCO_ROOTFS_INCLUDE")
  [[ -n "$keyring" && -r "$keyring" ]] && args+=(--keyring="$keyring")
  if ! debootstrap "${args[@]}" "$CCO_SUITE" "$tmp" "$mirror" >"$dir.build.log" 2>&1; then
    tail -n 30 "$dir.build.log" >&2
    _cco_log "debootstrap failed"
    return 1
  fi
  _cco_rootfs_tune "$tmp" && mv "$tmp" "$dir" && printf '%s\n' "$want" >"$stamp" || return 1
  _cco_log "rootfs ready: $dir"
}

# Trim the image for fast, quiet container boots.
_cco_rootfs_tune() {
  local r=$1 u
  echo cco-ci >"$r/etc/hostname" || return 1
  # Empty machine-id would mean "first boot" (preset-all); container_boot writes a fresh one.
  : >"$r/etc/machine-id" || return 1
  ln -sf /lib/systemd/system/multi-user.target "$r/etc/systemd/system/default.target" || return 1
  # Units that are useless in a throwaway container and only slow boot or spam the log.
  for u in console-getty.service getty@.service apt-daily.timer apt-daily-upgrade.timer \
    e2scrub_all.timer e2scrub_reap.service fstrim.timer systemd-networkd-wait-online.service; do
    ln -sf /dev/null "$r/etc/systemd/system/$u" || return 1
  done
  rm -f "$r"/var/cache/apt/archives/*.deb
}

# Print the host PID of the container's PID 1: the descendant of nspawn whose
# innermost namespace PID (NSpid) is 1. It ends up a direct child of nspawn, but
# during startup nspawn also has a short-lived outer child, so check NSpid rather
# than trusting the first child.
_cco_find_init() {
  local root=$1 pid ns queue=("$1") kids
  while ((${#queue[@]})); do
    pid=${queue[0]}
    queue=("${queue[@]:1}")
    if [[ "$pid" != "$root" ]]; then
      ns=$(awk '/^NSpid:/ { print $NF }' "/proc/$pid/status" 2>/dev/null) || ns=
      if [[ "$ns" == 1 ]]; then
        printf '%s\n' "$pid"
        return 0
      fi
    fi
    kids=$(cat /proc/"$pid"/task/*/children 2>/dev/null) || kids=
    # shellcheck disable=SC2206 # word-splitting a PID list is intended
    queue+=($kids)
  done
  return 1
}

# Boot a throwaway container named NAME from the cached rootfs. Writes go to an
# overlayfs upper dir in a temp dir, so the cache is never modified.
container_boot() {
  local name=${1:?container_boot NAME}
  local rootfs timeout=${CCO_BOOT_TIMEOUT:-60} deadline state
  [[ "$timeout" =~ ^[0-9]+$ ]] || _cco_die "CCO_BOOT_TIMEOUT must be whole seconds" || return 1
  rootfs=$(_cco_rootfs_dir)
  [[ -f "$rootfs.stamp" ]] || _cco_die "no cached rootfs; call rootfs_ensure first" || return 1
  [[ -z "$CCO_CT_NSPAWN_PID" ]] || _cco_die "a container is already running in this shell" || return 1
  CCO_CT_NAME=$name
  CCO_CT_DIR=$(mktemp -d "${TMPDIR:-/var/tmp}/cco-ct-$name.XXXXXX") || return 1
  CCO_CT_LOG=$CCO_CT_DIR/nspawn.log
  mkdir "$CCO_CT_DIR"/{upper,work,root} || return 1
  # Our own overlay (upper on disk, in the temp dir) rather than --volatile=overlay
  # (upper on tmpfs): same speed, but we can seed files before boot and big test
  # writes do not eat RAM.
  mount -t overlay overlay \
    -o "lowerdir=$rootfs,upperdir=$CCO_CT_DIR/upper,workdir=$CCO_CT_DIR/work" "$CCO_CT_DIR/root" ||
    _cco_die "overlay mount failed (TMPDIR must not be on overlayfs)" || return 1
  # A fresh machine-id per container, written into the upper layer only.
  { od -An -N16 -tx1 /dev/urandom | tr -d ' \n' && echo; } >"$CCO_CT_DIR/root/etc/machine-id" &&
    echo "$name" >"$CCO_CT_DIR/root/etc/hostname" || return 1

  # nspawn keys host-side state (/run/systemd/nspawn/propagate/MACHINE) on the
  # machine name, so make it unique; NAME stays the hostname.
  local -a args=(--quiet --directory="$CCO_CT_DIR/root" --machine="$name-${CCO_CT_DIR##*.}"
    --hostname="$name" --register=no --keep-unit
    --private-network --link-journal=no --boot --console=read-only)
  if [[ -n "${CCO_BIN_DIR:-}" ]]; then
    [[ -d "$CCO_BIN_DIR" ]] || _cco_die "CCO_BIN_DIR=$CCO_BIN_DIR is not a directory" || return 1
    args+=(--bind-ro="$(realpath "$CCO_BIN_DIR")":"$CCO_CT_BIN")
  fi
  # Without systemd on the host, nspawn puts the container into <own cgroup>/payload;
  # start it in a private cgroup so parallel containers do not share one tree.
  CCO_CT_CGROUP=cco-ct/$(basename "$CCO_CT_DIR")
  local h
  for h in "${_CCO_CG_HIERARCHIES[@]}"; do
    [[ -d "$h" ]] && mkdir -p "$h/$CCO_CT_CGROUP"
  done
  (
    for h in "${_CCO_CG_HIERARCHIES[@]}"; do
      [[ -d "$h/$CCO_CT_CGROUP" ]] && echo "$BASHPID" >"$h/$CCO_CT_CGROUP/cgroup.procs"
    done
    exec systemd-nspawn "${args[@]}"
  ) </dev/null >"$CCO_CT_LOG" 2>&1 &
  CCO_CT_NSPAWN_PID=$!

  deadline=$((SECONDS + timeout))
  until CCO_CT_INIT_PID=$(_cco_find_init "$CCO_CT_NSPAWN_PID"); do
    if ! kill -0 "$CCO_CT_NSPAWN_PID" 2>/dev/null || ((SECONDS >= deadline)); then
      _cco_log "nspawn exited or no init after ${timeout}s; log tail:"
      tail -n 40 "$CCO_CT_LOG" >&2
      return 1
    fi
    sleep 0.1
  done

  # `is-system-running --wait` needs the system bus, which is not up yet at the
  # very start, so retry it until the deadline.
  while :; do
    state=$(container_exec timeout 5 systemctl is-system-running --wait 2>/dev/null) || true
    case "$state" in
      running | degraded) break ;;
    esac
    if ! kill -0 "$CCO_CT_NSPAWN_PID" 2>/dev/null || ((SECONDS >= deadline)); then
      _cco_log "container $name not ready after ${timeout}s (state '${state:-?}'); log tail:"
      tail -n 40 "$CCO_CT_LOG" >&2
      container_exec systemctl --no-pager --failed >&2 2>/dev/null || true
      return 1
    fi
    sleep 0.2
  done
  if [[ "$state" == degraded ]]; then
    _cco_log "container $name is degraded; failed units:"
    container_exec systemctl --no-pager --failed --plain --no-legend >&2 || true
  fi
}

# Run CMD as root inside the container with a clean environment.
container_exec() {
  [[ -n "$CCO_CT_INIT_PID" ]] || _cco_die "no container booted" || return 1
  nsenter -t "$CCO_CT_INIT_PID" -a \
    env -i PATH="$CCO_CT_PATH:$CCO_CT_BIN" HOME=/root USER=root LANG=C.UTF-8 TERM="${TERM:-dumb}" "$@"
}

# Create a user with lingering, so systemd starts user@UID.service without a login.
user_create() {
  local name=${1:?user_create NAME} uid deadline=$((SECONDS + ${CCO_BOOT_TIMEOUT:-60}))
  container_exec useradd --create-home --shell /bin/bash "$name" || return 1
  uid=$(container_exec id -u "$name") || return 1
  container_exec loginctl enable-linger "$name" || return 1
  until container_exec systemctl is-active --quiet "user@$uid.service" &&
    container_exec test -S "/run/user/$uid/bus"; do
    if ((SECONDS >= deadline)); then
      container_exec systemctl --no-pager status "user@$uid.service" >&2 || true
      _cco_die "user manager for $name (uid $uid) did not come up"
      return 1
    fi
    sleep 0.2
  done
}

# Run CMD inside as user NAME, with the environment `systemctl --user` and
# `journalctl --user` need. stdio and exit status pass through.
user_exec() {
  local name=${1:?user_exec NAME CMD...} uid gid
  shift
  [[ -n "$CCO_CT_INIT_PID" ]] || _cco_die "no container booted" || return 1
  uid=$(container_exec id -u "$name") || return 1
  gid=$(container_exec id -g "$name") || return 1
  nsenter -t "$CCO_CT_INIT_PID" -a --wdns="/home/$name" \
    setpriv --reuid="$uid" --regid="$gid" --init-groups \
    env -i PATH="$CCO_CT_PATH:$CCO_CT_BIN" HOME="/home/$name" USER="$name" LOGNAME="$name" \
    LANG=C.UTF-8 TERM="${TERM:-dumb}" XDG_RUNTIME_DIR="/run/user/$uid" \
    DBUS_SESSION_BUS_ADDRESS="unix:path=/run/user/$uid/bus" "$@"
}

# Power off cleanly (bounded), then force; unmount and remove temp dirs.
container_stop() {
  local deadline
  if [[ -n "$CCO_CT_NSPAWN_PID" ]] && kill -0 "$CCO_CT_NSPAWN_PID" 2>/dev/null; then
    # SIGTERM makes nspawn signal the container's systemd to shut down in order
    # (it halts). Unlike `systemctl poweroff`, which fails with "Failed to connect
    # to bus" if the container is still booting, the signal just stays pending.
    kill -TERM "$CCO_CT_NSPAWN_PID" 2>/dev/null || true
    deadline=$((SECONDS + ${CCO_STOP_TIMEOUT:-20}))
    while kill -0 "$CCO_CT_NSPAWN_PID" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.05; done
    if kill -0 "$CCO_CT_NSPAWN_PID" 2>/dev/null; then
      _cco_log "$CCO_CT_NAME: no clean poweroff in ${CCO_STOP_TIMEOUT:-20}s; killing nspawn"
      kill -KILL "$CCO_CT_NSPAWN_PID" 2>/dev/null || true
    fi
    wait "$CCO_CT_NSPAWN_PID" 2>/dev/null || true
  fi
  # Also reaps container processes left behind by a SIGKILLed nspawn.
  [[ -z "$CCO_CT_CGROUP" ]] || _cco_cgroup_remove "$CCO_CT_CGROUP"
  if [[ -n "$CCO_CT_DIR" ]]; then
    if mountpoint -q "$CCO_CT_DIR/root"; then
      umount "$CCO_CT_DIR/root" || umount -l "$CCO_CT_DIR/root" || true
    fi
    # Never rm -rf through a still-mounted root.
    if mountpoint -q "$CCO_CT_DIR/root"; then
      _cco_log "leaving $CCO_CT_DIR: overlay still mounted"
    else
      rm -rf --one-file-system "$CCO_CT_DIR"
    fi
  fi
  CCO_CT_NAME='' CCO_CT_DIR='' CCO_CT_NSPAWN_PID='' CCO_CT_INIT_PID='' CCO_CT_LOG='' CCO_CT_CGROUP=''
}

# Remove the container's cgroup subtree in every hierarchy; anything still in it
# is a leftover of this container (e.g. after SIGKILL of nspawn), so kill it first.
_cco_cgroup_remove() {
  local rel=$1 h d pid _
  for h in "${_CCO_CG_HIERARCHIES[@]}"; do
    [[ -d "$h/$rel" ]] || continue
    for _ in 1 2 3 4 5; do
      find "$h/$rel" -depth -type d -exec rmdir {} + 2>/dev/null || true
      [[ -d "$h/$rel" ]] || break
      while read -r d; do
        while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done <"$d/cgroup.procs"
      done < <(find "$h/$rel" -type d)
      sleep 0.2
    done
    [[ -d "$h/$rel" ]] && _cco_log "could not remove cgroup $h/$rel"
    rmdir "$h/${rel%/*}" 2>/dev/null || true # shared parent; other containers may still use it
  done
  return 0
}
