/* ei_peer.c - a third-party C node built on erl_interface's own client API
 * (ei_connect / ei_reg_send / ei_send / ei_xreceive_msg), used by
 * erl_test/kv_cnode_peers_SUITE to prove kv_cnode interoperates with ei-based
 * C nodes.  It is a test helper, not part of kv_cnode.
 *
 *   ei_peer NODE COOKIE calls NAME    lookup/create/lookup/put/get/... then exit
 *   ei_peer NODE COOKIE hold NAME     register NAME -> own pid, then stay
 *                                     connected, serving commands read from
 *                                     stdin, until stdin closes
 *
 * One line per step on stdout: "OK <step> <result>", "FAIL <step> <why>"
 * (exit 1), or "MSG <term>" for an unexpected message.  A pid prints as
 * "PID <node> <num> <serial> <creation>".  ei_xreceive_msg returns ERL_ERROR
 * on any control message ei does not handle (MONITOR_P among them), so a
 * receive error is reported as "FAIL recv ..." and the program exits 3.
 *
 * hold commands (one per line on stdin): "lookup NAME", "count",
 * "get NAME KEY" (binaries), "put NAME KEY VALUE" (binaries), "self".
 * A call waits 5 s for its reply (EI_PEER_CALL_MS in the environment
 * changes that); ei_connect waits 5 s too.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* libei is the threaded build: erl_errno is per thread */
#ifndef _REENTRANT
#define _REENTRANT
#endif
#include "ei.h"

#define REGISTRY "Elixir.KV.Registry"
static int call_timeout_ms = 5000; /* EI_PEER_CALL_MS overrides */
#define HOLD_LIMIT_S 300 /* a forgotten hold peer ends by itself */

static ei_cnode ec;
static int fd = -1;

static void out(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

static void fail(int code, const char *step, const char *fmt, ...)
{
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    out("FAIL %s %s", step, why);
    exit(code);
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void print_pid(char *dst, size_t n, const erlang_pid *p)
{
    snprintf(dst, n, "PID %s %u %u %u", p->node, p->num, p->serial, p->creation);
}

/* The term at buf[*index] as text (ei_s_print_term), index advanced. */
static char *term_text(const char *buf, int *index)
{
    char *s = NULL;
    if (ei_s_print_term(&s, buf, index) < 0) {
        free(s);
        return strdup("<unprintable>");
    }
    return s;
}

/* Receive one message with ei_xreceive_msg, a poll() deadline in front of
 * it (ei reads exactly the frame's bytes, so poll on the fd is accurate).
 * Ticks are answered by ei and skipped.  Returns 1 with a message in x,
 * 0 on timeout; a receive error ends the program. */
static int recv_msg(erlang_msg *msg, ei_x_buff *x, long deadline)
{
    for (;;) {
        long left = deadline - now_ms();
        if (left <= 0)
            return 0;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return 0;
        x->index = 0;
        int got = ei_xreceive_msg(fd, msg, x);
        if (got == ERL_TICK)
            continue;
        if (got == ERL_ERROR)
            fail(3, "recv", "ei_xreceive_msg error erl_errno=%d (%s)", erl_errno,
                 strerror(erl_errno));
        return 1;
    }
}

/* gen_server call: send {'$gen_call', {Self, Ref}, Req} to a registered
 * name (ei_reg_send) or a pid (ei_send), wait for {Ref, Reply}.  On return
 * reply->buff holds the message and *at indexes Reply inside it. */
static void call(const char *step, const char *to_name, erlang_pid *to_pid,
                 const ei_x_buff *req, ei_x_buff *reply, int *at)
{
    erlang_ref ref;
    ei_x_buff m;
    if (ei_make_ref(&ec, &ref) < 0)
        fail(1, step, "ei_make_ref");
    ei_x_new_with_version(&m);
    ei_x_encode_tuple_header(&m, 3);
    ei_x_encode_atom(&m, "$gen_call");
    ei_x_encode_tuple_header(&m, 2);
    ei_x_encode_pid(&m, ei_self(&ec));
    ei_x_encode_ref(&m, &ref);
    ei_x_append_buf(&m, req->buff, req->index);
    int r = to_name ? ei_reg_send(&ec, fd, (char *)to_name, m.buff, m.index)
                    : ei_send(fd, to_pid, m.buff, m.index);
    ei_x_free(&m);
    if (r < 0)
        fail(1, step, "send failed erl_errno=%d", erl_errno);

    long deadline = now_ms() + call_timeout_ms;
    for (;;) {
        erlang_msg msg;
        if (!recv_msg(&msg, reply, deadline))
            fail(1, step, "no reply within %d ms", call_timeout_ms);
        int i = 0, ver, arity;
        erlang_ref got;
        if (msg.msgtype == ERL_SEND && ei_decode_version(reply->buff, &i, &ver) == 0 &&
            ei_decode_tuple_header(reply->buff, &i, &arity) == 0 && arity == 2 &&
            ei_decode_ref(reply->buff, &i, &got) == 0 && ei_cmp_refs(&got, &ref) == 0) {
            *at = i;
            return;
        }
        i = 0;
        ei_decode_version(reply->buff, &i, &ver);
        char *t = term_text(reply->buff, &i);
        out("MSG type=%ld %s", msg.msgtype, t);
        free(t);
    }
}

static void req_name(ei_x_buff *req, const char *tag, const char *name)
{
    ei_x_new(req);
    ei_x_encode_tuple_header(req, 2);
    ei_x_encode_atom(req, tag);
    ei_x_encode_binary(req, name, (long)strlen(name));
}

/* Reply {ok, Pid} -> 1 and *pid; error -> 0; anything else fails. */
static int decode_ok_pid(const char *step, const ei_x_buff *x, int i, erlang_pid *pid)
{
    char atom[MAXATOMLEN_UTF8];
    int arity, j = i;
    if (ei_decode_atom(x->buff, &j, atom) == 0 && strcmp(atom, "error") == 0)
        return 0;
    j = i;
    if (ei_decode_tuple_header(x->buff, &j, &arity) == 0 && arity == 2 &&
        ei_decode_atom(x->buff, &j, atom) == 0 && strcmp(atom, "ok") == 0 &&
        ei_decode_pid(x->buff, &j, pid) == 0)
        return 1;
    j = i;
    char *t = term_text(x->buff, &j);
    fail(1, step, "unexpected reply %s", t);
    return -1;
}

static int lookup(const char *step, const char *name, erlang_pid *pid)
{
    ei_x_buff req, rep;
    int at;
    req_name(&req, "lookup", name);
    ei_x_new(&rep);
    call(step, REGISTRY, NULL, &req, &rep, &at);
    int r = decode_ok_pid(step, &rep, at, pid);
    ei_x_free(&req);
    ei_x_free(&rep);
    return r;
}

/* The reply as text (for replies that are not pids). */
static char *call_text(const char *step, const char *to_name, erlang_pid *to_pid,
                       ei_x_buff *req)
{
    ei_x_buff rep;
    int at;
    ei_x_new(&rep);
    call(step, to_name, to_pid, req, &rep, &at);
    char *t = term_text(rep.buff, &at);
    ei_x_free(&rep);
    return t;
}

static void expect_text(const char *step, char *got, const char *want)
{
    if (strcmp(got, want) != 0)
        fail(1, step, "got %s want %s", got, want);
    out("OK %s %s", step, got);
    free(got);
}

static void connect_to(const char *node, const char *cookie, const char *alive)
{
    char self[64];
    if (ei_init() != 0)
        fail(1, "init", "ei_init");
    if (!alive) {
        snprintf(self, sizeof self, "eipeer_%ld", (long)getpid());
        alive = self;
    }
    /* any creation will do; vary it so reruns never reuse old pids */
    unsigned creation = (unsigned)(getpid() & 0xffff) + 4;
    if (ei_connect_init(&ec, alive, cookie, creation) < 0)
        fail(1, "init", "ei_connect_init erl_errno=%d", erl_errno);
    fd = ei_connect_tmo(&ec, (char *)node, 5000);
    if (fd < 0)
        fail(1, "connect", "ei_connect %s: %d erl_errno=%d", node, fd, erl_errno);
    char p[600];
    print_pid(p, sizeof p, ei_self(&ec));
    out("OK connect %s", ei_thisnodename(&ec));
    out("OK self %s", p);
}

static int mode_calls(const char *name)
{
    erlang_pid bucket, again;
    char p[600];
    ei_x_buff req;

    if (lookup("lookup", name, &bucket) != 0)
        fail(1, "lookup", "name %s already exists", name);
    out("OK lookup error");

    ei_x_buff rep;
    int at;
    req_name(&req, "create", name);
    ei_x_new(&rep);
    call("create", REGISTRY, NULL, &req, &rep, &at);
    if (decode_ok_pid("create", &rep, at, &bucket) != 1)
        fail(1, "create", "reply error");
    ei_x_free(&req);
    ei_x_free(&rep);
    print_pid(p, sizeof p, &bucket);
    out("OK create %s", p);

    if (lookup("lookup2", name, &again) != 1 || ei_cmp_pids(&again, &bucket) != 0)
        fail(1, "lookup2", "lookup does not give the created bucket");
    out("OK lookup2 same");

    /* put {from_ei, 42, <<"bytes">>} under <<"k">>, get it back byte-exact */
    ei_x_buff val;
    ei_x_new(&val);
    ei_x_encode_tuple_header(&val, 3);
    ei_x_encode_atom(&val, "from_ei");
    ei_x_encode_long(&val, 42);
    ei_x_encode_binary(&val, "bytes", 5);
    ei_x_new(&req);
    ei_x_encode_tuple_header(&req, 3);
    ei_x_encode_atom(&req, "put");
    ei_x_encode_binary(&req, "k", 1);
    ei_x_append_buf(&req, val.buff, val.index);
    expect_text("put", call_text("put", NULL, &bucket, &req), "ok");
    ei_x_free(&req);

    ei_x_new(&req);
    ei_x_encode_tuple_header(&req, 2);
    ei_x_encode_atom(&req, "get");
    ei_x_encode_binary(&req, "k", 1);
    ei_x_new(&rep);
    call("get", NULL, &bucket, &req, &rep, &at);
    if (rep.index - at != val.index || memcmp(rep.buff + at, val.buff, (size_t)val.index) != 0) {
        char *t = term_text(rep.buff, &at);
        fail(1, "get", "value differs: %s", t);
    }
    {
        int j = at;
        char *t = term_text(rep.buff, &j);
        out("OK get %s", t);
        free(t);
    }
    ei_x_free(&req);
    ei_x_free(&rep);
    ei_x_free(&val);

    ei_x_new(&req);
    ei_x_encode_tuple_header(&req, 2);
    ei_x_encode_atom(&req, "get");
    ei_x_encode_binary(&req, "missing", 7);
    expect_text("get_missing", call_text("get_missing", NULL, &bucket, &req), "nil");
    ei_x_free(&req);

    ei_x_new(&req);
    ei_x_encode_atom(&req, "keys");
    {
        char *t = call_text("keys", NULL, &bucket, &req);
        out("OK keys %s", t);
        free(t);
    }
    ei_x_free(&req);

    ei_x_new(&req);
    ei_x_encode_atom(&req, "count");
    {
        char *t = call_text("count", REGISTRY, NULL, &req);
        out("OK count %s", t);
        free(t);
    }
    ei_x_free(&req);

    ei_x_new(&req);
    ei_x_encode_atom(&req, "no_such_call");
    expect_text("unknown", call_text("unknown", REGISTRY, NULL, &req), "{error, unknown_call}");
    ei_x_free(&req);

    /* register a name for our own pid and drop it again */
    char rname[300];
    snprintf(rname, sizeof rname, "%s_ei", name);
    ei_x_new(&req);
    ei_x_encode_tuple_header(&req, 3);
    ei_x_encode_atom(&req, "register");
    ei_x_encode_binary(&req, rname, (long)strlen(rname));
    ei_x_encode_pid(&req, ei_self(&ec));
    expect_text("register", call_text("register", REGISTRY, NULL, &req), "ok");
    ei_x_free(&req);
    if (lookup("lookup_registered", rname, &again) != 1 ||
        ei_cmp_pids(&again, ei_self(&ec)) != 0)
        fail(1, "lookup_registered", "name does not map to our pid");
    out("OK lookup_registered self");
    req_name(&req, "unregister", rname);
    expect_text("unregister", call_text("unregister", REGISTRY, NULL, &req), "ok");
    ei_x_free(&req);

    ei_close_connection(fd);
    out("OK done");
    return 0;
}

static void hold_command(char *line)
{
    char *argv[4] = {0};
    int argc = 0;
    for (char *t = strtok(line, " \t\r\n"); t && argc < 4; t = strtok(NULL, " \t\r\n"))
        argv[argc++] = t;
    if (argc == 0)
        return;
    char p[600];
    erlang_pid pid;
    ei_x_buff req;
    if (strcmp(argv[0], "lookup") == 0 && argc == 2) {
        if (lookup("lookup", argv[1], &pid) == 1) {
            print_pid(p, sizeof p, &pid);
            out("OK lookup %s", p);
        } else {
            out("OK lookup error");
        }
    } else if (strcmp(argv[0], "self") == 0) {
        print_pid(p, sizeof p, ei_self(&ec));
        out("OK self %s", p);
    } else if (strcmp(argv[0], "count") == 0) {
        ei_x_new(&req);
        ei_x_encode_atom(&req, "count");
        char *t = call_text("count", REGISTRY, NULL, &req);
        out("OK count %s", t);
        free(t);
        ei_x_free(&req);
    } else if (strcmp(argv[0], "get") == 0 && argc == 3) {
        if (lookup("get", argv[1], &pid) != 1) {
            out("OK get no_bucket");
            return;
        }
        ei_x_new(&req);
        ei_x_encode_tuple_header(&req, 2);
        ei_x_encode_atom(&req, "get");
        ei_x_encode_binary(&req, argv[2], (long)strlen(argv[2]));
        char *t = call_text("get", NULL, &pid, &req);
        out("OK get %s", t);
        free(t);
        ei_x_free(&req);
    } else if (strcmp(argv[0], "put") == 0 && argc == 4) {
        if (lookup("put", argv[1], &pid) != 1) {
            out("OK put no_bucket");
            return;
        }
        ei_x_new(&req);
        ei_x_encode_tuple_header(&req, 3);
        ei_x_encode_atom(&req, "put");
        ei_x_encode_binary(&req, argv[2], (long)strlen(argv[2]));
        ei_x_encode_binary(&req, argv[3], (long)strlen(argv[3]));
        char *t = call_text("put", NULL, &pid, &req);
        out("OK put %s", t);
        free(t);
        ei_x_free(&req);
    } else {
        out("FAIL command unknown");
    }
}

static int mode_hold(const char *name)
{
    ei_x_buff req;
    ei_x_new(&req);
    ei_x_encode_tuple_header(&req, 3);
    ei_x_encode_atom(&req, "register");
    ei_x_encode_binary(&req, name, (long)strlen(name));
    ei_x_encode_pid(&req, ei_self(&ec));
    expect_text("register", call_text("register", REGISTRY, NULL, &req), "ok");
    ei_x_free(&req);
    out("READY");

    char line[1024];
    size_t used = 0;
    long end = now_ms() + HOLD_LIMIT_S * 1000L;
    ei_x_buff x;
    ei_x_new(&x);
    for (;;) {
        long left = end - now_ms();
        if (left <= 0)
            fail(1, "hold", "still running after %d s", HOLD_LIMIT_S);
        struct pollfd p[2] = {{.fd = 0, .events = POLLIN}, {.fd = fd, .events = POLLIN}};
        int r = poll(p, 2, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            fail(1, "hold", "poll: %s", strerror(errno));
        if (p[1].revents) {
            /* nothing is expected here but ticks: anything else is printed,
             * and a control message ei cannot take ends the program */
            erlang_msg msg;
            x.index = 0;
            int got = ei_xreceive_msg(fd, &msg, &x);
            if (got == ERL_ERROR)
                fail(3, "recv", "ei_xreceive_msg error erl_errno=%d (%s)", erl_errno,
                     strerror(erl_errno));
            if (got == ERL_MSG) {
                int i = 0, ver;
                ei_decode_version(x.buff, &i, &ver);
                char *t = term_text(x.buff, &i);
                out("MSG type=%ld %s", msg.msgtype, t);
                free(t);
            }
        }
        if (p[0].revents) {
            ssize_t n = read(0, line + used, sizeof line - 1 - used);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break; /* stdin closed: leave */
            used += (size_t)n;
            line[used] = 0;
            char *nl;
            while ((nl = memchr(line, '\n', used))) {
                *nl = 0;
                size_t take = (size_t)(nl - line) + 1;
                hold_command(line);
                memmove(line, line + take, used - take);
                used -= take;
                line[used] = 0;
            }
            if (used == sizeof line - 1)
                used = 0; /* over-long line: dropped */
        }
    }
    ei_x_free(&x);
    ei_close_connection(fd);
    out("OK bye");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 5 || (strcmp(argv[3], "calls") != 0 && strcmp(argv[3], "hold") != 0)) {
        fprintf(stderr, "usage: %s NODE COOKIE calls|hold NAME [ALIVE]\n", argv[0]);
        return 2;
    }
    const char *ms = getenv("EI_PEER_CALL_MS");
    if (ms && atoi(ms) > 0)
        call_timeout_ms = atoi(ms);
    connect_to(argv[1], argv[2], argc > 5 ? argv[5] : NULL);
    return strcmp(argv[3], "calls") == 0 ? mode_calls(argv[4]) : mode_hold(argv[4]);
}
