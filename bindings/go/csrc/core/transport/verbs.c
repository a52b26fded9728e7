/* verbs.c - dlopen("libibverbs.so.1") and the table of verbs (verbs.h). */
#include "transport/verbs.h"

#include <stdio.h>
#include <stdlib.h>

#if LLK_HAVE_VERBS
#include <dlfcn.h>
#include <pthread.h>

static llk_verbs_t g_verbs;
static const llk_verbs_t *g_loaded;
static char g_why[320];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

/* Resolves one symbol into a table slot; false (and g_why) if missing. */
static bool resolve(void *lib, const char *name, void **slot, bool required)
{
    *slot = dlsym(lib, name);
    if (*slot || !required)
        return true;
    snprintf(g_why, sizeof g_why, "libibverbs has no symbol %s (too old?)", name);
    return false;
}

#define SLOT(field) ((void **)(void *)&g_verbs.field)

static void load_once(void)
{
    /* secure_getenv: a setuid program must not dlopen a library its
     * caller names. */
    const char *name = secure_getenv("LLMLINK_IBVERBS");
    if (!name || !*name)
        name = "libibverbs.so.1";
    /* RTLD_LOCAL: the verbs stay out of the global namespace of the
     * process (an application may load another copy). */
    void *lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char *err = dlerror();
        snprintf(g_why, sizeof g_why, "cannot load %s (no RDMA stack installed?): %s", name,
                 err ? err : "dlopen failed");
        return;
    }
    bool ok = resolve(lib, "ibv_get_device_list", SLOT(get_device_list), true) &&
              resolve(lib, "ibv_free_device_list", SLOT(free_device_list), true) &&
              resolve(lib, "ibv_get_device_name", SLOT(get_device_name), true) &&
              resolve(lib, "ibv_open_device", SLOT(open_device), true) &&
              resolve(lib, "ibv_close_device", SLOT(close_device), true) &&
              resolve(lib, "ibv_query_device", SLOT(query_device), true) &&
              resolve(lib, "ibv_query_port", SLOT(query_port), true) &&
              resolve(lib, "ibv_query_gid", SLOT(query_gid), true) &&
              resolve(lib, "_ibv_query_gid_ex", SLOT(query_gid_ex), false) &&
              resolve(lib, "ibv_alloc_pd", SLOT(alloc_pd), true) &&
              resolve(lib, "ibv_dealloc_pd", SLOT(dealloc_pd), true) &&
              resolve(lib, "ibv_reg_mr", SLOT(reg_mr), true) &&
              resolve(lib, "ibv_dereg_mr", SLOT(dereg_mr), true) &&
              resolve(lib, "ibv_create_cq", SLOT(create_cq), true) &&
              resolve(lib, "ibv_destroy_cq", SLOT(destroy_cq), true) &&
              resolve(lib, "ibv_create_qp", SLOT(create_qp), true) &&
              resolve(lib, "ibv_modify_qp", SLOT(modify_qp), true) &&
              resolve(lib, "ibv_destroy_qp", SLOT(destroy_qp), true) &&
              resolve(lib, "ibv_wc_status_str", SLOT(wc_status_str), true);
    if (!ok) {
        dlclose(lib);
        return;
    }
    /* The library stays loaded for the life of the process: providers it
     * loaded keep pointers into it. */
    g_loaded = &g_verbs;
}

const llk_verbs_t *llk_verbs_load(const char **why)
{
    pthread_once(&g_once, load_once);
    if (!g_loaded && why)
        *why = g_why;
    return g_loaded;
}
#else
const llk_verbs_t *llk_verbs_load(const char **why)
{
    if (why)
        *why = "llmlink was built without libibverbs headers (infiniband/verbs.h)";
    return NULL;
}
#endif
