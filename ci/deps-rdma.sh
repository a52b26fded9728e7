# deps-rdma.sh - Debian packages the RDMA transport and its soft-RoCE VM
# harness (ci/rdma-vm.sh) need on the host. Sourced by ci/install-deps.sh
# inside its check function: one need_cmd / need_check line each.
#
# The VM's kernel, busybox and rdma-core userspace are NOT installed here:
# ci/rdma-vm.sh fetches them with `apt-get download` into its build dir.

# Headers (and libibverbs.so.1 + the providers, through its Depends) to build core/'s rdma transport.
need_check libibverbs-dev "libibverbs headers (infiniband/verbs.h)" 'test -f /usr/include/infiniband/verbs.h'
# The emulator that boots the Debian kernel with soft-RoCE (rdma_rxe); TCG works without /dev/kvm.
need_cmd qemu-system-x86_64 qemu-system-x86
# depmod: the kernel .deb ships no modules.dep (its postinst makes it); the harness makes it.
# (checked by path too: a root PATH without /usr/sbin must not make it look missing)
need_check kmod "depmod" 'command -v depmod || test -x /usr/sbin/depmod || test -x /sbin/depmod'
# Unpacks the xz vmlinux inside the bzImage (booted directly: faster under TCG), and
# .ko.xz modules where a kernel ships them so (busybox insmod reads no .ko.xz).
need_cmd xz xz-utils
# Unpacks the downloaded .debs without installing them.
need_cmd dpkg-deb dpkg
