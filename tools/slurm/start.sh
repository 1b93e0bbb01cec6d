#!/usr/bin/env bash
# A one-machine SLURM cluster on localhost, for trying hydra/launcher=slurm and for the SLURM tests.
#
#   tools/slurm/start.sh          # up: install slurm-wlm and munge if missing, start munged, slurmctld,
#                                 #     slurmd; wait until the node is idle; print the SLURM_CONF to export
#   tools/slurm/start.sh down     # stop every daemon this script started, by its pid
#   tools/slurm/start.sh status   # the node's state, or "down"
#
# Everything lives in $PIXEL_SLURM_DIR (default /tmp/pixel-slurm): slurm.conf, the munge key and
# socket, the daemons' spool, logs and pid files. Nothing is written under /etc: the SLURM commands
# find this cluster through SLURM_CONF=$PIXEL_SLURM_DIR/slurm.conf. Running `up` again while the
# cluster is up does nothing. One node, named after this host, with its CPUs (at most 2 are asked of
# the tests), listening on localhost only.
set -euo pipefail

DIR="${PIXEL_SLURM_DIR:-/tmp/pixel-slurm}"
CONF="$DIR/slurm.conf"
export SLURM_CONF="$CONF"
NODE="$(hostname -s)"

log() { echo "[slurm] $*" >&2; }

node_state() { sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n1; }

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
        && command -v sbatch >/dev/null; then
        return
    fi
    if [ "$(id -u)" != 0 ]; then
        log "slurm-wlm and munge are missing and installing them needs root: sudo apt-get install slurm-wlm munge"
        exit 1
    fi
    log "installing slurm-wlm and munge (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

write_config() {
    mkdir -p "$DIR"/{spool/ctld,spool/d,log,run}
    if [ ! -s "$DIR/munge.key" ]; then
        dd if=/dev/urandom of="$DIR/munge.key" bs=1024 count=1 status=none
    fi
    chmod 700 "$DIR"
    chmod 400 "$DIR/munge.key"
    local cpus memory_mb
    cpus="$(nproc --all)"   # the machine's, whatever CPU affinity this shell has
    memory_mb="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"
    cat > "$CONF" <<CONF
# Written by tools/slurm/start.sh: a one-node cluster on localhost.
ClusterName=pixel
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=$(id -un)
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/run/munge.socket
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$DIR/spool/ctld
SlurmdSpoolDir=$DIR/spool/d
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobRequeue=1
KillWait=30
MinJobAge=600
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

up() {
    install_packages
    if alive "$DIR/run/slurmctld.pid" && alive "$DIR/run/slurmd.pid" && [ "$(node_state)" = idle ]; then
        log "already up"
        echo "export SLURM_CONF=$CONF"
        return
    fi
    down quiet
    write_config
    munged --force --socket="$DIR/run/munge.socket" --key-file="$DIR/munge.key" --pid-file="$DIR/run/munged.pid" \
        --log-file="$DIR/log/munged.log" --seed-file="$DIR/run/munge.seed"
    slurmctld -f "$CONF" -i          # -i: a fresh cluster state each time (no jobs from an earlier up)
    slurmd -f "$CONF"
    local waited=0
    until [ "$(node_state)" = idle ]; do
        if [ "$waited" -ge 60 ]; then
            log "the node did not become idle in 60 s (state: $(node_state || true)); see $DIR/log/"
            tail -n 5 "$DIR"/log/slurm*.log >&2 || true
            exit 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    log "up: node $NODE idle after ${waited} s; logs in $DIR/log"
    echo "export SLURM_CONF=$CONF"
}

down() {
    local name pid
    for name in slurmd slurmctld munged; do
        if alive "$DIR/run/$name.pid"; then
            pid="$(cat "$DIR/run/$name.pid")"
            kill "$pid"
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
            [ "${1:-}" = quiet ] || log "stopped $name ($pid)"
        fi
        rm -f "$DIR/run/$name.pid"
    done
}

case "${1:-up}" in
    up) up ;;
    down) down ;;
    status) if alive "$DIR/run/slurmctld.pid"; then node_state; else echo down; fi ;;
    *) echo "usage: $0 [up|down|status]" >&2; exit 2 ;;
esac
