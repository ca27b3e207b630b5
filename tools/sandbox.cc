#include "tools/sandbox.h"

#include <fcntl.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cerrno>
#include <cstdio>
#include <initializer_list>

namespace mailark {

bool install_sandbox(bool files_read_only) {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (!ctx) return false;
  bool ok = true;
  auto deny = [&](int call, unsigned n = 0, scmp_arg_cmp cmp = {}) {
    if (call == __NR_SCMP_ERROR) return;  // not on this architecture
    ok = ok && (n == 0 ? seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), call, 0)
                       : seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), call, 1, cmp)) == 0;
  };
  // The network: no new socket (the one it was given is the only one it needs).
  for (int call : {SCMP_SYS(socket), SCMP_SYS(socketpair), SCMP_SYS(connect), SCMP_SYS(bind), SCMP_SYS(listen),
                   SCMP_SYS(accept), SCMP_SYS(accept4)})
    deny(call);
  // Programs and processes.
  for (int call : {SCMP_SYS(execve), SCMP_SYS(execveat), SCMP_SYS(fork), SCMP_SYS(vfork)}) deny(call);
  // io_uring would do all of this (and more) without the calls above: its operations are not system
  // calls a filter sees.
  for (int call : {SCMP_SYS(io_uring_setup), SCMP_SYS(io_uring_enter), SCMP_SYS(io_uring_register)}) deny(call);
  // Other processes (the mailark server is the same user): no signal but to itself, no memory of
  // theirs. And what a worker run as root could do to the machine.
  for (int call : {SCMP_SYS(tkill), SCMP_SYS(pidfd_open), SCMP_SYS(pidfd_send_signal), SCMP_SYS(pidfd_getfd),
                   SCMP_SYS(process_vm_readv), SCMP_SYS(process_vm_writev), SCMP_SYS(mount), SCMP_SYS(umount2),
                   SCMP_SYS(pivot_root), SCMP_SYS(chroot), SCMP_SYS(unshare), SCMP_SYS(setns), SCMP_SYS(init_module),
                   SCMP_SYS(finit_module), SCMP_SYS(delete_module), SCMP_SYS(reboot), SCMP_SYS(kexec_load),
                   SCMP_SYS(bpf), SCMP_SYS(perf_event_open), SCMP_SYS(keyctl), SCMP_SYS(add_key),
                   SCMP_SYS(request_key), SCMP_SYS(swapon), SCMP_SYS(swapoff), SCMP_SYS(sethostname),
                   SCMP_SYS(setdomainname), SCMP_SYS(acct)})
    deny(call);
#if !defined(__SANITIZE_ADDRESS__)
  // A new process is a clone without CLONE_THREAD (threads stay allowed); clone3's flags are out of
  // reach of a filter, so it is refused and glibc falls back to clone. (LeakSanitizer's check at exit
  // clones and traces a process: the sanitizer build keeps these.)
  deny(SCMP_SYS(clone), 1, SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0));
  ok = ok && seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0) == 0;
  deny(SCMP_SYS(ptrace));
  // Signals: abort() and raise() signal this process; nothing else may be signalled.
  const auto self = static_cast<scmp_datum_t>(::getpid());
  deny(SCMP_SYS(kill), 1, SCMP_A0(SCMP_CMP_NE, self));
  deny(SCMP_SYS(tgkill), 1, SCMP_A0(SCMP_CMP_NE, self));
#endif
  // Files: read, never written, created or removed (libclamav writes what it extracts: not for it).
  if (files_read_only) {
    for (int call : {SCMP_SYS(open), SCMP_SYS(openat)}) {
      const unsigned flags_arg = call == SCMP_SYS(open) ? 1 : 2;
      deny(call, 1, SCMP_CMP(flags_arg, SCMP_CMP_MASKED_EQ, O_ACCMODE, O_WRONLY));
      deny(call, 1, SCMP_CMP(flags_arg, SCMP_CMP_MASKED_EQ, O_ACCMODE, O_RDWR));
      deny(call, 1, SCMP_CMP(flags_arg, SCMP_CMP_MASKED_EQ, O_CREAT, O_CREAT));
    }
    deny(SCMP_SYS(openat2));  // its flags are behind a pointer
    for (int call : {SCMP_SYS(creat), SCMP_SYS(unlink), SCMP_SYS(unlinkat), SCMP_SYS(rename), SCMP_SYS(renameat),
                     SCMP_SYS(renameat2), SCMP_SYS(mkdir), SCMP_SYS(mkdirat), SCMP_SYS(rmdir), SCMP_SYS(link),
                     SCMP_SYS(linkat), SCMP_SYS(symlink), SCMP_SYS(symlinkat), SCMP_SYS(truncate), SCMP_SYS(chmod),
                     SCMP_SYS(fchmodat), SCMP_SYS(chown), SCMP_SYS(fchownat), SCMP_SYS(lchown)})
      deny(call);
  }
  ok = ok && seccomp_load(ctx) == 0;
  seccomp_release(ctx);
  return ok;
}

int try_refused_calls() {
  int through = 0;
  auto expect_refused = [&](const char* what, bool refused) {
    std::printf("%s: %s\n", what, refused ? "refused" : "ALLOWED");
    if (!refused) ++through;
  };
  expect_refused("socket", ::socket(AF_INET, SOCK_STREAM, 0) < 0 && errno == EPERM);
  int sv[2];
  expect_refused("socketpair", ::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0 && errno == EPERM);
  char* const argv[] = {const_cast<char*>("/bin/true"), nullptr};
  expect_refused("execve", ::execve("/bin/true", argv, nullptr) < 0 && errno == EPERM);
  expect_refused("io_uring", ::syscall(__NR_io_uring_setup, 1, nullptr) < 0 && errno == EPERM);
#if !defined(__SANITIZE_ADDRESS__)
  expect_refused("signal to another process", ::kill(::getppid(), 0) < 0 && errno == EPERM);
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  if (child > 0) ::waitpid(child, nullptr, 0);
  expect_refused("fork", child < 0);
#endif
  return through;
}

}  // namespace mailark
