/*
 * test_link_park.c - the source-address key of llmlink.MaxHandshakesPerAddress
 * (core/link/park.c, llk_park_key): IPv4 by its /32, an IPv4-mapped IPv6
 * address as that IPv4 address (a dual-stack listener), IPv6 by its /64
 * (a host picks any address of its /64, so a /128 key would not bound it).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "link/engine.h"

typedef struct key {
    uint8_t b[LLK_SRC_KEY_SIZE];
} key_t_;

static key_t_ key4(const char *ip, uint16_t port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    assert_int_equal(inet_pton(AF_INET, ip, &sa.sin_addr), 1);
    key_t_ k;
    llk_park_key((struct sockaddr *)&sa, k.b);
    return k;
}

static key_t_ key6(const char *ip, uint16_t port)
{
    struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
    assert_int_equal(inet_pton(AF_INET6, ip, &sa.sin6_addr), 1);
    key_t_ k;
    llk_park_key((struct sockaddr *)&sa, k.b);
    return k;
}

static bool same(key_t_ a, key_t_ b)
{
    return memcmp(a.b, b.b, sizeof a.b) == 0;
}

static void test_ipv4_by_address(void **state)
{
    (void)state;
    assert_true(same(key4("127.0.0.2", 1000), key4("127.0.0.2", 2000))); /* port ignored */
    assert_false(same(key4("127.0.0.2", 1000), key4("127.0.0.3", 1000)));
    assert_false(same(key4("10.0.0.1", 1), key4("10.0.1.1", 1)));
}

static void test_ipv4_mapped_is_ipv4(void **state)
{
    (void)state;
    assert_true(same(key6("::ffff:127.0.0.2", 5), key4("127.0.0.2", 6)));
    assert_false(same(key6("::ffff:127.0.0.2", 5), key4("127.0.0.3", 6)));
}

static void test_ipv6_by_64(void **state)
{
    (void)state;
    assert_true(same(key6("2001:db8:1:2::1", 1), key6("2001:db8:1:2:ffff:1:2:3", 2)));
    assert_false(same(key6("2001:db8:1:2::1", 1), key6("2001:db8:1:3::1", 1)));
    assert_true(same(key6("::1", 1), key6("::2", 1))); /* one /64 */
    /* An IPv6 /64 never equals an IPv4 key, whatever its bits. */
    assert_false(same(key6("7f00:2::", 1), key4("127.0.0.2", 1)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ipv4_by_address),
        cmocka_unit_test(test_ipv4_mapped_is_ipv4),
        cmocka_unit_test(test_ipv6_by_64),
    };
    return cmocka_run_group_tests_name("link_park: source-address keys", tests, NULL, NULL);
}
