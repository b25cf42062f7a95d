/* main.c - parse options, start the node, run the loop, stop on SIGINT or
 * SIGTERM (read through a signalfd, so no handler and no global flag), or
 * on EOF of stdin with --exit-on-stdin-eof. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "app.h"
#include "config.h"
#include "base/log.h"
#include "base/loop.h"
#include "runtime/node.h"

static void on_signal(struct loop *l, int fd, int ev, void *data)
{
    struct signalfd_siginfo si;
    if (read(fd, &si, sizeof si) == (ssize_t)sizeof si)
        LOGI("signal %u: stopping", si.ssi_signo);
    loop_stop(l);
}

static void on_stdin(struct loop *l, int fd, int ev, void *data)
{
    char b[256];
    ssize_t r = read(fd, b, sizeof b);
    if (r == 0 || (r < 0 && (ev & LOOP_READ))) {
        LOGI("standard input closed: stopping");
        loop_del_fd(l, fd);
        loop_stop(l);
    }
}

int main(int argc, char **argv)
{
    struct config cfg;
    char err[512];
    int r = config_parse(&cfg, argc, argv, err, sizeof err);
    if (r == CFG_EXIT_OK)
        return 0;
    if (r == CFG_BAD) {
        fprintf(stderr, "kv_cnode: %s\n", err);
        return 2;
    }
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    struct loop *l = loop_new();
    if (!l || sfd < 0) {
        fprintf(stderr, "kv_cnode: cannot set up the event loop\n");
        return 1;
    }
    loop_set_busy_wait(l, cfg.busy_wait_us);
    loop_set_coalesce(l, cfg.coalesce_us);
    static struct node n;
    r = node_start(&n, &cfg.node, l);
    struct app_opts ao = {cfg.registry, cfg.counter[0] ? cfg.counter : NULL};
    struct app app;
    if (r == 0 && app_start(&n, &ao, &app) != 0)
        r = 1;
    if (r != 0) {
        node_free(&n);
        loop_free(l);
        return r;
    }
    loop_add_fd(l, sfd, LOOP_READ, on_signal, NULL);
    if (cfg.exit_on_stdin_eof)
        loop_add_fd(l, 0, LOOP_READ, on_stdin, NULL);
    /* Tests and supervisors wait for this line. */
    printf("kv_cnode %s ready on port %u\n", n.name, n.port);
    fflush(stdout);
    loop_run(l);
    node_shutdown(&n);
    node_free(&n);
    loop_free(l);
    LOGI("stopped");
    return 0;
}
