#!/usr/bin/env bash
# A private single-node SLURM cluster on this host, for tests: munged, slurmctld and slurmd as processes this
# script owns, every file (key, state, spool, logs, slurm.conf) under one folder. No GPUs, no cgroups.
#
#   scripts/slurm_local.sh up   [DIR]   # install slurm-wlm/munge if missing (root, apt-get), start, wait for sinfo
#   scripts/slurm_local.sh env  [DIR]   # print `export SLURM_CONF=...` for the clients (sbatch, squeue, srun)
#   scripts/slurm_local.sh down [DIR]   # cancel its jobs, stop exactly its daemons (by their pid files)
#
# DIR defaults to $AGEBENCH_SLURM_DIR or /tmp/agebench-slurm. Ports: $AGEBENCH_SLURM_PORT (slurmctld) and the
# next one (slurmd), default 16817. Apart from the packages it may install, nothing outside DIR changes.
# Any failure is one line on stderr, "slurm_local: ...", and exit status 1.
set -euo pipefail

ACTION=${1:-}
DIR=${2:-${AGEBENCH_SLURM_DIR:-/tmp/agebench-slurm}}
PORT=${AGEBENCH_SLURM_PORT:-16817}
CONF="$DIR/slurm.conf"
DAEMONS=(slurmd slurmctld munged)  # stopped in this order

die() {
	echo "slurm_local: $*" >&2
	exit 1
}

last_log_line() { # the last non-empty line of a log, for a one-line error
	[[ -f $1 ]] && grep -v '^\s*$' "$1" | tail -n 1 || echo "(no log at $1)"
}

install_packages() {
	local missing=()
	command -v munged >/dev/null || missing+=(munge)
	{ command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null; } ||
		missing+=(slurm-wlm)
	((${#missing[@]} == 0)) && return 0
	[[ $(id -u) == 0 ]] || die "${missing[*]} not installed and not root: install them (apt-get install ${missing[*]})"
	command -v apt-get >/dev/null || die "${missing[*]} not installed and no apt-get here"
	echo "slurm_local: installing ${missing[*]} (apt-get)"
	apt-get update -qq >"$DIR/apt.log" 2>&1 || die "apt-get update failed: $(last_log_line "$DIR/apt.log")"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >>"$DIR/apt.log" 2>&1 ||
		die "apt-get install ${missing[*]} failed: $(last_log_line "$DIR/apt.log")"
}

pid_of() { # the live pid recorded for a daemon, or nothing
	local file="$DIR/run/$1.pid" pid
	[[ -f $file ]] || return 0
	pid=$(tr -dc '0-9' <"$file")
	[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
	return 0
}

write_conf() {
	local host cpus memory
	host=$(hostname -s)
	cpus=$(nproc)
	memory=$(($(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) * 9 / 10))
	cat >"$CONF" <<EOF
# Written by scripts/slurm_local.sh: one node ($host, $cpus CPUs), everything under $DIR.
ClusterName=agebench-local
SlurmctldHost=$host
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=$(id -un)
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/run/munge.socket
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
JobRequeue=1
ReturnToService=2
SchedulerParameters=nohold_on_prolog_fail
KillWait=5
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$host CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

up() {
	mkdir -p "$DIR"
	[[ -n $(pid_of slurmctld) ]] && die "a cluster is already running from $DIR (slurm_local.sh down $DIR first)"
	install_packages
	rm -rf "$DIR/state" "$DIR/spool" "$DIR/run" "$DIR/log"
	mkdir -p "$DIR/state" "$DIR/spool" "$DIR/run" "$DIR/log"
	chmod 700 "$DIR/run"
	write_conf
	# munge: its own key, socket, seed and log; --force because DIR may sit under a world-writable /tmp.
	head -c 1024 /dev/urandom >"$DIR/run/munge.key"
	chmod 400 "$DIR/run/munge.key"
	munged --force --key-file="$DIR/run/munge.key" --socket="$DIR/run/munge.socket" \
		--pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/run/munged.seed" \
		>"$DIR/log/munged.start" 2>&1 || die "munged did not start: $(last_log_line "$DIR/log/munged.start")"
	SLURM_CONF=$CONF slurmctld -f "$CONF" -i >"$DIR/log/slurmctld.start" 2>&1 ||
		{ down quiet; die "slurmctld did not start: $(last_log_line "$DIR/log/slurmctld.log")"; }
	SLURM_CONF=$CONF slurmd -f "$CONF" >"$DIR/log/slurmd.start" 2>&1 ||
		{ down quiet; die "slurmd did not start: $(last_log_line "$DIR/log/slurmd.log")"; }
	local state="" i
	for i in $(seq 1 60); do
		state=$(SLURM_CONF=$CONF sinfo -h -o %T 2>/dev/null | head -n 1 || true)
		[[ $state == idle* ]] && break
		sleep 0.5
	done
	if [[ $state != idle* ]]; then
		local why
		why=$(last_log_line "$DIR/log/slurmd.log")
		down quiet
		die "the node did not become idle in 30 s (sinfo: ${state:-no answer}); slurmd: $why"
	fi
	echo "slurm_local: up: $(hostname -s), $(nproc) CPUs, partition local; export SLURM_CONF=$CONF"
}

stop_daemon() { # SIGTERM, wait up to 15 s, then SIGKILL
	local name=$1 pid i
	pid=$(pid_of "$name")
	[[ -z $pid ]] && return 0
	kill "$pid" 2>/dev/null || true
	for i in $(seq 1 30); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.5
	done
	kill -9 "$pid" 2>/dev/null || true
}

down() {
	local quiet=${1:-}
	[[ -f $CONF ]] || { [[ -n $quiet ]] || echo "slurm_local: nothing to stop in $DIR"; return 0; }
	if [[ -n $(pid_of slurmctld) ]]; then
		# Cancel this cluster's jobs and wait for their steps to end before slurmd goes.
		SLURM_CONF=$CONF scancel --full --quiet --partition=local 2>/dev/null || true
		local i
		for i in $(seq 1 40); do
			[[ -z $(SLURM_CONF=$CONF squeue -h -o %i 2>/dev/null || true) ]] && break
			sleep 0.5
		done
	fi
	local name
	for name in "${DAEMONS[@]}"; do
		stop_daemon "$name"
	done
	[[ -n $quiet ]] || echo "slurm_local: down ($DIR)"
}

case $ACTION in
up) up ;;
down) down ;;
env) echo "export SLURM_CONF=$CONF" ;;
*) die "usage: scripts/slurm_local.sh up|down|env [DIR]" ;;
esac
