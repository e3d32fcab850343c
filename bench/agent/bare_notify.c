// bare_notify [--exec] PROGRAM ARGS...: runs PROGRAM with the open family
// (open, openat, openat2, creat; with --exec, execve too) sent to a seccomp
// user-notification supervisor that
// answers every notification CONTINUE at once, reading nothing, with the
// synchronous wake-up flag set and a thread blocked in NOTIF_RECV. It is the
// cheapest supervisor that sees every open: the floor under any tracer built
// on seccomp user notification, as allow_all is the floor under any seccomp
// filter.
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#endif
#ifndef SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (1UL << 0)
#endif

static void* Supervise(void* arg) {
  int fd = *(int*)arg;
  struct seccomp_notif req;
  struct seccomp_notif_resp resp;
  for (;;) {
    memset(&req, 0, sizeof req);
    if (ioctl(fd, SECCOMP_IOCTL_NOTIF_RECV, &req) != 0) continue;  // the caller died
    memset(&resp, 0, sizeof resp);
    resp.id = req.id;
    resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
    ioctl(fd, SECCOMP_IOCTL_NOTIF_SEND, &resp);
  }
  return NULL;
}

int main(int argc, char** argv) {
  int trap_exec = argc > 1 && strcmp(argv[1], "--exec") == 0;
  if (trap_exec) {
    --argc;
    ++argv;
  }
  if (argc < 2) return 2;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) != 0) return 1;
  pid_t child = fork();
  if (child == 0) {
    struct sock_filter insn[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, trap_exec ? SYS_execve : SYS_openat, 5, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_openat, 4, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_open, 3, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_openat2, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_creat, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
    };
    struct sock_fprog prog = {sizeof insn / sizeof insn[0], insn};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) _exit(1);
    int fd = (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
    char ok = 0;
    if (fd < 0 || write(sv[1], &fd, sizeof fd) != sizeof fd || read(sv[1], &ok, 1) != 1) _exit(1);
    close(fd);
    close(sv[1]);
    execvp(argv[1], argv + 1);
    perror("execvp");
    _exit(127);
  }
  int child_fd = -1;
  if (child < 0 || read(sv[0], &child_fd, sizeof child_fd) != sizeof child_fd) return 1;
  int pidfd = (int)syscall(SYS_pidfd_open, child, 0);
  static int fd;
  fd = (int)syscall(SYS_pidfd_getfd, pidfd, child_fd, 0);
  if (fd < 0) {
    perror("pidfd_getfd");
    return 1;
  }
  ioctl(fd, SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP);
  pthread_t thread;
  if (pthread_create(&thread, NULL, Supervise, &fd) != 0) return 1;
  if (write(sv[0], "X", 1) != 1) return 1;
  signal(SIGTERM, SIG_IGN);  // the benchmark stops nginx by its pid file
  int status = 0;
  while (waitpid(child, &status, 0) < 0) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
