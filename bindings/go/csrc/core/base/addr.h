/*
 * addr.h - IP literals and "ip:port" strings to socket addresses and back.
 * Only numeric literals are accepted: llmlink never resolves host names,
 * so linking never blocks on DNS.
 */
#ifndef LLK_ADDR_H
#define LLK_ADDR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* ip: an IPv4 ("127.0.0.1") or IPv6 ("::1", no brackets) literal.
 * Returns 0, or -1 if ip is not a literal. */
int llk_addr_from_ip_port(const char *ip, uint16_t port, struct sockaddr_storage *sa,
                          socklen_t *len);

/* "1.2.3.4:26000", "[::1]:26000". The port must be 0..65535. Returns 0 or
 * -1 (with a reason in *why, a static string). */
int llk_addr_parse_endpoint(const char *text, struct sockaddr_storage *sa, socklen_t *len,
                            const char **why);

/* "1.2.3.4:26000" / "[::1]:26000" into buf; returns buf. */
char *llk_addr_format(const struct sockaddr *sa, char *buf, size_t buflen);

uint16_t llk_addr_port(const struct sockaddr *sa);
void llk_addr_set_port(struct sockaddr *sa, uint16_t port);

#endif /* LLK_ADDR_H */
