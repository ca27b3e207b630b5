// The seccomp filter of mailark's worker processes, which run code that reads hostile bytes and is
// not ours to harden: mailark-extract (poppler, libzip, libxml2: engine/extract.h) and the scan
// processes of mailark-scan (libclamav: scanner/scan_host.h).
//
// Every system call is allowed but these, which fail with EPERM (a parser that tries one gets an
// error; the parent goes on): new sockets and connections, starting programs or processes (threads
// stay allowed), io_uring, signals to any other process, other processes' memory, and what a worker
// run as root could do to the machine (mounts, modules, namespaces, reboot...); with
// `files_read_only`, also writing, creating or removing files. A list of what is refused, not of
// what is allowed: those libraries are not ours to enumerate. Checked by `mailark-extract
// --check-sandbox` (test Extract.TheWorkerCannotReachTheNetworkStartProgramsOrWriteFiles) and
// `mailark-scan --check-sandbox` (test ScanHost.ScanProcessesCannotReachTheNetworkOrStartPrograms).
#pragma once

namespace mailark {

// Installs the filter on this process (and what it starts). False when it could not be installed.
bool install_sandbox(bool files_read_only);

// For `--check-sandbox`, after install_sandbox: tries what every filter refuses (sockets, execve,
// io_uring, and outside the sanitizer build a signal to the parent and fork), prints "what: refused"
// or "what: ALLOWED" for each, and returns how many got through.
int try_refused_calls();

}  // namespace mailark
