#include "agent/process_table.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <string>

#include "agent/overlay.h"

namespace sidetrace::agent {
namespace {

std::string ProcPath(pid_t pid, const char* leaf) { return "/proc/" + std::to_string(pid) + "/" + leaf; }

bool SameRootAsAgent(pid_t pid) {
  struct stat mine{}, theirs{};
  if (stat("/", &mine) != 0 || stat(ProcPath(pid, "root").c_str(), &theirs) != 0) return false;
  return mine.st_dev == theirs.st_dev && mine.st_ino == theirs.st_ino;
}

}  // namespace

void FillSockAddr(const sockaddr_storage& ss, event::SocketAddress* a) {
  *a = event::SocketAddress();
  if (ss.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&ss);
    a->family = AF_INET;
    memcpy(a->ip.data(), &in->sin_addr, 4);
    a->port = ntohs(in->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    a->family = AF_INET6;
    memcpy(a->ip.data(), &in6->sin6_addr, 16);
    a->port = ntohs(in6->sin6_port);
  } else if (ss.ss_family == AF_UNIX) {
    const auto* un = reinterpret_cast<const sockaddr_un*>(&ss);
    a->family = AF_UNIX;
    a->unix_path.assign(un->sun_path, strnlen(un->sun_path, sizeof un->sun_path));
  }
}

uint64_t NowNs() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

Proc::~Proc() {
  if (pidfd >= 0) close(pidfd);
}

void ProcessTable::RefreshImage(pid_t pid, Proc* proc) {
  auto& info = *proc->info;
  std::vector<std::string> argv;
  if (ReadCmdline(pid, &argv) && !argv.empty()) {
    info.exe = argv[0];
    info.args.assign(argv.begin() + 1, argv.end());
  }
  std::string s;
  if (Readlink(ProcPath(pid, "exe"), &s)) {
    info.exe_from_memfd = s.rfind("/memfd:", 0) == 0;
    info.exe_upper_layer = ExeOnUpperLayer(pid, s);
    info.exepath = std::move(s);
  }
  proc->exe_id = ExeFileId(pid);
  if (ReadSmallFile(ProcPath(pid, "comm"), 64, &s)) {
    while (!s.empty() && s.back() == '\n') s.pop_back();
    info.name = s;
  }
  proc->expected_image.reset();
}

bool ProcessTable::AdoptExpectedImage(pid_t pid, Proc* proc) {
  std::optional<ExecImage> image = std::move(proc->expected_image);
  proc->expected_image.reset();
  if (!image || !image->file.known() || !proc->exe_id.known() || image->file == proc->exe_id ||
      ExeFileId(pid) != image->file) {
    return false;
  }
  auto& info = *proc->info;
  info.name = std::move(image->name);
  info.exe = std::move(image->exe);
  info.args = std::move(image->args);
  info.exepath = std::move(image->exepath);
  info.exe_upper_layer = image->exe_upper_layer;
  info.exe_from_memfd = false;
  proc->exe_id = image->file;
  return true;
}

void ProcessTable::Refresh(pid_t pid, Proc* proc) {
  auto& info = *proc->info;
  info.pid = pid;
  RefreshImage(pid, proc);
  std::string s;
  if (Readlink(ProcPath(pid, "cwd"), &s)) {
    if (s.empty() || s.back() != '/') s += '/';
    info.cwd = std::move(s);
    proc->cwd_valid = true;
  }
  ProcStatus st;
  if (ReadProcStatus(pid, &st)) {
    info.ppid = st.ppid;
    info.uid = st.euid;
    info.gid = st.egid;
    info.cap_effective = st.cap_eff;
    proc->creds = st;
    proc->creds_valid = true;
    proc->ids_valid = true;
  }
  ProcStat ps;
  if (ReadProcStat(pid, &ps)) {
    info.tty = ps.tty;
    info.sid = ps.sid;
  }
  info.vpid = pid;
  info.start_ns = NowNs();
  proc->same_root = SameRootAsAgent(pid);
}

void DescribeSocket(int s, event::FdInfo* fd) {
  int domain = 0, type = 0;
  socklen_t len = sizeof domain;
  getsockopt(s, SOL_SOCKET, SO_DOMAIN, &domain, &len);
  len = sizeof type;
  getsockopt(s, SOL_SOCKET, SO_TYPE, &type, &len);
  fd->typechar = domain == AF_INET ? '4' : domain == AF_INET6 ? '6' : domain == AF_UNIX ? 'u' : 'o';
  fd->l4proto = type == SOCK_STREAM ? IPPROTO_TCP : type == SOCK_DGRAM ? IPPROTO_UDP : 0;
  sockaddr_storage ss{};
  len = sizeof ss;
  if (getsockname(s, reinterpret_cast<sockaddr*>(&ss), &len) == 0) FillSockAddr(ss, &fd->local);
  len = sizeof ss;
  if (getpeername(s, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
    FillSockAddr(ss, &fd->remote);
    fd->connected = true;
  }
}

bool DescribeFd(pid_t pid, int pidfd, int num, event::FdInfo* fd) {
  std::string target;
  if (!Readlink("/proc/" + std::to_string(pid) + "/fd/" + std::to_string(num), &target)) return false;
  fd->Clear();
  fd->num = num;
  if (!target.empty() && target[0] == '/') {
    fd->name = target;
    struct stat st{};
    fd->typechar = 'f';
    if (stat(("/proc/" + std::to_string(pid) + "/fd/" + std::to_string(num)).c_str(), &st) == 0) {
      if (S_ISDIR(st.st_mode)) fd->typechar = 'd';
    }
    return true;
  }
  if (target.rfind("pipe:", 0) == 0) fd->typechar = 'p';
  else if (target.find("eventfd") != std::string::npos) fd->typechar = 'e';
  else if (target.find("signalfd") != std::string::npos) fd->typechar = 's';
  else if (target.find("eventpoll") != std::string::npos) fd->typechar = 'l';
  else if (target.find("inotify") != std::string::npos) fd->typechar = 'i';
  else if (target.find("timerfd") != std::string::npos) fd->typechar = 't';
  else if (target.rfind("socket:", 0) == 0 && pidfd >= 0) {
    int dup = static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, num, 0));
    if (dup >= 0) {
      DescribeSocket(dup, fd);
      close(dup);
    }
  }
  if (fd->name.empty()) fd->name = target;
  return true;
}

void ProcessTable::LoadFds(pid_t pid, Proc* proc) {
  proc->fds.clear();
  std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = opendir(dir.c_str());
  if (!d) return;
  while (dirent* de = readdir(d)) {
    if (de->d_name[0] == '.') continue;
    int num = atoi(de->d_name);
    event::FdInfo fd;
    if (DescribeFd(pid, proc->pidfd, num, &fd)) proc->fds[num] = std::move(fd);
  }
  closedir(d);
}

Proc* ProcessTable::ByTid(pid_t tid) {
  auto it = threads_.find(tid);
  if (it != threads_.end()) return it->second.get();
  // A new process forked from a known one (the usual first sight: a fork
  // child's first trapped call): AddForkChild, without /proc where the
  // kernel allows, since a new process's /proc entries are slow to
  // instantiate. pidfd_open succeeds only for a thread
  // group's leader, which tells a process from a thread; what fork copies
  // comes from the parent's entry, and what may have changed since (an
  // exec, chdir, set*id) is marked for reading when next needed.
  if (auto known = procs_.find(tid); known != procs_.end()) {
    AddThread(tid, known->second.get());
    return known->second.get();
  }
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, tid, 0));
  if (pidfd >= 0) {
    if (Proc* proc = AddForkChild(tid, pidfd)) return proc;
    close(pidfd);
  }
  ProcStatus st;
  if (!ReadProcStatus(tid, &st)) return nullptr;
  Proc* proc = nullptr;
  auto pit = procs_.find(st.tgid);
  if (pit != procs_.end()) {
    proc = pit->second.get();
  } else {
    proc = AddProcess(st.tgid, nullptr);
    Refresh(st.tgid, proc);
  }
  if (tid != st.tgid) AddThread(tid, proc);
  return proc;
}

Proc* ProcessTable::AddForkChild(pid_t pid, int pidfd) {
  // The kernel's record (PIDFD_GET_INFO) gives the parent and the ids
  // without /proc; older kernels: /proc/PID/stat, and ids when needed.
  PidfdInfo kinfo;
  ProcStat ps;
  const bool have_kinfo = ReadPidfdInfo(pidfd, &kinfo);
  if (!have_kinfo && !ReadProcStat(pid, &ps)) return nullptr;
  auto parent = procs_.find(have_kinfo ? kinfo.ppid : ps.ppid);
  if (parent == procs_.end()) return nullptr;
  Proc* proc = AddProcess(pid, parent->second.get());
  proc->pidfd = pidfd;
  proc->image_stale = true;
  proc->cwd_valid = false;
  proc->creds_valid = false;
  proc->ids_valid = false;
  if (!have_kinfo) {
    proc->info->tty = ps.tty;
    proc->info->sid = ps.sid;
    return proc;
  }
  uint64_t cap_eff = 0;
  if (ReadCapEffective(pid, &cap_eff)) {
    proc->info->uid = kinfo.euid;
    proc->info->gid = kinfo.egid;
    proc->info->cap_effective = cap_eff;
    proc->ids_valid = true;
  }
  // A controlling terminal belongs to a session: a child still in its
  // parent's session has the parent's; one that called setsid() since is
  // read from /proc.
  const pid_t sid = getsid(pid);
  if (sid != proc->info->sid) {
    proc->info->sid = sid;
    proc->info->tty = ReadProcStat(pid, &ps) ? ps.tty : 0;
  }
  return proc;
}

Proc* ProcessTable::AddProcess(pid_t pid, Proc* parent) {
  auto proc = std::make_shared<Proc>();
  proc->info = std::make_shared<event::ProcessInfo>();
  if (parent) {
    *proc->info = *parent->info;
    proc->info->parent = parent->info;
    proc->info->ppid = parent->info->pid;
    proc->creds = parent->creds;
    proc->creds_valid = parent->creds_valid;
    proc->ids_valid = parent->ids_valid;
    proc->exe_id = parent->exe_id;
    proc->same_root = parent->same_root;
    proc->cwd_valid = parent->cwd_valid;
    proc->fds = parent->fds;
  }
  proc->info->pid = pid;
  proc->info->vpid = pid;
  proc->info->start_ns = NowNs();
  proc->threads.push_back(pid);
  procs_[pid] = proc;
  threads_[pid] = proc;
  return proc.get();
}

void ProcessTable::AddThread(pid_t tid, Proc* proc) {
  auto it = procs_.find(proc->info->pid);
  if (it == procs_.end()) return;
  if (threads_.emplace(tid, it->second).second) proc->threads.push_back(tid);
  if (proc->threads.size() < proc->threads_pruned_at) return;
  // Threads whose exit was not reported (no ptrace): drop the dead ones, so
  // that a process churning threads does not grow the table without bound.
  const pid_t pid = proc->info->pid;
  auto& t = proc->threads;
  for (size_t i = 0; i < t.size();) {
    if (t[i] != pid && syscall(SYS_tgkill, pid, t[i], 0) != 0 && errno == ESRCH) {
      threads_.erase(t[i]);
      t[i] = t.back();
      t.pop_back();
    } else {
      ++i;
    }
  }
  proc->threads_pruned_at = std::max<size_t>(64, 2 * t.size());
}

std::shared_ptr<Proc> ProcessTable::RemoveProcess(pid_t pid) {
  auto it = procs_.find(pid);
  if (it == procs_.end()) return nullptr;
  std::shared_ptr<Proc> proc = it->second;
  for (pid_t t : proc->threads) {
    auto tit = threads_.find(t);
    if (tit != threads_.end() && tit->second == proc) threads_.erase(tit);
  }
  procs_.erase(it);
  return proc;
}

Proc* ProcessTable::Find(pid_t pid) const {
  auto it = procs_.find(pid);
  return it == procs_.end() ? nullptr : it->second.get();
}

void ProcessTable::KeepOnlyThread(Proc* proc, pid_t tid) {
  for (pid_t t : proc->threads) {
    if (t != tid) threads_.erase(t);
  }
  proc->threads.assign(1, tid);
}

std::shared_ptr<Proc> ProcessTable::RemoveThread(pid_t tid) {
  auto it = threads_.find(tid);
  if (it == threads_.end()) return nullptr;
  std::shared_ptr<Proc> proc = it->second;
  threads_.erase(it);
  auto& t = proc->threads;
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i] == tid) {
      t[i] = t.back();
      t.pop_back();
      break;
    }
  }
  if (!t.empty()) return nullptr;
  procs_.erase(proc->info->pid);
  return proc;
}

Proc* ProcessTable::Exec(pid_t pid) {
  Proc* proc = ByTid(pid);
  if (!proc) return nullptr;
  // execve kills every other thread and gives the execing one the leader's
  // tid (ptrace(2), "execve(2) under ptrace"); their exits may or may not be
  // reported, so drop them here.
  for (pid_t t : proc->threads) {
    if (t != pid) threads_.erase(t);
  }
  proc->threads.assign(1, pid);
  threads_[pid] = procs_[pid];
  // O_CLOEXEC descriptors are gone; re-read the table lazily.
  std::vector<int> gone;
  for (auto& [num, fd] : proc->fds) {
    std::string target;
    if (!Readlink("/proc/" + std::to_string(pid) + "/fd/" + std::to_string(num), &target)) gone.push_back(num);
  }
  for (int num : gone) proc->fds.erase(num);
  Refresh(pid, proc);
  return proc;
}

}  // namespace sidetrace::agent
