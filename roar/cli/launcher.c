/* The `roar` command: a small compiled launcher (docs/launcher.md).
 *
 * `roar run [OPTIONS] -- CMD...` is handed to a warm per-user recorder
 * (roar/cli/warm.py) when one answers: this process forks and holds the
 * workload itself (so its tty, process group, session, signals, rlimits,
 * cgroup, namespaces, umask and fds stay the user's), the recorder's child
 * runs roar/cli/run.py's run() with this process as its workload. Everything
 * else (every other command, help, no recorder, a nested run, ROAR_WARM=0,
 * Yama ptrace_scope >= 1 for a non-root user, any error before the workload
 * was forked) is exec'd to the Python entry, roar-py next to this program,
 * with the same argv: the behaviour is Python's.
 *
 * Protocol (SOCK_SEQPACKET, abstract name "\0roar-warm-UID-KEY"; KEY hashes
 * everything a recorder could inherit wrongly: warmkey.py's key()):
 *   -> request: NUL-terminated strings: "roarw1", KEY, pid, umask, nargs,
 *      args after "run"..., nenv, env..., nfds, (fd, path)...; SCM_RIGHTS:
 *      cwd, fd 1, fd 2
 *   <- "F"                          fall back to Python (nothing ran)
 *   <- "S" run_id\0 cgroup\0 nprog\0 prog argv\0...  (+ hold socket): fork it
 *      held; cloned straight into the run cgroup directory `cgroup` (made by
 *      roard) where it is not empty and the kernel lets this process
 *   -> "P" pid (+ pidfd)
 *   <- "G"                          release the workload
 *   -> "I" signo " " by_user        a forwarded signal this process got
 *   -> "X" status                   the workload's wait status
 *   <- "C" code                     the run is stored: exit code
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SECCOMP_FILTER_FLAG_NEW_LISTENER
#define SECCOMP_FILTER_FLAG_NEW_LISTENER (1UL << 3)
#endif
#ifndef SECCOMP_FILTER_FLAG_SPEC_ALLOW
#define SECCOMP_FILTER_FLAG_SPEC_ALLOW (1UL << 2)
#endif
/* as roar/capture/_sys.c's: no forced Speculative Store Bypass mitigation */
#define HOLD_FILTER_FLAGS (SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_SPEC_ALLOW)

#define RUN_REFUSED 125
#define MSG_MAX (1 << 16)

extern char **environ;

static char **g_argv;
static sigset_t g_oldmask;

/* Everything not handled here: the Python entry, same argv. */
static void to_python(void)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 16);
    if (n <= 0) {
        dprintf(2, "roar: cannot find the roar launcher's directory: %s\n", strerror(errno));
        _exit(1);
    }
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    strcpy(slash + 1, "roar-py");
    sigprocmask(SIG_SETMASK, &g_oldmask, NULL);
    execv(exe, g_argv);
    dprintf(2, "roar: cannot run %s: %s\n", exe, strerror(errno));
    _exit(1);
}

/* ---- the key (must match warmkey.py's key()) -------------------------------- */

static uint64_t fnv(uint64_t h, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static uint64_t part(uint64_t h, const char *p, size_t n)
{
    return fnv(fnv(h, p, n), "", 1);
}

static int keyed(const char *e)
{
    static const char *prefixes[] = {"ROAR_", "ROARD_", "PYTHON", "LC_", "HOME=", "LANG=", NULL};
    for (int i = 0; prefixes[i]; i++)
        if (!strncmp(e, prefixes[i], strlen(prefixes[i])))
            return 1;
    return 0;
}

static int cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int key(char *out, size_t outlen)
{
    uint64_t h = 14695981039346656037ULL;
    char buf[8192];
    h = part(h, "roarw1", 6);
    int n = snprintf(buf, sizeof buf, "uid=%u", (unsigned)getuid());
    h = part(h, buf, n);
    /* the credentials an exec keeps (ids, groups, the capability sets that are not
     * recomputed, no_new_privs, seccomp) and the root directory: a chroot, `sg`, a
     * dropped capability bounding set get a recorder of their own */
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t r = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (r <= 0 || r == sizeof buf - 1)
        return -1;
    buf[r] = 0;
    static const char *creds[] = {"Uid:", "Gid:", "Groups:", "CapInh:", "CapBnd:", "CapAmb:",
                                  "NoNewPrivs:", "Seccomp:", NULL};
    for (char *line = buf, *end; *line; line = end + 1) {
        end = strchr(line, '\n');
        if (!end)
            break;
        for (int i = 0; creds[i]; i++)
            if (!strncmp(line, creds[i], strlen(creds[i])))
                h = part(h, line, end - line);
    }
    struct stat root;
    if (stat("/", &root) < 0)
        return -1;
    n = snprintf(buf, sizeof buf, "root=%llu:%llu", (unsigned long long)root.st_dev,
                 (unsigned long long)root.st_ino);
    h = part(h, buf, n);
    fd = open("/proc/self/cgroup", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    r = read(fd, buf, sizeof buf);
    close(fd);
    if (r <= 0 || r == sizeof buf)
        return -1;
    h = part(h, buf, r);
    static const char *ns[] = {"/proc/self/ns/pid", "/proc/self/ns/mnt", "/proc/self/ns/cgroup",
                               "/proc/self/ns/net", NULL};
    for (int i = 0; ns[i]; i++) {
        r = readlink(ns[i], buf, sizeof buf - 1);
        if (r <= 0)
            return -1;
        h = part(h, buf, r);
    }
    r = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (r <= 0)
        return -1;
    buf[r] = 0;
    *strrchr(buf, '/') = 0;
    h = part(h, buf, strlen(buf));
    size_t ne = 0, cap = 64;
    char **env = malloc(cap * sizeof *env);
    for (char **e = environ; *e; e++) {
        if (!keyed(*e))
            continue;
        if (ne == cap)
            env = realloc(env, (cap *= 2) * sizeof *env);
        env[ne++] = *e;
    }
    qsort(env, ne, sizeof *env, cmp);
    for (size_t i = 0; i < ne; i++)
        h = part(h, env[i], strlen(env[i]));
    free(env);
    snprintf(out, outlen, "%016llx", (unsigned long long)h);
    return 0;
}

/* ---- a growing buffer of NUL-terminated strings --------------------------- */

struct buf {
    char *p;
    size_t n, cap;
};

static void put(struct buf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        while (b->n + n + 1 > b->cap)
            b->cap = b->cap ? b->cap * 2 : 4096;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, s, n);
    b->p[b->n + n] = 0;
    b->n += n + 1;
}

static void puts0(struct buf *b, const char *s) { put(b, s, strlen(s)); }

static void putnum(struct buf *b, long v)
{
    char t[32];
    snprintf(t, sizeof t, "%ld", v);
    puts0(b, t);
}

/* The files the first process starts with: every fd without close-on-exec
 * naming an absolute path (run.py's _inherited_fds). */
static void inherited_fds(struct buf *b)
{
    DIR *d = opendir("/proc/self/fd");
    struct buf fds = {0};
    long count = 0;
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.')
                continue;
            int fd = atoi(e->d_name);
            if (fd == dirfd(d))
                continue;
            int fl = fcntl(fd, F_GETFD);
            if (fl < 0 || (fl & FD_CLOEXEC))
                continue;
            char path[PATH_MAX + 1], link[64];
            snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
            ssize_t n = readlink(link, path, PATH_MAX);
            if (n <= 0 || path[0] != '/')
                continue;
            putnum(&fds, fd);
            put(&fds, path, n);
            count++;
        }
        closedir(d);
    }
    putnum(b, count);
    if (fds.n) {
        if (b->n + fds.n > b->cap) {
            b->cap = b->n + fds.n;
            b->p = realloc(b->p, b->cap);
        }
        memcpy(b->p + b->n, fds.p, fds.n);
        b->n += fds.n;
    }
    free(fds.p);
}

static int send_msg(int sock, const void *data, size_t n, const int *fds, int nfds)
{
    struct iovec iov = {(void *)data, n};
    struct msghdr m = {0};
    char cbuf[CMSG_SPACE(4 * sizeof(int))];
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    if (nfds) {
        memset(cbuf, 0, sizeof cbuf);
        m.msg_control = cbuf;
        m.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
        memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
    }
    ssize_t r;
    do
        r = sendmsg(sock, &m, MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    return r == (ssize_t)n ? 0 : -1;
}

/* One message; *fd: a passed fd or -1. Returns its length, 0 at EOF, -1 on error. */
static ssize_t recv_msg(int sock, char *data, size_t n, int *fd)
{
    struct iovec iov = {data, n};
    struct msghdr m = {0};
    char cbuf[CMSG_SPACE(sizeof(int))];
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = cbuf;
    m.msg_controllen = sizeof cbuf;
    ssize_t r;
    do
        r = recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
    while (r < 0 && errno == EINTR);
    *fd = -1;
    if (r < 0)
        return -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
            memcpy(fd, CMSG_DATA(c), sizeof(int));
    if (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC))
        return -1;
    return r;
}

/* ---- the workload ---------------------------------------------------------- */

static void exec_error(const char *file, int err)
{
    const char *why = err == ENOENT ? "command not found"
                      : (err == EACCES || err == EPERM) ? "permission denied"
                                                        : strerror(err);
    dprintf(2, "roar: %s: %s\n", file, why);
    _exit(err == ENOENT ? 127 : 126);
}

/* run.py's _execvp: the same execs in the same order, the same error. */
static void exec_path(char **argv, const char *path)
{
    const char *file = argv[0];
    if (strchr(file, '/')) {
        execv(file, argv);
        exec_error(file, errno);
    }
    int saved = 0, last = ENOENT;
    const char *p = path;
    for (;;) {
        const char *end = strchr(p, ':');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        char full[PATH_MAX * 2];
        if (n == 0)
            snprintf(full, sizeof full, "%s", file);
        else
            snprintf(full, sizeof full, "%.*s%s%s", (int)n, p, p[n - 1] == '/' ? "" : "/", file);
        execv(full, argv);
        last = errno;
        if (errno != ENOENT && errno != ENOTDIR && !saved)
            saved = errno;
        if (!end)
            break;
        p = end + 1;
    }
    exec_error(file, saved ? saved : last);
}

/* The pre-image hold's filter (run.py's _install_hold), its listener sent
 * on hold. */
static void install_hold(int hold, const char *prog, size_t len)
{
    struct sock_fprog fprog = {(unsigned short)(len / sizeof(struct sock_filter)),
                               (struct sock_filter *)prog};
    long fd = -1;
    int err = 0;
    if (geteuid() != 0 && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        err = errno;
    if (!err) {
        fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, HOLD_FILTER_FLAGS, &fprog);
        if (fd < 0 && errno == EPERM && geteuid() == 0) {  /* root without CAP_SYS_ADMIN */
            if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
                err = errno;
            else
                fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, HOLD_FILTER_FLAGS, &fprog);
        }
        if (fd < 0 && !err)
            err = errno;
    }
    if (fd >= 0) {
        int f = (int)fd;
        send_msg(hold, "ok", 2, &f, 1);
        close(f);
    } else {
        char msg[256];
        int n = snprintf(msg, sizeof msg, "no: %s", strerror(err));
        send_msg(hold, msg, n, NULL, 0);
    }
    close(hold);
}

/* fork(), the child born in the cgroup directory `cgroup` where the kernel
 * lets this process put it there (clone3 CLONE_INTO_CGROUP, Linux 5.7): no
 * cgroup migration for roard to make, which waits for an RCU grace period.
 * Anything else (an empty name, no such directory, not delegated to this user,
 * an older kernel) is a plain fork: roard then moves the workload. This process
 * has one thread, so the child of the raw clone3 may use libc as fork's. */
static pid_t fork_into(const char *cgroup)
{
#ifdef SYS_clone3
    if (cgroup[0]) {
        int cfd = open(cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (cfd >= 0) {
            struct clone_args_v2 {
                uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack,
                    stack_size, tls, set_tid, set_tid_size, cgroup;
            } a;
            memset(&a, 0, sizeof a);
            a.flags = 0x200000000ULL; /* CLONE_INTO_CGROUP */
            a.exit_signal = SIGCHLD;
            a.cgroup = (uint64_t)cfd;
            long pid = syscall(SYS_clone3, &a, sizeof a);
            close(cfd);
            if (pid >= 0)
                return (pid_t)pid;
        }
    }
#endif
    return fork();
}

static pid_t spawn_held(char *msg, size_t len, int hold, int *go_out, int sock, int sfd)
{
    /* msg: run_id\0 cgroup\0 nprog\0 prog argv0\0 argv1\0 ... */
    char *run_id = msg, *end = msg + len;
    char *cgroup = run_id + strlen(run_id) + 1;
    if (cgroup >= end)
        return -1;
    char *nprog_s = cgroup + strlen(cgroup) + 1;
    if (nprog_s >= end)
        return -1;
    size_t nprog = strtoul(nprog_s, NULL, 10);
    char *prog = nprog_s + strlen(nprog_s) + 1;
    char *a = prog + nprog;
    if (a > end)
        return -1;
    int argc = 0;
    for (char *p = a; p < end; p += strlen(p) + 1)
        argc++;
    if (argc == 0)
        return -1;
    char **argv = calloc(argc + 1, sizeof *argv);
    int i = 0;
    for (char *p = a; p < end; p += strlen(p) + 1)
        argv[i++] = p;
    const char *path = getenv("PATH");
    if (!path)
        path = "/bin:/usr/bin";  /* os.defpath */
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0)
        return -1;
    pid_t pid = fork_into(cgroup);
    if (pid < 0) {
        close(pipefd[0]);
        close(pipefd[1]);
        return -1;
    }
    if (pid == 0) {
        close(pipefd[1]);
        close(sock);
        close(sfd);
        sigprocmask(SIG_SETMASK, &g_oldmask, NULL);
        char go = 0;
        ssize_t r;
        do
            r = read(pipefd[0], &go, 1);
        while (r < 0 && errno == EINTR);
        if (r != 1 || go != 'g')
            _exit(RUN_REFUSED);
        close(pipefd[0]);
        setenv("ROAR_RUN_ID", run_id, 1);
        if (hold >= 0)
            install_hold(hold, prog, nprog);
        exec_path(argv, path);
        _exit(RUN_REFUSED);
    }
    free(argv);
    close(pipefd[0]);
    *go_out = pipefd[1];
    return pid;
}

static int exit_code(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return 1;
}

static int yama_blocks(void)
{
    if (geteuid() == 0)
        return 0;
    int fd = open("/proc/sys/kernel/yama/ptrace_scope", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    char c = '0';
    ssize_t r = read(fd, &c, 1);
    close(fd);
    return r == 1 && c != '0';
}

int main(int argc, char **argv)
{
    g_argv = argv;
    sigprocmask(SIG_SETMASK, NULL, &g_oldmask);
    const char *warm = getenv("ROAR_WARM");
    if (argc < 3 || strcmp(argv[1], "run") != 0 || getenv("ROAR_RUN_ID") ||
        (warm && !strcmp(warm, "0")) || getuid() != geteuid() || yama_blocks())
        to_python();

    /* the signals forwarded to the run, less those started ignored (`nohup
     * roar run ... &`): those stay ignored here (the kernel drops them) and in
     * the workload, which inherits them, as bare (run.py forwarded()) */
    sigset_t mask;
    sigemptyset(&mask);
    const int forwarded[] = {SIGINT, SIGTERM, SIGHUP};
    for (unsigned i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++) {
        struct sigaction sa;
        if (sigaction(forwarded[i], NULL, &sa) != 0 || sa.sa_handler != SIG_IGN)
            sigaddset(&mask, forwarded[i]);
    }
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, NULL);

    char k[32];
    if (key(k, sizeof k) != 0)
        to_python();
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    int alen = snprintf(addr.sun_path + 1, sizeof addr.sun_path - 1, "roar-warm-%u-%s",
                        (unsigned)getuid(), k);
    int sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (sock < 0 ||
        connect(sock, (struct sockaddr *)&addr, offsetof(struct sockaddr_un, sun_path) + 1 + alen))
        to_python();  /* roar-py starts one for next time */
    struct ucred cred;
    socklen_t cl = sizeof cred;
    if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &cl) || cred.uid != getuid())
        to_python();  /* someone else's name: never talk to it */

    struct buf req = {0};
    puts0(&req, "roarw1");
    puts0(&req, k);
    putnum(&req, getpid());
    mode_t um = umask(0);
    umask(um);
    putnum(&req, um);
    putnum(&req, argc - 2);
    for (int i = 2; i < argc; i++)
        puts0(&req, argv[i]);
    long ne = 0;
    for (char **e = environ; *e; e++)
        ne++;
    putnum(&req, ne);
    for (char **e = environ; *e; e++)
        puts0(&req, *e);
    inherited_fds(&req);
    int cwd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (cwd < 0)
        to_python();
    int fds[3] = {cwd, 1, 2};
    if (send_msg(sock, req.p, req.n, fds, 3) != 0)
        to_python();
    close(cwd);
    free(req.p);

    int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
    if (sfd < 0)
        to_python();
    static char msg[MSG_MAX];
    pid_t pid = 0;
    int go = -1, released = 0, reaped = 0, status = 0, alive = 1;
    for (;;) {
        struct pollfd p[2] = {{sfd, POLLIN, 0}, {sock, POLLIN, 0}};
        int n = poll(p, alive ? 2 : 1, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (p[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof si) == sizeof si) {
                if (si.ssi_signo == SIGCHLD) {
                    if (pid > 0 && !reaped && waitpid(pid, &status, WNOHANG) == pid) {
                        reaped = 1;
                        if (!alive)
                            _exit(exit_code(status));
                        char t[32];
                        int tn = snprintf(t, sizeof t, "X%d", status);
                        send_msg(sock, t, tn, NULL, 0);
                    }
                } else {
                    int user = si.ssi_code == SI_USER || si.ssi_code == SI_QUEUE ||
                               si.ssi_code == SI_TKILL;
                    if (alive) {
                        char t[32];
                        int tn = snprintf(t, sizeof t, "I%u %d", si.ssi_signo, user);
                        send_msg(sock, t, tn, NULL, 0);
                    } else if (user && pid > 0 && !reaped) {
                        kill(pid, si.ssi_signo);
                    }
                }
            }
        }
        if (!alive || !(p[1].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        int fd;
        ssize_t r = recv_msg(sock, msg, sizeof msg - 1, &fd);
        if (r <= 0) {  /* the recorder ended */
            alive = 0;
            close(sock);
            if (pid == 0)
                to_python();  /* nothing ran */
            if (!released) {
                kill(pid, SIGKILL);
                while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                    ;
                dprintf(2, "roar: the warm recorder ended before the run started\n");
                _exit(RUN_REFUSED);
            }
            dprintf(2, "roar: the warm recorder ended before the run was stored: roard keeps "
                       "the run from its spool; waiting for the command\n");
            if (reaped)
                _exit(exit_code(status));
            continue;
        }
        msg[r] = 0;
        switch (msg[0]) {
        case 'F':
            if (pid == 0) {
                close(sock);
                close(sfd);
                to_python();
            }
            break;
        case 'S': {
            if (pid != 0)
                break;
            pid = spawn_held(msg + 1, r - 1, fd, &go, sock, sfd);
            if (fd >= 0)
                close(fd);
            int pidfd = pid > 0 ? (int)syscall(SYS_pidfd_open, pid, 0) : -1;
            if (pidfd < 0) {  /* no workload (or no pidfd: kernel < 5.3): Python's path */
                if (pid > 0) {
                    kill(pid, SIGKILL);
                    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                        ;
                }
                close(sock);
                close(sfd);
                to_python();
            }
            char t[32];
            int tn = snprintf(t, sizeof t, "P%d", (int)pid);
            send_msg(sock, t, tn, &pidfd, 1);
            close(pidfd);
            break;
        }
        case 'G':
            if (go >= 0) {
                if (write(go, "g", 1) != 1) { /* it ended: its exit is reported */ }
                close(go);
                go = -1;
                released = 1;
            }
            break;
        case 'C': {
            int code = atoi(msg + 1);
            if (go >= 0)  /* never released: it ends (RUN_REFUSED) */
                close(go);
            if (pid > 0 && !reaped)
                while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                    ;
            _exit(code);
        }
        default:
            break;
        }
    }
    return 1;
}
