// Micro-benchmarks for bench/agent/run: one operation in a loop, prints the
// mean ns per operation on stdout.
//   loops openat N     openat("/etc/hostname") + close
//   loops getppid N    getppid (never monitored: the bare filter price)
//   loops forkexec N   fork + exec /bin/true + wait
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  long n = atol(argv[2]);
  double t0 = now_ns();
  if (!strcmp(argv[1], "openat")) {
    for (long i = 0; i < n; ++i) {
      int fd = openat(AT_FDCWD, "/etc/hostname", O_RDONLY | O_CLOEXEC);
      if (fd < 0) return 1;
      close(fd);
    }
  } else if (!strcmp(argv[1], "getppid")) {
    for (long i = 0; i < n; ++i) syscall(SYS_getppid);
  } else if (!strcmp(argv[1], "forkexec")) {
    for (long i = 0; i < n; ++i) {
      pid_t p = fork();
      if (p == 0) {
        execl("/bin/true", "true", (char*)NULL);
        _exit(127);
      }
      int st;
      waitpid(p, &st, 0);
      if (st != 0) return 1;
    }
  } else {
    return 2;
  }
  printf("%.1f\n", (now_ns() - t0) / n);
  return 0;
}
