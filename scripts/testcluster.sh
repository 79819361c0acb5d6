#!/usr/bin/env bash
# A one-node Slurm cluster plus Apptainer on a Debian 12 (bookworm) machine, as
# root, so that lwroi's tests can submit real jobs and run real containers.
#
#   scripts/testcluster.sh up             install (once) and start everything
#   scripts/testcluster.sh status         show the node, the queue and apptainer
#   scripts/testcluster.sh down [--purge] stop the daemons (--purge: also remove
#                                         the apptainer prefix, state and config)
#
# Meant for throw-away test machines (CI), not for real clusters: it writes
# /etc/slurm/slurm.conf and refuses to overwrite one it did not write.
#
# Apptainer is not in Debian 12, and Debian's build needs glibc >= 2.38, so it is
# unpacked with its own newer glibc into a private prefix (nothing of the host
# is replaced) and reached through the wrapper /usr/local/bin/apptainer.
#
# Knobs (environment):
#   LWROI_DEBIAN_MIRROR      Debian mirror for apptainer's packages
#                            (default http://deb.debian.org/debian)
#   LWROI_APPTAINER_PREFIX   where apptainer is unpacked (default /opt/lwroi-apptainer)
#   LWROI_SLURM_DIR          Slurm state, spool and logs (default /var/lib/lwroi-slurm)
#   LWROI_SLURM_PARTITION    name of the only partition (default main)
set -Eeuo pipefail

MIRROR=${LWROI_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PREFIX=${LWROI_APPTAINER_PREFIX:-/opt/lwroi-apptainer}
SLURM_DIR=${LWROI_SLURM_DIR:-/var/lib/lwroi-slurm}
PARTITION=${LWROI_SLURM_PARTITION:-main}
SLURM_CONF=/etc/slurm/slurm.conf
WRAPPER=/usr/local/bin/apptainer
MARKER="# Written by lwroi scripts/testcluster.sh"
MUNGE_PIDFILE=/run/munge/munged.pid
SLURM_CONF_CHANGED=false
# Where the pieces of apptainer come from: apptainer itself needs glibc >= 2.38.
APPTAINER_PKGS=(apptainer/sid libc6/trixie libseccomp2/trixie libsqlite3-0/trixie)
HOST_PKGS=(slurm-wlm munge patchelf squashfs-tools debootstrap uidmap)
# Linux capability numbers -> names, to tell apptainer which ones this kernel
# withholds (apptainer run as root asks for all of them and fails otherwise).
CAP_NAMES=(CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID
  SETPCAP LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW
  IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT
  SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE
  AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM
  BLOCK_SUSPEND AUDIT_READ PERFMON BPF CHECKPOINT_RESTORE)

say() { printf '[testcluster] %s\n' "$*"; }
die() { printf '[testcluster] ERROR: %s\n' "$*" >&2; exit 1; }
run() { say "+ $*"; "$@"; }
on_error() { printf '[testcluster] ERROR: line %s: "%s" exited with %s\n' "$1" "$2" "$3" >&2; }
trap 'on_error "$LINENO" "$BASH_COMMAND" "$?"' ERR

node_name() { hostname -s; }

pid_alive() {  # pid_alive PIDFILE: the daemon named in PIDFILE is running
  [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll until COMMAND succeeds
  local seconds=$1 what=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
  say "$what after $((SECONDS - deadline + seconds)) s"
}

# ---------------------------------------------------------------- host setup

ensure_root_debian() {
  ((EUID == 0)) || die "must run as root (it installs packages and starts daemons)"
  [[ -r /etc/debian_version ]] || die "needs Debian (no /etc/debian_version)"
}

ensure_hostname_resolves() {
  local host; host=$(node_name)
  if getent hosts "$host" >/dev/null; then
    say "hostname $host resolves to $(getent hosts "$host" | awk '{print $1; exit}')"
  else
    say "hostname $host does not resolve: adding '127.0.0.1 $host' to /etc/hosts"
    printf '127.0.0.1 %s\n' "$host" >>/etc/hosts
  fi
}

install_host_packages() {
  local missing=() pkg
  for pkg in "${HOST_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
  done
  if ((${#missing[@]} == 0)); then
    say "Debian packages already installed: ${HOST_PKGS[*]}"
    return
  fi
  run apt-get update -q
  run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# --------------------------------------------------------------------- slurm

write_slurm_conf() {  # sets SLURM_CONF_CHANGED=true when the file was (re)written
  local host cpus mem_mb new
  host=$(node_name)
  cpus=$(nproc)
  # 90 % of the memory: slurmd drains a node that has less than RealMemory.
  mem_mb=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
  if [[ -e $SLURM_CONF ]] && ! grep -qxF "$MARKER" "$SLURM_CONF"; then
    die "$SLURM_CONF exists and was not written by this script; move it away first"
  fi
  mkdir -p /etc/slurm "$SLURM_DIR"/{state,spool,log}
  new=$(cat <<EOF
$MARKER
# A one-node test cluster: not for production.
ClusterName=lwroi-test
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# Short job credentials: a requeued job restarts in ~15-30 s instead of minutes (Slurm waits for the
# old credential to expire before it starts the job again; test box only, sites keep the default).
AuthInfo=cred_expire=10
ProctrackType=proctrack/linuxproc
# Bind each task to its CPUs, as sites do: a rank must start as many threads as it is bound to.
TaskPlugin=task/affinity
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# PyPI's mpich speaks PMI2: plain srun -n N then gives real ranks.
MpiDefault=pmi2
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
# A job whose dependency can never be met is cancelled instead of pending forever.
DependencyParameters=kill_invalid_depend
# Slurm's default: the controller forgets a finished job 300 s after it ended, as on a real
# cluster (no slurmdbd here, so lwroi's reduce job falls back from sacct to scontrol, well within it).
MinJobAge=300
ReturnToService=2
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$SLURM_DIR/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd.log
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
)
  if [[ -e $SLURM_CONF ]] && [[ $(cat "$SLURM_CONF") == "$new" ]]; then
    return
  fi
  say "writing $SLURM_CONF (node $host, $cpus CPUs, $mem_mb MB)"
  printf '%s\n' "$new" >"$SLURM_CONF.tmp"
  mv "$SLURM_CONF.tmp" "$SLURM_CONF"
  SLURM_CONF_CHANGED=true
}

start_munge() {
  if pid_alive "$MUNGE_PIDFILE"; then
    say "munged already running (pid $(cat "$MUNGE_PIDFILE"))"
    return
  fi
  [[ -s /etc/munge/munge.key ]] || run mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
  # The socket directory must be traversable by every user (so not under /root).
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
  run runuser -u munge -- /usr/sbin/munged
  wait_for 10 "munge answers" sh -c 'munge -n | unmunge' ||
    die "munged does not answer; see /var/log/munge/munged.log"
}

start_slurm() {
  if ! pid_alive "$SLURM_DIR/slurmctld.pid"; then
    run slurmctld
  else
    say "slurmctld already running (pid $(cat "$SLURM_DIR/slurmctld.pid"))"
  fi
  wait_for 30 "slurmctld answers" scontrol ping ||
    { tail -n 20 "$SLURM_DIR/log/slurmctld.log" >&2; die "slurmctld does not answer"; }
  if ! pid_alive "$SLURM_DIR/slurmd.pid"; then
    run slurmd
  else
    say "slurmd already running (pid $(cat "$SLURM_DIR/slurmd.pid"))"
  fi
  local host; host=$(node_name)
  # A node left drained or down by an earlier run is put back into service.
  if sinfo -h -N -n "$host" -o %t | grep -qE '^(drain|drng|down|fail)'; then
    run scontrol update NodeName="$host" State=RESUME
  fi
  wait_for 60 "node $host idle" node_is_idle "$host" || {
    sinfo -N -l >&2 || true
    tail -n 20 "$SLURM_DIR/log/slurmd.log" >&2 || true
    die "node $host did not become idle"
  }
}

node_is_idle() { [[ $(sinfo -h -N -n "$1" -o %t) == idle ]]; }

stop_slurm() {
  local ids
  if scontrol ping >/dev/null 2>&1; then
    ids=$(squeue -h -o %A -t PENDING,RUNNING,SUSPENDED,REQUEUED,CONFIGURING,COMPLETING || true)
    if [[ -n $ids ]]; then
      # shellcheck disable=SC2086  # one id per word
      run scancel $ids
      wait_for 60 "jobs ended" no_active_jobs || say "some jobs are still ending"
    fi
  fi
  stop_daemon slurmd "$SLURM_DIR/slurmd.pid"
  stop_daemon slurmctld "$SLURM_DIR/slurmctld.pid"
}

no_active_jobs() { [[ -z $(squeue -h -o %A -t PENDING,RUNNING,SUSPENDED,COMPLETING) ]]; }

stop_daemon() {  # stop_daemon NAME PIDFILE: SIGTERM the pid in PIDFILE and wait
  local name=$1 pidfile=$2 pid
  if ! pid_alive "$pidfile"; then
    say "$name is not running"
    return
  fi
  pid=$(cat "$pidfile")
  run kill "$pid"
  if ! wait_for 30 "$name (pid $pid) stopped" sh -c "! kill -0 $pid"; then
    run kill -KILL "$pid"
  fi
  rm -f "$pidfile"
}

# ----------------------------------------------------------------- apptainer

apptainer_works() { [[ -x $WRAPPER ]] && "$WRAPPER" --version >/dev/null 2>&1; }

install_apptainer() {
  if [[ -e $PREFIX/.lwroi-installed ]] && apptainer_works; then
    say "apptainer already installed in $PREFIX ($("$WRAPPER" --version))"
    return
  fi
  local work stage lib
  work=$(mktemp -d /tmp/lwroi-apptainer-install.XXXXXX)
  stage=$PREFIX.new
  rm -rf "$stage"
  mkdir -p "$work"/{lists/partial,cache/archives/partial,etc/apt.conf.d,etc/preferences.d,etc/sources.list.d,debs} "$stage"
  # A private apt: the host keeps bookworm, this one only downloads .debs.
  cat >"$work/etc/sources.list" <<EOF
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR trixie main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR sid main
EOF
  cat >"$work/apt.conf" <<EOF
Dir::Etc "$work/etc";
Dir::State::Lists "$work/lists";
Dir::State::status "/var/lib/dpkg/status";
Dir::Cache "$work/cache";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
// The mirror may be a snapshot whose Release files have expired.
Acquire::Check-Valid-Until "false";
APT::Sandbox::User "root";
EOF
  say "downloading ${APPTAINER_PKGS[*]} from $MIRROR"
  run env APT_CONFIG="$work/apt.conf" apt-get update -q
  (cd "$work/debs" && run env APT_CONFIG="$work/apt.conf" apt-get download -q "${APPTAINER_PKGS[@]}")
  local deb
  for deb in "$work"/debs/*.deb; do
    run dpkg-deb -x "$deb" "$stage"
  done
  lib=$PREFIX/usr/lib/x86_64-linux-gnu
  [[ -e $stage/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 ]] || die "no ld-linux-x86-64.so.2 in the downloaded libc6"
  # Run apptainer and its starter on the private glibc (DT_RPATH, unlike
  # RUNPATH, also applies to their libraries' own dependencies).
  local bin
  for bin in usr/bin/apptainer usr/lib/x86_64-linux-gnu/apptainer/bin/starter; do
    run patchelf --set-interpreter "$lib/ld-linux-x86-64.so.2" --force-rpath --set-rpath "$lib" "$stage/$bin"
  done
  # A relocated apptainer looks for its configuration relative to itself: the
  # binary under usr/, the starter under usr/lib/.
  mv "$stage/etc/apptainer" "$stage/usr/etc-apptainer.tmp"
  rm -rf "${stage:?}/etc"
  mkdir -p "$stage/usr/etc" "$stage/usr/var/lib"
  mv "$stage/usr/etc-apptainer.tmp" "$stage/usr/etc/apptainer"
  mv "$stage/var/lib/apptainer" "$stage/usr/var/lib/apptainer"
  rm -rf "${stage:?}/var" "$stage/usr/share/doc" "$stage/usr/share/man"
  ln -s ../etc "$stage/usr/lib/etc"
  ln -s ../var "$stage/usr/lib/var"
  configure_capabilities "$stage/usr/etc/apptainer"
  touch "$stage/.lwroi-installed"
  rm -rf "$PREFIX"
  mv "$stage" "$PREFIX"
  rm -rf "$work"
  write_wrapper
  apptainer_works || die "$WRAPPER --version fails after installing into $PREFIX"
  say "installed $("$WRAPPER" --version) into $PREFIX ($(du -sh "$PREFIX" | cut -f1))"
}

configure_capabilities() {  # configure_capabilities ETC_DIR
  # Root gets exactly the capabilities this machine grants (CapBnd); the rest
  # are dropped by the wrapper through APPTAINER_DROP_CAPS.
  local etc=$1 bnd i caps=()
  bnd=$((16#$(awk '/^CapBnd:/ {print $2}' /proc/self/status)))
  for i in "${!CAP_NAMES[@]}"; do
    if (((bnd >> i) & 1)); then caps+=("\"CAP_${CAP_NAMES[i]}\""); fi
  done
  local IFS=,
  printf '{"users": {"root": [%s]}, "groups": {}}\n' "${caps[*]}" >"$etc/capability.json"
  sed -i -e 's/^root default capabilities = .*/root default capabilities = file/' \
    -e 's/^systemd cgroups = .*/systemd cgroups = no/' "$etc/apptainer.conf"
}

write_wrapper() {
  say "writing $WRAPPER"
  cat >"$WRAPPER.tmp" <<EOF
#!/bin/bash
$MARKER: apptainer from $PREFIX.
# Drop the capabilities this machine withholds from root (apptainer run as
# root asks for all of them; build's %post and %test ignore capability.json).
drop=""
bnd=\$((16#\$(awk '/^CapBnd:/ {print \$2}' /proc/self/status)))
i=0
for name in ${CAP_NAMES[*]}; do
  if (( ! ((bnd >> i) & 1) )); then drop="\${drop:+\$drop,}CAP_\$name"; fi
  i=\$((i + 1))
done
if [[ -n \$drop ]]; then
  export APPTAINER_DROP_CAPS="\${APPTAINER_DROP_CAPS:+\$APPTAINER_DROP_CAPS,}\$drop"
fi
exec $PREFIX/usr/bin/apptainer "\$@"
EOF
  chmod 0755 "$WRAPPER.tmp"
  mv "$WRAPPER.tmp" "$WRAPPER"
}

# ------------------------------------------------------------------ commands

cmd_up() {
  local t0=$SECONDS
  ensure_root_debian
  ensure_hostname_resolves
  install_host_packages
  write_slurm_conf
  if $SLURM_CONF_CHANGED && pid_alive "$SLURM_DIR/slurmctld.pid"; then
    say "slurm.conf changed: restarting the Slurm daemons"
    stop_slurm
  fi
  start_munge
  start_slurm
  install_apptainer
  say "checking: srun -n 2 hostname"
  srun -n 2 hostname
  say "checking: apptainer --version -> $(apptainer --version)"
  say "up in $((SECONDS - t0)) s (restart later with: $0 down && $0 up)"
}

cmd_down() {
  local purge=false
  case ${1:-} in
    "") ;;
    --purge) purge=true ;;
    *) die "unknown option for down: $1 (only --purge)" ;;
  esac
  ensure_root_debian
  stop_slurm
  stop_daemon munged "$MUNGE_PIDFILE"
  if $purge; then
    run rm -rf "$PREFIX" "$PREFIX.new" "$SLURM_DIR"
    if [[ -e $WRAPPER ]] && grep -qF "$MARKER" "$WRAPPER"; then run rm -f "$WRAPPER"; fi
    if [[ -e $SLURM_CONF ]] && grep -qxF "$MARKER" "$SLURM_CONF"; then run rm -f "$SLURM_CONF"; fi
  fi
  say "stopped. Debian packages (${HOST_PKGS[*]}) stay installed$($purge || echo "; apptainer stays in $PREFIX")."
}

cmd_status() {
  local ok=0 name pidfile
  for name in munged slurmctld slurmd; do
    case $name in
      munged) pidfile=$MUNGE_PIDFILE ;;
      *) pidfile=$SLURM_DIR/$name.pid ;;
    esac
    if pid_alive "$pidfile"; then say "$name running (pid $(cat "$pidfile"))"; else say "$name NOT running"; ok=1; fi
  done
  if scontrol ping >/dev/null 2>&1; then
    sinfo -N -l
    squeue
  else
    ok=1
  fi
  if apptainer_works; then say "$("$WRAPPER" --version) ($PREFIX)"; else say "apptainer NOT installed"; ok=1; fi
  exit "$ok"
}

case ${1:-} in
  up) shift; (($# == 0)) || die "up takes no arguments"; cmd_up ;;
  down) shift; cmd_down "$@" ;;
  status) shift; cmd_status ;;
  *) die "usage: $0 up | down [--purge] | status" ;;
esac
