/*
 * envcheck.c - a stand-in RDMA test for the harness's self-test: checks,
 * inside the VM, what ci/rdma-vm.sh promises its programs (NOTES.md):
 * every LLMLINK_RDMA_* variable, that LLMLINK_NODE is executable, that
 * libibverbs.so.1 dlopens and lists both devices, and that each
 * LLMLINK_RDMA_GIDn indexes the RoCE v2 GID of LLMLINK_RDMA_IPn.
 * Exit 0 when all hold, 1 (and why) otherwise.
 */
#include <arpa/inet.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures;

static const char *need(const char *name)
{
    const char *v = getenv(name);
    printf("%s=%s\n", name, v ? v : "(unset)");
    if (!v || !*v) {
        printf("FAIL: %s is not set\n", name);
        failures++;
        return "";
    }
    return v;
}

static void read_line(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "r");
    buf[0] = '\0';
    if (f) {
        if (!fgets(buf, (int)len, f))
            buf[0] = '\0';
        fclose(f);
    }
    buf[strcspn(buf, "\n")] = '\0';
}

/* The GID at dev[idx] must be ::ffff:<ip> and of type "RoCE v2". */
static void check_gid(const char *dev, const char *idx, const char *ip)
{
    struct in_addr a;
    char want[64], path[256], got[128], type[64];
    if (inet_pton(AF_INET, ip, &a) != 1) {
        printf("FAIL: %s is not an IPv4 address\n", ip);
        failures++;
        return;
    }
    const unsigned char *b = (const unsigned char *)&a.s_addr;
    snprintf(want, sizeof want, "0000:0000:0000:0000:0000:ffff:%02x%02x:%02x%02x", b[0], b[1], b[2], b[3]);
    snprintf(path, sizeof path, "/sys/class/infiniband/%s/ports/1/gids/%s", dev, idx);
    read_line(path, got, sizeof got);
    snprintf(path, sizeof path, "/sys/class/infiniband/%s/ports/1/gid_attrs/types/%s", dev, idx);
    read_line(path, type, sizeof type);
    printf("%s gid[%s] = %s (%s)\n", dev, idx, got, type);
    if (strcmp(got, want) != 0 || strcmp(type, "RoCE v2") != 0) {
        printf("FAIL: %s gid[%s] is not the RoCE v2 GID %s\n", dev, idx, want);
        failures++;
    }
}

int main(void)
{
    const char *dev0 = need("LLMLINK_RDMA_DEV0"), *dev1 = need("LLMLINK_RDMA_DEV1");
    const char *ip0 = need("LLMLINK_RDMA_IP0"), *ip1 = need("LLMLINK_RDMA_IP1");
    const char *gid0 = need("LLMLINK_RDMA_GID0"), *gid1 = need("LLMLINK_RDMA_GID1");
    need("LLMLINK_BUILD");
    const char *node = need("LLMLINK_NODE");
    need("LLMLINK_RDMA_VM");
    if (*node && access(node, X_OK) != 0) {
        printf("FAIL: LLMLINK_NODE %s is not executable\n", node);
        failures++;
    }

    /* As the library does: dlopen, never linked (ldd does not list it). */
    void *h = dlopen("libibverbs.so.1", RTLD_NOW);
    if (!h) {
        printf("FAIL: dlopen libibverbs.so.1: %s\n", dlerror());
        return 1;
    }
    typedef void **(*get_list_fn)(int *);
    typedef const char *(*get_name_fn)(void *);
    get_list_fn get_list = (get_list_fn)dlsym(h, "ibv_get_device_list");
    get_name_fn get_name = (get_name_fn)dlsym(h, "ibv_get_device_name");
    if (!get_list || !get_name) {
        printf("FAIL: libibverbs.so.1 lacks ibv_get_device_list/name\n");
        return 1;
    }
    int n = 0, seen = 0;
    void **list = get_list(&n);
    for (int i = 0; list && i < n; i++) {
        const char *name = get_name(list[i]);
        printf("device %s\n", name);
        if (strcmp(name, dev0) == 0 || strcmp(name, dev1) == 0)
            seen++;
    }
    if (seen != 2) {
        printf("FAIL: ibv_get_device_list has %d of %s and %s (the rxe provider?)\n", seen, dev0, dev1);
        failures++;
    }
    check_gid(dev0, gid0, ip0);
    check_gid(dev1, gid1, ip1);
    return failures ? 1 : 0;
}
