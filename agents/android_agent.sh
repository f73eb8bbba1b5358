#!/system/bin/sh
# android_agent.sh: time TF-Lite models with benchmark_model on an Android phone, which has no Python.
#
# POSIX sh only (toybox, mksh, busybox, dash): no arrays, no [[ ]], no local, no $'..'. It runs detached from
# the adb connection, so a dropped USB cable does not stop it; the host polls `status` and pulls RESULTS.
#
# Usage (all paths absolute; the host quotes every argument):
#   sh android_agent.sh start  MANIFEST RESULTS   start `run` under setsid + nohup unless one already runs
#   sh android_agent.sh status MANIFEST RESULTS   print "running PID", "done STATUS [MESSAGE]" or "stopped"
#   sh android_agent.sh run    MANIFEST RESULTS   measure each model of MANIFEST not yet complete in RESULTS
#   sh android_agent.sh mask   AFFINITY           print the taskset mask for AFFINITY (nothing: no pinning)
#
# MANIFEST: one record per line, fields separated by one TAB; lines starting with # are ignored.
#   binary<TAB>PATH                    the benchmark_model executable
#   affinity<TAB>fast|none|ID,ID,...   fast: the cores with the highest cpuinfo_max_freq
#   model<TAB>NAME<TAB>FILE<TAB>FLAGS  FILE lies beside the manifest; FLAGS are separated by spaces
#   reference<TAB>NAME<TAB>FILE<TAB>FLAGS  optional: time every model interleaved with this fixed workload
#   rounds<TAB>N                       model invocations per model when timed against the reference (default 1)
# NAME and FILE may hold any character except TAB and newline; a flag may not hold a space.
#
# RESULTS: appended to. A model's block is written whole once its run has ended:
#   === ofa-agent begin NAME
#   === ofa-agent command taskset MASK BINARY --graph=FILE FLAGS...
#   ...benchmark_model's output, verbatim...
#   === ofa-agent status EXIT_STATUS
#   === ofa-agent end NAME
# A phone's speed drifts by several percent within minutes, but a model's time over a fixed workload's, timed
# interleaved, holds. So with a reference line each model is timed as reference, model, reference, ..., model,
# reference: N model invocations, N + 1 of the reference, reference ROUND i just before model ROUND i (counted
# from 0), so every model invocation is bracketed. Its block holds one sub-block per invocation, ROLE reference
# or model, and the sequence stops at the first invocation that fails:
#   === ofa-agent begin NAME
#   === ofa-agent reference REFERENCE_NAME
#   === ofa-agent rounds N
#   === ofa-agent invocation ROLE ROUND
#   === ofa-agent command ...
#   ...benchmark_model's output, verbatim...
#   === ofa-agent status EXIT_STATUS
#   ...one such sub-block per invocation...
#   === ofa-agent end NAME
# A model with an "end" line is complete: a later run skips it, so a rerun continues a cut-off one (a model cut
# off mid-sequence is timed again from its first invocation). Each run also appends an environment block at its
# start and at its end:
#   === ofa-agent environment start|end
#   cpu ID GOVERNOR CUR_KHZ MAX_KHZ      ("-" where unreadable)
#   thermal ZONE TYPE MILLIDEGREES_C
#   prop NAME VALUE
#   mask MASK                            (empty: not pinned)
#
# Beside the manifest: agent.pid (the running agent), agent.log (its own messages), done ("STATUS MESSAGE",
# written last) and .current.block (the block being measured, restarted with each model). OFA_AGENT_SYSFS replaces /sys, so tests can use a fake tree.

TAB=$(printf '\t')
SYSFS=${OFA_AGENT_SYSFS:-/sys}
MARK='=== ofa-agent'

fast_mask() {
    # The cores whose cpuinfo_max_freq is the highest: the big cluster of a big.LITTLE phone.
    best=0
    mask=0
    for cpu_dir in "$SYSFS"/devices/system/cpu/cpu[0-9]*; do
        id=${cpu_dir##*/cpu}
        freq=$(cat "$cpu_dir/cpufreq/cpuinfo_max_freq" 2>/dev/null)
        case $id in '' | *[!0-9]*) continue ;; esac
        case $freq in '' | *[!0-9]*) continue ;; esac  # offline cores hide their cpufreq folder
        if [ "$freq" -gt "$best" ]; then
            best=$freq
            mask=0
        fi
        if [ "$freq" -eq "$best" ]; then
            mask=$((mask | (1 << id)))
        fi
    done
    if [ "$mask" -ne 0 ]; then
        printf '%x\n' "$mask"
    fi
}

list_mask() {
    mask=0
    saved_ifs=$IFS
    IFS=,
    for id in $1; do
        case $id in '' | *[!0-9]*) IFS=$saved_ifs; echo "bad CPU id '$id' in affinity '$1'" >&2; return 1 ;; esac
        mask=$((mask | (1 << id)))
    done
    IFS=$saved_ifs
    printf '%x\n' "$mask"
}

affinity_mask() {
    case $1 in
        '' | none) ;;
        fast) fast_mask ;;
        *) list_mask "$1" ;;
    esac
}

agent_pid() {
    # The PID of a live `run` for this manifest; a stale PID (the phone rebooted) names another program.
    [ -r "$dir/agent.pid" ] || return 1
    pid=$(cat "$dir/agent.pid")
    case $pid in '' | *[!0-9]*) return 1 ;; esac
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\000' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -e " run $manifest " || return 1
    echo "$pid"
}

environment() {
    {
        echo "$MARK environment $1"
        for cpu_dir in "$SYSFS"/devices/system/cpu/cpu[0-9]*; do
            [ -d "$cpu_dir" ] || continue
            freq_dir=$cpu_dir/cpufreq
            echo "cpu ${cpu_dir##*/cpu} $(value "$freq_dir/scaling_governor") $(value "$freq_dir/scaling_cur_freq")" \
                "$(value "$freq_dir/cpuinfo_max_freq")"
        done
        for zone in "$SYSFS"/class/thermal/thermal_zone*; do
            [ -r "$zone/temp" ] && echo "thermal ${zone##*/} $(value "$zone/type") $(value "$zone/temp")"
        done
        if command -v getprop >/dev/null 2>&1; then
            for prop in ro.product.model ro.product.device ro.build.fingerprint ro.board.platform; do
                echo "prop $prop $(getprop "$prop")"
            done
        fi
        echo "prop kernel $(uname -r 2>/dev/null)"
        printf 'prop binary %s\nmask %s\n' "$binary" "$mask"
    } >>"$results"
}

value() {
    # One word from a sysfs file, "-" where it is missing or unreadable (cores offline, SELinux).
    text=$(cat "$1" 2>/dev/null | tr -s ' \t' '__')
    echo "${text:--}"
}

finish() {
    sync
    echo "$*" >"$dir/done"
    exit "$1"
}

fail() {
    code=$1
    shift
    printf 'android_agent.sh: %s\n' "$*" >&2
    finish "$code" "$*"
}

stop_child() {
    if [ -n "$child" ]; then
        kill "$child" 2>/dev/null
    fi
}

invoke() {
    # One benchmark_model run of FILE ($3) with FLAGS ($4), appended to the pending block; returns its exit status.
    # ROLE ($1) and ROUND ($2) head a sub-block when the model is timed against the reference.
    if [ -n "$1" ]; then
        printf '%s invocation %s %s\n' "$MARK" "$1" "$2" >>"$block"
    fi
    invoke_flags=$4
    set -f
    if [ -n "$mask" ]; then
        set -- taskset "$mask" "$binary" "--graph=$dir/$3" $invoke_flags
    else
        set -- "$binary" "--graph=$dir/$3" $invoke_flags
    fi
    set +f
    # In the background, so that `wait` (unlike a foreground command) lets the TERM trap stop it at once.
    "$@" </dev/null >"$out" 2>&1 &
    child=$!
    wait "$child"
    invoke_status=$?
    child=
    {
        printf '%s command %s\n' "$MARK" "$*"
        cat "$out"
        printf '\n%s status %s\n' "$MARK" "$invoke_status"
    } >>"$block"
    return "$invoke_status"
}

measure() {
    # The block grows in a scratch file and is appended whole, so RESULTS never holds part of a sequence.
    name=$1
    out=$dir/.current.out
    block=$dir/.current.block
    : >"$block"
    if [ -z "$ref_name" ]; then
        invoke '' '' "$2" "$3"
    else
        printf '%s reference %s\n%s rounds %s\n' "$MARK" "$ref_name" "$MARK" "$rounds" >>"$block"
        round=0
        while [ "$round" -lt "$rounds" ] && invoke reference "$round" "$ref_file" "$ref_flags" &&
            invoke model "$round" "$2" "$3"; do
            round=$((round + 1))
        done
        if [ "$round" -eq "$rounds" ]; then
            invoke reference "$rounds" "$ref_file" "$ref_flags"
        fi
    fi
    {
        printf '%s begin %s\n' "$MARK" "$name"
        cat "$block"
        printf '%s end %s\n' "$MARK" "$name"
    } >>"$results"
    rm -f "$out" "$block"
    sync
}

run() {
    echo $$ >"$dir/agent.pid"
    child=
    trap '' HUP
    trap 'stop_child; exit 143' TERM INT
    binary=
    affinity=
    ref_name=
    rounds=1
    while IFS=$TAB read -r kind first second third; do
        case $kind in
            binary) binary=$first ;;
            affinity) affinity=$first ;;
            rounds) rounds=$first ;;
            reference) ref_name=$first ref_file=$second ref_flags=$third ;;
        esac
    done <"$manifest"
    [ -n "$binary" ] || fail 2 "no 'binary' line in $manifest"
    case $rounds in
        '' | *[!0-9]* | 0) fail 2 "rounds '$rounds' in $manifest is not a whole number of at least 1" ;;
    esac
    [ -x "$binary" ] || fail 127 "benchmark_model is missing or not executable at $binary; push it" \
        "(adb push benchmark_model $binary && adb shell chmod 755 $binary) or set benchmark_model in devices.toml"
    mask=$(affinity_mask "$affinity") || fail 2 "cannot pin to affinity '$affinity'"
    if [ "$affinity" = fast ] && [ -z "$mask" ]; then
        echo "android_agent.sh: no readable cpuinfo_max_freq under $SYSFS; running unpinned" >&2
    fi
    if [ -n "$mask" ] && ! command -v taskset >/dev/null 2>&1; then
        echo "android_agent.sh: no taskset on this device; running unpinned" >&2
        mask=
    fi
    environment start
    while IFS=$TAB read -r kind name file flags; do
        [ "$kind" = model ] || continue
        grep -qxF -e "$MARK end $name" "$results" 2>/dev/null && continue
        measure "$name" "$file" "$flags"
    done <"$manifest"
    environment end
    finish 0
}

start() {
    if pid=$(agent_pid); then
        echo "running $pid"
        return 0
    fi
    rm -f "$dir/done" "$dir/agent.pid"
    # Its own session, so killing the adb shell's process group does not reach it; immune to hangups (the run
    # also ignores HUP itself, for devices without nohup). Each is used where the device has it.
    detach=
    if command -v setsid >/dev/null 2>&1; then
        detach=setsid
    fi
    if command -v nohup >/dev/null 2>&1; then
        detach="$detach nohup"
    fi
    $detach sh "$0" run "$manifest" "$results" </dev/null >>"$dir/agent.log" 2>&1 &
    tries=0
    while [ ! -s "$dir/agent.pid" ]; do
        tries=$((tries + 1))
        if [ "$tries" -gt 100 ]; then
            echo "android_agent.sh: the agent did not start within 10 s; see $dir/agent.log" >&2
            exit 1
        fi
        sleep 0.1 2>/dev/null || sleep 1  # old toolbox sleeps whole seconds only
    done
    echo "started $(cat "$dir/agent.pid")"
}

status() {
    # Live first: an agent that ends between the two checks has written done before it exits.
    if pid=$(agent_pid); then
        echo "running $pid"
    elif [ -f "$dir/done" ]; then
        echo "done $(cat "$dir/done")"
    else
        echo "stopped"
    fi
}

usage() {
    echo "usage: sh android_agent.sh start|status|run MANIFEST RESULTS, or sh android_agent.sh mask AFFINITY" >&2
    exit 2
}

action=$1
case $action in
    mask)
        [ $# -eq 2 ] || usage
        affinity_mask "$2"
        ;;
    start | status | run)
        [ $# -eq 3 ] || usage
        manifest=$2
        results=$3
        dir=$(dirname "$manifest")
        "$action"
        ;;
    *) usage ;;
esac
