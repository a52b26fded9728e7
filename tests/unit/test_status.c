/*
 * test_status.c - status names and sentences, thread-local error detail,
 * the log callback and the version functions (ffi/api_status.c,
 * core/err.c, core/log.c).
 *
 * Bindings map status codes by value and by name, so both are part of the
 * ABI: the values are llm_datadist's LLMStatusCode values and must never
 * change.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "llmlink.h"
#include "base/log.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---- every status macro of llmlink.h ------------------------------------------ */

/* Taken from ffi/llmlink.h when this test was written (every
 * "#define LLMLINK_<NAME> 0x..." status macro). A code added to the header
 * must be added here too. */
#define ALL_STATUS_CODES(X)                  \
    X(LLMLINK_SUCCESS)                       \
    X(LLMLINK_FAILED)                        \
    X(LLMLINK_WAIT_PROCESS_TIMEOUT)          \
    X(LLMLINK_KV_CACHE_NOT_EXIST)            \
    X(LLMLINK_REPEAT_REQUEST)                \
    X(LLMLINK_REQUEST_ALREADY_COMPLETED)     \
    X(LLMLINK_PARAM_INVALID)                 \
    X(LLMLINK_ENGINE_FINALIZED)              \
    X(LLMLINK_NOT_YET_LINK)                  \
    X(LLMLINK_ALREADY_LINK)                  \
    X(LLMLINK_LINK_FAILED)                   \
    X(LLMLINK_UNLINK_FAILED)                 \
    X(LLMLINK_NOTIFY_PROMPT_UNLINK_FAILED)   \
    X(LLMLINK_CLUSTER_NUM_EXCEED_LIMIT)      \
    X(LLMLINK_PROCESSING_LINK)               \
    X(LLMLINK_DEVICE_OUT_OF_MEMORY)          \
    X(LLMLINK_PREFIX_ALREADY_EXIST)          \
    X(LLMLINK_PREFIX_NOT_EXIST)              \
    X(LLMLINK_SEQ_LEN_OVER_LIMIT)            \
    X(LLMLINK_NO_FREE_BLOCK)                 \
    X(LLMLINK_BLOCKS_OUT_OF_MEMORY)          \
    X(LLMLINK_EXIST_LINK)                    \
    X(LLMLINK_FEATURE_NOT_ENABLED)           \
    X(LLMLINK_TIMEOUT)                       \
    X(LLMLINK_LINK_BUSY)                     \
    X(LLMLINK_OUT_OF_MEMORY)                 \
    X(LLMLINK_NOT_INITIALIZED)               \
    X(LLMLINK_ALREADY_INITIALIZED)           \
    X(LLMLINK_VERSION_MISMATCH)              \
    X(LLMLINK_PROTOCOL_ERROR)                \
    X(LLMLINK_ROLE_NOT_ALLOWED)              \
    X(LLMLINK_CLUSTER_ID_MISMATCH)           \
    X(LLMLINK_NETWORK_ERROR)                 \
    X(LLMLINK_CACHE_KEY_ALREADY_EXIST)       \
    X(LLMLINK_CACHE_IN_USE)                  \
    X(LLMLINK_AUTH_FAILED)                   \
    X(LLMLINK_ACCESS_DENIED)                 \
    X(LLMLINK_TASK_PENDING)                  \
    X(LLMLINK_CANCELLED)                     \
    X(LLMLINK_CANCELLED_LINK_CLOSED)         \
    X(LLMLINK_NOTIFY_QUEUE_FULL)

static const struct status_macro {
    llmlink_status_t code;
    const char *macro; /* "LLMLINK_PARAM_INVALID" */
} all_codes[] = {
#define X(m) {m, #m},
    ALL_STATUS_CODES(X)
#undef X
};

#define OWN_CODE_BASE 0x5010B100u

static int is_own_code(llmlink_status_t s)
{
    return s > OWN_CODE_BASE && s != LLMLINK_FAILED;
}

/* llmlink_status_name() of a code: "LLM_<X>" for llm_datadist's codes,
 * the macro name ("LLMLINK_<X>") for llmlink's own. */
static void expected_name(const struct status_macro *m, char *buf, size_t n)
{
    const char *suffix = m->macro + strlen("LLMLINK_");
    if (is_own_code(m->code))
        snprintf(buf, n, "%s", m->macro);
    else
        snprintf(buf, n, "LLM_%s", suffix);
}

static void test_every_status_has_name_and_sentence(void **state)
{
    (void)state;
    const char *unknown_text = llmlink_strerror(0x0BADC0DEu);
    assert_non_null(unknown_text);
    for (size_t i = 0; i < ARRAY_LEN(all_codes); i++) {
        const struct status_macro *m = &all_codes[i];
        char want[64];
        expected_name(m, want, sizeof want);
        const char *name = llmlink_status_name(m->code);
        const char *text = llmlink_strerror(m->code);
        assert_non_null(name);
        assert_non_null(text);
        if (strcmp(name, want) != 0)
            fail_msg("%s: name \"%s\", want \"%s\"", m->macro, name, want);
        if (strlen(text) < 8 || strcmp(text, unknown_text) == 0)
            fail_msg("%s: no sentence of its own (\"%s\")", m->macro, text);
        /* one status, one name, one sentence */
        for (size_t j = 0; j < i; j++) {
            assert_int_not_equal(m->code, all_codes[j].code);
            assert_string_not_equal(name, llmlink_status_name(all_codes[j].code));
            if (strcmp(text, llmlink_strerror(all_codes[j].code)) == 0)
                fail_msg("%s and %s share the sentence \"%s\"", m->macro, all_codes[j].macro,
                         text);
        }
    }
}

/* The numbers of llm_datadist's LLMStatusCode (shared/DESIGN.md). */
static void test_datadist_values(void **state)
{
    (void)state;
    static const struct {
        llmlink_status_t code;
        uint32_t value;
        const char *name;
    } want[] = {
        {LLMLINK_SUCCESS, 0x00000000u, "LLM_SUCCESS"},
        {LLMLINK_FAILED, 0xFFFFFFFFu, "LLM_FAILED"},
        {LLMLINK_WAIT_PROCESS_TIMEOUT, 0x5010B001u, "LLM_WAIT_PROCESS_TIMEOUT"},
        {LLMLINK_KV_CACHE_NOT_EXIST, 0x5010B002u, "LLM_KV_CACHE_NOT_EXIST"},
        {LLMLINK_PARAM_INVALID, 0x5010B005u, "LLM_PARAM_INVALID"},
        {LLMLINK_NOT_YET_LINK, 0x5010B007u, "LLM_NOT_YET_LINK"},
        {LLMLINK_ALREADY_LINK, 0x5010B008u, "LLM_ALREADY_LINK"},
        {LLMLINK_LINK_FAILED, 0x5010B009u, "LLM_LINK_FAILED"},
        {LLMLINK_UNLINK_FAILED, 0x5010B00Au, "LLM_UNLINK_FAILED"},
        {LLMLINK_NOTIFY_PROMPT_UNLINK_FAILED, 0x5010B00Bu, "LLM_NOTIFY_PROMPT_UNLINK_FAILED"},
        {LLMLINK_CLUSTER_NUM_EXCEED_LIMIT, 0x5010B00Cu, "LLM_CLUSTER_NUM_EXCEED_LIMIT"},
        {LLMLINK_PROCESSING_LINK, 0x5010B00Du, "LLM_PROCESSING_LINK"},
        {LLMLINK_EXIST_LINK, 0x5010B018u, "LLM_EXIST_LINK"},
        {LLMLINK_FEATURE_NOT_ENABLED, 0x5010B019u, "LLM_FEATURE_NOT_ENABLED"},
        {LLMLINK_TIMEOUT, 0x5010B01Au, "LLM_TIMEOUT"},
        {LLMLINK_LINK_BUSY, 0x5010B01Bu, "LLM_LINK_BUSY"},
        {LLMLINK_OUT_OF_MEMORY, 0x5010B01Cu, "LLM_OUT_OF_MEMORY"},
    };
    /* llmlink_status_t is the 32-bit LLMStatusCode */
    assert_int_equal(sizeof(llmlink_status_t), 4);
    for (size_t i = 0; i < ARRAY_LEN(want); i++) {
        if (want[i].code != want[i].value)
            fail_msg("%s is 0x%08x, want 0x%08x", want[i].name, want[i].code, want[i].value);
        assert_string_equal(llmlink_status_name(want[i].value), want[i].name);
    }
}

/* llmlink's own codes lie above 0x5010B100, llm_datadist's do not. */
static void test_own_codes_above_base(void **state)
{
    (void)state;
    static const llmlink_status_t own[] = {
        LLMLINK_NOT_INITIALIZED, LLMLINK_ALREADY_INITIALIZED, LLMLINK_VERSION_MISMATCH,
        LLMLINK_PROTOCOL_ERROR,  LLMLINK_ROLE_NOT_ALLOWED,    LLMLINK_CLUSTER_ID_MISMATCH,
        LLMLINK_NETWORK_ERROR,   LLMLINK_CACHE_KEY_ALREADY_EXIST, LLMLINK_CACHE_IN_USE,
        LLMLINK_AUTH_FAILED,     LLMLINK_ACCESS_DENIED,       LLMLINK_TASK_PENDING,
        LLMLINK_CANCELLED,       LLMLINK_CANCELLED_LINK_CLOSED, LLMLINK_NOTIFY_QUEUE_FULL,
    };
    for (size_t i = 0; i < ARRAY_LEN(own); i++) {
        assert_true(own[i] > OWN_CODE_BASE);
        assert_true(own[i] < LLMLINK_FAILED);
        assert_memory_equal(llmlink_status_name(own[i]), "LLMLINK_", 8);
    }
    size_t n_own = 0;
    for (size_t i = 0; i < ARRAY_LEN(all_codes); i++) {
        if (is_own_code(all_codes[i].code))
            n_own++;
        else
            assert_memory_equal(llmlink_status_name(all_codes[i].code), "LLM_", 4);
    }
    assert_int_equal(n_own, ARRAY_LEN(own));
}

/* llmlink's own codes: values and names are ABI (appended, never renumbered). */
static void test_own_values(void **state)
{
    (void)state;
    static const struct {
        llmlink_status_t code;
        uint32_t value;
        const char *name;
    } want[] = {
        {LLMLINK_NOT_INITIALIZED, 0x5010B101u, "LLMLINK_NOT_INITIALIZED"},
        {LLMLINK_ALREADY_INITIALIZED, 0x5010B102u, "LLMLINK_ALREADY_INITIALIZED"},
        {LLMLINK_VERSION_MISMATCH, 0x5010B103u, "LLMLINK_VERSION_MISMATCH"},
        {LLMLINK_PROTOCOL_ERROR, 0x5010B104u, "LLMLINK_PROTOCOL_ERROR"},
        {LLMLINK_ROLE_NOT_ALLOWED, 0x5010B105u, "LLMLINK_ROLE_NOT_ALLOWED"},
        {LLMLINK_CLUSTER_ID_MISMATCH, 0x5010B106u, "LLMLINK_CLUSTER_ID_MISMATCH"},
        {LLMLINK_NETWORK_ERROR, 0x5010B107u, "LLMLINK_NETWORK_ERROR"},
        {LLMLINK_CACHE_KEY_ALREADY_EXIST, 0x5010B108u, "LLMLINK_CACHE_KEY_ALREADY_EXIST"},
        {LLMLINK_CACHE_IN_USE, 0x5010B109u, "LLMLINK_CACHE_IN_USE"},
        {LLMLINK_AUTH_FAILED, 0x5010B10Au, "LLMLINK_AUTH_FAILED"},
        {LLMLINK_ACCESS_DENIED, 0x5010B10Bu, "LLMLINK_ACCESS_DENIED"},
        {LLMLINK_TASK_PENDING, 0x5010B10Cu, "LLMLINK_TASK_PENDING"},
        {LLMLINK_CANCELLED, 0x5010B10Du, "LLMLINK_CANCELLED"},
        {LLMLINK_CANCELLED_LINK_CLOSED, 0x5010B10Eu, "LLMLINK_CANCELLED_LINK_CLOSED"},
        {LLMLINK_NOTIFY_QUEUE_FULL, 0x5010B10Fu, "LLMLINK_NOTIFY_QUEUE_FULL"},
    };
    for (size_t i = 0; i < ARRAY_LEN(want); i++) {
        if (want[i].code != want[i].value)
            fail_msg("%s is 0x%08x, want 0x%08x", want[i].name, want[i].code, want[i].value);
        assert_string_equal(llmlink_status_name(want[i].value), want[i].name);
        const char *text = llmlink_strerror(want[i].value);
        assert_string_not_equal(text, llmlink_strerror(0x0BADC0DEu));
        /* one sentence: capital first, full stop last */
        assert_true(text[0] >= 'A' && text[0] <= 'Z');
        assert_int_equal(text[strlen(text) - 1], '.');
    }
}

static void test_unknown_status(void **state)
{
    (void)state;
    /* gaps in llm_datadist's range, the base itself, past our last code */
    static const llmlink_status_t unknown[] = {
        1, 0x5010B000u, 0x5010B014u, 0x5010B017u, 0x5010B01Du, 0x5010B100u,
        0x5010B110u, 0x7FFFFFFFu, 0xFFFFFFFEu,
    };
    for (size_t i = 0; i < ARRAY_LEN(unknown); i++) {
        assert_string_equal(llmlink_status_name(unknown[i]), "LLM_UNKNOWN_STATUS");
        const char *text = llmlink_strerror(unknown[i]);
        assert_non_null(text);
        assert_true(text[0] != '\0');
    }
}

/* ---- thread-local error detail --------------------------------------------------- */

static int error_setup(void **state)
{
    (void)state;
    llmlink_clear_error();
    return 0;
}

static int error_teardown(void **state)
{
    (void)state;
    llmlink_clear_error();
    return 0;
}

static void test_last_error_initially_empty(void **state)
{
    (void)state;
    assert_non_null(llmlink_last_error());
    assert_string_equal(llmlink_last_error(), "");
    assert_int_equal(llmlink_last_error_status(), LLMLINK_SUCCESS);
}

static void test_err_sets_and_clear_forgets(void **state)
{
    (void)state;
    /* llk_err returns its status so callers can `return llk_err(...)` */
    assert_int_equal(llk_err(LLMLINK_PARAM_INVALID, "clusters[%d].remote_ip_infos is NULL", 3),
                     LLMLINK_PARAM_INVALID);
    assert_string_equal(llmlink_last_error(), "clusters[3].remote_ip_infos is NULL");
    assert_int_equal(llmlink_last_error_status(), LLMLINK_PARAM_INVALID);

    /* a later failure replaces the earlier one */
    llk_err(LLMLINK_TIMEOUT, "peer %s", "10.0.0.1:26000");
    assert_string_equal(llmlink_last_error(), "peer 10.0.0.1:26000");
    assert_int_equal(llmlink_last_error_status(), LLMLINK_TIMEOUT);

    llmlink_clear_error();
    assert_non_null(llmlink_last_error());
    assert_string_equal(llmlink_last_error(), "");
    assert_int_equal(llmlink_last_error_status(), LLMLINK_SUCCESS);
}

static void test_err_long_message_truncated(void **state)
{
    (void)state;
    char *big = test_malloc(3 * LLK_ERR_MSG_MAX);
    memset(big, 'e', 3 * LLK_ERR_MSG_MAX - 1);
    big[3 * LLK_ERR_MSG_MAX - 1] = '\0';
    llk_err(LLMLINK_FAILED, "%s", big);
    assert_int_equal(strlen(llmlink_last_error()), LLK_ERR_MSG_MAX - 1);
    assert_memory_equal(llmlink_last_error(), big, LLK_ERR_MSG_MAX - 1);
    test_free(big);
}

/* What a second thread saw; checked by the main thread (cmocka's asserts
 * must not run off the main thread). */
typedef struct thread_view {
    int initial_not_null;
    char initial_msg[64];
    llmlink_status_t initial_status;
    char own_msg[64];
    llmlink_status_t own_status;
} thread_view_t;

static void *other_thread(void *arg)
{
    thread_view_t *v = arg;
    const char *m = llmlink_last_error();
    v->initial_not_null = m != NULL;
    snprintf(v->initial_msg, sizeof v->initial_msg, "%s", m ? m : "(null)");
    v->initial_status = llmlink_last_error_status();
    llk_err(LLMLINK_NETWORK_ERROR, "from the other thread");
    snprintf(v->own_msg, sizeof v->own_msg, "%s", llmlink_last_error());
    v->own_status = llmlink_last_error_status();
    return NULL;
}

static void test_last_error_is_thread_local(void **state)
{
    (void)state;
    thread_view_t v;
    memset(&v, 0, sizeof v);
    pthread_t t;

    llk_err(LLMLINK_PARAM_INVALID, "from the main thread");
    assert_int_equal(pthread_create(&t, NULL, other_thread, &v), 0);
    assert_int_equal(pthread_join(t, NULL), 0);

    /* the other thread did not see the main thread's error ... */
    assert_true(v.initial_not_null);
    assert_string_equal(v.initial_msg, "");
    assert_int_equal(v.initial_status, LLMLINK_SUCCESS);
    /* ... saw its own ... */
    assert_string_equal(v.own_msg, "from the other thread");
    assert_int_equal(v.own_status, LLMLINK_NETWORK_ERROR);
    /* ... and did not overwrite the main thread's */
    assert_string_equal(llmlink_last_error(), "from the main thread");
    assert_int_equal(llmlink_last_error_status(), LLMLINK_PARAM_INVALID);
}

/* ---- log callback --------------------------------------------------------------- */

typedef struct log_capture {
    int count;
    llmlink_log_level_t level[64];
    char last[2048];
    void *user_seen;
} log_capture_t;

static void capture_fn(llmlink_log_level_t level, const char *message, void *user_data)
{
    log_capture_t *c = user_data;
    if (c->count < (int)ARRAY_LEN(c->level))
        c->level[c->count] = level;
    c->count++;
    c->user_seen = user_data;
    snprintf(c->last, sizeof c->last, "%s", message ? message : "(null)");
}

static int log_setup(void **state)
{
    log_capture_t *c = test_calloc(1, sizeof *c);
    assert_non_null(c);
    *state = c;
    return 0;
}

static int log_teardown(void **state)
{
    /* leave the process-wide sink off for the next test */
    llmlink_set_log_callback(NULL, NULL, LLMLINK_LOG_NONE);
    test_free(*state);
    return 0;
}

/* Messages at or below max_level are delivered, those above are not, for
 * every pair of levels; llk_log_enabled agrees. */
static void test_log_level_filter(void **state)
{
    log_capture_t *c = *state;
    for (int max = LLMLINK_LOG_NONE; max <= LLMLINK_LOG_DEBUG; max++) {
        llmlink_set_log_callback(capture_fn, c, (llmlink_log_level_t)max);
        for (int lvl = LLMLINK_LOG_ERROR; lvl <= LLMLINK_LOG_DEBUG; lvl++) {
            int before = c->count;
            llk_log((llmlink_log_level_t)lvl, "max %d level %d", max, lvl);
            int delivered = c->count - before;
            int want = lvl <= max;
            if (delivered != want)
                fail_msg("max_level %d, level %d: delivered %d times, want %d", max, lvl,
                         delivered, want);
            assert_int_equal(!!llk_log_enabled((llmlink_log_level_t)lvl), want);
            if (want) {
                char text[48];
                snprintf(text, sizeof text, "max %d level %d", max, lvl);
                assert_string_equal(c->last, text);
                assert_int_equal(c->level[c->count - 1], lvl);
                assert_ptr_equal(c->user_seen, c);
            }
        }
    }
}

/* LLMLINK_LOG_NONE is "no logging", never a level a message has. */
static void test_log_level_none_never_delivered(void **state)
{
    log_capture_t *c = *state;
    llmlink_set_log_callback(capture_fn, c, LLMLINK_LOG_DEBUG);
    llk_log(LLMLINK_LOG_NONE, "not a message");
    assert_int_equal(c->count, 0);
    assert_false(llk_log_enabled(LLMLINK_LOG_NONE));
}

static void test_log_null_callback_disables(void **state)
{
    log_capture_t *c = *state;
    llmlink_set_log_callback(capture_fn, c, LLMLINK_LOG_DEBUG);
    LLK_ERROR("first");
    assert_int_equal(c->count, 1);

    llmlink_set_log_callback(NULL, c, LLMLINK_LOG_DEBUG);
    for (int lvl = LLMLINK_LOG_ERROR; lvl <= LLMLINK_LOG_DEBUG; lvl++) {
        assert_false(llk_log_enabled((llmlink_log_level_t)lvl));
        llk_log((llmlink_log_level_t)lvl, "dropped");
    }
    assert_int_equal(c->count, 1);
    assert_string_equal(c->last, "first");
}

/* A new callback replaces the old one; user_data goes with its callback. */
static void test_log_callback_replaced(void **state)
{
    log_capture_t *c = *state;
    log_capture_t other;
    memset(&other, 0, sizeof other);
    llmlink_set_log_callback(capture_fn, c, LLMLINK_LOG_INFO);
    llmlink_set_log_callback(capture_fn, &other, LLMLINK_LOG_INFO);
    LLK_WARN("to the second");
    assert_int_equal(c->count, 0);
    assert_int_equal(other.count, 1);
    assert_ptr_equal(other.user_seen, &other);
    assert_string_equal(other.last, "to the second");
}

static void test_log_macros(void **state)
{
    log_capture_t *c = *state;
    llmlink_set_log_callback(capture_fn, c, LLMLINK_LOG_INFO);
    LLK_ERROR("e %d", 1);
    LLK_WARN("w %s", "2");
    LLK_INFO("i %u", 3u);
    LLK_DEBUG("d %d", 4); /* above INFO: dropped */
    assert_int_equal(c->count, 3);
    assert_int_equal(c->level[0], LLMLINK_LOG_ERROR);
    assert_int_equal(c->level[1], LLMLINK_LOG_WARN);
    assert_int_equal(c->level[2], LLMLINK_LOG_INFO);
    assert_string_equal(c->last, "i 3");

    llmlink_set_log_callback(capture_fn, c, LLMLINK_LOG_DEBUG);
    LLK_DEBUG("d %d", 4);
    assert_int_equal(c->count, 4);
    assert_int_equal(c->level[3], LLMLINK_LOG_DEBUG);
    assert_string_equal(c->last, "d 4");
}

/* A message longer than the internal buffer arrives truncated, not as an
 * overrun (ASan would see that) and not dropped. */
static void test_log_long_message(void **state)
{
    log_capture_t *c = *state;
    char big[1800];
    for (size_t i = 0; i < sizeof big - 1; i++)
        big[i] = (char)('a' + i % 26);
    big[sizeof big - 1] = '\0';
    llmlink_set_log_callback(capture_fn, c, LLMLINK_LOG_ERROR);
    LLK_ERROR("%s", big);
    assert_int_equal(c->count, 1);
    size_t got = strlen(c->last);
    assert_true(got > 0 && got <= strlen(big));
    assert_memory_equal(c->last, big, got);
}

/* ---- version --------------------------------------------------------------------- */

static void test_version(void **state)
{
    (void)state;
    assert_int_equal(llmlink_version_number(), LLMLINK_VERSION_NUMBER);
    assert_int_equal(LLMLINK_VERSION_NUMBER, LLMLINK_VERSION_MAJOR * 10000 +
                                                 LLMLINK_VERSION_MINOR * 100 +
                                                 LLMLINK_VERSION_PATCH);
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", LLMLINK_VERSION_MAJOR, LLMLINK_VERSION_MINOR,
             LLMLINK_VERSION_PATCH);
    assert_non_null(llmlink_version_string());
    assert_string_equal(llmlink_version_string(), want);
    assert_string_equal(llmlink_version_string(), LLMLINK_VERSION_STRING);
}

/* ---- main ------------------------------------------------------------------------ */

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_status_has_name_and_sentence),
        cmocka_unit_test(test_datadist_values),
        cmocka_unit_test(test_own_codes_above_base),
        cmocka_unit_test(test_own_values),
        cmocka_unit_test(test_unknown_status),
        cmocka_unit_test_setup_teardown(test_last_error_initially_empty, error_setup,
                                        error_teardown),
        cmocka_unit_test_setup_teardown(test_err_sets_and_clear_forgets, error_setup,
                                        error_teardown),
        cmocka_unit_test_setup_teardown(test_err_long_message_truncated, error_setup,
                                        error_teardown),
        cmocka_unit_test_setup_teardown(test_last_error_is_thread_local, error_setup,
                                        error_teardown),
        cmocka_unit_test_setup_teardown(test_log_level_filter, log_setup, log_teardown),
        cmocka_unit_test_setup_teardown(test_log_level_none_never_delivered, log_setup,
                                        log_teardown),
        cmocka_unit_test_setup_teardown(test_log_null_callback_disables, log_setup,
                                        log_teardown),
        cmocka_unit_test_setup_teardown(test_log_callback_replaced, log_setup, log_teardown),
        cmocka_unit_test_setup_teardown(test_log_macros, log_setup, log_teardown),
        cmocka_unit_test_setup_teardown(test_log_long_message, log_setup, log_teardown),
        cmocka_unit_test(test_version),
    };
    return cmocka_run_group_tests_name("status: codes, last error, logging, version", tests,
                                       NULL, NULL);
}
