/* addr.c - numeric IP literals and endpoints. */
#include "base/addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int llk_addr_from_ip_port(const char *ip, uint16_t port, struct sockaddr_storage *sa,
                          socklen_t *len)
{
    memset(sa, 0, sizeof *sa);
    if (!ip)
        return -1;
    struct sockaddr_in *v4 = (struct sockaddr_in *)sa;
    if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        *len = sizeof *v4;
        return 0;
    }
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)sa;
    if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        *len = sizeof *v6;
        return 0;
    }
    return -1;
}

int llk_addr_parse_endpoint(const char *text, struct sockaddr_storage *sa, socklen_t *len,
                            const char **why)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *port_s;
    if (!text || !*text) {
        *why = "empty endpoint, expected ip:port";
        return -1;
    }
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close || close[1] != ':') {
            *why = "IPv6 endpoint must be written [addr]:port";
            return -1;
        }
        size_t n = (size_t)(close - text - 1);
        if (n == 0 || n >= sizeof host) {
            *why = "bad IPv6 address";
            return -1;
        }
        memcpy(host, text + 1, n);
        host[n] = '\0';
        port_s = close + 2;
    } else {
        const char *colon = strrchr(text, ':');
        if (!colon) {
            *why = "missing ':port'";
            return -1;
        }
        if (memchr(text, ':', (size_t)(colon - text))) {
            *why = "IPv6 endpoint must be written [addr]:port";
            return -1;
        }
        size_t n = (size_t)(colon - text);
        if (n == 0 || n >= sizeof host) {
            *why = "bad IP address";
            return -1;
        }
        memcpy(host, text, n);
        host[n] = '\0';
        port_s = colon + 1;
    }
    /* Digits only: strtoul would accept "+1", " 1" and "0x1". */
    if (!*port_s || strlen(port_s) > 5 || strspn(port_s, "0123456789") != strlen(port_s)) {
        *why = "port must be a decimal number 0..65535";
        return -1;
    }
    unsigned long port = strtoul(port_s, NULL, 10);
    if (port > 65535) {
        *why = "port must be a decimal number 0..65535";
        return -1;
    }
    if (llk_addr_from_ip_port(host, (uint16_t)port, sa, len) != 0) {
        *why = "not an IP address literal";
        return -1;
    }
    if ((sa->ss_family == AF_INET6) != (text[0] == '[')) {
        *why = "brackets are for IPv6 only: write ipv4:port or [ipv6]:port";
        return -1;
    }
    return 0;
}

char *llk_addr_format(const struct sockaddr *sa, char *buf, size_t buflen)
{
    char host[INET6_ADDRSTRLEN];
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &v4->sin_addr, host, sizeof host);
        snprintf(buf, buflen, "%s:%u", host, ntohs(v4->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof host);
        snprintf(buf, buflen, "[%s]:%u", host, ntohs(v6->sin6_port));
    } else {
        snprintf(buf, buflen, "(family %d)", sa->sa_family);
    }
    return buf;
}

uint16_t llk_addr_port(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)sa)->sin_port);
    if (sa->sa_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    return 0;
}

void llk_addr_set_port(struct sockaddr *sa, uint16_t port)
{
    if (sa->sa_family == AF_INET)
        ((struct sockaddr_in *)sa)->sin_port = htons(port);
    else if (sa->sa_family == AF_INET6)
        ((struct sockaddr_in6 *)sa)->sin6_port = htons(port);
}
