/*
 * The confinement probe: runs as a runner inside the container, tries each operation a
 * confined runner must be refused and each one ordinary runner work needs, and prints one
 * `name=result` line per operation, where result is `ok` or the errno name (`EPERM`).
 * The test harness builds it static (`gcc -static`) and asserts on what it prints.
 *
 * Nothing here changes the host even when confinement fails: /proc/sysrq-trigger is
 * opened, never written; the host name is set only inside the container's UTS namespace;
 * namespaces that do get created are left at once by the child that made them.
 *
 * Environment: PROBE_HOST_PID (a process on the host, to try ptrace on), PROBE_HTTP_PORT and
 * PROBE_HTTP_TOKEN (an HTTP server on the host's 127.0.0.1, for `--network host` runs).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef SYS_fsopen
#define SYS_fsopen 430
#endif
#ifndef SYS_fsconfig
#define SYS_fsconfig 431
#endif
#ifndef SYS_fsmount
#define SYS_fsmount 432
#endif
#ifndef SYS_fspick
#define SYS_fspick 433
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef SYS_io_uring_setup
#define SYS_io_uring_setup 425
#endif

static void report(const char *name, long rc, int err) {
    if (rc >= 0)
        printf("%s=ok\n", name);
    else
        printf("%s=%s\n", name, strerrorname_np(err) ? strerrorname_np(err) : "E?");
    fflush(stdout);
}

/*
 * Runs `call` in a child process and reports its result there: an operation that succeeds
 * (unshare, pivot_root, sethostname) changes only that child, so every operation is tried
 * from the same starting point even in the unconfined control run.
 */
#define TRY(name, call)                                                                   \
    do {                                                                                  \
        int pipe_[2];                                                                     \
        int result_[2] = {1, EIO}; /* failed?, errno */                                   \
        if (pipe(pipe_) != 0) {                                                           \
            report(name, -1, errno);                                                      \
            break;                                                                        \
        }                                                                                 \
        pid_t child_ = fork();                                                            \
        if (child_ == 0) {                                                                \
            errno = 0;                                                                    \
            long rc_ = (long)(call);                                                      \
            int out_[2] = {rc_ < 0, errno};                                               \
            _exit(write(pipe_[1], out_, sizeof out_) == sizeof out_ ? 0 : 1);             \
        }                                                                                 \
        if (child_ < 0) {                                                                 \
            result_[1] = errno;                                                           \
        } else {                                                                          \
            if (read(pipe_[0], result_, sizeof result_) != sizeof result_) {              \
                result_[0] = 1;                                                           \
                result_[1] = EIO;                                                         \
            }                                                                             \
            waitpid(child_, NULL, 0);                                                     \
        }                                                                                 \
        close(pipe_[0]);                                                                  \
        close(pipe_[1]);                                                                  \
        report(name, result_[0] ? -1 : 0, result_[1]);                                    \
    } while (0)

/* clone with `flags` on the raw syscall (the form seccomp sees); the child exits at once. */
static void try_clone(const char *name, unsigned long flags) {
    errno = 0;
    long pid = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
    int err = errno;
    if (pid == 0)
        _exit(0);
    if (pid > 0)
        waitpid((pid_t)pid, NULL, 0);
    report(name, pid, err);
}

static void try_clone3(void) {
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_NEWUSER;
    args.exit_signal = SIGCHLD;
    errno = 0;
    long pid = syscall(SYS_clone3, &args, sizeof args);
    int err = errno;
    if (pid == 0)
        _exit(0);
    if (pid > 0)
        waitpid((pid_t)pid, NULL, 0);
    report("clone3", pid, err);
}

/*
 * The path of CVE-2022-0185: a new user namespace (with a mount namespace) in which the
 * process holds CAP_SYS_ADMIN, then fsopen() of a file system. Done in a child, which
 * reports the first step that fails, or ok when fsopen succeeded.
 */
static void try_userns_fsopen(void) {
    int pipefd[2];
    if (pipe(pipefd) != 0) {
        report("userns_fsopen", -1, errno);
        return;
    }
    pid_t pid = fork();
    if (pid == 0) {
        int result = 0;
        if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0)
            result = errno;
        else if (syscall(SYS_fsopen, "tmpfs", 0) < 0)
            result = errno;
        if (write(pipefd[1], &result, sizeof result) != sizeof result)
            _exit(1);
        _exit(0);
    }
    int result = EINVAL;
    if (pid < 0) {
        result = errno;
    } else {
        if (read(pipefd[0], &result, sizeof result) != sizeof result)
            result = EIO;
        waitpid(pid, NULL, 0);
    }
    close(pipefd[0]);
    close(pipefd[1]);
    report("userns_fsopen", result ? -1 : 0, result);
}

static void try_open_write(const char *name, const char *path) {
    errno = 0;
    int fd = open(path, O_WRONLY);
    int err = errno;
    if (fd >= 0)
        close(fd); /* never write: this is a probe, not an attack */
    report(name, fd, err);
}

/*
 * With CAP_MKNOD a block device node can be made (some kernels' device cgroup checks
 * only opening it, not making it); opening it must still be refused. Reported only when
 * the node could be made.
 */
static void try_open_block(void) {
    const char *path = "/tmp/probe-block-open";
    if (mknod(path, S_IFBLK | 0600, makedev(8, 0)) != 0)
        return;
    errno = 0;
    int fd = open(path, O_RDONLY);
    int err = errno;
    if (fd >= 0)
        close(fd);
    unlink(path);
    report("open_block", fd, err);
}

static void *thread_main(void *arg) {
    *(int *)arg = 42;
    return NULL;
}

static void try_thread(void) {
    pthread_t t;
    int value = 0;
    int rc = pthread_create(&t, NULL, thread_main, &value);
    if (rc == 0)
        rc = pthread_join(t, NULL);
    if (rc == 0 && value != 42)
        rc = EIO;
    report("thread", rc ? -1 : 0, rc);
}

static void try_fork_exec(const char *self) {
    pid_t pid = fork();
    if (pid == 0) {
        char *argv[] = {(char *)self, "child", NULL};
        char *envp[] = {NULL};
        execve(self, argv, envp);
        _exit(127);
    }
    if (pid < 0) {
        report("fork_exec", -1, errno);
        return;
    }
    int status = 0;
    waitpid(pid, &status, 0);
    int ok = WIFEXITED(status) && WEXITSTATUS(status) == 7;
    report("fork_exec", ok ? 0 : -1, ok ? 0 : ECHILD);
}

static void try_loopback_tcp(void) {
    int err = 0;
    int server = socket(AF_INET, SOCK_STREAM, 0), client = -1, conn = -1;
    struct sockaddr_in addr;
    socklen_t len = sizeof addr;
    char buf[8] = {0};
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (server < 0 || bind(server, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        listen(server, 1) != 0 || getsockname(server, (struct sockaddr *)&addr, &len) != 0)
        err = errno;
    if (!err && ((client = socket(AF_INET, SOCK_STREAM, 0)) < 0 ||
                 connect(client, (struct sockaddr *)&addr, sizeof addr) != 0))
        err = errno;
    if (!err && ((conn = accept(server, NULL, NULL)) < 0 || write(client, "ping", 4) != 4 ||
                 read(conn, buf, 4) != 4))
        err = errno ? errno : EIO;
    if (!err && memcmp(buf, "ping", 4) != 0)
        err = EIO;
    report("loopback_tcp", err ? -1 : 0, err);
    if (conn >= 0)
        close(conn);
    if (client >= 0)
        close(client);
    if (server >= 0)
        close(server);
}

static void try_out_write(void) {
    int fd = open("/out/probe.txt", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int err = fd < 0 ? errno : 0;
    if (fd >= 0) {
        if (write(fd, "written by the probe\n", 21) != 21)
            err = errno ? errno : EIO;
        close(fd);
    }
    report("out_write", err ? -1 : 0, err);
}

static void try_http(void) {
    const char *port = getenv("PROBE_HTTP_PORT"), *token = getenv("PROBE_HTTP_TOKEN");
    if (!port || !token)
        return;
    int err = 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)atoi(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    static char response[4096];
    size_t got = 0;
    const char *request = "GET /probe HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        write(fd, request, strlen(request)) != (ssize_t)strlen(request))
        err = errno;
    while (!err && got < sizeof response - 1) {
        ssize_t n = read(fd, response + got, sizeof response - 1 - got);
        if (n < 0)
            err = errno;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    response[got] = 0;
    if (!err && (strncmp(response, "HTTP/1.", 7) != 0 || !strstr(response, token)))
        err = EBADMSG;
    report("http_host", err ? -1 : 0, err);
    if (fd >= 0)
        close(fd);
}

static void print_status_field(const char *field) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    size_t n = strlen(field);
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, field, n) == 0 && line[n] == ':') {
            char *v = line + n + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            v[strcspn(v, "\n")] = 0;
            printf("status_%s=%s\n", field, v);
        }
    }
    if (f)
        fclose(f);
}

/* The CFS quota of the container's cgroup, v1 or v2, as the container sees it. */
static void print_cpu_quota(void) {
    const char *paths[] = {"/sys/fs/cgroup/cpu.max", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
                           "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us"};
    for (size_t i = 0; i < sizeof paths / sizeof *paths; i++) {
        FILE *f = fopen(paths[i], "r");
        char value[64] = {0};
        if (!f)
            continue;
        if (fgets(value, sizeof value, f)) {
            value[strcspn(value, "\n")] = 0;
            printf("cpu_quota=%s\n", value);
        }
        fclose(f);
        return;
    }
    printf("cpu_quota=unknown\n");
}

/* Numeric entries of the container's /proc: the processes its PID namespace sees. */
static void print_visible_pids(void) {
    DIR *proc = opendir("/proc");
    struct dirent *entry;
    int count = 0;
    while (proc && (entry = readdir(proc)) != NULL)
        if (entry->d_name[0] >= '1' && entry->d_name[0] <= '9')
            count++;
    if (proc)
        closedir(proc);
    printf("visible_pids=%d\n", count);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "child") == 0)
        return 7;
    /* In a container it is PID 1 of its own PID namespace. Anywhere else an unconfined
     * mount or pivot_root would act on the host's mount namespace: refuse. */
    if (getpid() != 1) {
        fprintf(stderr, "probe: not PID 1 of a container; refusing to run\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("probe=start\n");

    /* Namespaces. */
    try_clone("clone_newuser", CLONE_NEWUSER);
    try_clone("clone_newns", CLONE_NEWNS);
    try_clone("clone_newnet", CLONE_NEWNET);
    try_clone("clone_newpid", CLONE_NEWPID);
    try_clone3();
    TRY("unshare_newuser", unshare(CLONE_NEWUSER));
    TRY("unshare_newns", unshare(CLONE_NEWNS));
    {
        int fd = open("/proc/self/ns/net", O_RDONLY);
        TRY("setns", setns(fd, 0));
        if (fd >= 0)
            close(fd);
    }

    /* Mounts, old and new API. */
    TRY("mount", mount("none", "/tmp", "tmpfs", 0, NULL));
    TRY("umount2", umount2("/proc", MNT_DETACH));
    TRY("pivot_root", syscall(SYS_pivot_root, "/tmp", "/tmp"));
    TRY("fsopen", syscall(SYS_fsopen, "tmpfs", 0));
    TRY("fsconfig", syscall(SYS_fsconfig, -1, 0, NULL, NULL, 0));
    TRY("fsmount", syscall(SYS_fsmount, -1, 0, 0));
    TRY("fspick", syscall(SYS_fspick, AT_FDCWD, "/", 0));
    TRY("open_tree", syscall(SYS_open_tree, AT_FDCWD, "/", 0));
    TRY("move_mount", syscall(SYS_move_mount, -1, "", AT_FDCWD, "/tmp", 0));
    TRY("mount_setattr", syscall(SYS_mount_setattr, AT_FDCWD, "/", 0, NULL, 0));
    try_userns_fsopen();

    /* Kernel interfaces a runner has no business with. */
    TRY("userfaultfd", syscall(SYS_userfaultfd, O_CLOEXEC));
    TRY("bpf", syscall(SYS_bpf, 0, NULL, 0));
    TRY("perf_event_open", syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0));
    TRY("keyctl", syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3 /* session */, 0));
    TRY("add_key", syscall(SYS_add_key, "user", "probe", "x", 1, -3));
    TRY("request_key", syscall(SYS_request_key, "user", "probe", NULL, 0));
    TRY("init_module", syscall(SYS_init_module, NULL, 0, ""));
    TRY("finit_module", syscall(SYS_finit_module, -1, "", 0));
    TRY("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0));
    TRY("io_uring_setup", syscall(SYS_io_uring_setup, 1, NULL));
    TRY("personality_query", personality(0xffffffff));
    TRY("personality_read_implies_exec", personality(READ_IMPLIES_EXEC));

    /* Host processes and host-wide state. */
    {
        const char *host = getenv("PROBE_HOST_PID");
        if (host) {
            TRY("ptrace_host", ptrace(PTRACE_ATTACH, (pid_t)atoi(host), NULL, NULL));
            TRY("kill_host", kill((pid_t)atoi(host), 0));
        }
    }
    print_visible_pids();
    try_open_write("write_proc_sys", "/proc/sys/kernel/domainname");
    try_open_write("write_sysrq_trigger", "/proc/sysrq-trigger");
    TRY("write_sys", mkdir("/sys/probe", 0755));
    TRY("raw_socket", socket(AF_INET, SOCK_RAW, IPPROTO_ICMP));
    TRY("packet_socket", socket(AF_PACKET, SOCK_RAW, 0));
    TRY("mknod_block", mknod("/tmp/probe-block", S_IFBLK | 0600, makedev(8, 0)));
    try_open_block();
    TRY("mknod_char_null", mknod("/tmp/probe-null", S_IFCHR | 0600, makedev(1, 3)));
    TRY("sethostname", sethostname("probe-renamed", 13));
    TRY("setdomainname", setdomainname("probe", 5));

    /* Ordinary runner work. */
    try_thread();
    try_fork_exec(argv[0]);
    try_loopback_tcp();
    try_out_write();
    try_http();

    print_status_field("CapEff");
    print_status_field("NoNewPrivs");
    print_status_field("Seccomp");
    print_cpu_quota();
    printf("probe=done\n");
    return 0;
}
