/* peer_proof.c - proves that a process of this host holds the other end
 * of a TCP connection, before shm trusts what the peer said about itself.
 *
 * A peer's host id (boot id, pid namespace, pid) arrives in ATTACH /
 * ATTACH_OK: it is a claim, and a remote peer could echo ours back and name
 * any pid. process_vm_readv/writev on a pid the peer chose, at addresses it
 * chose, would read or write anything; describing our memory to a remote
 * peer would leak its layout. So shm is used only once the claim is proven:
 * the connection's other end is a socket of this network namespace
 * (/proc/net/tcp, /proc/net/tcp6) and that socket is one of the claimed
 * pid's descriptors (/proc/<pid>/fd, in this pid namespace). Reading
 * /proc/<pid>/fd needs the same permission as process_vm_* (same user, or
 * CAP_SYS_PTRACE), so a refusal here is the kernel's refusal anyway.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "link/tls.h"
#include "xfer/xfer.h"

/* Descriptors looked at in /proc/<pid>/fd, lines in /proc/net/tcp*: the
 * proof is bounded whatever the process or the host holds. */
#define MAX_FDS 1048576
#define MAX_LINES 4194304

/* "0100007F:1F90" (IPv4) or 32 hex digits + ":port" (IPv6), as the kernel
 * prints the raw address words. Returns 0 when it names addr:port. */
static int match_endpoint(const char *text, const struct sockaddr_storage *sa)
{
    const char *colon = strchr(text, ':');
    if (!colon)
        return -1;
    unsigned port = (unsigned)strtoul(colon + 1, NULL, 16);
    size_t hex = (size_t)(colon - text);
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        if (hex != 8 || port != ntohs(in->sin_port))
            return -1;
        return (uint32_t)strtoul(text, NULL, 16) == in->sin_addr.s_addr ? 0 : -1;
    }
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    if (hex != 32 || port != ntohs(in6->sin6_port))
        return -1;
    for (int w = 0; w < 4; w++) {
        char word[9];
        memcpy(word, text + 8 * w, 8);
        word[8] = '\0';
        uint32_t v = (uint32_t)strtoul(word, NULL, 16);
        uint32_t have;
        memcpy(&have, &in6->sin6_addr.s6_addr[4 * w], 4);
        if (v != have)
            return -1;
    }
    return 0;
}

/* The inode of the socket whose local end is `local` and remote end
 * `remote`, from /proc/net/tcp(6); 0 if none. */
static unsigned long find_socket_inode(const struct sockaddr_storage *local,
                                       const struct sockaddr_storage *remote)
{
    FILE *f = fopen(local->ss_family == AF_INET ? "/proc/net/tcp" : "/proc/net/tcp6", "re");
    if (!f)
        return 0;
    char line[512], loc[64], rem[64];
    unsigned long inode = 0, ino;
    for (long n = 0; n < MAX_LINES && !inode && fgets(line, sizeof line, f); n++) {
        /* sl local rem st tx:rx tr:when retr uid timeout inode */
        if (sscanf(line, " %*s %63s %63s %*s %*s %*s %*s %*s %*s %lu", loc, rem, &ino) != 3)
            continue;
        if (match_endpoint(loc, local) == 0 && match_endpoint(rem, remote) == 0)
            inode = ino;
    }
    fclose(f);
    return inode;
}

static bool pid_holds_inode(uint32_t pid, unsigned long inode)
{
    char path[64], want[48], got[64];
    snprintf(path, sizeof path, "/proc/%u/fd", pid);
    snprintf(want, sizeof want, "socket:[%lu]", inode);
    DIR *d = opendir(path);
    if (!d)
        return false;
    bool found = false;
    struct dirent *de;
    for (long n = 0; n < MAX_FDS && !found && (de = readdir(d)); n++) {
        if (de->d_name[0] == '.')
            continue;
        /* Entries are descriptor numbers: read the link relative to the
         * directory, no path to build. */
        ssize_t len = readlinkat(dirfd(d), de->d_name, got, sizeof got - 1);
        if (len <= 0)
            continue;
        got[len] = '\0';
        found = strcmp(got, want) == 0;
    }
    closedir(d);
    return found;
}

bool llk_peer_proof(int fd, uint32_t pid)
{
    struct sockaddr_storage self, peer;
    socklen_t sl = sizeof self, pl = sizeof peer;
    /* A TLS stream's addresses are its relay's TCP socket's, which this
     * process holds (as the peer's relay holds the other end). */
    if (pid == 0 || llk_tls_getsockname(fd, (struct sockaddr *)&self, &sl) != 0 ||
        llk_tls_getpeername(fd, (struct sockaddr *)&peer, &pl) != 0 ||
        self.ss_family != peer.ss_family ||
        (self.ss_family != AF_INET && self.ss_family != AF_INET6))
        return false;
    /* The other end: local address = our peer's, remote = ours. */
    unsigned long inode = find_socket_inode(&peer, &self);
    return inode != 0 && pid_holds_inode(pid, inode);
}
