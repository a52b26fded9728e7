/*
 * test_addr.c - unit tests of IP literal / endpoint handling (core/addr.c).
 *
 * Every address a user gives (listen addresses, ip infos) goes through
 * these functions. They must accept numeric literals only (llmlink never
 * resolves names, so a link never blocks on DNS), insist on brackets for
 * IPv6 endpoints, and take ports 0..65535 written as plain decimal.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

#include "base/addr.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---- fixture ---------------------------------------------------------------- */

/* The output slots every call writes; poisoned before each test so that a
 * field the code forgets to set does not pass by being zero already. */
typedef struct addr_fixture {
    struct sockaddr_storage sa;
    socklen_t len;
    const char *why;
    char text[128];
} addr_fixture_t;

static int setup(void **state)
{
    addr_fixture_t *fx = test_malloc(sizeof *fx);
    assert_non_null(fx);
    memset(fx, 0x5A, sizeof *fx);
    fx->why = NULL;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    test_free(*state);
    return 0;
}

/* ---- helpers ------------------------------------------------------------------ */

static const struct sockaddr *as_sa(const addr_fixture_t *fx)
{
    return (const struct sockaddr *)&fx->sa;
}

static void assert_is_v4(const addr_fixture_t *fx, const char *ip, uint16_t port)
{
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&fx->sa;
    struct in_addr want;
    assert_int_equal(inet_pton(AF_INET, ip, &want), 1);
    assert_int_equal(sin->sin_family, AF_INET);
    assert_int_equal(fx->len, sizeof(struct sockaddr_in));
    assert_int_equal(sin->sin_port, htons(port)); /* network byte order */
    assert_memory_equal(&sin->sin_addr, &want, sizeof want);
}

static void assert_is_v6(const addr_fixture_t *fx, const char *ip, uint16_t port)
{
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&fx->sa;
    struct in6_addr want;
    assert_int_equal(inet_pton(AF_INET6, ip, &want), 1);
    assert_int_equal(sin6->sin6_family, AF_INET6);
    assert_int_equal(fx->len, sizeof(struct sockaddr_in6));
    assert_int_equal(sin6->sin6_port, htons(port));
    assert_memory_equal(&sin6->sin6_addr, &want, sizeof want);
    /* bind()/connect() take these as they are: they must be clean */
    assert_int_equal(sin6->sin6_flowinfo, 0);
    assert_int_equal(sin6->sin6_scope_id, 0);
}

static void assert_endpoint_ok(addr_fixture_t *fx, const char *text)
{
    fx->why = NULL;
    if (llk_addr_parse_endpoint(text, &fx->sa, &fx->len, &fx->why) != 0)
        fail_msg("\"%s\" refused: %s", text, fx->why ? fx->why : "(no reason)");
}

static void assert_endpoint_refused(addr_fixture_t *fx, const char *text)
{
    fx->why = NULL;
    if (llk_addr_parse_endpoint(text, &fx->sa, &fx->len, &fx->why) != -1)
        fail_msg("\"%s\" accepted", text ? text : "(NULL)");
    /* the reason ends up in the option error message */
    assert_non_null(fx->why);
    assert_true(fx->why[0] != '\0');
}

/* ---- llk_addr_from_ip_port ------------------------------------------------------ */

static void test_from_ip_port_v4(void **state)
{
    addr_fixture_t *fx = *state;
    assert_int_equal(llk_addr_from_ip_port("127.0.0.1", 8080, &fx->sa, &fx->len), 0);
    assert_is_v4(fx, "127.0.0.1", 8080);
    assert_int_equal(llk_addr_from_ip_port("255.255.255.255", 65535, &fx->sa, &fx->len), 0);
    assert_is_v4(fx, "255.255.255.255", 65535);
    assert_int_equal(llk_addr_from_ip_port("0.0.0.0", 0, &fx->sa, &fx->len), 0);
    assert_is_v4(fx, "0.0.0.0", 0);
}

static void test_from_ip_port_v6(void **state)
{
    addr_fixture_t *fx = *state;
    static const char *const ips[] = {
        "::1", "::", "fe80::1", "2001:db8::8a2e:370:7334",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::ffff:10.0.0.1",
    };
    for (size_t i = 0; i < ARRAY_LEN(ips); i++) {
        memset(&fx->sa, 0x5A, sizeof fx->sa);
        assert_int_equal(llk_addr_from_ip_port(ips[i], (uint16_t)(1000 + i), &fx->sa, &fx->len),
                         0);
        assert_is_v6(fx, ips[i], (uint16_t)(1000 + i));
    }
}

static void test_from_ip_port_rejects_non_literals(void **state)
{
    addr_fixture_t *fx = *state;
    static const char *const bad[] = {
        "", "localhost", "example.com", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4x",
        "1.2.3.4:80", "[::1]", " 1.2.3.4", "1.2.3.4 ", "::1::", "fe80::1%lo", "0x7f.0.0.1",
    };
    assert_int_equal(llk_addr_from_ip_port(NULL, 1, &fx->sa, &fx->len), -1);
    for (size_t i = 0; i < ARRAY_LEN(bad); i++)
        if (llk_addr_from_ip_port(bad[i], 1, &fx->sa, &fx->len) != -1)
            fail_msg("\"%s\" accepted as an IP literal", bad[i]);
}

/* ---- llk_addr_parse_endpoint ------------------------------------------------------ */

static void test_parse_endpoint_v4(void **state)
{
    addr_fixture_t *fx = *state;
    assert_endpoint_ok(fx, "1.2.3.4:26000");
    assert_is_v4(fx, "1.2.3.4", 26000);
    assert_endpoint_ok(fx, "0.0.0.0:0");
    assert_is_v4(fx, "0.0.0.0", 0);
}

static void test_parse_endpoint_v6(void **state)
{
    addr_fixture_t *fx = *state;
    assert_endpoint_ok(fx, "[::1]:26000");
    assert_is_v6(fx, "::1", 26000);
    assert_endpoint_ok(fx, "[::]:0");
    assert_is_v6(fx, "::", 0);
    assert_endpoint_ok(fx, "[2001:db8::1]:65535");
    assert_is_v6(fx, "2001:db8::1", 65535);
    assert_endpoint_ok(fx, "[::ffff:1.2.3.4]:1");
    assert_is_v6(fx, "::ffff:1.2.3.4", 1);
    /* the longest textual IPv6 address still fits */
    assert_endpoint_ok(fx, "[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535");
    assert_is_v6(fx, "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255", 65535);
}

static void test_parse_endpoint_port_edges(void **state)
{
    addr_fixture_t *fx = *state;
    static const struct {
        const char *port;
        long want; /* -1: refused */
    } cases[] = {
        {"0", 0},       {"1", 1},       {"80", 80},     {"65534", 65534},
        {"65535", 65535}, {"65536", -1}, {"99999", -1}, {"100000", -1},
        {"4294967376", -1}, /* 65616 mod 2^32: no wrap-around */
        {"", -1},       {"-1", -1},     {"+1", -1},     {" 1", -1},
        {"1 ", -1},     {"0x50", -1},   {"80a", -1},    {"8 0", -1},
        {"1e3", -1},    {"80:80", -1},
    };
    char text[64];
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        static const char *const hosts[] = {"10.1.2.3:%s", "[fd00::7]:%s"};
        for (size_t h = 0; h < ARRAY_LEN(hosts); h++) {
            snprintf(text, sizeof text, hosts[h], cases[i].port);
            if (cases[i].want < 0) {
                assert_endpoint_refused(fx, text);
            } else {
                assert_endpoint_ok(fx, text);
                assert_int_equal(llk_addr_port(as_sa(fx)), cases[i].want);
            }
        }
    }
}

static void test_parse_endpoint_rejects_hostnames(void **state)
{
    addr_fixture_t *fx = *state;
    static const char *const bad[] = {
        "localhost:80", "host:80", "example.com:443", "[localhost]:80", "ip6-localhost:80",
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++)
        assert_endpoint_refused(fx, bad[i]);
}

static void test_parse_endpoint_rejects_malformed(void **state)
{
    addr_fixture_t *fx = *state;
    static const char *const bad[] = {
        "",
        "1.2.3.4",          /* no port */
        "1.2.3.4:",         /* empty port */
        ":80",              /* empty address */
        "::1:80",           /* IPv6 without brackets: ambiguous */
        "::1",
        "2001:db8::1:80",
        "[::1]80",          /* ']' not followed by ':' */
        "[::1]",
        "[::1]:",
        "[::1:80",          /* no ']' */
        "::1]:80",
        "[]:80",
        "[[::1]]:80",
        "[::1]]:80",
        "1.2.3.4:80:90",
        " 1.2.3.4:80",
        "1.2.3.4 :80",
        "[ ::1]:80",
        /* a bracketed host longer than any IPv6 literal */
        "[0000:0000:0000:0000:0000:0000:0000:0000:0000:0000:0000]:80",
    };
    assert_endpoint_refused(fx, NULL);
    for (size_t i = 0; i < ARRAY_LEN(bad); i++)
        assert_endpoint_refused(fx, bad[i]);
}

/* Brackets are for IPv6 literals (RFC 3986 IP-literal); llk_addr_format
 * never writes an IPv4 address that way, so accepting "[1.2.3.4]:80" makes
 * the text of an address ambiguous. */
static void test_parse_endpoint_rejects_bracketed_v4(void **state)
{
    addr_fixture_t *fx = *state;
    assert_endpoint_refused(fx, "[1.2.3.4]:80");
}

/* ---- llk_addr_format ------------------------------------------------------------- */

/* Canonical text survives parse -> format unchanged. */
static void test_format_roundtrip(void **state)
{
    addr_fixture_t *fx = *state;
    static const char *const canonical[] = {
        "1.2.3.4:26000", "0.0.0.0:0", "255.255.255.255:65535", "127.0.0.1:1",
        "[::1]:26000", "[::]:0", "[2001:db8::1]:65535", "[fe80::1:2:3:4]:443",
        "[::ffff:1.2.3.4]:1",
    };
    for (size_t i = 0; i < ARRAY_LEN(canonical); i++) {
        assert_endpoint_ok(fx, canonical[i]);
        assert_ptr_equal(llk_addr_format(as_sa(fx), fx->text, sizeof fx->text), fx->text);
        assert_string_equal(fx->text, canonical[i]);
    }
}

/* Non-canonical input formats to the canonical text, which parses back to
 * the same address. */
static void test_format_canonicalizes(void **state)
{
    addr_fixture_t *fx = *state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"[0:0:0:0:0:0:0:1]:5", "[::1]:5"},
        {"[2001:DB8:0:0:0:0:0:1]:7", "[2001:db8::1]:7"},
        {"10.0.0.1:00080", "10.0.0.1:80"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        assert_endpoint_ok(fx, cases[i].in);
        struct sockaddr_storage first = fx->sa;
        llk_addr_format(as_sa(fx), fx->text, sizeof fx->text);
        assert_string_equal(fx->text, cases[i].out);
        char again[sizeof fx->text];
        memcpy(again, fx->text, sizeof again);
        assert_endpoint_ok(fx, again);
        assert_int_equal(fx->sa.ss_family, first.ss_family);
        assert_memory_equal(&fx->sa, &first, fx->len);
    }
}

/* A short buffer is truncated and terminated, never overrun. */
static void test_format_small_buffer(void **state)
{
    addr_fixture_t *fx = *state;
    char buf[16];
    assert_endpoint_ok(fx, "[2001:db8::1]:65535");
    memset(buf, 'Q', sizeof buf);
    llk_addr_format(as_sa(fx), buf, 8);
    assert_int_equal(strlen(buf), 7);
    assert_memory_equal(buf, "[2001:d", 7);
    for (size_t i = 8; i < sizeof buf; i++)
        assert_int_equal(buf[i], 'Q');
}

/* Another family is named, not misread as IPv4/IPv6. */
static void test_format_other_family(void **state)
{
    addr_fixture_t *fx = *state;
    struct sockaddr_un un;
    memset(&un, 0, sizeof un);
    un.sun_family = AF_UNIX;
    llk_addr_format((const struct sockaddr *)&un, fx->text, sizeof fx->text);
    assert_null(strchr(fx->text, ':'));
    char fam[16];
    snprintf(fam, sizeof fam, "%d", AF_UNIX);
    assert_non_null(strstr(fx->text, fam));
}

/* ---- llk_addr_port / llk_addr_set_port -------------------------------------------- */

static void test_port_get_set_v4(void **state)
{
    addr_fixture_t *fx = *state;
    assert_endpoint_ok(fx, "192.0.2.7:0");
    assert_int_equal(llk_addr_port(as_sa(fx)), 0);
    static const uint16_t ports[] = {1, 255, 256, 0x1234, 65535, 0};
    for (size_t i = 0; i < ARRAY_LEN(ports); i++) {
        llk_addr_set_port((struct sockaddr *)&fx->sa, ports[i]);
        assert_int_equal(llk_addr_port(as_sa(fx)), ports[i]);
        assert_is_v4(fx, "192.0.2.7", ports[i]); /* address untouched */
    }
}

static void test_port_get_set_v6(void **state)
{
    addr_fixture_t *fx = *state;
    assert_endpoint_ok(fx, "[2001:db8::42]:26000");
    assert_int_equal(llk_addr_port(as_sa(fx)), 26000);
    static const uint16_t ports[] = {0, 1, 0x1234, 65535};
    for (size_t i = 0; i < ARRAY_LEN(ports); i++) {
        llk_addr_set_port((struct sockaddr *)&fx->sa, ports[i]);
        assert_int_equal(llk_addr_port(as_sa(fx)), ports[i]);
        assert_is_v6(fx, "2001:db8::42", ports[i]);
    }
}

/* Other families have no port: 0, and set_port changes nothing. */
static void test_port_other_family(void **state)
{
    (void)state;
    struct sockaddr_un un, before;
    memset(&un, 0x33, sizeof un);
    un.sun_family = AF_UNIX;
    memcpy(&before, &un, sizeof un);
    assert_int_equal(llk_addr_port((const struct sockaddr *)&un), 0);
    llk_addr_set_port((struct sockaddr *)&un, 80);
    assert_memory_equal(&un, &before, sizeof un);
}

/* ---- main ------------------------------------------------------------------------ */

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_from_ip_port_v4),
        T(test_from_ip_port_v6),
        T(test_from_ip_port_rejects_non_literals),
        T(test_parse_endpoint_v4),
        T(test_parse_endpoint_v6),
        T(test_parse_endpoint_port_edges),
        T(test_parse_endpoint_rejects_hostnames),
        T(test_parse_endpoint_rejects_malformed),
        T(test_parse_endpoint_rejects_bracketed_v4),
        T(test_format_roundtrip),
        T(test_format_canonicalizes),
        T(test_format_small_buffer),
        T(test_format_other_family),
        T(test_port_get_set_v4),
        T(test_port_get_set_v6),
        T(test_port_other_family),
    };
    return cmocka_run_group_tests_name("addr: IP literals and endpoints", tests, NULL, NULL);
}
