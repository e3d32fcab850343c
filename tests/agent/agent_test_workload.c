// Small programs run under sidetrace-agent by the agent tests. Each mode
// exercises one kernel path whose events the tests check.
//   vfork                 vfork + exec /bin/true
//   thread-exec PROG      exec PROG from a thread that is not the leader
//   dirfd DIR NAME        openat(open(DIR), NAME) and a relative open after chdir(DIR)
//   storm N               N x (fork + exec /bin/true), waited one by one
//   failexec-open PROG PATH [big]  execv(PROG) that fails, then open PATH:
//                         the process must still be judged as itself;
//                         prints the errno, the fd and its TracerPid. With
//                         "big", PROG may be valid: its arguments exceed
//                         what a 256 KiB stack limit allows (E2BIG)
//   fail-open PATH        open a path that must fail, print the errno
//   read-n PATH N         N x (open, read, close) PATH, print the fd and bytes read
//   read-in-root DIR PATH openat2(DIR, PATH, RESOLVE_IN_ROOT), read, print the fd and bytes
//   fds                   print the fds this process inherited
//   connect PORT          non-blocking and blocking connects to 127.0.0.1:PORT
//   udp-send              UDP datagrams to a socket of its own on 127.0.0.1:
//                         sendto and sendmsg naming it, then connect and
//                         send and sendmsg naming nothing; prints the
//                         datagrams received
//   threads N             N threads each opening /etc/hostname
//   stop-self             raise SIGSTOP, then print "resumed"
//   accept                bind/listen on 127.0.0.1, connect to itself, then a
//                         non-blocking accept4 (with the peer address), one
//                         that finds nothing (EAGAIN) and a blocking accept
//   dup PATH              dup family on PATH, printing each call's result as
//                         "<syscall> <result or -errno> <FD_CLOEXEC>"
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static const char* g_prog;

static void* exec_thread(void* arg) {
  (void)arg;
  char* argv[] = {(char*)g_prog, NULL};
  execv(g_prog, argv);
  perror("execv");
  _exit(99);
}

static void* open_thread(void* arg) {
  (void)arg;
  int fd = open("/etc/hostname", O_RDONLY);
  if (fd >= 0) close(fd);
  return NULL;
}

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  const char* mode = argv[1];
  if (!strcmp(mode, "vfork")) {
    pid_t p = vfork();
    if (p == 0) {
      execl("/bin/true", "true", (char*)NULL);
      _exit(127);
    }
    int st;
    waitpid(p, &st, 0);
    printf("vfork child %d status %d\n", p, st);
    return 0;
  }
  if (!strcmp(mode, "thread-exec") && argc > 2) {
    g_prog = argv[2];
    pthread_t t;
    pthread_create(&t, NULL, exec_thread, NULL);
    pthread_join(t, NULL);
    return 98;
  }
  if (!strcmp(mode, "dirfd") && argc > 3) {
    int d = open(argv[2], O_RDONLY | O_DIRECTORY);
    int fd = openat(d, argv[3], O_RDONLY);
    printf("openat %d\n", fd);
    if (chdir(argv[2]) != 0) return 3;
    char rel[4096];
    snprintf(rel, sizeof rel, "./%s", argv[3]);
    int fd2 = open(rel, O_RDONLY);
    printf("open %d\n", fd2);
    return fd >= 0 && fd2 >= 0 ? 0 : 1;
  }
  if (!strcmp(mode, "storm") && argc > 2) {
    int n = atoi(argv[2]);
    for (int i = 0; i < n; ++i) {
      pid_t p = fork();
      if (p == 0) {
        execl("/bin/true", "true", (char*)NULL);
        _exit(127);
      }
      int st;
      if (p < 0 || waitpid(p, &st, 0) != p || st != 0) return 1;
    }
    return 0;
  }
  if (!strcmp(mode, "failexec-open") && argc > 3) {
    // 41 arguments (argv[0] too) of 4095 bytes: 164 KiB, over the 128 KiB
    // the kernel allows with a stack limit under 512 KiB.
    static char big[4096];
    char* args[42] = {argv[2], NULL};
    if (argc > 4 && !strcmp(argv[4], "big")) {
      struct rlimit stack = {256 * 1024, 256 * 1024};
      getrlimit(RLIMIT_STACK, &stack);
      stack.rlim_cur = 256 * 1024;
      if (setrlimit(RLIMIT_STACK, &stack) != 0) return 1;
      memset(big, 'x', sizeof big - 1);
      for (int i = 0; i <= 40; ++i) args[i] = big;
    }
    execv(argv[2], args);
    int err = errno;
    int fd = open(argv[3], O_RDONLY);
    // Whether the agent still ptraces this process (it must not).
    char status[4096] = {0};
    int sfd = open("/proc/self/status", O_RDONLY);
    if (sfd < 0 || read(sfd, status, sizeof status - 1) < 0) return 1;
    const char* tracer = strstr(status, "TracerPid:");
    printf("exec errno %d fd %d tracer %d\n", err, fd, tracer ? atoi(tracer + 10) : -1);
    return fd >= 0 ? 0 : 1;
  }
  if (!strcmp(mode, "fail-open") && argc > 2) {
    int fd = open(argv[2], O_RDONLY);
    printf("fd %d errno %d\n", fd, fd < 0 ? errno : 0);
    return fd < 0 ? 0 : 1;
  }
  if (!strcmp(mode, "read-n") && argc > 3) {
    long n = atol(argv[3]), bytes = 0;
    int fd = -1;
    for (long i = 0; i < n; ++i) {
      fd = open(argv[2], O_RDONLY | O_CLOEXEC);
      if (fd < 0) {
        printf("open %ld: errno %d\n", i, errno);
        return 1;
      }
      char buf[256];
      ssize_t got = read(fd, buf, sizeof buf);
      if (got > 0) bytes += got;
      close(fd);
    }
    printf("fd %d bytes %ld\n", fd, bytes);
    return 0;
  }
  if (!strcmp(mode, "read-in-root") && argc > 3) {
    int dir = open(argv[2], O_PATH | O_DIRECTORY | O_CLOEXEC);
    struct open_how how = {.flags = O_RDONLY | O_CLOEXEC, .resolve = RESOLVE_IN_ROOT};
    int fd = (int)syscall(SYS_openat2, dir, argv[3], &how, sizeof how);
    if (fd < 0) {
      printf("openat2: errno %d\n", errno);
      return 1;
    }
    char buf[256];
    ssize_t got = read(fd, buf, sizeof buf);
    printf("fd %d bytes %zd\n", fd, got);
    return 0;
  }
  if (!strcmp(mode, "fds")) {
    printf("fds");
    for (int fd = 0; fd < 1024; ++fd) {
      if (fcntl(fd, F_GETFD) >= 0) printf(" %d", fd);
    }
    printf("\n");
    return 0;
  }
  if (!strcmp(mode, "accept")) {
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    printf("bind %d\n", bind(l, (struct sockaddr*)&a, sizeof a));
    printf("listen %d\n", listen(l, 8));
    socklen_t len = sizeof a;
    getsockname(l, (struct sockaddr*)&a, &len);
    printf("port %d\n", ntohs(a.sin_port));
    int c = socket(AF_INET, SOCK_STREAM, 0);
    connect(c, (struct sockaddr*)&a, sizeof a);
    struct sockaddr_in me = {0};
    len = sizeof me;
    getsockname(c, (struct sockaddr*)&me, &len);
    printf("client %d\n", ntohs(me.sin_port));
    struct pollfd p = {l, POLLIN, 0};
    poll(&p, 1, 5000);
    struct sockaddr_in peer = {0};
    len = sizeof peer;
    int s = accept4(l, (struct sockaddr*)&peer, &len, SOCK_CLOEXEC);
    printf("accept4 %d %d %d %d\n", s, ntohs(peer.sin_port), (int)len, fcntl(s, F_GETFD));
    int none = accept(l, NULL, NULL);
    printf("accept %d\n", none < 0 ? -errno : none);
    int b = socket(AF_INET, SOCK_STREAM, 0);
    a.sin_port = 0;
    bind(b, (struct sockaddr*)&a, sizeof a);
    listen(b, 8);
    len = sizeof a;
    getsockname(b, (struct sockaddr*)&a, &len);
    int c2 = socket(AF_INET, SOCK_STREAM, 0);
    connect(c2, (struct sockaddr*)&a, sizeof a);
    int s2 = accept(b, NULL, NULL);
    printf("blocking %d\n", s2);
    return 0;
  }
  if (!strcmp(mode, "dup") && argc > 2) {
    int f = open(argv[2], O_RDONLY | O_CLOEXEC);
#define SHOW(name, call)                                                              \
  do {                                                                                \
    int r_ = (call);                                                                  \
    int e_ = errno;                                                                   \
    printf("%s %d %d\n", name, r_ < 0 ? -e_ : r_, r_ < 0 ? 0 : fcntl(r_, F_GETFD)); \
  } while (0)
    SHOW("dup", dup(f));
    SHOW("dup2", dup2(f, 9));
    SHOW("dup2", dup2(9, 9));
    SHOW("dup2", dup2(77, 8));
    SHOW("dup2", dup2(f, 1 << 30));
    SHOW("dup3", dup3(f, 0, O_CLOEXEC));
    SHOW("dup3", dup3(f, f, 0));
    SHOW("dup3", dup3(f, 10, O_NONBLOCK));
    SHOW("fcntl", fcntl(f, F_DUPFD, 0));
    SHOW("fcntl", fcntl(f, F_DUPFD_CLOEXEC, 0));
    SHOW("fcntl", fcntl(f, F_DUPFD, 20));
#undef SHOW
    return 0;
  }
  if (!strcmp(mode, "connect") && argc > 2) {
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)atoi(argv[2]));
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int rc = connect(s, (struct sockaddr*)&a, sizeof a);
    int err = rc < 0 ? errno : 0;
    struct pollfd p = {s, POLLOUT, 0};
    poll(&p, 1, 5000);
    int soerr = 0;
    socklen_t len = sizeof soerr;
    getsockopt(s, SOL_SOCKET, SO_ERROR, &soerr, &len);
    printf("nonblocking rc %d errno %d so_error %d\n", rc, err, soerr);
    int b = socket(AF_INET, SOCK_STREAM, 0);
    rc = connect(b, (struct sockaddr*)&a, sizeof a);
    printf("blocking rc %d errno %d\n", rc, rc < 0 ? errno : 0);
    return 0;
  }
  if (!strcmp(mode, "udp-send")) {
    int r = socket(AF_INET, SOCK_DGRAM, 0), s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    socklen_t len = sizeof a;
    if (bind(r, (struct sockaddr*)&a, sizeof a) != 0 || getsockname(r, (struct sockaddr*)&a, &len) != 0) return 1;
    struct iovec iov = {"m", 1};
    struct msghdr named = {.msg_name = &a, .msg_namelen = sizeof a, .msg_iov = &iov, .msg_iovlen = 1};
    struct msghdr unnamed = {.msg_iov = &iov, .msg_iovlen = 1};
    if (sendto(s, "t", 1, 0, (struct sockaddr*)&a, sizeof a) != 1 || sendmsg(s, &named, 0) != 1) return 1;
    if (connect(s, (struct sockaddr*)&a, sizeof a) != 0) return 1;
    if (send(s, "u", 1, 0) != 1 || sendmsg(s, &unnamed, 0) != 1) return 1;
    char buf[8];
    int got = 0;
    while (recv(r, buf, sizeof buf, MSG_DONTWAIT) > 0) ++got;
    printf("received %d\n", got);
    return 0;
  }
  if (!strcmp(mode, "threads") && argc > 2) {
    int n = atoi(argv[2]);
    pthread_t t[64];
    if (n > 64) n = 64;
    for (int i = 0; i < n; ++i) pthread_create(&t[i], NULL, open_thread, NULL);
    for (int i = 0; i < n; ++i) pthread_join(t[i], NULL);
    printf("threads %d\n", n);
    return 0;
  }
  if (!strcmp(mode, "stop-self")) {
    raise(SIGSTOP);
    printf("resumed\n");
    return 0;
  }
  return 2;
}
