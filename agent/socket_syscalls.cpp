#include "agent/socket_syscalls.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include <fmt/format.h>

#include "agent/process_table.h"
#include "agent/procfs.h"

namespace sidetrace::agent {
namespace {

constexpr uint64_t kCapNetBindService = uint64_t{1} << 10;

std::string Endpoint(const event::SocketAddress& a) {
  if (a.family == AF_INET6) return fmt::format("[{}]:{}", a.IpString(), a.port);
  return fmt::format("{}:{}", a.IpString(), a.port);
}

// Fills `fd` from the socket `s` (the agent's duplicate): type, protocol and
// both ends; the name is Falco's "client->server".
void Describe(int s, int num, bool accepted, event::FdInfo* fd) {
  fd->Clear();
  fd->num = num;
  DescribeSocket(s, fd);
  fd->local_is_server = accepted || !fd->connected;
  if (fd->typechar == 'u') {
    fd->name = fd->local.unix_path;
  } else if (fd->connected) {
    fd->name = Endpoint(fd->remote) + "->" + Endpoint(fd->local);
  } else {
    fd->name = Endpoint(fd->local);
  }
}

}  // namespace

SocketOutcome HandleSocketCall(int notif_fd, const seccomp_notif& req, pid_t tid, int pidfd, uint64_t cap_eff,
                               Sys sys, bool emulate) {
  const auto& a = req.data.args;
  const int sockfd = static_cast<int>(a[0]);
  SocketOutcome out;
  auto send = [&](int64_t val, int error, uint32_t flags) {
    seccomp_notif_resp resp{};
    resp.id = req.id;
    resp.val = val;
    resp.error = error;
    resp.flags = flags;
    ioctl(notif_fd, SECCOMP_IOCTL_NOTIF_SEND, &resp);  // ENOENT: the caller is gone
  };
  auto finish = [&](int64_t res) {
    send(res >= 0 ? res : 0, res >= 0 ? 0 : static_cast<int>(res), 0);
    out.res = res;
    out.known = true;
    return out;
  };
  int dup = pidfd >= 0 ? static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, sockfd, 0)) : -1;
  if (dup < 0 && errno == EBADF && emulate) return finish(-EBADF);
  struct CloseDup {
    int& fd;
    ~CloseDup() {
      if (fd >= 0) close(fd);
    }
  } close_dup{dup};
  if (dup >= 0) {
    Describe(dup, sockfd, false, &out.fd);
    out.described = true;
  }
  auto cont = [&] {
    send(0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE);
    out.known = false;
    return out;
  };
  if (!emulate || dup < 0) return cont();
  int type = 0;
  socklen_t olen = sizeof type;
  if (getsockopt(dup, SOL_SOCKET, SO_TYPE, &type, &olen) != 0) return cont();  // ENOTSOCK: the kernel says so

  switch (sys) {
    case Sys::kBind: {
      sockaddr_storage ss{};
      const uint64_t len = a[2];
      if (len < sizeof(sa_family_t) || len > sizeof ss || ReadTraceeMemory(tid, a[1], &ss, len) != 0 ||
          ioctl(notif_fd, SECCOMP_IOCTL_NOTIF_ID_VALID, &req.id) != 0) {
        return cont();
      }
      if (ss.ss_family != AF_INET && ss.ss_family != AF_INET6) return cont();
      uint16_t port = ntohs(ss.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&ss)->sin_port
                                                     : reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
      if (port != 0 && port < 1024 && !(cap_eff & kCapNetBindService)) return cont();
      int rc = bind(dup, reinterpret_cast<sockaddr*>(&ss), static_cast<socklen_t>(len));
      int64_t res = rc == 0 ? 0 : -errno;
      Describe(dup, sockfd, false, &out.fd);
      return finish(res);
    }
    case Sys::kListen: {
      int rc = listen(dup, static_cast<int>(a[1]));
      int64_t res = rc == 0 ? 0 : -errno;
      Describe(dup, sockfd, false, &out.fd);
      return finish(res);
    }
    case Sys::kAccept:
    case Sys::kAccept4: {
      const int flags = sys == Sys::kAccept4 ? static_cast<int>(a[3]) : 0;
      if (flags & ~(SOCK_CLOEXEC | SOCK_NONBLOCK)) return finish(-EINVAL);
      int fl = fcntl(dup, F_GETFL);
      if (fl < 0 || !(fl & O_NONBLOCK)) return cont();  // blocking: never in the agent
      int addrlen = 0;
      if (a[1] != 0) {
        if (ReadTraceeMemory(tid, a[2], &addrlen, sizeof addrlen) != 0 ||
            ioctl(notif_fd, SECCOMP_IOCTL_NOTIF_ID_VALID, &req.id) != 0) {
          return cont();  // the kernel gives the exact EFAULT
        }
        if (addrlen < 0) return finish(-EINVAL);
      }
      sockaddr_storage peer{};
      socklen_t plen = sizeof peer;
      int conn = accept4(dup, reinterpret_cast<sockaddr*>(&peer), &plen, SOCK_CLOEXEC | (flags & SOCK_NONBLOCK));
      if (conn < 0) return finish(-errno);
      struct CloseConn {
        int fd;
        ~CloseConn() { close(fd); }
      } close_conn{conn};
      if (a[1] != 0) {
        size_t n = std::min<size_t>(static_cast<size_t>(addrlen), plen);
        int actual = static_cast<int>(plen);
        if ((n > 0 && WriteTraceeMemory(tid, a[1], &peer, n) != 0) ||
            WriteTraceeMemory(tid, a[2], &actual, sizeof actual) != 0) {
          return finish(-EFAULT);  // as the kernel: the connection is dropped
        }
      }
      seccomp_notif_addfd addfd{};
      addfd.id = req.id;
      addfd.flags = SECCOMP_ADDFD_FLAG_SEND;
      addfd.srcfd = static_cast<uint32_t>(conn);
      addfd.newfd_flags = (flags & SOCK_CLOEXEC) ? O_CLOEXEC : 0;
      int rc = ioctl(notif_fd, SECCOMP_IOCTL_NOTIF_ADDFD, &addfd);
      if (rc < 0) {
        if (errno == ENOENT) {
          out.replied = false;
          return out;
        }
        return finish(-errno);  // EMFILE...: SEND did not answer
      }
      Describe(conn, rc, true, &out.fd);
      out.res = rc;
      out.known = true;
      return out;
    }
    default:
      return cont();
  }
}

}  // namespace sidetrace::agent
