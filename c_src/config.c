/* config.c - options and cookie (see config.h).  The cookie follows erl:
 * --cookie, else --cookie-file, else ~/.erlang.cookie, created with 20
 * random uppercase letters and mode 0400 when missing. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"

static const char *usage =
    "usage: kv_cnode [options]\n"
    "  --sname NAME            short node name (default kv; host from hostname)\n"
    "  --name NAME@HOST        long node name\n"
    "  --cookie C              magic cookie\n"
    "  --cookie-file F         read the cookie from F (default ~/.erlang.cookie)\n"
    "  --port N                distribution listen port (0 = any, default)\n"
    "  --net-ticktime S        seconds (default 60)\n"
    "  --setup-time MS         handshake deadline in ms (default 7000)\n"
    "  --connect NODE          connect to NODE at start (repeatable)\n"
    "  --inet6                 connect out over IPv6, as erl -proto_dist inet6_tcp\n"
    "  --registry NAME         registered name of the registry (default Elixir.KV.Registry)\n"
    "  --counter NAME          also serve a counter process registered as NAME\n"
    "  --max-message-bytes N   largest frame accepted (default 134217728)\n"
    "  --max-out-bytes N       output queue cap per connection (default 268435456)\n"
    "  --max-connections N     simultaneous connections (default 1024)\n"
    "  --max-term-depth N      term nesting limit (default 1000)\n"
    "  --busy-wait-us N        poll this long before sleeping when busy (default 30, 0 = off)\n"
    "  --coalesce-us N         under load, sleep up to this long between turns when that\n"
    "                          serves more calls (measured; default 400, 0 = off)\n"
    "  --exit-on-stdin-eof     stop when standard input closes (for supervisors)\n"
    "  --tls-cert F --tls-key F --tls-cacert F   distribution over TLS\n"
    "  --tls-verify peer|none  (default peer)\n"
    "  --tls-min-version 1.2|1.3 (default 1.2)\n"
    "  --log-level error|warning|info|debug (default info)\n"
    "  --help, --version\n";

enum {
    O_SNAME = 256, O_NAME, O_COOKIE, O_COOKIE_FILE, O_PORT, O_TICK, O_SETUP, O_CONNECT,
    O_REGISTRY, O_COUNTER, O_MAXMSG, O_MAXOUT, O_MAXCONN, O_DEPTH, O_STDIN, O_TLS_CERT, O_TLS_KEY,
    O_TLS_CA, O_TLS_VERIFY, O_TLS_MIN, O_LOG, O_HELP, O_VERSION, O_INET6, O_BUSY,
    O_COALESCE
};

static const struct option opts[] = {
    {"sname", required_argument, 0, O_SNAME},
    {"name", required_argument, 0, O_NAME},
    {"cookie", required_argument, 0, O_COOKIE},
    {"cookie-file", required_argument, 0, O_COOKIE_FILE},
    {"port", required_argument, 0, O_PORT},
    {"net-ticktime", required_argument, 0, O_TICK},
    {"setup-time", required_argument, 0, O_SETUP},
    {"connect", required_argument, 0, O_CONNECT},
    {"inet6", no_argument, 0, O_INET6},
    {"registry", required_argument, 0, O_REGISTRY},
    {"counter", required_argument, 0, O_COUNTER},
    {"max-message-bytes", required_argument, 0, O_MAXMSG},
    {"max-out-bytes", required_argument, 0, O_MAXOUT},
    {"max-connections", required_argument, 0, O_MAXCONN},
    {"max-term-depth", required_argument, 0, O_DEPTH},
    {"exit-on-stdin-eof", no_argument, 0, O_STDIN},
    {"busy-wait-us", required_argument, 0, O_BUSY},
    {"coalesce-us", required_argument, 0, O_COALESCE},
    {"tls-cert", required_argument, 0, O_TLS_CERT},
    {"tls-key", required_argument, 0, O_TLS_KEY},
    {"tls-cacert", required_argument, 0, O_TLS_CA},
    {"tls-verify", required_argument, 0, O_TLS_VERIFY},
    {"tls-min-version", required_argument, 0, O_TLS_MIN},
    {"log-level", required_argument, 0, O_LOG},
    {"help", no_argument, 0, O_HELP},
    {"version", no_argument, 0, O_VERSION},
    {0, 0, 0, 0},
};

static int bad(char *err, size_t errlen, const char *fmt, const char *a)
{
    snprintf(err, errlen, fmt, a);
    return CFG_BAD;
}

static int parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!*s || *s == '-')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* Alive names: letters, digits, '_' and '-', as erl accepts for -sname. */
static int valid_alive(const char *s, size_t n)
{
    if (n == 0 || n > 200)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* An IPv6 literal host (kv@::1), as inet6_tcp_dist takes one. */
static int ipv6_literal(const char *s)
{
    struct in6_addr a;
    return inet_pton(AF_INET6, s, &a) == 1;
}

static int valid_host(const char *s)
{
    if (ipv6_literal(s))
        return 1;
    size_t n = strlen(s);
    if (n == 0 || n > 200)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return 0;
    }
    return 1;
}

static int set_name(struct config *cfg, const char *arg, int longnames, char *err, size_t errlen)
{
    const char *at = strchr(arg, '@');
    char host[256];
    size_t alen = at ? (size_t)(at - arg) : strlen(arg);
    if (!valid_alive(arg, alen))
        return bad(err, errlen, "invalid node name '%s': use letters, digits, '_' and '-' before '@'", arg);
    if (at) {
        if (strchr(at + 1, '@') || !valid_host(at + 1))
            return bad(err, errlen, "invalid host in node name '%s'", arg);
        snprintf(host, sizeof host, "%s", at + 1);
    } else {
        if (gethostname(host, sizeof host) != 0)
            snprintf(host, sizeof host, "localhost");
        host[sizeof host - 1] = 0;
        if (!longnames) {
            char *dot = strchr(host, '.');
            if (dot)
                *dot = 0;
        } else if (!strchr(host, '.')) {
            return bad(err, errlen, "--name %s: long names need a fully qualified host (NAME@HOST)", arg);
        }
    }
    if (!longnames && strchr(host, '.'))
        return bad(err, errlen, "--sname %s: the host part must not contain '.' (use --name)", arg);
    memcpy(cfg->node.alive, arg, alen);
    cfg->node.alive[alen] = 0;
    snprintf(cfg->node.name, sizeof cfg->node.name, "%s@%s", cfg->node.alive, host);
    cfg->node.longnames = longnames;
    return CFG_OK;
}

static int cookie_ok(const char *c)
{
    size_t n = strlen(c);
    if (n == 0 || n > 255)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)c[i] < 0x20 || c[i] == 0x7f)
            return 0;
    return 1;
}

static int read_cookie_file(struct config *cfg, const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return bad(err, errlen, "cannot read cookie file %s", path);
    struct stat st;
    if (fstat(fd, &st) == 0 && (st.st_mode & 0077)) {
        /* As erl does: a cookie others can read is no secret. */
        close(fd);
        snprintf(err, errlen, "cookie file %s must be accessible by owner only (mode is %03o; chmod 400 it)",
                 path, (unsigned)(st.st_mode & 0777));
        return CFG_BAD;
    }
    char b[512];
    ssize_t n = read(fd, b, sizeof b - 1);
    close(fd);
    if (n < 0)
        return bad(err, errlen, "cannot read cookie file %s", path);
    b[n] = 0;
    /* erl takes the first line, trailing whitespace dropped */
    char *nl = strpbrk(b, "\r\n");
    if (nl)
        *nl = 0;
    size_t len = strlen(b);
    while (len && (b[len - 1] == ' ' || b[len - 1] == '\t'))
        b[--len] = 0;
    if (!cookie_ok(b))
        return bad(err, errlen, "cookie file %s holds no usable cookie (empty or control characters)", path);
    snprintf(cfg->node.cookie, sizeof cfg->node.cookie, "%s", b);
    return CFG_OK;
}

static int default_cookie(struct config *cfg, char *err, size_t errlen)
{
    const char *home = getenv("HOME");
    char path[1024];
    if (!home || !*home)
        return bad(err, errlen, "%s", "no --cookie given and HOME is not set");
    snprintf(path, sizeof path, "%s/.erlang.cookie", home);
    if (access(path, F_OK) == 0)
        return read_cookie_file(cfg, path, err, errlen);
    /* Create it as erl does: 20 random uppercase letters, mode 0400. */
    unsigned char r[20];
    char c[21];
    if (RAND_bytes(r, sizeof r) != 1)
        return bad(err, errlen, "%s", "cannot get random bytes for a new cookie");
    for (int i = 0; i < 20; i++)
        c[i] = (char)('A' + r[i] % 26);
    c[20] = 0;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0400);
    if (fd < 0)
        return bad(err, errlen, "cannot create cookie file %s", path);
    ssize_t w = write(fd, c, 20);
    close(fd);
    if (w != 20)
        return bad(err, errlen, "cannot write cookie file %s", path);
    snprintf(cfg->node.cookie, sizeof cfg->node.cookie, "%s", c);
    return CFG_OK;
}

int config_parse(struct config *cfg, int argc, char **argv, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->node.ticktime = 60;
    cfg->busy_wait_us = CFG_BUSY_WAIT_US;
    cfg->coalesce_us = CFG_COALESCE_US;
    cfg->node.setuptime_ms = 7000;
    cfg->node.max_message_bytes = 128ull << 20;
    cfg->node.max_out_bytes = 256ull << 20;
    cfg->node.max_connections = 1024;
    cfg->node.max_depth = 1000;
    cfg->node.tls_verify_peer = 1;
    cfg->node.tls_min_version = 12;
    snprintf(cfg->registry, sizeof cfg->registry, "Elixir.KV.Registry");
    const char *sname = NULL, *lname = NULL, *cookie = NULL, *cookie_file = NULL;
    uint64_t v;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        const char *a = optarg;
        switch (c) {
        case O_SNAME: sname = a; break;
        case O_NAME: lname = a; break;
        case O_COOKIE: cookie = a; break;
        case O_COOKIE_FILE: cookie_file = a; break;
        case O_PORT:
            if (parse_u64(a, 0, 65535, &v))
                return bad(err, errlen, "--port %s: expected 0..65535", a);
            cfg->node.port = (unsigned)v;
            break;
        case O_TICK:
            if (parse_u64(a, 1, 86400, &v))
                return bad(err, errlen, "--net-ticktime %s: expected seconds, 1..86400", a);
            cfg->node.ticktime = (unsigned)v;
            break;
        case O_SETUP:
            if (parse_u64(a, 100, 3600000, &v))
                return bad(err, errlen, "--setup-time %s: expected milliseconds, 100..3600000", a);
            cfg->node.setuptime_ms = (unsigned)v;
            break;
        case O_CONNECT:
            if (cfg->node.nconnect == NODE_MAX_CONNECT)
                return bad(err, errlen, "--connect %s: too many --connect options", a);
            if (!strchr(a, '@'))
                return bad(err, errlen, "--connect %s: expected NAME@HOST", a);
            cfg->node.connect[cfg->node.nconnect++] = a;
            break;
        case O_REGISTRY:
            if (!*a || strlen(a) > 255)
                return bad(err, errlen, "--registry '%s': expected an atom of 1..255 characters", a);
            snprintf(cfg->registry, sizeof cfg->registry, "%s", a);
            break;
        case O_COUNTER:
            if (!*a || strlen(a) > 255)
                return bad(err, errlen, "--counter '%s': expected an atom of 1..255 characters", a);
            snprintf(cfg->counter, sizeof cfg->counter, "%s", a);
            break;
        case O_MAXMSG:
            if (parse_u64(a, 1024, 1ull << 31, &v))
                return bad(err, errlen, "--max-message-bytes %s: expected 1024..2147483648", a);
            cfg->node.max_message_bytes = v;
            break;
        case O_MAXOUT:
            if (parse_u64(a, 65536, 1ull << 40, &v))
                return bad(err, errlen, "--max-out-bytes %s: expected at least 65536", a);
            cfg->node.max_out_bytes = v;
            break;
        case O_MAXCONN:
            if (parse_u64(a, 1, 1000000, &v))
                return bad(err, errlen, "--max-connections %s: expected 1..1000000", a);
            cfg->node.max_connections = (unsigned)v;
            break;
        case O_DEPTH:
            if (parse_u64(a, 8, 100000, &v))
                return bad(err, errlen, "--max-term-depth %s: expected 8..100000", a);
            cfg->node.max_depth = (unsigned)v;
            break;
        case O_BUSY:
            if (parse_u64(a, 0, 100000, &v))
                return bad(err, errlen, "--busy-wait-us %s: expected microseconds, 0..100000", a);
            cfg->busy_wait_us = (unsigned)v;
            break;
        case O_COALESCE:
            if (parse_u64(a, 0, 10000, &v))
                return bad(err, errlen, "--coalesce-us %s: expected microseconds, 0..10000", a);
            cfg->coalesce_us = (unsigned)v;
            break;
        case O_STDIN: cfg->exit_on_stdin_eof = 1; break;
        case O_INET6: cfg->node.inet6 = 1; break;
        case O_TLS_CERT: cfg->node.tls_cert = a; break;
        case O_TLS_KEY: cfg->node.tls_key = a; break;
        case O_TLS_CA: cfg->node.tls_cacert = a; break;
        case O_TLS_VERIFY:
            if (strcmp(a, "peer") == 0)
                cfg->node.tls_verify_peer = 1;
            else if (strcmp(a, "none") == 0)
                cfg->node.tls_verify_peer = 0;
            else
                return bad(err, errlen, "--tls-verify %s: expected peer or none", a);
            break;
        case O_TLS_MIN:
            if (strcmp(a, "1.2") == 0)
                cfg->node.tls_min_version = 12;
            else if (strcmp(a, "1.3") == 0)
                cfg->node.tls_min_version = 13;
            else
                return bad(err, errlen, "--tls-min-version %s: expected 1.2 or 1.3", a);
            break;
        case O_LOG: {
            enum log_level lv;
            if (log_parse_level(a, &lv))
                return bad(err, errlen, "--log-level %s: expected error, warning, info or debug", a);
            log_threshold = lv;
            break;
        }
        case O_HELP: fputs(usage, stdout); return CFG_EXIT_OK;
        case O_VERSION: printf("kv_cnode %s\n", KV_VERSION); return CFG_EXIT_OK;
        case ':':
            return bad(err, errlen, "option %s needs a value (see --help)", argv[optind - 1]);
        default:
            return bad(err, errlen, "unknown option '%s' (see --help)", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return bad(err, errlen, "unexpected argument '%s' (see --help)", argv[optind]);
    if (sname && lname)
        return bad(err, errlen, "%s", "give --sname or --name, not both");
    int r = set_name(cfg, lname ? lname : sname ? sname : "kv", lname != NULL, err, errlen);
    if (r)
        return r;
    if ((cfg->node.tls_cert != NULL) != (cfg->node.tls_key != NULL))
        return bad(err, errlen, "%s", "--tls-cert and --tls-key go together");
    if (cfg->node.tls_cert && cfg->node.tls_verify_peer && !cfg->node.tls_cacert)
        return bad(err, errlen, "%s", "--tls-verify peer needs --tls-cacert");
    if (!cfg->node.tls_cert && (cfg->node.tls_cacert))
        return bad(err, errlen, "%s", "--tls-cacert needs --tls-cert and --tls-key");
    if (cfg->counter[0] &&
        (strcmp(cfg->counter, cfg->registry) == 0 || strcmp(cfg->counter, "net_kernel") == 0))
        return bad(err, errlen, "--counter %s: that name is taken (the registry or net_kernel)",
                   cfg->counter);
    if (cookie) {
        if (!cookie_ok(cookie))
            return bad(err, errlen, "%s", "--cookie: the cookie must be 1..255 printable characters");
        snprintf(cfg->node.cookie, sizeof cfg->node.cookie, "%s", cookie);
        return CFG_OK;
    }
    if (cookie_file)
        return read_cookie_file(cfg, cookie_file, err, errlen);
    return default_cookie(cfg, err, errlen);
}
