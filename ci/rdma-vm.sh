#!/usr/bin/env bash
# rdma-vm.sh - run llmlink's RDMA test programs on soft-RoCE (rdma_rxe)
# inside a QEMU VM, on a host with no RDMA hardware nor kernel support.
#
# Usage: ci/rdma-vm.sh [--two-guest] [--smoke|--bench|--exec CMD|--shell] BUILD_DIR [PROGRAM...]
#
#   (default)  runs the built-in smoke step (both ports ACTIVE, an
#              ibv_rc_pingpong loopback on rxe0 and on rxe1), then each
#              PROGRAM (a path, or a name in BUILD_DIR/tests/); with no
#              PROGRAM every BUILD_DIR/tests/test_rdma_* (none = failure).
#   --smoke    the smoke step only (proves the VM without project programs)
#   --bench    ib_write_bw / ib_read_bw loopback on rxe0 and rxe1 for a few
#              sizes, llmlink's rdma transport (llmlink-node pulls, bytes
#              verified) on both rails, plus BUILD_DIR/bench/bench_xfer once
#              it has an rdma transport; prints the table
#   --exec CMD run the shell command CMD in the VM (rails up, env exported,
#              BUILD_DIR inside), its output on the console: a debugging aid
#   --shell    an interactive shell in the VM (rails up, env exported)
#
# The VM is a Debian 6.1 generic kernel (the cloud flavour has no rdma_rxe)
# with an initramfs of busybox-static, the kernel modules soft-RoCE needs,
# rdma-core's userspace and the programs with every shared library ldd
# lists. Packages come from `apt-get download` and are unpacked with
# dpkg-deb: nothing is installed on the host (ci/deps-rdma.sh lists what
# the host needs: qemu-system-x86, kmod, xz-utils). Downloads, the unpacked
# tree, the initramfs and the console log live in BUILD_DIR/rdma-vm/.
#
# --two-guest: two VMs from the same image, guest A (rdma_role=a: the P
# side, tests/rdma/vm_agent.c on 10.10.9.1:7700) and guest B (the
# programs; its console is the one parsed), 1 vCPU and 1536 MiB each,
# joined by three QEMU datagram networks over unix sockets in
# BUILD_DIR/rdma-vm2/net (no host network): net0 (rail 0: eth0, MTU 1500
# both), net1 (rail 1: eth1, MTU 9000 in A, 4000 in B) and net9 (control:
# eth2, no rxe). Default programs: test_rdma_matrix_data,
# test_rdma_matrix_peers, test_rdma_2host (last: it may power A off). The
# smoke step checks both rails ACTIVE in both guests and runs an
# ibv_rc_pingpong from B to A over each rail. A program printing
# "RDMA-CTL kill-peer" gets guest A's QEMU SIGKILLed (RDMA-INFO
# peer-killed). A's console: BUILD_DIR/rdma-vm2/console-a.log, shown on
# failure. --bench and --shell are one-guest only; the two-guest bench is a
# program: make bench-rdma-2host (bench/rdma_2host.sh).
# The environment and the agent's protocol: tests/rdma/README.md.
#
# Inside the VM (ci/rdma-vm/init): dummy0 (MTU 1500, 10.10.0.1/24) carries
# rxe0, dummy1 (MTU 9000, 10.10.1.1/24) carries rxe1; programs run with
# LLMLINK_RDMA_DEV0/1, LLMLINK_RDMA_IP0/1, LLMLINK_RDMA_GID0/1,
# LLMLINK_BUILD, LLMLINK_NODE, LLMLINK_RDMA_VM=1 (see ci/rdma-vm/NOTES.md).
# Each result is a console line "RDMA-TEST <name> PASS|FAIL (rc=N) <secs>s";
# the VM ends with "RDMA-SUMMARY ...". This script exits non-zero on any
# FAIL, on a missing result or summary (crash, timeout) and when QEMU fails.
#
# Environment (all optional):
#   LLMLINK_RDMA_TEST_TIMEOUT  seconds per program in the VM (120)
#   LLMLINK_RDMA_VM_TIMEOUT    host-side bound on the whole VM run (derived
#                              from the number of programs; tests: at most 540)
#   LLMLINK_RDMA_VM_BOOT_TIMEOUT  seconds until /init must have started (120)
#   LLMLINK_RDMA_VM_MEM        MiB of guest memory (1024; 1024..2048)
#   LLMLINK_RDMA_VM_SMP        vCPUs (2)
#   LLMLINK_RDMA_VM_ACCEL      QEMU accelerator: tcg (default, as in CI) or kvm
#   LLMLINK_RDMA_VM_KERNEL     kernel package (default: the newest
#                              linux-image-6.1.*-amd64 apt knows)
#   LLMLINK_RDMA_BENCH_XFER_ARGS  arguments for bench_xfer in --bench
#                              ("--quick --only e": its rdma section, 32 MiB a call)
#   LLMLINK_RDMA_VM_CACHE      where downloaded .debs are kept (BUILD_DIR/rdma-vm/debs)
#   LLMLINK_RDMA_VM_VERBOSE=1  copy the whole console to stdout after the run
# Other LLMLINK_* and ASAN/UBSAN/TSAN_OPTIONS variables are passed into the VM.
set -euo pipefail

ci_dir=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
vm_src=$ci_dir/rdma-vm

# Userspace packages unpacked into the VM. The libraries are listed because
# ldd must find what the rdma-core tools need even where the host lacks them
# (libpci3 for perftest, say); what the host has it takes from the host.
USER_PKGS=(busybox-static libibverbs1 ibverbs-providers ibverbs-utils perftest
    iproute2 librdmacm1 libibumad3 libpci3 libnl-3-200 libnl-route-3-200)
# Tools copied into the VM from the unpacked packages (path in the package).
VM_TOOLS=(usr/bin/ibv_devinfo usr/bin/ibv_rc_pingpong usr/bin/ib_read_bw
    usr/bin/ib_write_bw usr/bin/rdma bin/ip)
MULTIARCH=x86_64-linux-gnu

log() { echo "rdma-vm: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
bad_usage() {
    echo "usage: ci/rdma-vm.sh [--smoke|--bench|--exec CMD|--shell] BUILD_DIR [PROGRAM...] (--help: all)" >&2
    exit 2
}

# ------------------------------------------------------------ arguments

mode="test"
exec_cmd=""
two=0
args=()
while [ $# -gt 0 ]; do
    case $1 in
    --two-guest) two=1 ;;
    --smoke) mode=smoke ;;
    --bench) mode=bench ;;
    --shell) mode=shell ;;
    --exec) [ $# -ge 2 ] || bad_usage
        mode="exec"; exec_cmd=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; args+=("$@"); break ;;
    -*) bad_usage ;;
    *) args+=("$1") ;;
    esac
    shift
done
[ ${#args[@]} -ge 1 ] || bad_usage
[ $two = 0 ] || [ "$mode" != shell ] || die "--shell is one-guest only (--two-guest --exec CMD runs CMD in guest B)"
[ $two = 0 ] || [ "$mode" != bench ] || die "--bench is one-guest; across the two guests: make bench-rdma-2host (bench/rdma_2host.sh)"
[ -d "${args[0]}" ] || die "build dir ${args[0]} does not exist (build first: make BUILD=${args[0]})"
build=$(readlink -f "${args[0]}")
requested=("${args[@]:1}")

test_timeout=${LLMLINK_RDMA_TEST_TIMEOUT:-120}
boot_timeout=${LLMLINK_RDMA_VM_BOOT_TIMEOUT:-120}
# Two guests: 1 vCPU each (two TCG guests on a 2-core box), and room for a
# 256 MiB pull (the cross-guest tests' largest).
if [ $two = 1 ]; then
    vm_mem=${LLMLINK_RDMA_VM_MEM:-1536}
    vm_smp=${LLMLINK_RDMA_VM_SMP:-1}
else
    vm_mem=${LLMLINK_RDMA_VM_MEM:-1024}
    vm_smp=${LLMLINK_RDMA_VM_SMP:-2}
fi
vm_accel=${LLMLINK_RDMA_VM_ACCEL:-tcg}
# need_int NAME VALUE MIN MAX: a knob from the environment, checked.
need_int() {
    case $2 in ''|*[!0-9]*) die "$1=$2: not a number" ;; esac
    if [ "$2" -lt "$3" ] || [ "$2" -gt "$4" ]; then die "$1=$2: not in $3..$4"; fi
}
need_int LLMLINK_RDMA_TEST_TIMEOUT "$test_timeout" 1 3600
need_int LLMLINK_RDMA_VM_BOOT_TIMEOUT "$boot_timeout" 10 3600
need_int LLMLINK_RDMA_VM_MEM "$vm_mem" 1024 2048
need_int LLMLINK_RDMA_VM_SMP "$vm_smp" 1 8
case $vm_accel in tcg|kvm) ;; *) die "LLMLINK_RDMA_VM_ACCEL=$vm_accel: tcg or kvm" ;; esac

# --bench cells, DEV:TOOL:BYTES:ITERATIONS: rxe0 (MTU 1024) as asked, and
# rxe1 (MTU 4096) to show what the MTU buys. Iterations sized for ~10-20
# MB/s (soft-RoCE under TCG), a few seconds per cell.
bench_cells=""
for t in ib_write_bw ib_read_bw; do
    for d in rxe0 rxe1; do
        bench_cells+=" $d:$t:4096:2000 $d:$t:65536:400 $d:$t:1048576:30"
    done
done

# llmlink's own transport in --bench (llmlink-node P and D, pullloop),
# RAIL:BLOCK_KIB:NBLOCKS:ROUNDS: 8 tensors x NBLOCKS blocks = 16 MiB a pull.
llmlink_cells="0:64:32:4 1:64:32:4 0:1024:2:4 1:1024:2:4"

work=$build/rdma-vm
# The .debs may be shared between build dirs (build, build-asan, ...).
debs=${LLMLINK_RDMA_VM_CACHE:-$work/debs}
sysroot=$work/sysroot
# What one run owns: its image, console(s) and sockets. The two-guest run
# has its own directory, so that it can run beside a one-guest run of the
# same build dir (they share the downloads, the sysroot and the kernel).
run_dir=$work
[ $two = 0 ] || run_dir=$build/rdma-vm2
stage=$run_dir/initramfs
initrd=$run_dir/initramfs.cpio.gz
console=$run_dir/console.log
console_a=$run_dir/console-a.log
[ $two = 0 ] || console=$run_dir/console-b.log
mkdir -p "$work" "$debs" "$run_dir"
# One run per build dir and mode at a time (they share the image and the
# console log); a second waits, bounded.
exec 9>"$run_dir/lock"
flock -w 900 9 || die "another ci/rdma-vm.sh has held $run_dir/lock for 15 minutes"

# ------------------------------------------------------------ packages

apt_updated=0
declare -A cand=()
# load_candidates PKG...: the version apt would download of each, in one
# apt-cache call (it takes a second or so per call).
load_candidates() {
    local line pkg="" v
    while IFS= read -r line; do
        case $line in
        [!\ ]*:) pkg=${line%:}; pkg=${pkg%:amd64} ;;
        *Candidate:*)
            v=${line##*Candidate: }
            [ "$v" = "(none)" ] || [ -z "$pkg" ] || cand[$pkg]=$v ;;
        esac
    done < <(apt-cache policy "$@" 2>/dev/null || true)
}

# candidate PKG: the version apt would download, or nothing.
candidate() { echo "${cand[$1]:-}"; }

# newest_kernel_pkg: the newest generic linux-image-6.1.*-amd64 (not cloud,
# not rt: the cloud flavour lacks rdma_rxe).
newest_kernel_pkg() {
    apt-cache search --names-only '^linux-image-6\.1\.' 2>/dev/null | awk '{ print $1 }' |
        grep -E '^linux-image-6\.1\.[0-9]+-[0-9]+-amd64$' | sort -V | tail -n 1 || true
}

# apt_lists_ready: make sure apt knows the packages (a fresh CI box whose
# deps were all present never ran apt-get update).
apt_lists_ready() {
    load_candidates "$@"
    [ -n "$(candidate busybox-static)" ] && return 0
    [ $apt_updated = 0 ] && [ "$(id -u)" -eq 0 ] || return 1
    apt_updated=1
    log "apt knows no busybox-static; running apt-get update"
    apt-get update -q >/dev/null 2>&1 || return 1
    load_candidates "$@"
    [ -n "$(candidate busybox-static)" ]
}

# cached_deb PKG [VERSION]: the cached .deb of PKG at VERSION (any version,
# the newest, when VERSION is empty: an offline rerun uses what it has).
cached_deb() {
    local dir=$debs/$1 f newest
    if [ -n "${2:-}" ]; then
        dir=$dir/${2//:/_}
    else
        newest=$(for f in "$dir"/*/; do [ -d "$f" ] && echo "${f%/}"; done | sort -V | tail -n 1)
        [ -n "$newest" ] || return 0
        dir=$newest
    fi
    for f in "$dir"/*.deb; do
        if [ -f "$f" ]; then echo "$f"; return 0; fi
    done
}

# fetch_debs PKG...: make sure each package's candidate is in $debs
# (one apt-get download for all that are missing); prints nothing.
fetch_debs() {
    local p v missing=() tmp f name ver
    for p in "$@"; do
        v=$(candidate "$p")
        if [ -z "$v" ]; then
            [ -n "$(cached_deb "$p")" ] || die "apt has no package $p and none is cached in $debs"
            log "apt has no $p; using the cached $(basename "$(cached_deb "$p")")"
            continue
        fi
        [ -n "$(cached_deb "$p" "$v")" ] || missing+=("$p=$v")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    log "downloading ${missing[*]}"
    tmp=$(mktemp -d "$work/dl.XXXXXX")
    # _apt cannot write into a root-owned mktemp dir: apt then downloads as
    # root and warns; the warning is noise, the output is shown on failure.
    if ! out=$(cd "$tmp" && apt-get download -q "${missing[@]}" 2>&1); then
        rm -rf "$tmp"
        die "apt-get download failed: $out"
    fi
    for f in "$tmp"/*.deb; do
        name=$(dpkg-deb -f "$f" Package)
        ver=$(dpkg-deb -f "$f" Version)
        # One version per package in the cache: a new point release replaces the old.
        # (Kernels change package name with their ABI: linux-image-6.1.0-N-amd64.)
        rm -rf "${debs:?}/$name"
        case $name in linux-image-*) rm -rf "${debs:?}"/linux-image-* ;; esac
        mkdir -p "$debs/$name/${ver//:/_}"
        mv "$f" "$debs/$name/${ver//:/_}/"
    done
    rm -rf "$tmp"
}

# deb_of PKG: the .deb to use (the candidate's, else the newest cached).
deb_of() {
    local v f
    v=$(candidate "$1")
    f=$(cached_deb "$1" "$v")
    [ -n "$f" ] || f=$(cached_deb "$1")
    [ -n "$f" ] || die "no .deb for $1"
    echo "$f"
}

# unpack_sysroot DEB...: dpkg-deb -x them all into $sysroot, unless the
# same set was unpacked last time (the kernel alone is 400 MB unpacked).
unpack_sysroot() {
    local want f
    want=$(printf '%s\n' "$@" | sort)
    if [ -d "$sysroot" ] && [ "$(cat "$work/sysroot.debs" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    log "unpacking ${#} packages into $sysroot"
    rm -rf "$sysroot" "$work/sysroot.debs"
    mkdir -p "$sysroot"
    for f in "$@"; do
        dpkg-deb -x "$f" "$sysroot"
    done
    echo "$want" >"$work/sysroot.debs"
}

# ------------------------------------------------------------ kernel

# kernel_version: the one release under $sysroot/lib/modules.
kernel_version() {
    local d n=0 v=""
    for d in "$sysroot"/lib/modules/*/; do
        [ -d "$d" ] || continue
        v=$(basename "$d")
        n=$((n + 1))
    done
    [ $n -eq 1 ] || die "expected one kernel in $sysroot/lib/modules, found $n"
    echo "$v"
}

# modules_in_order KVER: the paths (relative to the modules dir) of the
# modules in ci/rdma-vm/modules.txt and everything they depend on, each
# after its dependencies, from the kernel's modules.dep (made by depmod:
# the .deb does not ship it, its postinst generates it).
modules_in_order() {
    local kver=$1 mdir=$sysroot/lib/modules/$1
    if [ ! -s "$mdir/modules.dep" ]; then
        # depmod lives in /usr/sbin, which a CI PATH may lack.
        local depmod
        depmod=$(PATH=$PATH:/usr/sbin:/sbin command -v depmod) ||
            die "depmod not found (Debian package kmod: bash ci/install-deps.sh)"
        "$depmod" -b "$sysroot" "$kver" || die "depmod failed for $kver"
    fi
    local -A path_of=() deps_of=() done_=()
    local line file
    # ~4000 lines: no subshell per line.
    while IFS= read -r line; do
        file=${line%%:*}
        modname "$file"
        path_of[$REPLY]=$file
        deps_of[$REPLY]=${line#*:}
    done <"$mdir/modules.dep"

    local order=() name
    # visit NAME DEPTH: depth-first, dependencies first; modules.dep lists
    # them all (transitively), so the depth bound only guards a bad file.
    visit() {
        local n=$1 d
        [ "$2" -le 64 ] || die "module dependencies nest deeper than 64 at $n"
        [ -z "${done_[$n]:-}" ] || return 0
        [ -n "${path_of[$n]:-}" ] || die "kernel $kver has no module $n (modules.dep)"
        done_[$n]=1
        for d in ${deps_of[$n]}; do
            modname "$d"
            visit "$REPLY" $(($2 + 1))
        done
        order+=("${path_of[$n]}")
    }
    while read -r name; do
        visit "$name" 0
    done < <(sed 's/#.*//' "$vm_src/modules.txt" | awk 'NF { print $1 }'
        # Two guests: real (virtual) NICs instead of dummies.
        [ $two = 0 ] || printf '%s\n' virtio_pci virtio_net)
    printf '%s\n' "${order[@]}"
}

# modname PATH: REPLY=kernel/net/ipv4/udp_tunnel.ko.xz -> udp_tunnel ('-'
# and '_' are the same in module names).
modname() {
    REPLY=${1##*/}
    REPLY=${REPLY%%.ko*}
    REPLY=${REPLY//-/_}
}

# stage_modules KVER: decompressed copies in /lib/modules/ and the load
# order in /etc/rdma-vm/modules (busybox insmod reads no .ko.xz).
stage_modules() {
    local kver=$1 mdir=$sysroot/lib/modules/$1 rel base out list
    # Not in a process substitution: a die there would not stop us.
    list=$(modules_in_order "$kver") || exit 1
    mkdir -p "$stage/lib/modules"
    : >"$stage/etc/rdma-vm/modules"
    while read -r rel; do
        modname "$rel"
        base=$REPLY.ko
        out=$stage/lib/modules/$base
        case $rel in
        *.ko.xz) xz -dc "$mdir/$rel" >"$out" ;;
        *.ko.zst) zstd -qdc "$mdir/$rel" >"$out" ;;
        *.ko.gz) gzip -dc "$mdir/$rel" >"$out" ;;
        *.ko) cp "$mdir/$rel" "$out" ;;
        *) die "unknown module file $rel" ;;
        esac
        echo "$base" >>"$stage/etc/rdma-vm/modules"
    done <<<"$list"
}

# boot_image VMLINUZ: the kernel QEMU should boot. Debian's bzImage holds
# an xz-compressed vmlinux which the kernel's own decompressor unpacks in
# ~10 s under TCG; the ELF vmlinux boots through its PVH entry with no such
# step. Unpacked once per kernel (as scripts/extract-vmlinux does: try each
# xz magic, keep the first that yields an ELF); the bzImage if none does.
boot_image() {
    local bz=$1 elf=$work/vmlinux-$kver off
    if [ -s "$elf" ]; then echo "$elf"; return 0; fi
    rm -f "$work"/vmlinux-*   # an older kernel's
    for off in $(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$bz" 2>/dev/null | cut -d: -f1 | head -n 4); do
        # (xz stops at the stream's end: tail's SIGPIPE must not count.)
        if xz -dc --single-stream < <(tail -c +$((off + 1)) "$bz" 2>/dev/null) >"$elf.tmp" 2>/dev/null &&
            [ "$(head -c 4 "$elf.tmp" | od -An -c | tr -d ' ')" = '177ELF' ]; then
            mv "$elf.tmp" "$elf"
            echo "$elf"
            return 0
        fi
    done
    rm -f "$elf.tmp"
    log "no xz vmlinux in $bz: booting the bzImage (slower)"
    echo "$bz"
}

# ------------------------------------------------------------ initramfs

declare -A staged=()

# vm_path HOSTPATH: where a file goes in the VM: its path in the package
# for what comes from $sysroot, the same path for what comes from the host.
vm_path() {
    case $1 in
    "$sysroot"/*) echo "${1#"$sysroot"}" ;;
    *) echo "$1" ;;
    esac
}

# put HOSTPATH [VMPATH]: copy one file (links followed) into the image.
put() {
    local src=$1 dst=${2:-$(vm_path "$1")}
    [ -z "${staged[$dst]:-}" ] || return 0
    [ -e "$src" ] || die "missing $src"
    mkdir -p "$(dirname "$stage$dst")"
    cp -L "$src" "$stage$dst"
    staged[$dst]=1
}

# put_elf HOSTPATH [VMPATH]: the file and every shared library ldd lists,
# preferring the unpacked rdma-core libraries over the host's.
put_elf() {
    local src=$1 line lib
    put "$@"
    while IFS= read -r line; do
        case $line in
        *"not found"*) die "ldd $src: $line (add the package to USER_PKGS in $0)" ;;
        *"=> /"*) lib=${line#*=> }; lib=${lib%% (*} ;;
        [[:space:]]/*) lib=${line#"${line%%/*}"}; lib=${lib%% (*} ;;
        *) continue ;;
        esac
        put "$lib"
    done < <(LD_LIBRARY_PATH=$sysroot/usr/lib/$MULTIARCH:$sysroot/lib/$MULTIARCH ldd "$src" 2>/dev/null || true)
}

# stage_base: merged-/usr layout (lib -> usr/lib, as Debian: the programs'
# interpreter is /lib64/ld-linux-x86-64.so.2), busybox and its applets.
stage_base() {
    rm -rf "$stage"
    mkdir -p "$stage"/usr/{bin,sbin,lib,lib64} "$stage"/{proc,sys,dev,tmp,run,root}
    mkdir -p "$stage"/etc/{rdma-vm,libibverbs.d}
    local d
    for d in bin sbin lib lib64; do ln -s "usr/$d" "$stage/$d"; done
    put "$sysroot/bin/busybox" /usr/bin/busybox
    local applet
    while read -r applet; do
        case $applet in */*) ;; *) continue ;; esac
        [ -e "$stage/$applet" ] || [ -L "$stage/$applet" ] || ln -s /usr/bin/busybox "$stage/$applet"
    done < <("$sysroot/bin/busybox" --list-full)
    cp "$vm_src/init" "$stage/init"
    chmod 755 "$stage/init"
}

# stage_rdma_userspace: the tools, libibverbs.so.1 itself (llmlink dlopens
# it, so no ldd lists it), the rxe provider and its .driver file.
stage_rdma_userspace() {
    local t name d provider
    for t in "${VM_TOOLS[@]}"; do
        name=${t##*/}
        # Replace busybox's applet of the same name (ip): PATH finds one only.
        for d in usr/bin usr/sbin; do rm -f "$stage/$d/$name"; done
        put_elf "$sysroot/$t" "/usr/bin/$name"
    done
    put_elf "$sysroot/usr/lib/$MULTIARCH/libibverbs.so.1"
    for provider in "$sysroot/usr/lib/$MULTIARCH/libibverbs/"librxe-rdmav*.so; do
        [ -e "$provider" ] || die "no rxe provider in ibverbs-providers ($provider)"
        put_elf "$provider"
    done
    put "$sysroot/etc/libibverbs.d/rxe.driver"
}

# sq WORD: single-quoted for sh.
sq() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

# write_conf PROGRAM...: what /init reads.
write_conf() {
    local conf=$stage/etc/rdma-vm/conf v
    {
        echo "MODE=$(sq "$vm_mode")"
        echo "EXEC=$(sq "$exec_cmd")"
        echo "PROGRAMS=$(sq "$*")"
        echo "TEST_TIMEOUT=$(sq "$test_timeout")"
        echo "LLMLINK_BUILD=$(sq "$build")"
        echo "LLMLINK_NODE=$(sq "$node")"
        echo "BENCH_XFER=$(sq "$bench_xfer")"
        echo "BENCH_XFER_ARGS=$(sq "${LLMLINK_RDMA_BENCH_XFER_ARGS:---quick --only e}")"
        echo "BENCH_CELLS=$(sq "$bench_cells")"
        echo "LLMLINK_CELLS=$(sq "$llmlink_cells")"
        echo "TWO_GUEST=$two"
        echo "AGENT=$(sq "$agent")"
        echo "PEER_LIFETIME=$(sq "$vm_timeout")"
        echo "PEER_WAIT=$(sq "$boot_timeout")"
        # Pass the caller's test knobs (LLMLINK_SANITIZER, ...) through.
        while IFS= read -r v; do
            case $v in
            LLMLINK_RDMA_*|LLMLINK_BUILD|LLMLINK_NODE) continue ;;
            esac
            echo "export $v=$(sq "${!v}")"
        done < <(compgen -e | grep -E '^(LLMLINK_[A-Z0-9_]+|[AUT]SAN_OPTIONS)$' || true)
    } >"$conf"
}

pack_initramfs() {
    # busybox's cpio (the host needs no cpio); newc is what the kernel reads.
    (cd "$stage" && find . | "$sysroot/bin/busybox" cpio -o -H newc -R 0:0 2>/dev/null) |
        gzip -1 >"$initrd"
}

# ------------------------------------------------------------ programs

# find_programs: the absolute paths to run (empty in smoke/bench/shell).
find_programs() {
    local p
    if [ ${#requested[@]} -gt 0 ]; then
        for p in "${requested[@]}"; do
            case $p in */*) ;; *) p=$build/tests/$p ;; esac
            if [ ! -f "$p" ] || [ ! -x "$p" ]; then die "program $p does not exist or is not executable"; fi
            readlink -f "$p"
        done
        return 0
    fi
    if [ $two = 1 ]; then
        # The cross-guest list (tests/rdma/README.md): test_rdma_2host last,
        # its last case powers guest A off.
        for p in test_rdma_matrix_data test_rdma_matrix_peers test_rdma_2host; do
            p=$build/tests/$p
            if [ -x "$p" ] && [ -f "$p" ]; then echo "$p"; else log "warning: $p not built: not run"; fi
        done
        return 0
    fi
    for p in "$build"/tests/test_rdma_*; do
        case ${p##*/} in test_rdma_2host*) continue ;; esac # two-guest only
        [ -x "$p" ] && [ -f "$p" ] && echo "$p"
    done
    return 0
}

# ------------------------------------------------------------ the VM

# boot_vm SECONDS: QEMU with the console in $console; returns its status.
boot_vm() {
    local tmo=$1 rc=0 accel=$vm_accel
    [ "$accel" != kvm ] || [ -w /dev/kvm ] || die "LLMLINK_RDMA_VM_ACCEL=kvm but /dev/kvm is not usable"
    local qemu=(qemu-system-x86_64 -machine "q35,accel=$accel" -cpu max -smp "$vm_smp"
        -m "$vm_mem" -nographic -no-reboot -nic none
        -kernel "$vmlinuz" -initrd "$initrd"
        # panic=-1: a panic reboots at once, and -no-reboot turns that
        # into QEMU exiting (the missing summary reports it).
        -append "console=ttyS0 quiet panic=-1")
    if [ "$vm_mode" = shell ]; then
        # --foreground: QEMU must own the terminal (else SIGTTOU stops it).
        timeout --foreground -k 10 "$tmo" "${qemu[@]}" 2>&1 | tee "$console"
        return "${PIPESTATUS[0]}"
    fi
    : >"$console"
    timeout -k 10 "$tmo" "${qemu[@]}" </dev/null >"$console" 2>&1 &
    local qpid=$! boot_by=$((SECONDS + boot_timeout)) booted=0 shown=0 lines
    # Watch the console once a second (the loop ends with QEMU, which
    # timeout bounds): show results as they come, and give up early on a
    # VM that does not even reach /init (a wedged accelerator, say).
    while kill -0 "$qpid" 2>/dev/null; do
        lines=$(tr -d '\r' <"$console" | grep -E '^RDMA-(VM|TEST|BENCH|SUMMARY)' || true)
        if [ -n "$lines" ]; then
            booted=1
            tail -n +$((shown + 1)) <<<"$lines"
            shown=$(wc -l <<<"$lines")
        fi
        if [ $booted = 0 ] && [ $SECONDS -gt $boot_by ]; then
            log "the VM did not reach /init in ${boot_timeout}s (LLMLINK_RDMA_VM_BOOT_TIMEOUT); stopping QEMU"
            kill "$qpid" 2>/dev/null || true
            wait "$qpid" 2>/dev/null || true
            return 125
        fi
        sleep 1
    done
    wait "$qpid" || rc=$?
    lines=$(tr -d '\r' <"$console" | grep -E '^RDMA-(VM|TEST|BENCH|SUMMARY)' || true)
    [ -z "$lines" ] || tail -n +$((shown + 1)) <<<"$lines"
    return $rc
}

# ---- two guests (--two-guest)

# The QEMUs of a two-guest run (pids of QEMU itself, from -pidfile): killed
# on every way out of this script.
qemu_pidfiles=()
kill_qemus() {
    local f pid
    for f in "${qemu_pidfiles[@]+"${qemu_pidfiles[@]}"}"; do
        pid=$(cat "$f" 2>/dev/null || true)
        case $pid in ''|*[!0-9]*) continue ;; esac
        kill -KILL "$pid" 2>/dev/null || true
    done
}

# net_dir: nd = where the guests' datagram sockets live (a unix socket path has
# at most 107 bytes: a short directory under /tmp when BUILD_DIR is deep).
# (Sets nd: a command substitution would lose cleanup_dirs.)
net_dir() {
    nd=$run_dir/net
    if [ ${#nd} -gt 80 ]; then
        nd=$(mktemp -d /tmp/llmlink-rdma-vm2.XXXXXX)
        cleanup_dirs+=("$nd")
    fi
    mkdir -p "$nd"
    rm -f "$nd"/*.sock
}
cleanup_dirs=()

# dgram_queue: dgram_wrap = what starts each QEMU of a two-guest run: in a
# network namespace of its own (it needs none: -nic none, unix sockets
# only) whose net.unix.max_dgram_qlen is 512 instead of the host's
# default 10. With 10, every burst of RDMA packets filled the receiving
# socket's queue, the sender's QEMU got EAGAIN (a peer named per sendto,
# so poll does not say when there is room again), and once in about eight
# runs a guest's virtio TX queue stayed stuck ("NETDEV WATCHDOG", `ip link
# set` hung 50 s). Stream sockets were worse (ci/rdma-vm/NOTES.md): with
# B's rail-1 NIC down, A's P lost its link to D for lack of heartbeats.
# Without the privilege for a namespace: the host's queue, and a line
# saying so.
dgram_wrap=()
dgram_queue() {
    local q=512
    dgram_wrap=()
    if command -v unshare >/dev/null 2>&1 &&
        unshare -n sh -c "echo $q > /proc/sys/net/unix/max_dgram_qlen" 2>/dev/null; then
        dgram_wrap=(unshare -n sh -c "echo $q > /proc/sys/net/unix/max_dgram_qlen && exec \"\$@\"" qemu)
    else
        log "note: no network namespace here (unshare -n): the guests' datagram queues stay at the host's net.unix.max_dgram_qlen ($(cat /proc/sys/net/unix/max_dgram_qlen 2>/dev/null || echo '?'))"
    fi
}

# qemu_guest ROLE NETDIR: the command line of guest ROLE (a or b): three
# virtio NICs, eth0 / eth1 / eth2 on net0 (rail 0), net1 (rail 1) and
# net9 (control), each a datagram socket pair between the two guests
# (no host network), MAC 52:54:00:0a:<net>:<guest>.
qemu_guest() {
    local role=$1 nd=$2 me other n id
    if [ "$role" = a ]; then me=a; other=b; id=01; else me=b; other=a; id=02; fi
    guest=("${dgram_wrap[@]}" qemu-system-x86_64 -machine "q35,accel=$vm_accel" -cpu max -smp "$vm_smp"
        -m "$vm_mem" -nographic -no-reboot -nic none
        -pidfile "$run_dir/qemu-$role.pid"
        -kernel "$vmlinuz" -initrd "$initrd"
        -append "console=ttyS0 quiet panic=-1 rdma_role=$role")
    for n in 0 1 9; do
        guest+=(-netdev "dgram,id=n$n,local.type=unix,local.path=$nd/$me$n.sock,remote.type=unix,remote.path=$nd/$other$n.sock"
            -device "virtio-net-pci,netdev=n$n,mac=52:54:00:0a:0$n:$id,romfile=")
    done
}

# boot_two SECONDS: guest A (the P side and the agent) in the background,
# its console in $console_a, then guest B (the programs), its console in
# $console, which is watched as boot_vm does. A "RDMA-CTL kill-peer" line
# on B's console kills A's QEMU (SIGKILL). Returns B's QEMU status; A is
# killed once B is done.
boot_two() {
    local tmo=$1 rc=0 nd
    [ "$vm_accel" != kvm ] || [ -w /dev/kvm ] || die "LLMLINK_RDMA_VM_ACCEL=kvm but /dev/kvm is not usable"
    rm -f "$run_dir"/qemu-?.pid
    qemu_pidfiles=("$run_dir/qemu-a.pid" "$run_dir/qemu-b.pid")
    trap 'kill_qemus; rm -rf "${cleanup_dirs[@]+"${cleanup_dirs[@]}"}"' EXIT
    trap 'exit 130' INT TERM
    net_dir
    dgram_queue
    : >"$console_a"
    : >"$console"
    local guest
    qemu_guest a "$nd"
    timeout -k 10 "$((tmo + 30))" "${guest[@]}" </dev/null >"$console_a" 2>&1 &
    local apid=$!
    qemu_guest b "$nd"
    timeout -k 10 "$tmo" "${guest[@]}" </dev/null >"$console" 2>&1 &
    local bpid=$! boot_by=$((SECONDS + boot_timeout)) booted=0 shown=0 lines killed=0 t_line=0
    while kill -0 "$bpid" 2>/dev/null; do
        lines=$(tr -d '\r' <"$console" | grep -E '^RDMA-(VM|TEST|BENCH|SUMMARY)' || true)
        if [ -n "$lines" ]; then
            booted=1
            tail -n +$((shown + 1)) <<<"$lines"
            shown=$(wc -l <<<"$lines")
        fi
        # The interface of the cross-guest tests: a program prints this
        # line (indented by B's /init) and guest A is powered off at once.
        if [ $killed = 0 ] && grep -q 'RDMA-CTL kill-peer' "$console" 2>/dev/null; then
            t_line=$(date +%s.%N)
            local qa
            qa=$(cat "$run_dir/qemu-a.pid" 2>/dev/null || true)
            [ -z "$qa" ] || kill -KILL "$qa" 2>/dev/null || true
            wait "$apid" 2>/dev/null || true
            killed=1
            echo "RDMA-INFO peer-killed $(awk -v a="$t_line" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')"
        fi
        if [ $booted = 0 ] && [ $SECONDS -gt $boot_by ]; then
            log "guest B did not reach /init in ${boot_timeout}s (LLMLINK_RDMA_VM_BOOT_TIMEOUT); stopping QEMU"
            kill_qemus
            wait "$bpid" 2>/dev/null || true
            wait "$apid" 2>/dev/null || true
            return 125
        fi
        # 0.2 s: the kill-peer line must take effect within ~1 s.
        sleep 0.2
    done
    wait "$bpid" || rc=$?
    kill_qemus
    wait "$apid" 2>/dev/null || true
    lines=$(tr -d '\r' <"$console" | grep -E '^RDMA-(VM|TEST|BENCH|SUMMARY)' || true)
    [ -z "$lines" ] || tail -n +$((shown + 1)) <<<"$lines"
    return $rc
}

# show_failed_output LOG: for each program that FAILed, its output (from
# its RDMA-RUN line to its result; the last 80 lines of it).
show_failed_output() {
    local name
    while read -r name; do
        awk -v n="$name" '$1 == "RDMA-RUN" && $2 == n { on = 1 } on { print } $1 == "RDMA-TEST" && $2 == n { on = 0 }' "$1" >"$run_dir/failed.txt"
        [ -s "$run_dir/failed.txt" ] || continue
        log "output of $name (last 80 lines):"
        tail -n 80 "$run_dir/failed.txt" >&2
    done < <(awk '$1 == "RDMA-TEST" && $3 == "FAIL" { print $2 }' "$1")
    rm -f "$run_dir/failed.txt"
}

# check_results QEMU_RC NAME...: the verdict from the console log.
check_results() {
    local qrc=$1 name bad=0 clean
    shift
    clean=$run_dir/console.txt
    tr -d '\r' <"$console" >"$clean"
    # (boot_vm showed the VM/TEST/BENCH lines as they came.)
    grep -E '^RDMA-INFO' "$clean" || true
    for name in "$@"; do
        if ! awk -v n="$name" '$1 == "RDMA-TEST" && $2 == n && ($3 == "PASS" || $3 == "FAIL") { f = 1 } END { exit !f }' "$clean"; then
            log "no result for $name"
            bad=1
        fi
    done
    if grep -qE '^RDMA-TEST [^ ]+ FAIL ' "$clean"; then bad=1; fi
    local summary
    summary=$(grep -E '^RDMA-SUMMARY ' "$clean" | tail -n 1 || true)
    if [ -z "$summary" ]; then
        log "no RDMA-SUMMARY on the console: the VM crashed or timed out"
        bad=1
    else
        case $summary in *" fail=0 "*) ;; *) bad=1 ;; esac
    fi
    case $qrc in
    0) ;;
    124|137) log "QEMU ran past its ${vm_timeout}s bound and was killed"; bad=1 ;;
    125) bad=1 ;; # boot_vm said why
    *) log "QEMU exited with status $qrc"; bad=1 ;;
    esac
    if [ "${LLMLINK_RDMA_VM_VERBOSE:-0}" = 1 ]; then
        cat "$clean"
    elif [ $bad -ne 0 ]; then
        show_failed_output "$clean"
        log "last 40 console lines ($console):"
        tail -n 40 "$clean" >&2
        if [ $two = 1 ]; then
            log "guest A's console, last 60 lines ($console_a):"
            tr -d '\r' <"$console_a" | tail -n 60 >&2
        fi
    fi
    return $bad
}

# ------------------------------------------------------------ main

main() {
    local programs=() p
    vm_mode=$mode
    [ "$mode" != smoke ] || vm_mode="test"
    local found
    if [ "$mode" = exec ] || [ "$mode" = shell ]; then
        # Staged (for CMD or the shell to run), not run.
        found=$(find_programs) || exit 1
        [ -z "$found" ] || mapfile -t programs <<<"$found"
    fi
    if [ "$mode" = test ]; then
        found=$(find_programs) || exit 1
        [ -z "$found" ] || mapfile -t programs <<<"$found"
        [ ${#programs[@]} -gt 0 ] ||
            die "no RDMA test programs: $build/tests/test_rdma_* matched nothing (build them first, or run --smoke)"
    fi
    node=$build/tests/llmlink-node
    [ -x "$node" ] || { log "warning: $node not built; LLMLINK_NODE will not exist in the VM"; node=""; }
    bench_xfer=""
    if [ "$mode" = bench ] && [ -x "$build/bench/bench_xfer" ]; then
        # Its tcp/shm figures mean nothing in a TCG guest (and take minutes):
        # run it only once it can move data over rdma.
        if "$build/bench/bench_xfer" --help 2>&1 | grep -qi rdma; then
            bench_xfer=$build/bench/bench_xfer
        else
            log "bench_xfer has no rdma transport (--help) yet: not run"
        fi
    fi

    local tool
    for tool in qemu-system-x86_64 apt-get apt-cache dpkg-deb xz ldd flock timeout; do
        command -v "$tool" >/dev/null 2>&1 ||
            die "$tool not found: install the host's needs with: bash ci/install-deps.sh (see ci/deps-rdma.sh)"
    done

    agent=""
    if [ $two = 1 ]; then
        agent=$build/tests/llmlink-vm-agent
        [ -x "$agent" ] || die "$agent not built (make BUILD=$build build-all): guest A needs it"
    fi

    local t0=$SECONDS
    # The downloads, sysroot and kernel image are shared by the one- and
    # two-guest runs of a build dir: prepared under their own lock.
    exec 7>"$work/prep.lock"
    flock -w 900 7 || die "another ci/rdma-vm.sh has held $work/prep.lock for 15 minutes"
    local kpkg=${LLMLINK_RDMA_VM_KERNEL:-$(newest_kernel_pkg)}
    apt_lists_ready "$kpkg" "${USER_PKGS[@]}" ||
        log "warning: apt knows no packages (apt-get update failed?); using the cache"
    # A fresh apt-get update may know a kernel the first search did not.
    [ -n "$kpkg" ] || kpkg=${LLMLINK_RDMA_VM_KERNEL:-$(newest_kernel_pkg)}
    [ -z "$kpkg" ] || [ -n "$(candidate "$kpkg")" ] || load_candidates "$kpkg"
    if [ -z "$kpkg" ]; then
        # Offline: the newest kernel already cached.
        kpkg=$(for d in "$debs"/linux-image-6.1.*-amd64; do [ -d "$d" ] && basename "$d"; done |
            grep -E '^linux-image-6\.1\.[0-9]+-[0-9]+-amd64$' | sort -V | tail -n 1 || true)
    fi
    [ -n "$kpkg" ] || die "no linux-image-6.1.*-amd64 package known to apt nor cached"
    fetch_debs "$kpkg" "${USER_PKGS[@]}"
    local deb_files=() pkg
    for pkg in "$kpkg" "${USER_PKGS[@]}"; do deb_files+=("$(deb_of "$pkg")"); done
    unpack_sysroot "${deb_files[@]}"

    local kver
    kver=$(kernel_version)
    vmlinuz=$sysroot/boot/vmlinuz-$kver
    [ -f "$vmlinuz" ] || die "no $vmlinuz in $kpkg"
    vmlinuz=$(boot_image "$vmlinuz")

    # Bound: boot + setup + smoke, then each program's own timeout plus a margin.
    local n_steps=${#programs[@]}
    vm_timeout=$((120 + n_steps * (test_timeout + 10)))
    # Two guests: A's boot and the cross-guest smoke step on top.
    [ $two = 0 ] || vm_timeout=$((vm_timeout + 60))
    if [ "$mode" = bench ]; then
        local n_cells
        n_cells=$(wc -w <<<"$bench_cells")
        n_cells=$((n_cells + $(wc -w <<<"$llmlink_cells")))
        vm_timeout=$((120 + n_cells * 30))
        [ -z "$bench_xfer" ] || vm_timeout=$((vm_timeout + 3 * test_timeout))
    fi
    [ "$mode" != shell ] || vm_timeout=3600
    # A test run stays well under CI's 10 minutes whatever the count.
    if [ "$mode" = test ] && [ "$vm_timeout" -gt 540 ]; then vm_timeout=540; fi
    vm_timeout=${LLMLINK_RDMA_VM_TIMEOUT:-$vm_timeout}
    need_int LLMLINK_RDMA_VM_TIMEOUT "$vm_timeout" 30 7200

    stage_base
    stage_modules "$kver"
    stage_rdma_userspace
    for p in "${programs[@]+"${programs[@]}"}" $node $bench_xfer $agent; do
        put_elf "$p"
    done
    write_conf "${programs[@]+"${programs[@]}"}"
    pack_initramfs
    exec 7>&- # the shared part is read: a run of the other mode may prepare now
    log "image ready in $((SECONDS - t0))s: kernel $kver ($kpkg), $(du -k "$initrd" | cut -f1) KiB initramfs," \
        "${#programs[@]} program(s), mode $mode$([ $two = 0 ] || echo ' (two guests)'), accel $vm_accel, ${vm_smp} vCPU, ${vm_mem} MiB"

    local qrc=0 b0=$SECONDS
    if [ $two = 1 ]; then
        boot_two "$vm_timeout" || qrc=$?
    else
        boot_vm "$vm_timeout" || qrc=$?
    fi
    log "VM ran $((SECONDS - b0))s (console: $console)"
    [ "$mode" != shell ] || return "$qrc"

    local expect=(setup)
    case $mode in
    bench)
        local cell dev tool bytes
        for cell in $bench_cells; do
            IFS=: read -r dev tool bytes _ <<<"$cell"
            expect+=("$tool-$dev-$bytes")
        done
        if [ -n "$node" ]; then
            local rail kib
            for cell in $llmlink_cells; do
                IFS=: read -r rail kib _ <<<"$cell"
                expect+=("llmlink-pull-rxe$rail-$((kib * 1024))")
            done
        fi
        [ -z "$bench_xfer" ] || expect+=(bench_xfer)
        ;;
    exec) expect+=(exec) ;;
    *)
        expect+=(smoke)
        for p in "${programs[@]+"${programs[@]}"}"; do expect+=("${p##*/}"); done
        ;;
    esac
    if check_results "$qrc" "${expect[@]}"; then
        log "PASS ($mode$([ $two = 0 ] || echo ', two guests'), $((SECONDS - t0))s in all)"
    else
        log "FAIL ($mode$([ $two = 0 ] || echo ', two guests'))"
        return 1
    fi
}

main
