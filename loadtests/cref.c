/* cref: a minimal C pipe relay, the benchmark's measuring stick (loadtests/bench.py builds and runs it).
 * Invariant: one transfer at a time, blocking I/O; every receiver gets exactly the sender's body bytes.
 *
 * Usage: cref --rw|--splice PORT   (listens on 127.0.0.1:PORT; PORT 0 picks one; prints
 * "cref MODE listening on http://127.0.0.1:PORT" once it listens).
 *
 * Just enough of the pipe protocol for the benchmark: PUT/POST with Content-Length or a chunked body
 * is a sender, GET a receiver, `?n=K` in the target asks for K receivers; sender and receivers meet on
 * the same target (path and query). Connections are accepted and their heads read one after another
 * until one target has its sender and n receivers; that transfer then runs in the main thread to its
 * end while later connections wait in the listen backlog. Receivers get 200 with the sender's
 * Content-Length, or Transfer-Encoding: chunked and the sender's own chunk framing byte for byte (it is
 * scanned only to find the body's end, not checked). The sender gets 200 and a short body at the end.
 *   --rw      read() into one 1 MiB buffer, write() it to each receiver.
 *   --splice  splice(2) socket -> pipe, tee(2) into one pipe per extra receiver, splice(2) out to each
 *             receiver; Content-Length bodies only (a chunked body goes the --rw way).
 * No keep-alive, no limits beyond the fixed tables, no error responses: a bad head is closed, and a
 * failed party (short body, bad framing, a receiver gone) ends its transfer, closing everyone.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define BUF_SIZE (1 << 20)
#define HEAD_MAX 16384
#define MAX_PARTIES 256
#define MAX_N 64
#define IO_TIMEOUT_S 60

struct party {
    int fd;
    int sender;            /* 1 for PUT/POST */
    int chunked;           /* Transfer-Encoding: chunked */
    int expect;            /* Expect: 100-continue */
    long long length;      /* Content-Length, -1 if none */
    int n;                 /* ?n=K, 1 by default */
    char target[512];      /* path and query: the meeting key */
    char extra[HEAD_MAX];  /* body bytes that came with the head */
    size_t extra_len;
};

/* Where a chunked body ends: a scan over the framing (sizes, extensions, CRLFs, trailers). */
struct chunk_scan {
    enum { SIZE, EXT, SIZE_LF, DATA, DATA_CR, DATA_LF, TRAILER, TRAILER_LF, DONE } state;
    unsigned long long left; /* data bytes left in the current chunk (SIZE: the size so far) */
    int line_empty;          /* TRAILER: nothing on this line yet */
};

static struct party parties[MAX_PARTIES];
static int nparties;
static char buf[BUF_SIZE];

static int write_all(int fd, const char *p, size_t len) {
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Bytes of buf[0..len) that belong to the body; sets DONE at the final CRLF. -1 on bad framing. */
static long scan_chunks(struct chunk_scan *c, const char *p, size_t len) {
    size_t i = 0;
    while (i < len && c->state != DONE) {
        char ch = p[i];
        switch (c->state) {
        case DATA: {
            size_t take = c->left < len - i ? (size_t)c->left : len - i;
            c->left -= take;
            i += take;
            if (c->left == 0) c->state = DATA_CR;
            continue;
        }
        case SIZE:
            if (isxdigit((unsigned char)ch)) {
                if (c->left >> 60) return -1;
                c->left = c->left * 16 + (unsigned)(isdigit((unsigned char)ch) ? ch - '0' : (ch | 32) - 'a' + 10);
            } else if (ch == ';' || ch == ' ' || ch == '\t') {
                c->state = EXT;
            } else if (ch == '\r') {
                c->state = SIZE_LF;
            } else {
                return -1;
            }
            break;
        case EXT:
            if (ch == '\r') c->state = SIZE_LF;
            break;
        case SIZE_LF:
            if (ch != '\n') return -1;
            if (c->left == 0) {
                c->state = TRAILER;
                c->line_empty = 1;
            } else {
                c->state = DATA;
            }
            break;
        case DATA_CR:
            if (ch != '\r') return -1;
            c->state = DATA_LF;
            break;
        case DATA_LF:
            if (ch != '\n') return -1;
            c->state = SIZE;
            c->left = 0;
            break;
        case TRAILER:
            if (ch == '\r') c->state = TRAILER_LF;
            else c->line_empty = 0;
            break;
        case TRAILER_LF:
            if (ch != '\n') return -1;
            c->state = c->line_empty ? DONE : TRAILER;
            c->line_empty = 1;
            break;
        case DONE:
            break;
        }
        i++;
    }
    return (long)i;
}

/* A header's value in the head (name with its colon, e.g. "content-length:"), or NULL. */
static const char *header(const char *head, const char *name) {
    size_t nl = strlen(name);
    for (const char *line = strstr(head, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
        if (strncasecmp(line + 2, name, nl) == 0) {
            const char *v = line + 2 + nl;
            while (*v == ' ' || *v == '\t') v++;
            return v;
        }
    }
    return NULL;
}

/* Read a request head from a new connection into p; 0 if it is a sender or receiver, -1 if not. */
static int read_head(int fd, struct party *p) {
    char head[HEAD_MAX + 1];
    size_t got = 0;
    char *end = NULL;
    while (!end) {
        if (got == HEAD_MAX) return -1;
        ssize_t r = read(fd, head + got, HEAD_MAX - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        got += (size_t)r;
        head[got] = '\0';
        end = strstr(head, "\r\n\r\n");
    }
    size_t head_len = (size_t)(end + 4 - head);
    memset(p, 0, offsetof(struct party, extra));
    p->fd = fd;
    p->extra_len = got - head_len;
    memcpy(p->extra, head + head_len, p->extra_len);
    end[2] = '\0'; /* the head, its last line's CRLF kept for header() */
    char method[16];
    if (sscanf(head, "%15s %511s", method, p->target) != 2) return -1;
    p->sender = strcmp(method, "PUT") == 0 || strcmp(method, "POST") == 0;
    if (!p->sender && strcmp(method, "GET") != 0) return -1;
    const char *q = strchr(p->target, '?');
    p->n = 1;
    for (; q; q = strchr(q + 1, '&'))
        if (strncmp(q + 1, "n=", 2) == 0) p->n = atoi(q + 3);
    if (p->n < 1 || p->n > MAX_N) return -1;
    const char *v = header(head, "content-length:");
    p->length = v ? atoll(v) : -1;
    v = header(head, "transfer-encoding:");
    p->chunked = v && strncasecmp(v, "chunked", 7) == 0;
    v = header(head, "expect:");
    p->expect = v && strncasecmp(v, "100-continue", 12) == 0;
    if (p->sender && (p->chunked ? p->length != -1 : p->length < 0)) return -1;
    if (!p->sender && p->extra_len) return -1;
    return 0;
}

/* Write len bytes to every receiver; -1 if one of them fails (that ends the transfer). */
static int fan_out(const int *out, int n, const char *p, size_t len) {
    for (int i = 0; i < n; i++)
        if (write_all(out[i], p, len) < 0) return -1;
    return 0;
}

/* The body through one buffer: read(), then write() to each receiver. 0 when the body is complete. */
static int relay_rw(struct party *s, const int *out, int n) {
    struct chunk_scan scan = {SIZE, 0, 0};
    long long left = s->length;
    const char *p = s->extra;
    ssize_t r = (ssize_t)s->extra_len;
    for (;;) {
        size_t use = (size_t)r;
        if (s->chunked) {
            long used = scan_chunks(&scan, p, (size_t)r);
            if (used < 0) return -1;
            use = (size_t)used;
        } else if ((long long)use > left) {
            use = (size_t)left;
        }
        if (use && fan_out(out, n, p, use) < 0) return -1;
        left -= (long long)use;
        if (s->chunked ? scan.state == DONE : left == 0) return 0;
        size_t want = s->chunked || left > BUF_SIZE ? BUF_SIZE : (size_t)left;
        do r = read(s->fd, buf, want);
        while (r < 0 && errno == EINTR);
        if (r <= 0) return -1;
        p = buf;
    }
}

/* The body through pipes: splice socket -> pipe 0, tee pipe 0 -> pipe i, splice pipe i -> receiver i. */
static int relay_splice(struct party *s, const int *out, int n) {
    int pipes[MAX_N][2], made = 0, rc = -1;
    long long left = s->length - (long long)s->extra_len;
    if (s->extra_len && fan_out(out, n, s->extra, s->extra_len) < 0) return -1;
    for (; made < n; made++) {
        if (pipe(pipes[made]) < 0) goto done;
        fcntl(pipes[made][1], F_SETPIPE_SZ, BUF_SIZE); /* a smaller pipe is slower, not wrong */
    }
    while (left > 0) {
        size_t want = left > BUF_SIZE ? BUF_SIZE : (size_t)left;
        ssize_t r = splice(s->fd, NULL, pipes[0][1], NULL, want, SPLICE_F_MOVE | SPLICE_F_MORE);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) goto done;
        /* Each pipe is empty here and as large as pipe 0, so one tee() takes all r bytes. */
        for (int i = 1; i < n; i++)
            if (tee(pipes[0][0], pipes[i][1], (size_t)r, 0) != r) goto done;
        for (int i = 0; i < n; i++) {
            for (ssize_t sent = 0, w; sent < r; sent += w) {
                w = splice(pipes[i][0], NULL, out[i], NULL, (size_t)(r - sent), SPLICE_F_MOVE | SPLICE_F_MORE);
                if (w < 0 && errno == EINTR) w = 0;
                else if (w <= 0) goto done;
            }
        }
        left -= r;
    }
    rc = 0;
done:
    for (int i = 0; i < made; i++) close(pipes[i][0]), close(pipes[i][1]);
    return rc;
}

/* Run the transfer of sender s to the n receivers at rx[]; close every party. */
static void transfer(struct party *s, struct party **rx, int n, int use_splice) {
    int out[MAX_N] = {0};
    char head[256];
    if (s->chunked)
        snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                                    "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    else
        snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                                    "Content-Length: %lld\r\nConnection: close\r\n\r\n", s->length);
    for (int i = 0; i < n; i++) out[i] = rx[i]->fd;
    static const char go_on[] = "HTTP/1.1 100 Continue\r\n\r\n";
    static const char sent[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n"
                               "Connection: close\r\n\r\n[cref] Sent.\r\n";
    int ok = fan_out(out, n, head, strlen(head)) == 0;
    ok = ok && (!s->expect || write_all(s->fd, go_on, sizeof go_on - 1) == 0);
    ok = ok && (use_splice && !s->chunked ? relay_splice(s, out, n) : relay_rw(s, out, n)) == 0;
    if (ok) write_all(s->fd, sent, sizeof sent - 1);
    for (int i = 0; i < n; i++) close(out[i]);
    close(s->fd);
}

/* After parties[last] arrived: if its target now has a sender and n receivers, run that transfer. */
static void maybe_transfer(int last, int use_splice) {
    struct party *s = NULL, *rx[MAX_N];
    int n = 0, idx[MAX_N + 1], k = 0;
    for (int i = 0; i < nparties; i++) {
        struct party *p = &parties[i];
        if (strcmp(p->target, parties[last].target) != 0) continue;
        if (p->sender && !s) s = p, idx[k++] = i;
        else if (!p->sender && n < p->n) rx[n++] = p, idx[k++] = i;
    }
    if (!s || n < s->n) return;
    transfer(s, rx, n, use_splice);
    for (int j = k - 1; j >= 0; j--) parties[idx[j]] = parties[--nparties]; /* idx ascending */
}

int main(int argc, char **argv) {
    if (argc != 3 || (strcmp(argv[1], "--rw") != 0 && strcmp(argv[1], "--splice") != 0)) {
        fprintf(stderr, "usage: %s --rw|--splice PORT\n", argv[0]);
        return 2;
    }
    int use_splice = strcmp(argv[1], "--splice") == 0;
    signal(SIGPIPE, SIG_IGN);
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2]))};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof addr;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(ls, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(ls, 128) < 0 ||
        getsockname(ls, (struct sockaddr *)&addr, &alen) < 0) {
        perror("cref: listen");
        return 1;
    }
    printf("cref %s listening on http://127.0.0.1:%d\n", use_splice ? "splice" : "rw", ntohs(addr.sin_port));
    fflush(stdout);
    struct timeval timeout = {IO_TIMEOUT_S, 0};
    for (;;) {
        int fd = accept(ls, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            perror("cref: accept");
            return 1;
        }
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
        if (nparties == MAX_PARTIES || read_head(fd, &parties[nparties]) < 0) {
            close(fd);
            continue;
        }
        maybe_transfer(nparties++, use_splice);
    }
}
