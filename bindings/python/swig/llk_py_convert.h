/*
 * llk_py_convert.h - Python <-> C conversions for the SWIG typemaps in
 * llmlink.i. Every *_from function returns 0, or -1 with a Python
 * exception set (TypeError for a wrong shape or type, ValueError for a
 * value out of range); every *_free is safe on a zeroed or failed conversion.
 * Strings are copied: the C call runs without the GIL, when other threads
 * may drop the Python objects they came from.
 */
#ifndef LLK_PY_CONVERT_H
#define LLK_PY_CONVERT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "llmlink.h"

/* The initial value of every conversion below: SWIG runs each freearg
 * when a call fails, also for arguments not converted yet. */
#define LLK_PY_ZERO {0}

typedef struct {
    llmlink_option_t *items;
    char **strings; /* capacity entries, NULL or owned */
    size_t capacity;
    size_t count;
} llk_py_options_t;

typedef struct {
    llmlink_cluster_info_t *items;
    llmlink_ip_info_t *ips; /* every ip info of every cluster, in one block */
    char **strings;         /* one per ip info, owned */
    size_t count;
    size_t num_ips;
} llk_py_clusters_t;

typedef struct {
    llmlink_cache_key_t *items;
    size_t count;
} llk_py_keys_t;

typedef struct {
    uint64_t *items;
    size_t count;
} llk_py_u64s_t;

int llk_py_options_from(llk_py_options_t *out, PyObject *obj);
void llk_py_options_free(llk_py_options_t *conv);

int llk_py_clusters_from(llk_py_clusters_t *out, PyObject *obj);
void llk_py_clusters_free(llk_py_clusters_t *conv);

int llk_py_desc_from(llmlink_cache_desc_t *out, PyObject *obj);
int llk_py_key_from(llmlink_cache_key_t *out, PyObject *obj, const char *what);
int llk_py_keys_from(llk_py_keys_t *out, PyObject *obj);
void llk_py_keys_free(llk_py_keys_t *conv);
/* None gives (NULL, 0). */
int llk_py_u64s_from(llk_py_u64s_t *out, PyObject *obj, const char *what);
void llk_py_u64s_free(llk_py_u64s_t *conv);
int llk_py_layers_from(llmlink_layer_range_t *out, PyObject *obj);
/* An int in the C type's range (TypeError / ValueError naming what). */
int llk_py_i32_from(PyObject *obj, int32_t *out, const char *what);
int llk_py_u32_from(PyObject *obj, uint32_t *out, const char *what);

/* Raises LLMException(message, LLMStatusCode(status)) with the calling
 * thread's llmlink_last_error(); call it right after the failing call. */
void llk_py_raise(llmlink_status_t status);
/* New reference to LLMStatusCode(status) (the int for an unknown code). */
PyObject *llk_py_status(llmlink_status_t status);
/* Steals overall; returns (overall, [status per cluster]) or NULL. */
PyObject *llk_py_link_outcome(PyObject *overall, const llmlink_status_t *statuses, size_t n);
PyObject *llk_py_u64_list(const uint64_t *values, size_t n);
PyObject *llk_py_stats_dict(const llmlink_stats_t *s);
PyObject *llk_py_xfer_stats_dict(const llmlink_xfer_stats_t *s);
PyObject *llk_py_link_stats_dict(const llmlink_link_stats_t *s);

/* llk_py_metrics.c: llmlink_get_metrics as a dict of ints and lists of
 * ints (the struct's fields, arrays indexed as in C), llmlink_get_links as a
 * list of dicts; NULL with an exception (LLMException) on failure. */
PyObject *llk_py_get_metrics(llmlink_t *dd);
PyObject *llk_py_get_links(llmlink_t *dd);

PyObject *llk_py_memoryview(uint64_t addr, uint64_t nbytes);
PyObject *llk_py_set_log_level(int level);
PyObject *llk_py_status_of(uint32_t status);

#endif /* LLK_PY_CONVERT_H */
