/*
 * listen.c — see listen.h.
 */
#include "server/listen.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int srv_listen_socket(const struct addrinfo *ai, const emoe_config *cfg, emoe_err *err)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) {
        emoe_errf(err, EMOE_EIO, "cannot listen on %s:%d: socket: %s", cfg->server.host, cfg->server.port,
                  strerror(errno));
        return -1;
    }
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ai->ai_family == AF_INET6) (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 128) != 0) {
        int e = errno;
        close(fd);
        emoe_errf(err, EMOE_EIO, "cannot listen on %s:%d: %s%s", cfg->server.host, cfg->server.port, strerror(e),
                  e == EADDRINUSE ? " (another server, perhaps another emoe, is using this port)" : "");
        return -1;
    }
    return fd;
}
