#!/bin/sh
# bench/rdma_2host.sh - RDMA READ bandwidth across the two guests of the
# soft-RoCE VM (make bench-rdma-2host): perftest's ib_read_bw between the
# same two devices, then llmlink pulls (an llmlink-node P in guest A, a D in
# guest B, llmlink.Transport=rdma, bytes verified), per rail and over both,
# in the same run. Runs in guest B as a program of
#   ci/rdma-vm.sh --two-guest BUILD_DIR bench/rdma_2host.sh
# and prints one "BENCH-ROW" line per cell and the table at the end.
# Numbers are soft-RoCE under TCG: they compare llmlink with perftest on the
# same path, not with hardware. Every step is bounded (timeout / the
# agent's --call bound).
# shellcheck shell=dash disable=SC3043 # busybox ash has local

set -u
AGENT_BIN=$LLMLINK_BUILD/tests/llmlink-vm-agent
AGENT=${LLMLINK_RDMA_AGENT:?not in the two-guest VM}
NODE=${LLMLINK_NODE:?no llmlink-node}
TABLE=""
fail=0
port=18600

now_cs() {
    read -r up _ </proc/uptime
    echo "${up%.*}${up#*.}" | sed 's/^0*//;s/^$/0/'
}

row() { # row WHAT RAIL BYTES MB/s
    echo "BENCH-ROW $*"
    TABLE="$TABLE
$(printf '%-12s %-10s %9s %10s' "$1" "$2" "$3" "$4")"
}

# ib_read_bw across the guests on rail $1, $2 bytes a message, $3 iterations:
# the server in A through the agent, the client here.
perftest_cell() {
    local k=$1 bytes=$2 iters=$3 gid mbs
    eval "gid=\${LLMLINK_RDMA_GID$k:-1}"
    eval "peer=\$LLMLINK_RDMA_PEER_IP$k"
    port=$((port + 1))
    "$AGENT_BIN" --call "$AGENT" 90 "SH ib_read_bw -d rxe$k -x $gid -s $bytes -n $iters -F -p $port" \
        >/tmp/ib.srv 2>&1 &
    local srv=$!
    sleep 2
    timeout 80 ib_read_bw -d "rxe$k" -x "$gid" -s "$bytes" -n "$iters" -F -p "$port" "$peer" \
        >/tmp/ib.cli 2>&1
    wait $srv
    # The data row: "#bytes #iterations BW-peak BW-average MsgRate" (MB/s).
    mbs=$(awk -v b="$bytes" '$1 == b && NF >= 5 { print $4; exit }' /tmp/ib.cli)
    if [ -z "$mbs" ]; then
        fail=1
        sed 's/^/    cli: /' /tmp/ib.cli | tail -n 8
        sed 's/^/    srv: /' /tmp/ib.srv | tail -n 8
        mbs=FAILED
    fi
    row ib_read_bw "rxe$k" "$bytes" "$mbs"
}

# p_cmd / d_cmd LINE SECS: one command to the P (in A) or D node, its reply.
node_wait() { # FILE LINES SECS -> the last line
    local try=0 max=$(($3 * 10))
    while [ "$(wc -l <"$1")" -lt "$2" ]; do
        try=$((try + 1))
        [ $try -le "$max" ] || { echo TIMEOUT; return 1; }
        sleep 0.1
    done
    sed -n "${2}p" "$1"
}
cmd() { # NAME SECS LINE...
    local name=$1 secs=$2 n
    shift 2
    n=$(($(wc -l <"/tmp/$name.out") + 1))
    if [ "$name" = p ]; then echo "$*" >&7; else echo "$*" >&8; fi
    node_wait "/tmp/$name.out" "$n" "$secs"
}

# llmlink pulls across the guests: P (cluster 1) in A listens on its rail-0
# address; D (cluster 2) links with the local addresses $2 (the rails:
# paired by the data with A's), pulls 8 tensors x NB blocks of KIB KiB
# ROUNDS times, checks every byte and that the requests went over RDMA.
llmlink_cell() {
    local what=$1 locals=$2 kib=$3 nb=$4 rounds=$5 elems r pport dc cs bytes mbs=FAILED
    elems=$((kib * 512)) # fp16
    rm -f /tmp/p.in /tmp/d.in
    mkfifo /tmp/p.in /tmp/d.in
    : >/tmp/p.out
    : >/tmp/d.out
    "$AGENT_BIN" --call "$AGENT" 300 "EXEC $NODE --role prompt --cluster-id 1 --listen $LLMLINK_RDMA_PEER_IP0:0 --opt llmlink.Transport=rdma --opt llm.SyncKvCacheWaitTime=30000" \
        </tmp/p.in >/tmp/p.out 2>/tmp/p.err &
    local ppid=$!
    exec 7>/tmp/p.in
    timeout 300 "$NODE" --role decoder --cluster-id 2 --opt llmlink.Transport=rdma \
        --opt llm.SyncKvCacheWaitTime=30000 \
        </tmp/d.in >/tmp/d.out 2>/tmp/d.err &
    local dpid=$!
    exec 8>/tmp/d.in
    if node_wait /tmp/p.out 2 30 >/dev/null && node_wait /tmp/d.out 1 30 >/dev/null &&
        pport=$(sed -n 's/^READY port=//p' /tmp/p.out) && [ -n "$pport" ] &&
        r=$(cmd p 60 "reg blocks 8 fp16 $nb,$elems key=blocks:1:7 seed=5") &&
        r=$(cmd d 60 "reg blocks 8 fp16 $nb,$elems seed=9") && dc=${r##* } &&
        r=$(cmd d 60 "link 20000 1@$LLMLINK_RDMA_PEER_IP0:$pport/$locals") &&
        case $r in "LINK LLM_SUCCESS"*) ;; *) false ;; esac &&
        r=$(cmd d 120 "pullblocks blocks:1:7 $dc 0-$((nb - 1)) 0-$((nb - 1))") &&
        case $r in "PULL LLM_SUCCESS"*) ;; *) false ;; esac &&
        cs=$(now_cs) &&
        r=$(cmd d 300 "pullloop 1 $rounds pullblocks blocks:1:7 $dc 0-$((nb - 1)) 0-$((nb - 1))") &&
        cs=$(($(now_cs) - cs)) &&
        case $r in "LOOP ok=$rounds fail=0"*) ;; *) false ;; esac &&
        r=$(cmd d 120 "verifyblocks $dc 9 5 0-$((nb - 1)) 0-$((nb - 1))") &&
        [ "$r" = "VERIFY OK" ] &&
        r=$(cmd d 30 xstats) &&
        case $r in *" tcp=0 "*) ;; *) false ;; esac; then
        bytes=$((8 * nb * kib * 1024 * rounds))
        [ "$cs" -gt 0 ] || cs=1
        mbs=$((bytes / cs / 10000)) # MB/s (10^6), as perftest
    else
        fail=1
        echo "    $what $((kib * 1024)): last reply: ${r:-none}"
        tail -n 5 /tmp/d.err /tmp/p.err /tmp/p.out 2>/dev/null | sed 's/^/    /'
    fi
    exec 7>&- 8>&-
    # EOF is quit for both nodes; bounded, then killed.
    local try=0
    while { kill -0 $dpid 2>/dev/null || kill -0 $ppid 2>/dev/null; } && [ $try -lt 50 ]; do
        sleep 0.1
        try=$((try + 1))
    done
    kill -KILL $dpid $ppid 2>/dev/null
    wait $dpid $ppid 2>/dev/null
    row llmlink-pull "$what" $((kib * 1024)) "$mbs"
}

echo "two-guest RDMA READ bandwidth, MB/s (10^6 bytes/s), soft-RoCE under TCG"
for k in 0 1; do
    perftest_cell $k 65536 400
    perftest_cell $k 1048576 40
done
# 8 tensors x 2 blocks of 1 MiB = 16 MiB a pull; 64 KiB blocks: 32 of them.
llmlink_cell rxe0 "$LLMLINK_RDMA_IP0" 64 32 4
llmlink_cell rxe0 "$LLMLINK_RDMA_IP0" 1024 2 4
llmlink_cell rxe1 "$LLMLINK_RDMA_IP1" 64 32 4
llmlink_cell rxe1 "$LLMLINK_RDMA_IP1" 1024 2 4
llmlink_cell rxe0+rxe1 "$LLMLINK_RDMA_IP0,$LLMLINK_RDMA_IP1" 1024 2 4
echo "tool         rail           bytes       MB/s$TABLE"
exit $fail
